"""The task's training protocol as a small stateful trainer the advisor's methods drive.

The advisor changes ``α`` in the middle of a training (online methods) and continues a
training from a saved state (the path), so it holds the model and its optimizer between
calls. It is built from fit's own parts (:mod:`decaylab.training`'s regularization,
optimizer choice, step rule and batches), so one full-protocol training here is the same
computation as
``decaylab.fit(model, loss, train, optimizer=..., lr=..., steps=..., weight_decay=α)``
(tested), with the coupled decay on :func:`~decaylab.regularize.param_groups`' decayed group.
"""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from decaylab._checks import check_scalar
from decaylab.training.batches import Batches
from decaylab.training.regularization import Regularization
from decaylab.training.steps import GradientStep, build_optimizer

__all__ = ["Protocol", "Trainer", "Budget", "check_task"]

_OPTIMIZERS = ("adam", "sgd", "adamw")


@dataclass(frozen=True)
class Protocol:
    """How the task is trained at one ``α``: the grid, the final training and every method
    use it. ``optimizer`` ``"adam"`` and ``"sgd"`` take the decay coupled (L2 in the
    gradient, decaylab's ``α``), ``"adamw"`` decoupled. ``batch_size=None`` is full batch."""

    optimizer: str = "adam"
    lr: float = 1e-2
    steps: int = 3000
    batch_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        check_scalar(self.lr, "lr", low=0.0, low_inclusive=False)
        check_scalar(self.steps, "steps", low=1, integer=True)
        if self.batch_size is not None:
            check_scalar(self.batch_size, "batch_size", low=1, integer=True)
        check_scalar(self.seed, "seed", integer=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Budget:
    """Compute spent: wall seconds since creation and gradient evaluations.

    A gradient evaluation is one pass of ``∇`` of a batch's loss (one optimizer step);
    a Hessian- or GGN-vector product counts as two (forward plus double backward).
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.grad_evals = 0.0
        self.offloaded = 0.0  # seconds spent on other workers (a Ray grid), beyond this wall

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start + self.offloaded

    def add_steps(self, steps: int, batch_fraction: float = 1.0) -> None:
        self.grad_evals += steps * batch_fraction

    def add_products(self, n: int) -> None:
        self.grad_evals += 2 * n


def check_task(task: Any) -> None:
    """``ValueError`` naming the field unless ``task`` has a model factory, a loss, and
    finite, non-empty ``train`` and ``val`` pairs (the advisor needs validation data)."""
    for field in ("model", "loss_fn", "train", "val"):
        if getattr(task, field, None) is None:
            hint = " (the advisor chooses α on validation data)" if field == "val" else ""
            raise ValueError(f"task.{field} is missing{hint}")
    if not callable(task.model) or isinstance(task.model, nn.Module):
        raise ValueError("task.model must be a zero-argument callable returning a fresh model")
    for field in ("train", "val"):
        pair = getattr(task, field)
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"task.{field} must be a pair (X, y)")
        X, y = (torch.as_tensor(t) for t in pair)
        if X.ndim == 0 or X.shape[0] == 0 or X.shape[0] != y.shape[0]:
            raise ValueError(f"task.{field} must hold X and y with the same number ≥ 1 of rows")
        for label, t in (("X", X), ("y", y)):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise ValueError(f"task.{field} contains NaN or inf in {label}")


def fresh_model(task: Any, seed: int) -> nn.Module:
    """``task.model()`` after ``torch.manual_seed(seed)``, so every α starts alike."""
    torch.manual_seed(seed)
    return task.model()


def task_tensors(task: Any, model: nn.Module) -> tuple[torch.Tensor, ...]:
    """``(X, y, Xv, yv)`` of ``task.train`` and ``task.val`` as tensors, the inputs in the
    model's dtype (the targets as given: class indices stay integers)."""
    dtype = next(model.parameters()).dtype
    X, y = (torch.as_tensor(t) for t in task.train)
    Xv, yv = (torch.as_tensor(t) for t in task.val)
    return X.to(dtype), y, Xv.to(dtype), yv


class Trainer:
    """A model and its optimizer at a settable ``α``; ``run(n)`` continues training.

    >>> import types
    >>> X = torch.randn(20, 3); y = X.sum(1, keepdim=True)
    >>> task = types.SimpleNamespace(model=lambda: nn.Linear(3, 1), loss_fn=nn.MSELoss(),
    ...                              train=(X, y), val=(X, y))
    >>> tr = Trainer(task, Protocol(lr=0.05, steps=10), alpha=1e-3)
    >>> tr.run(200); tr.val_loss() < 1e-2
    True
    """

    def __init__(self, task: Any, protocol: Protocol, alpha: float, budget: Budget | None = None):
        self.task, self.protocol = task, protocol
        self.budget = budget if budget is not None else Budget()
        self.model = fresh_model(task, protocol.seed)
        self.loss_fn = task.loss_fn
        self.X, self.y, self.Xv, self.yv = task_tensors(task, self.model)
        # fit's own parts, so that a step here stays fit's step: the decayed group and how
        # α is written into the optimizer, the optimizer choice, the step rule, the batches.
        self.regularization = Regularization(
            self.model, float(alpha), decoupled_by_fit=False, penalty=None, proximal=True,
            penalty_params="decayed",
        )  # fmt: skip
        self.decayed = self.regularization.decayed
        self.optimizer = build_optimizer(
            protocol.optimizer, None, self.regularization, lr=protocol.lr, momentum=0,
            decoupled=protocol.optimizer == "adamw",
        )  # fmt: skip
        self._step = GradientStep(self.optimizer, self.regularization)
        self._batches = Batches(self.X, self.y, protocol.batch_size, protocol.seed)
        self.steps_done = 0

    @property
    def alpha(self) -> float:
        """The decay the next step uses."""
        return self.regularization.weight_decay

    def set_alpha(self, alpha: float) -> None:
        """The decay from the next step on (coupled or decoupled as the protocol says)."""
        self.regularization.weight_decay = float(alpha)

    def run(self, steps: int) -> None:
        """``steps`` optimizer steps at the current ``α``; ``FloatingPointError`` if the loss
        turns non-finite (the caller flags it)."""
        self.model.train()
        for _ in range(int(steps)):
            xb, yb = self._batches.batch(self.steps_done)
            loss = self._step(functools.partial(self._batch_loss, xb, yb))
            if not bool(torch.isfinite(loss)):
                raise FloatingPointError(
                    f"the training loss became {float(loss)} at step "
                    f"{self.steps_done} (alpha={self.alpha:g})"
                )
            self.steps_done += 1
            self.budget.add_steps(1, len(xb) / len(self.X))

    def _batch_loss(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.model(xb), yb)

    @torch.no_grad()
    def _loss(self, X: torch.Tensor, y: torch.Tensor) -> float:
        self.model.eval()
        return float(self.loss_fn(self.model(X), y))

    def val_loss(self) -> float:
        return self._loss(self.Xv, self.yv)

    def train_loss(self) -> float:
        return self._loss(self.X, self.y)

    def objective(self) -> float:
        """``J(w) + (α/2)‖w_d‖²`` on the training data."""
        return self.train_loss() + self.regularization.value()

    @torch.no_grad()
    def val_accuracy(self) -> float | None:
        """Fraction of correct validation predictions for classifiers, else ``None``."""
        self.model.eval()
        out, y = self.model(self.Xv), self.yv
        if y.is_floating_point() and out.ndim == 2 and out.shape[1] == 1:
            if not bool(((y == 0) | (y == 1)).all()):
                return None
            return float(((out[:, 0] > 0).to(y.dtype) == y.reshape(-1)).float().mean())
        if not y.is_floating_point() and out.ndim == 2 and out.shape[1] > 1:
            return float((out.argmax(1) == y).float().mean())
        return None

    def state(self) -> dict[str, Any]:
        """A deep copy of the weights, the optimizer state and ``α`` (for warm starts)."""
        return {
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "alpha": self.alpha,
            "steps_done": self.steps_done,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.set_alpha(state["alpha"])
        self.steps_done = state["steps_done"]


def train_at(task: Any, protocol: Protocol, alpha: float, budget: Budget) -> Trainer:
    """One full-protocol training from the seeded initialization at a fixed ``α``."""
    trainer = Trainer(task, protocol, alpha, budget)
    trainer.run(protocol.steps)
    return trainer
