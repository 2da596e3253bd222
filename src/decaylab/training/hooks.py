"""The callback interface of :func:`~decaylab.training.fit`: :class:`Callback`, :class:`TrainState`.

``fit`` calls, in this order::

    on_train_start(state)                      once, after set-up and any resume
    ┌─ step: batch → optimizer step (+ decay, + prox)
    │  on_step_end(state)                      after every step; may set α, lr, stop
    │  [evaluation on the eval grid] → on_eval(state, metrics)
    └─ snapshot, checkpoint (they see what on_step_end set)
    on_train_end(state)                        once, after early stopping restored the best

The step-0 evaluation calls ``on_eval`` too. A value a callback sets on the state takes effect
from the next step; the evaluation of the same step (if any) already uses it for the objective.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from decaylab._checks import check_scalar
from decaylab.regularize import Penalty
from decaylab.training.history import History

if TYPE_CHECKING:
    from decaylab.training.regularization import Regularization

__all__ = ["Callback", "CallbackList", "TrainState"]


@dataclass(eq=False)
class TrainState:
    """What a :class:`Callback` sees of a running :func:`fit`, and what it may change.

    Attributes
    ----------
    step : int
        Optimizer steps completed.
    model : nn.Module
    optimizer : torch.optim.Optimizer
    history : History
        Filled as the run goes (read it; do not edit it).
    last_loss : float
        The objective of the last step's batch (mean data loss plus the differentiable
        regularizer; for FISTA at the extrapolated point); NaN before the first step.
    stop : bool
        Set ``True`` to stop after the current step (``History.stop_reason = "callback"``
        unless something else stopped the run at the same step).

    ``lr``, ``weight_decay`` and ``penalty`` are properties: setting them takes effect from the
    next step, for coupled and decoupled decay alike, and checkpoints store the current values.

    Examples
    --------
    >>> import torch
    >>> from decaylab.training import Callback, fit, half_mse
    >>> class Halve(Callback):
    ...     seen = []
    ...     def on_step_end(self, state):
    ...         self.seen.append(state.weight_decay)
    ...         if state.step == 2:
    ...             state.weight_decay = state.weight_decay / 2
    >>> X = torch.ones(4, 1); model = torch.nn.Linear(1, 1, bias=False)
    >>> _ = fit(model, half_mse, (X, X[:, 0]), steps=4, weight_decay=0.2,
    ...         callbacks=[Halve()], progress=False)
    >>> Halve.seen
    [0.2, 0.2, 0.1, 0.1]
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    history: History
    regularization: Regularization
    step: int = 0
    stop: bool = False
    last_loss: float = math.nan

    @property
    def lr(self) -> float:
        """The first parameter group's learning rate; setting it sets every group's."""
        return float(self.optimizer.param_groups[0]["lr"])

    @lr.setter
    def lr(self, value: float) -> None:
        value = check_scalar(value, "lr", low=0.0, low_inclusive=False)
        for group in self.optimizer.param_groups:
            group["lr"] = value

    @property
    def weight_decay(self) -> float:
        """``α`` of the weight decay (coupled, or decoupled as the run was set up)."""
        return self.regularization.weight_decay

    @weight_decay.setter
    def weight_decay(self, value: float) -> None:
        self.regularization.weight_decay = value

    @property
    def penalty(self) -> Penalty | None:
        """The run's penalty (a copy of the one passed to fit; its ``alpha`` may be set)."""
        return self.regularization.penalty

    @penalty.setter
    def penalty(self, value: Penalty | None) -> None:
        self.regularization.penalty = value


class Callback:
    """Base class of fit's callbacks; override the hooks you need (each does nothing here).

    Lightning-style: a hook reads :class:`TrainState` and may set ``state.weight_decay``,
    ``state.penalty`` (or its ``alpha``), ``state.lr`` or ``state.stop``.
    """

    def on_train_start(self, state: TrainState) -> None:
        """Once, after set-up and any resume, before the step-0 evaluation."""

    def on_step_end(self, state: TrainState) -> None:
        """After each optimizer step (and its decay and prox); ``state.step`` counts it."""

    def on_eval(self, state: TrainState, metrics: dict[str, float]) -> None:
        """After each evaluation, with what was recorded (``train_loss``, ``objective``, …)."""

    def on_train_end(self, state: TrainState) -> None:
        """Once at the end, after early stopping restored its best weights."""


class CallbackList(Callback):
    """Calls each callback's hook in the order given."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_train_start(self, state: TrainState) -> None:
        for cb in self.callbacks:
            cb.on_train_start(state)

    def on_step_end(self, state: TrainState) -> None:
        for cb in self.callbacks:
            cb.on_step_end(state)

    def on_eval(self, state: TrainState, metrics: dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_eval(state, dict(metrics))

    def on_train_end(self, state: TrainState) -> None:
        for cb in self.callbacks:
            cb.on_train_end(state)
