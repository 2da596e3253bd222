"""A small, exact training loop: :func:`fit`, its :class:`History`, and the :class:`FISTA` solver.

Conventions (``shared/CONVENTIONS.md``): the training objective is the **mean** per-example loss
``J(w)`` (``loss_fn`` must return a mean; for regression use :func:`half_mse`, the ½-squared
error) plus the regularizer:

* ``weight_decay=α`` (coupled): ``J + (α/2)‖w_d‖²`` on the *decayed* parameters ``w_d`` chosen by
  :func:`decaylab.regularize.param_groups` (weights of linear/conv layers; no biases, no norm
  layers, no other 1-D parameters).
* ``weight_decay=wd, decoupled=True``: the AdamW form ``w ← w − ε·wd·w − ε·u(∇J)``, decay first.
* ``penalty=L1(α)`` / ``ElasticNet(α, ρ)``: with ``proximal=True`` the smooth part is added to the
  loss and the soft threshold ``prox(w, ε)`` follows every optimizer step, so weights become
  exactly zero; with ``proximal=False`` the whole penalty goes into the loss (subgradient).

``batch_size=None`` is full-batch training, i.e. exact gradient descent on ``J̃``.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from decaylab._checks import check_bool, check_scalar, warn_theory
from decaylab.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from decaylab.curvature._params import flatten_params
from decaylab.regularize import Penalty, param_groups

__all__ = ["FISTA", "History", "fit", "half_mse"]

_OPTIMIZER_NAMES = ("sgd", "adam", "adamw", "fista")
_MONITORABLE = ("train_loss", "val_loss", "objective")
_DEFAULT_CHECKPOINT_EVERY = 100
_CHECKPOINT_VERSION = 1


def half_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean half squared error ``(1/N) Σ_n ½ (y_n − f_n)²`` (the conventions' regression loss).

    ``torch.nn.MSELoss`` is twice this. A prediction of shape ``(N, 1)`` against a target of
    shape ``(N,)`` is reshaped rather than broadcast to ``(N, N)``.

    Examples
    --------
    >>> import torch
    >>> half_mse(torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0])).item()  # (1 + 4) / 4
    1.25
    """
    if prediction.shape != target.shape:
        if prediction.numel() != target.numel():
            raise ValueError(
                f"prediction has shape {tuple(prediction.shape)} but target has shape "
                f"{tuple(target.shape)}"
            )
        prediction = prediction.reshape(target.shape)
    return 0.5 * torch.mean((prediction - target) ** 2)


# --------------------------------------------------------------------------------- History


@dataclass
class History:
    """What :func:`fit` measured.

    The lists ``step``, ``train_loss``, ``objective`` (and ``val_loss`` when validation data was
    given; otherwise it stays empty) are aligned: entry ``i`` was measured after ``step[i]``
    optimizer steps, on the full training (validation) set at the model's weights then. Step 0
    (the initial weights) is always recorded, then every ``eval_every`` steps, and the final
    step. A non-finite value that stopped the run is recorded as measured.

    Attributes
    ----------
    step : list of int
    train_loss : list of float
        Mean data loss ``J(w)`` (without any regularizer).
    val_loss : list of float
        Mean data loss on ``val_data`` (empty without validation data).
    objective : list of float
        ``J(w)`` plus the regularizer: the full ``penalty`` term and ``(weight_decay/2)‖w_d‖²`` on
        the decayed parameters (the L2 reading of ``weight_decay``; for decoupled adaptive
        optimizers it is reported, not minimized).
    stop_reason : str or None
        ``"patience"``, ``"non-finite"``, ``"threshold"``, ``"divergence"`` or ``None`` when the run
        used up its steps.
    best_step : int or None
        The early-stopping best step (``None`` without early stopping).
    steps_done : int
        Optimizer steps taken.
    snapshots : list of (int, torch.Tensor)
        ``(step, flat parameter vector on the CPU)`` every ``record_every`` steps, step 0 and the
        final step included (flat order per the conventions).

    Examples
    --------
    >>> h = History(step=[0, 1], train_loss=[1.0, 0.5], objective=[1.0, 0.5])
    >>> h.to_dict()["train_loss"]
    [1.0, 0.5]
    >>> History.from_dict(h.to_dict()) == h
    True
    """

    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    objective: list[float] = field(default_factory=list)
    stop_reason: str | None = None
    best_step: int | None = None
    steps_done: int = 0
    snapshots: list[tuple[int, torch.Tensor]] = field(default_factory=list)

    def to_dict(self, *, plain: bool = False) -> dict[str, Any]:
        """Contents as plain containers.

        Parameters
        ----------
        plain : bool
            Convert snapshot tensors to lists of floats (JSON-ready). The default keeps
            tensors, which is what checkpoints store.
        """
        snaps = [
            [int(s), v.tolist() if plain else v.detach().cpu().clone()] for s, v in self.snapshots
        ]
        return {
            "step": list(self.step),
            "train_loss": list(self.train_loss),
            "val_loss": list(self.val_loss),
            "objective": list(self.objective),
            "stop_reason": self.stop_reason,
            "best_step": self.best_step,
            "steps_done": self.steps_done,
            "snapshots": snaps,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Inverse of :meth:`to_dict`."""
        return cls(
            step=[int(s) for s in data["step"]],
            train_loss=[float(v) for v in data["train_loss"]],
            val_loss=[float(v) for v in data["val_loss"]],
            objective=[float(v) for v in data["objective"]],
            stop_reason=data["stop_reason"],
            best_step=data["best_step"],
            steps_done=int(data["steps_done"]),
            snapshots=[(int(s), torch.as_tensor(v)) for s, v in data["snapshots"]],
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, History):
            return NotImplemented
        mine, theirs = self.to_dict(plain=True), other.to_dict(plain=True)
        return mine == theirs


# --------------------------------------------------------------------------------- FISTA


class FISTA(torch.optim.Optimizer):
    r"""Accelerated proximal gradient (FISTA) with adaptive restart, for full-batch training.

    Minimizes ``F(w) = f(w) + g(w)`` with ``f`` smooth (the closure's loss plus
    ``(weight_decay/2)‖w‖²`` per group) and ``g`` handled by ``prox`` (e.g. ``L1(α).prox``).
    Beck & Teboulle (2009), with step ``ε = lr``:

    .. code-block:: text

        x_{k+1} = prox_{ε g}(y_k − ε ∇f(y_k))
        t_{k+1} = (1 + sqrt(1 + 4 t_k²)) / 2
        y_{k+1} = x_{k+1} + ((t_k − 1) / t_{k+1}) (x_{k+1} − x_k)

    and the gradient restart of O'Donoghue & Candès (2015): when
    ``(y_k − x_{k+1})·(x_{k+1} − x_k) > 0`` (the step goes against the momentum) the momentum is
    dropped (``t = 1``, ``y_{k+1} = x_{k+1}``). Between steps the parameters hold the iterate
    ``x_k`` (so exact zeros from the prox are visible); the extrapolated point ``y_k`` is in the
    optimizer state and ``t_k`` in ``param_groups[0]["t"]``, so ``state_dict()`` captures the
    whole method for an exact resume.

    Convergence needs ``lr ≤ 1/L`` with ``L`` the Lipschitz constant of ``∇f``. ``lr="auto"``
    instead runs the backtracking line search of Beck & Teboulle: start at ``lr=1`` and divide
    the step by ``backtrack`` until ``f(x) ≤ f(y) + ∇f(y)·(x − y) + ‖x − y‖²/(2ε)``; the step never
    grows again. Each trial costs one more closure call.

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
    lr : float or "auto"
    weight_decay : float
        Coupled L2 coefficient (part of ``f``).
    prox : callable ``prox(params, step)`` or None
        Applied in place, per group, to the group's parameters after the gradient step (for
        example ``L1(0.01).prox``). ``None`` is plain accelerated gradient descent.
    restart : bool
        Use the gradient restart.
    backtrack : float
        ``> 1``; step divisor of the line search.

    Examples
    --------
    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor([3.0, -0.05]))
    >>> opt = FISTA([w], lr=0.5, prox=lambda ps, step: [p.sub_(p.clamp(-step * 0.1, step * 0.1))
    ...                                                  for p in ps])
    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = 0.5 * (w ** 2).sum()
    ...     loss.backward()
    ...     return loss
    >>> for _ in range(50):
    ...     _ = opt.step(closure)
    >>> w.detach().tolist()  # argmin ½w² + 0.1|w| = 0
    [0.0, 0.0]
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | str = "auto",
        *,
        weight_decay: float = 0.0,
        prox: Callable[[list[torch.Tensor], float], Any] | None = None,
        restart: bool = True,
        backtrack: float = 2.0,
    ) -> None:
        self.line_search = isinstance(lr, str)
        if self.line_search:
            if lr != "auto":
                raise ValueError(f"lr must be a positive number or 'auto', got {lr!r}")
            lr_value = 1.0
        else:
            lr_value = check_scalar(lr, "lr", low=0.0, low_inclusive=False)
        check_scalar(weight_decay, "weight_decay", low=0.0)
        self.backtrack = check_scalar(backtrack, "backtrack", low=1.0, low_inclusive=False)
        if prox is not None and not callable(prox):
            raise ValueError(f"prox must be callable or None, got {prox!r}")
        self.prox = prox
        self.restart = bool(restart)
        super().__init__(params, {"lr": lr_value, "weight_decay": weight_decay})
        self.param_groups[0].setdefault("t", 1.0)
        self.param_groups[0].setdefault("restarts", 0)

    def _smooth_extra(self) -> float:
        total = 0.0
        for group in self.param_groups:
            wd = group["weight_decay"]
            if wd:
                total += 0.5 * wd * sum(float(p.detach().pow(2).sum()) for p in group["params"])
        return total

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        """One FISTA step; ``closure`` must zero the gradients, compute ``f``, and backward.

        Returns the loss at the extrapolated point ``y_k``. A non-finite loss leaves the
        parameters and the state unchanged.
        """
        if closure is None:
            raise ValueError("closure is required: FISTA evaluates the loss itself")
        params = [p for g in self.param_groups for p in g["params"]]
        for p in params:
            if "y" not in self.state[p]:
                self.state[p]["y"] = p.detach().clone()
        x_old = [p.detach().clone() for p in params]
        for p in params:
            p.copy_(self.state[p]["y"])
        with torch.enable_grad():
            loss = closure()
        if not bool(torch.isfinite(loss.detach())):
            for p, x in zip(params, x_old, strict=True):
                p.copy_(x)
            return loss
        y = [self.state[p]["y"] for p in params]
        grads = []
        for group in self.param_groups:
            for p in group["params"]:
                g = torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
                if group["weight_decay"]:
                    g.add_(p.detach(), alpha=group["weight_decay"])
                grads.append(g)
        f_y = float(loss.detach()) + (self._smooth_extra() if self.line_search else 0.0)

        for _ in range(100):
            k = 0
            for group in self.param_groups:
                for p in group["params"]:
                    p.copy_(y[k]).add_(grads[k], alpha=-group["lr"])
                    k += 1
                if self.prox is not None:
                    self.prox(group["params"], group["lr"])
            if not self.line_search:
                break
            with torch.enable_grad():
                f_x = float(closure().detach()) + self._smooth_extra()
            k = 0
            model_value = f_y
            for group in self.param_groups:
                for p in group["params"]:
                    diff = p.detach() - y[k]
                    model_value += float((grads[k] * diff).sum())
                    model_value += float(diff.pow(2).sum()) / (2.0 * group["lr"])
                    k += 1
            slack = 10.0 * torch.finfo(params[0].dtype).eps * max(1.0, abs(f_y))
            if f_x <= model_value + slack:
                break
            for group in self.param_groups:
                group["lr"] /= self.backtrack

        first = self.param_groups[0]
        t = first["t"]
        against = sum(
            float(((yk - p.detach()) * (p.detach() - xk)).sum())
            for yk, p, xk in zip(y, params, x_old, strict=True)
        )
        if self.restart and against > 0:
            t_next, beta = 1.0, 0.0
            first["restarts"] += 1
        else:
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            beta = (t - 1.0) / t_next
        for p, xk in zip(params, x_old, strict=True):
            yk = self.state[p]["y"]
            # y ← x_{k+1} + β (x_{k+1} − x_k)
            yk.copy_(p.detach()).add_(p.detach() - xk, alpha=beta)
        first["t"] = t_next
        return loss


# --------------------------------------------------------------------------------- fit helpers


def _as_data(data: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"{name} must be a pair (X, y) of tensors, got {type(data).__name__}")
    X, y = (d if isinstance(d, torch.Tensor) else torch.as_tensor(d) for d in data)
    if X.ndim == 0 or y.ndim == 0:
        raise ValueError(f"{name}: X and y must have a sample dimension, got 0-d tensors")
    if len(X) == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    if len(X) != len(y):
        raise ValueError(f"{name}: X has {len(X)} samples but y has {len(y)}")
    return X, y


def _optional_int(value: Any, name: str, low: int = 1) -> int | None:
    return None if value is None else int(check_scalar(value, name, low=low, integer=True))


def _checked_loss(loss: Any) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise ValueError(
            "loss_fn must return a 0-d tensor (the mean loss over the batch), got "
            f"{type(loss).__name__} of shape {tuple(getattr(loss, 'shape', ()))}"
        )
    return loss


def _mean_loss(
    model: nn.Module, loss_fn: Callable, X: torch.Tensor, y: torch.Tensor, chunk: int
) -> float:
    # Chunks are weighted by their size: the mean over all samples, not a mean of chunk means.
    n = len(X)
    if chunk >= n:
        return float(_checked_loss(loss_fn(model(X), y)))
    total = 0.0
    for start in range(0, n, chunk):
        xb, yb = X[start : start + chunk], y[start : start + chunk]
        total += float(_checked_loss(loss_fn(model(xb), yb))) * len(xb)
    return total / n


def _all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _param_signature(model: nn.Module) -> list[list[Any]]:
    return [[n, list(p.shape)] for n, p in model.named_parameters() if p.requires_grad]


class _Progress:
    """A rich progress bar that does nothing unless asked for and stdout is a terminal."""

    def __init__(self, enabled: bool, total: int, start: int) -> None:
        self._bar = None
        if not enabled:
            return
        from rich.console import Console

        console = Console(file=sys.stdout)
        if not console.is_terminal:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("fit"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "loss {task.fields[loss]}  val {task.fields[val]}  best {task.fields[best]}"
            ),
            TimeRemainingColumn(),
            console=console,
        )
        self._task = self._bar.add_task("fit", total=total, completed=start,
                                        loss="-", val="-", best="-")
        self._bar.start()

    @property
    def active(self) -> bool:
        return self._bar is not None

    def update(self, step: int, **fields: Any) -> None:
        if self._bar is not None:
            shown = {k: (f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in fields.items()}
            self._bar.update(self._task, completed=step, **shown)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# --------------------------------------------------------------------------------- fit


def fit(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train_data: tuple[torch.Tensor, torch.Tensor],
    *,
    val_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    optimizer: str | Callable[[list[dict[str, Any]]], torch.optim.Optimizer] = "sgd",
    lr: float | str = 0.1,
    momentum: float = 0.0,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    weight_decay: float = 0.0,
    decoupled: bool = False,
    penalty: Penalty | None = None,
    proximal: bool = True,
    penalty_params: str = "decayed",
    early_stopping: Any = None,
    eval_every: int = 1,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
    record_every: int | None = None,
) -> History:
    """Train ``model`` on the mean loss plus a regularizer; record, early-stop, checkpoint.

    One step (``ε = lr``, ``g = ∇`` of the batch's mean loss plus the differentiable regularizer):

    * ``"sgd"``: ``w ← w − ε (g + wd·w)`` (coupled, ``torch.optim.SGD``, optional heavy-ball
      ``momentum``); with ``decoupled=True``: ``w ← (1 − ε·wd) w`` first, then ``w ← w − ε g``
      (identical to coupled for ``momentum=0``; with momentum the decay stays out of the buffer).
    * ``"adam"``: ``torch.optim.Adam`` with coupled L2 (``wd·w`` enters the adaptive moments);
      ``decoupled=True`` switches to ``torch.optim.AdamW``. ``"adamw"`` is always decoupled.
    * ``"fista"``: :class:`FISTA`, full batch only, prox inside the accelerated step.
    * a factory ``callable(param_groups) -> Optimizer``: receives the groups of
      :func:`~decaylab.regularize.param_groups` (``"weight_decay"`` set, or 0 with
      ``decoupled=True``, in which case :func:`fit` applies the decay itself before each step);
      ``lr``/``momentum`` are not passed to it.

    Then, with a ``penalty`` and ``proximal=True``, ``penalty.prox(w, ε)`` on the penalized
    parameters (exact zeros for L1; for Adam this is a heuristic, not a true proximal step of the
    preconditioned problem).

    Parameters
    ----------
    model : nn.Module
    loss_fn : callable ``(prediction, target) -> 0-d tensor``
        Must return the **mean** loss over the batch (e.g. :func:`half_mse`,
        ``nn.BCEWithLogitsLoss()``, ``nn.CrossEntropyLoss()``).
    train_data, val_data : (X, y) tensors
        Same first dimension. ``val_data`` is only evaluated.
    optimizer : {"sgd", "adam", "adamw", "fista"} or callable
    lr : float or "auto"
        ``> 0``. ``"auto"`` (FISTA only) uses a backtracking line search.
    momentum : float
        Heavy-ball momentum for ``"sgd"``, in [0, 1).
    steps, epochs : int
        Exactly one. An epoch is ``ceil(N / batch_size)`` steps (1 step with full batch).
    batch_size : int or None
        ``None``: full batch. Otherwise minibatches from a reshuffled permutation per epoch,
        drawn from a ``torch.Generator`` seeded with ``seed`` (the last batch may be smaller).
    weight_decay : float
        ``≥ 0``, on the decayed group of ``param_groups`` (biases, norm layers, 1-D excluded).
    decoupled : bool
    penalty : Penalty or None
        ``L1``, ``L2`` or ``ElasticNet`` from :mod:`decaylab.regularize`.
    proximal : bool
        L1 part by prox (exact zeros) or by subgradient in the loss.
    penalty_params : {"decayed", "all"}
        Which parameters the penalty covers: the decayed group (default; biases and norm
        layers are not penalized), or every trainable parameter.
    early_stopping : EarlyStopping or None
        Monitors ``"val_loss"``, ``"train_loss"`` or ``"objective"`` at every evaluation step
        (step 0 and every ``eval_every`` steps; an extra final evaluation off that grid is
        recorded but not shown to it). ``on_train_end(model)`` is always called at the end.
    eval_every : int
        ``≥ 1``.
    checkpoint_dir : path or None
        Directory for ``checkpoint.pt``, written atomically every ``checkpoint_every`` steps
        (default 100) and at the end, except after a non-finite loss (the last good one stays).
    checkpoint_every : int or None
    resume : bool
        Continue from ``checkpoint_dir/checkpoint.pt``: bit-identical on the CPU to an
        uninterrupted run with the same arguments. A finished checkpoint returns its history
        (with a larger ``steps`` the run continues).
    seed : int
        Seeds the minibatch generator (not the model initialisation).
    progress : bool
        Show a rich progress bar (only when stdout is a terminal).
    record_every : int or None
        Store a flat parameter snapshot every this many steps (and at step 0 and the end).

    Returns
    -------
    History

    Raises
    ------
    ValueError
        Bad arguments (the message names the argument); ``resume=True`` with an empty or
        foreign ``checkpoint_dir`` (:class:`~decaylab.checkpoint.CheckpointError`) or an unsafe
        checkpoint file (:class:`~decaylab.checkpoint.UnsafeCheckpointError`).

    Examples
    --------
    >>> import torch
    >>> X = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64); y = 2 * X[:, 0]
    >>> model = torch.nn.Linear(1, 1, bias=False).double()
    >>> _ = torch.nn.init.zeros_(model.weight)
    >>> h = fit(model, half_mse, (X, y), lr=0.2, steps=200, weight_decay=0.1, progress=False)
    >>> round(model.weight.item(), 6)  # Σxy / (Σx² + Nα) = 28 / 14.3
    1.958042
    >>> h.step[:3], h.stop_reason
    ([0, 1, 2], None)
    """
    # ---------------------------------------------------------------- validation
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {loss_fn!r}")
    X, y = _as_data(train_data, "train_data")
    n_train = len(X)
    val = None if val_data is None else _as_data(val_data, "val_data")

    if isinstance(optimizer, str):
        opt_name = optimizer.lower()
        if opt_name not in _OPTIMIZER_NAMES:
            raise ValueError(
                f"optimizer must be one of {_OPTIMIZER_NAMES} or a callable, got {optimizer!r}"
            )
    elif callable(optimizer):
        opt_name = "factory"
    else:
        raise ValueError(f"optimizer must be a name or a callable, got {optimizer!r}")

    if isinstance(lr, str):
        if lr != "auto" or opt_name != "fista":
            raise ValueError(f"lr must be a positive number ('auto' only with fista), got {lr!r}")
    else:
        lr = check_scalar(lr, "lr", low=0.0, low_inclusive=False)
    momentum = check_scalar(momentum, "momentum", low=0.0, high=1.0, high_inclusive=False)
    if momentum and opt_name != "sgd":
        raise ValueError(
            f"momentum={momentum!r} applies only to optimizer='sgd', got optimizer={optimizer!r}"
        )
    if (steps is None) == (epochs is None):
        raise ValueError(f"give exactly one of steps and epochs, got steps={steps!r}, "
                         f"epochs={epochs!r}")
    batch_size = _optional_int(batch_size, "batch_size")
    full_batch = batch_size is None or batch_size >= n_train
    if opt_name == "fista" and not full_batch:
        raise ValueError(f"batch_size must be None for optimizer='fista' (full-batch method), "
                         f"got {batch_size!r}")
    batches_per_epoch = 1 if full_batch else math.ceil(n_train / batch_size)
    if steps is not None:
        total_steps = int(check_scalar(steps, "steps", low=1, integer=True))
    else:
        total_steps = int(check_scalar(epochs, "epochs", low=1, integer=True)) * batches_per_epoch
    weight_decay = check_scalar(weight_decay, "weight_decay", low=0.0)
    decoupled = check_bool(decoupled, "decoupled")
    proximal = check_bool(proximal, "proximal")
    resume = check_bool(resume, "resume")
    progress = check_bool(progress, "progress")
    if penalty is not None and not isinstance(penalty, Penalty):
        raise ValueError(f"penalty must be an L1/L2/ElasticNet penalty or None, got {penalty!r}")
    if penalty_params not in ("decayed", "all"):
        raise ValueError(f"penalty_params must be 'decayed' or 'all', got {penalty_params!r}")
    if opt_name == "fista" and penalty is not None and not proximal:
        raise ValueError("proximal=False is not supported with optimizer='fista' "
                         "(FISTA is a proximal method)")
    eval_every = int(check_scalar(eval_every, "eval_every", low=1, integer=True))
    record_every = _optional_int(record_every, "record_every")
    seed = int(check_scalar(seed, "seed", integer=True))
    if checkpoint_dir is None:
        if resume:
            raise ValueError("resume=True needs checkpoint_dir, got checkpoint_dir=None")
        if checkpoint_every is not None:
            raise ValueError("checkpoint_every needs checkpoint_dir, got checkpoint_dir=None")
    else:
        checkpoint_dir = Path(checkpoint_dir)
    checkpoint_every = _optional_int(checkpoint_every, "checkpoint_every")
    if checkpoint_every is None:
        checkpoint_every = _DEFAULT_CHECKPOINT_EVERY

    if early_stopping is not None:
        for attr in ("update", "on_train_end", "monitor", "state_dict", "load_state_dict"):
            if not hasattr(early_stopping, attr):
                raise ValueError(
                    f"early_stopping must be an EarlyStopping, got {type(early_stopping).__name__}"
                )
        monitor = early_stopping.monitor
        available = [m for m in _MONITORABLE if m != "val_loss" or val is not None]
        if monitor not in available:
            hint = " (val_loss needs val_data)" if monitor == "val_loss" else ""
            raise ValueError(
                f"early_stopping monitor {monitor!r} is not recorded by fit{hint}; "
                f"available: {available}"
            )

    # ---------------------------------------------------------------- parameters & optimizer
    # Built with a positive probe decay, because with weight_decay=0 both groups would carry 0
    # and the decayed one could not be told apart; the real value is set afterwards.
    groups = param_groups(model, 1.0)
    decayed = [p for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    for g in groups:
        if g["weight_decay"] > 0:
            g["weight_decay"] = weight_decay
    trainable = [p for g in groups for p in g["params"]]
    if penalty is not None:
        penalized = decayed if penalty_params == "decayed" else trainable
        if not penalized:
            raise ValueError(
                "penalty_params='decayed' selects no parameter (the model has no weight "
                "matrices); use penalty_params='all'"
            )
    else:
        penalized = []
    penalized_ids = {id(p) for p in penalized}

    if decoupled and opt_name in ("sgd", "factory"):
        for g in groups:
            g["decaylab_decoupled_decay"] = g["weight_decay"]
            g["weight_decay"] = 0.0

    def group_prox(params: list[torch.Tensor], step: float) -> None:
        chosen = [p for p in params if id(p) in penalized_ids]
        if chosen:
            penalty.prox(chosen, step)

    use_prox = penalty is not None and proximal and penalty.l1_strength > 0
    if use_prox and opt_name == "sgd" and momentum > 0:
        warn_theory(
            f"L1 prox after heavy-ball steps (momentum={momentum}) is biased: the velocity sums "
            f"raw gradients, so a fixed point is the L1 optimum for alpha*(1-momentum) = "
            f"{penalty.l1_strength * (1 - momentum):g}, not alpha = {penalty.l1_strength:g}; "
            "use optimizer='fista' (or momentum=0) for the exact L1 optimum"
        )
    elif use_prox and opt_name in ("adam", "adamw"):
        warn_theory(
            f"L1 prox after {opt_name} steps is a heuristic (the step is preconditioned, the "
            "threshold is not): it gives exact zeros but not the L1 optimum; use "
            "optimizer='fista' (full batch) or 'sgd' with momentum=0 for that"
        )
    if opt_name == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=momentum)
    elif opt_name == "adam" and not decoupled:
        opt = torch.optim.Adam(groups, lr=lr)
    elif opt_name in ("adam", "adamw"):
        opt = torch.optim.AdamW(groups, lr=lr)
    elif opt_name == "fista":
        opt = FISTA(groups, lr=lr, prox=group_prox if use_prox else None)
    else:
        opt = optimizer(groups)
        if not isinstance(opt, torch.optim.Optimizer):
            raise ValueError(
                f"optimizer factory must return a torch.optim.Optimizer, got {type(opt).__name__}"
            )
    separate_prox = use_prox and opt_name != "fista"

    # ---------------------------------------------------------------- measurement helpers
    eval_chunk = n_train if batch_size is None else batch_size

    def regularizer_value() -> float:
        total = 0.0
        with torch.no_grad():
            if penalty is not None:
                total += float(penalty.penalty(penalized))
            if weight_decay:
                total += 0.5 * weight_decay * sum(float(p.pow(2).sum()) for p in decayed)
        return total

    def measure() -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                train = _mean_loss(model, loss_fn, X, y, eval_chunk)
                out = {"train_loss": train, "objective": train + regularizer_value()}
                if val is not None:
                    out["val_loss"] = _mean_loss(model, loss_fn, val[0], val[1],
                                                 eval_chunk if batch_size else len(val[0]))
        finally:
            model.train(was_training)
        return out

    def record(s: int, values: dict[str, float]) -> None:
        history.step.append(s)
        history.train_loss.append(values["train_loss"])
        history.objective.append(values["objective"])
        if val is not None:
            history.val_loss.append(values["val_loss"])

    def snapshot(s: int) -> None:
        if record_every is not None and (not history.snapshots or history.snapshots[-1][0] != s):
            history.snapshots.append((s, flatten_params(model).cpu()))

    def batch_objective(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = _checked_loss(loss_fn(model(xb), yb))
        if penalty is not None:
            extra = penalty.smooth_penalty(penalized) if proximal else penalty.penalty(penalized)
            loss = loss + extra
        return loss

    config = {
        "optimizer": opt_name, "lr": lr, "momentum": momentum, "batch_size": batch_size,
        "weight_decay": weight_decay, "decoupled": decoupled,
        "penalty": None if penalty is None else repr(penalty), "proximal": proximal,
        "penalty_params": penalty_params, "eval_every": eval_every, "seed": seed,
    }
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    perm: torch.Tensor | None = None
    history = History()
    step = 0
    finished = False

    def make_state() -> dict[str, Any]:
        rng: dict[str, Any] = {"batch": generator.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        history.steps_done = step
        return {
            "format": CHECKPOINT_FORMAT,
            "version": _CHECKPOINT_VERSION,
            "parameters": _param_signature(model),
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "early_stopping": None if early_stopping is None else early_stopping.state_dict(),
            "history": history.to_dict(),
            "step": step,
            "finished": finished,
            "perm": perm,
            "rng": rng,
            "config": config,
        }

    def checkpoint_now() -> None:
        assert checkpoint_dir is not None
        save_checkpoint(make_state(), checkpoint_dir / CHECKPOINT_NAME)

    # ---------------------------------------------------------------- resume
    if checkpoint_dir is not None:
        if not resume:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
        elif not checkpoint_dir.is_dir():
            raise ValueError(f"resume=True but checkpoint_dir {str(checkpoint_dir)!r} "
                             "does not exist")
        remove_stale_temporaries(checkpoint_dir)
    if resume:
        try:
            state = load_checkpoint(checkpoint_dir)
        except CheckpointError as exc:
            raise type(exc)(f"resume=True with checkpoint_dir {str(checkpoint_dir)!r}: {exc}") \
                from exc
        if state.get("version") != _CHECKPOINT_VERSION or "parameters" not in state:
            raise CheckpointError(f"checkpoint_dir {str(checkpoint_dir)!r}: unsupported "
                                  f"checkpoint version {state.get('version')!r}")
        if state["parameters"] != _param_signature(model):
            raise CheckpointError(
                f"checkpoint_dir {str(checkpoint_dir)!r} holds a checkpoint of another model: "
                f"its parameters {state['parameters'][:4]}... do not match this model's "
                f"{_param_signature(model)[:4]}..."
            )
        changed = {k: (state["config"].get(k), v) for k, v in config.items()
                   if state["config"].get(k) != v}
        if changed:
            warnings.warn(
                "resuming with settings that differ from the checkpoint's (saved, now): "
                f"{changed}; the optimizer's saved hyperparameters are used and the result "
                "is not the uninterrupted run's",
                UserWarning,
                stacklevel=2,
            )
        if state["step"] > total_steps:
            raise ValueError(f"checkpoint is at step {state['step']} but the run asks for "
                             f"steps={total_steps}")
        if (early_stopping is None) != (state["early_stopping"] is None):
            raise ValueError(
                "early_stopping must match the checkpoint: it was saved "
                f"{'without' if state['early_stopping'] is None else 'with'} early stopping"
            )
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            if early_stopping is not None:
                early_stopping.load_state_dict(state["early_stopping"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint_dir {str(checkpoint_dir)!r}: the checkpoint does not fit this "
                f"model/optimizer/early stopping ({exc})"
            ) from exc
        history = History.from_dict(state["history"])
        step = int(state["step"])
        perm = state["perm"]
        generator.set_state(state["rng"]["batch"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        finished = bool(state["finished"]) and (history.stop_reason is not None
                                                 or step >= total_steps)
    elif early_stopping is not None:
        # A fresh run starts a fresh early stopping, as Keras' on_train_begin does.
        early_stopping.reset()

    # ---------------------------------------------------------------- loop
    was_training = model.training
    model.train()
    bar = _Progress(progress, total_steps, step)

    def evaluate(s: int, *, check: bool) -> bool:
        """Record at step s; True when the run must stop."""
        values = measure()
        record(s, values)
        stop = False
        if not math.isfinite(values["train_loss"]):
            history.stop_reason = "non-finite"
            stop = True
        if check and early_stopping is not None and not stop:
            if early_stopping.update(values[early_stopping.monitor], model, step=s):
                reason = early_stopping.reason
                history.stop_reason = str(getattr(reason, "value", reason))
                stop = True
        if bar.active:
            best = getattr(early_stopping, "best", None)
            bar.update(s, loss=values["train_loss"], val=values.get("val_loss", "-"),
                       best="-" if best is None else best)
        return stop

    try:
        if not finished:
            if step == 0 and not history.step:
                snapshot(0)
                finished = evaluate(0, check=True)
            while not finished and step < total_steps:
                if full_batch:
                    xb, yb = X, y
                else:
                    position = step % batches_per_epoch
                    if position == 0 or perm is None:
                        perm = torch.randperm(n_train, generator=generator)
                    idx = perm[position * batch_size : (position + 1) * batch_size].to(X.device)
                    xb, yb = X[idx], y[idx]

                if opt_name == "fista":
                    def closure(xb=xb, yb=yb) -> torch.Tensor:
                        opt.zero_grad(set_to_none=True)
                        loss = batch_objective(xb, yb)
                        if torch.isfinite(loss):
                            loss.backward()
                        return loss

                    loss = opt.step(closure)
                else:
                    opt.zero_grad(set_to_none=True)
                    loss = batch_objective(xb, yb)
                if not bool(torch.isfinite(loss.detach())):
                    # The weights that produced it are kept as they are; no step, no save.
                    # (FISTA's step already refused to move on a non-finite loss.)
                    history.stop_reason = "non-finite"
                    if not history.step or history.step[-1] != step:
                        evaluate(step, check=False)
                    break
                if opt_name != "fista":
                    loss.backward()
                    with torch.no_grad():
                        for g in opt.param_groups:
                            wd = g.get("decaylab_decoupled_decay", 0.0)
                            if wd:
                                for p in g["params"]:
                                    p.mul_(1.0 - g["lr"] * wd)
                    opt.step()
                    if separate_prox:
                        with torch.no_grad():
                            for g in opt.param_groups:
                                group_prox(g["params"], g["lr"])
                step += 1
                on_grid = step % eval_every == 0
                if on_grid or step == total_steps:
                    if evaluate(step, check=on_grid):
                        break
                elif bar.active:
                    bar.update(step)
                if record_every is not None and step % record_every == 0:
                    snapshot(step)
                if (checkpoint_dir is not None and step % checkpoint_every == 0
                        and step < total_steps):
                    if not _all_finite(trainable):
                        history.stop_reason = "non-finite"
                        break
                    checkpoint_now()
            snapshot(step)
            history.steps_done = step
            if early_stopping is not None:
                history.best_step = early_stopping.best_step
            finished = True
            if checkpoint_dir is not None and history.stop_reason != "non-finite":
                if _all_finite(trainable):
                    checkpoint_now()
                else:
                    history.stop_reason = "non-finite"
    finally:
        bar.close()
        model.train(was_training)
    if early_stopping is not None:
        # history.best_step was set before the final save (or came with a finished checkpoint).
        early_stopping.on_train_end(model)
    return history
