"""Online α: one :func:`decaylab.fit` run whose callback re-estimates α during training.

The ``"evidence"`` and ``"hypergradient"`` methods differ only in ``update(view, α) -> α'``;
this module runs the task's protocol through ``fit`` with a :class:`~decaylab.Callback` that
calls it ``updates`` times, evenly spaced, and sets ``state.weight_decay`` (effective from the
next step).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from decaylab.advise._train import Budget, Protocol, fresh_model, task_tensors
from decaylab.regularize import param_groups
from decaylab.training import Callback, TrainState, fit
from decaylab.training.batches import Batches

__all__ = ["run_online"]


class _OnlineAlpha(Callback):
    def __init__(
        self, view: Any, update: Callable[[Any, float], float], interval: int, updates: int
    ) -> None:
        self.view, self.update = view, update
        self.interval, self.updates = interval, updates
        self.steps: list[int] = []  # the steps after which α was updated

    def on_step_end(self, state: TrainState) -> None:
        if len(self.steps) < self.updates and state.step % self.interval == 0:
            self.view.alpha = float(state.weight_decay)
            state.weight_decay = float(self.update(self.view, self.view.alpha))
            self.view.alpha = float(state.weight_decay)
            self.steps.append(state.step)


def run_online(
    task: Any,
    protocol: Protocol,
    alpha0: float,
    budget: Budget,
    *,
    updates: int,
    update: Callable[[Any, float], float],
) -> Any:
    """Train with the protocol from the seeded initialization, α updated ``updates`` times;
    returns the view (``model``, data, ``decayed``, final ``alpha``) the updates saw, with
    ``update_steps``, the steps after which each update took effect.

    The steps count in ``budget`` as the :class:`~decaylab.advise._train.Trainer` counts
    them, each by its batch's share of the data (an epoch's last batch may be smaller):

    >>> import types, torch
    >>> X = torch.randn(5, 2); y = X.sum(1, keepdim=True)
    >>> task = types.SimpleNamespace(model=lambda: torch.nn.Linear(2, 1),
    ...                              loss_fn=torch.nn.MSELoss(), train=(X, y), val=(X, y))
    >>> budget = Budget()
    >>> view = run_online(task, Protocol(lr=0.01, steps=3, batch_size=2), 1e-3, budget,
    ...                   updates=0, update=lambda view, alpha: alpha)
    >>> budget.grad_evals  # batches of 2, 2 and 1 of the 5 samples: one pass
    1.0
    """
    model = fresh_model(task, protocol.seed)
    X, y, Xv, yv = task_tensors(task, model)
    decayed = [p for g in param_groups(model, 1.0) if g["weight_decay"] > 0 for p in g["params"]]
    view = types.SimpleNamespace(
        model=model,
        loss_fn=task.loss_fn,
        X=X,
        y=y,
        Xv=Xv,
        yv=yv,
        decayed=decayed,
        alpha=alpha0,
    )
    interval = max(protocol.steps // (updates + 1), 1)
    callback = _OnlineAlpha(view, update, interval, updates)
    fit(
        model,
        task.loss_fn,
        (view.X, y),
        optimizer=protocol.optimizer,
        lr=protocol.lr,
        steps=protocol.steps,
        batch_size=protocol.batch_size,
        weight_decay=alpha0,
        decoupled=protocol.optimizer == "adamw",
        seed=protocol.seed,
        progress=False,
        eval_every=protocol.steps,
        callbacks=[callback],
    )
    _count_steps(budget, protocol, X, y)
    view.steps_done = protocol.steps
    view.update_steps = callback.steps
    return view


def _count_steps(budget: Budget, protocol: Protocol, X: Any, y: Any) -> None:
    """``protocol.steps`` of fit's batches, each by its share of the data, as the Trainer
    counts them."""
    batches = Batches(X, y, protocol.batch_size, protocol.seed)
    for step in range(protocol.steps):
        budget.add_steps(1, batches.size(step) / batches.n)
