"""Step rules: one optimizer step on a batch, regularizer included.

A *step rule* is a callable ``rule(objective) -> loss``: ``objective()`` builds the batch's
differentiable objective (mean data loss plus the regularizer's loss term); the rule zeroes
the gradients, evaluates it, and — when the loss is finite — moves the weights. A non-finite
loss moves nothing and is returned for the loop to stop on.

* :class:`GradientStep` wraps a ``torch.optim`` optimizer (SGD / heavy ball, Adam, AdamW or a
  factory's): backward, decoupled decay (when fit applies it), ``optimizer.step()``, prox.
* :class:`FISTAStep` hands a closure to :class:`~decaylab.training.FISTA`, whose step includes
  the prox and, with ``lr="auto"``, the line search (several evaluations per step).

To add a step rule: build its optimizer in :func:`build_optimizer`, write a class with
``__call__(objective)`` and ``optimizer``, and pick it in :func:`make_step_rule`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from decaylab._checks import warn_theory
from decaylab.training.fista import FISTA
from decaylab.training.regularization import Regularization

__all__ = ["FISTAStep", "GradientStep", "StepRule", "build_optimizer", "make_step_rule"]

Objective = Callable[[], torch.Tensor]


class StepRule(Protocol):
    """What the loop needs from a step rule."""

    @property
    def optimizer(self) -> torch.optim.Optimizer: ...

    def __call__(self, objective: Objective) -> torch.Tensor: ...


def _is_finite(loss: torch.Tensor) -> bool:
    return bool(torch.isfinite(loss.detach()))


class GradientStep:
    """``zero_grad``; loss; backward; decoupled decay; ``optimizer.step()``; prox."""

    def __init__(self, optimizer: torch.optim.Optimizer, regularization: Regularization) -> None:
        self.optimizer = optimizer
        self.regularization = regularization

    def __call__(self, objective: Objective) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = objective()
        if not _is_finite(loss):
            return loss  # the weights that produced it are kept as they are
        loss.backward()
        self.regularization.decay_before_step(self.optimizer)
        self.optimizer.step()
        self.regularization.prox_after_step(self.optimizer)
        return loss


class FISTAStep:
    """One :class:`FISTA` step; records the line-search failures it reports."""

    def __init__(self, optimizer: FISTA) -> None:
        self.optimizer = optimizer

    def __call__(self, objective: Objective) -> torch.Tensor:
        def closure() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            loss = objective()
            if torch.isfinite(loss):
                loss.backward()
            return loss

        return self.optimizer.step(closure)

    @property
    def line_search_failures(self) -> int:
        return self.optimizer.line_search_failures


def build_optimizer(
    name: str,
    factory: Callable[[list[dict[str, Any]]], torch.optim.Optimizer] | None,
    regularization: Regularization,
    *,
    lr: float | str,
    momentum: float,
    decoupled: bool,
) -> torch.optim.Optimizer:
    """The optimizer of ``name`` on ``regularization.groups``, attached to ``regularization``.

    ``name="factory"`` calls ``factory(groups)``. Refused: a factory that returns no
    ``torch.optim.Optimizer``, or one without a ``"weight_decay"`` hyperparameter while a
    coupled decay is asked for (it would ignore it).
    """
    groups = regularization.groups
    opt: torch.optim.Optimizer
    if name == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum)  # type: ignore[arg-type]
    elif name == "adam" and not decoupled:
        opt = torch.optim.Adam(groups, lr=lr)  # type: ignore[arg-type]
    elif name in ("adam", "adamw"):
        opt = torch.optim.AdamW(groups, lr=lr)  # type: ignore[arg-type]
    elif name == "fista":
        opt = FISTA(groups, lr=lr, prox=regularization.prox)
    else:
        assert factory is not None
        opt = factory(groups)
        if not isinstance(opt, torch.optim.Optimizer):
            raise ValueError(
                f"optimizer factory must return a torch.optim.Optimizer, got {type(opt).__name__}"
            )
    regularization.attach(opt)
    return opt


def warn_biased_prox(name: str, momentum: float, regularization: Regularization) -> None:
    """TheoryWarning when the prox after this optimizer's step is not the L1 optimum's."""
    penalty = regularization.penalty
    if penalty is None or not regularization.proximal or penalty.l1_strength <= 0:
        return
    if name == "sgd" and momentum > 0:
        warn_theory(
            f"L1 prox after heavy-ball steps (momentum={momentum}) is biased: the velocity sums "
            f"raw gradients, so a fixed point is the L1 optimum for alpha*(1-momentum) = "
            f"{penalty.l1_strength * (1 - momentum):g}, not alpha = {penalty.l1_strength:g}; "
            "use optimizer='fista' (or momentum=0) for the exact L1 optimum",
            stacklevel=4,
        )
    elif name in ("adam", "adamw"):
        warn_theory(
            f"L1 prox after {name} steps is a heuristic (the step is preconditioned, the "
            "threshold is not): it gives exact zeros but not the L1 optimum; use "
            "optimizer='fista' (full batch) or 'sgd' with momentum=0 for that",
            stacklevel=4,
        )


def make_step_rule(optimizer: torch.optim.Optimizer, regularization: Regularization) -> StepRule:
    """:class:`FISTAStep` for :class:`FISTA`, :class:`GradientStep` for any other optimizer."""
    if isinstance(optimizer, FISTA):
        return FISTAStep(optimizer)
    return GradientStep(optimizer, regularization)
