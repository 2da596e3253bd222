"""Checking :func:`~decaylab.training.fit`'s arguments into one :class:`FitConfig`.

Every refusal is a ``ValueError`` that names the argument, raised before any step.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from decaylab._checks import check_bool
from decaylab._inputs import (
    as_float,
    as_int,
    as_loss,
    as_tensor_pair,
    batch_weight,
    check_target_shape,
    probe_mean_loss,
)
from decaylab.regularize import Penalty
from decaylab.training.evaluation import checked_loss
from decaylab.training.hooks import Callback

__all__ = ["FitConfig", "OPTIMIZER_NAMES"]

OPTIMIZER_NAMES = ("sgd", "adam", "adamw", "fista")
MONITORABLE = ("train_loss", "val_loss", "objective")
DEFAULT_CHECKPOINT_EVERY = 100
_PROBE_SAMPLES = 64  # enough for the mean-loss probe's halves and thirds; cheap
Data = tuple[torch.Tensor, torch.Tensor]


@dataclass
class FitConfig:
    """fit's arguments, checked and normalized (``total_steps`` from ``steps``/``epochs``)."""

    model: nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    train: Data
    val: Data | None
    opt_name: str
    factory: Callable[[list[dict[str, Any]]], torch.optim.Optimizer] | None
    lr: float | str
    momentum: float
    batch_size: int | None
    total_steps: int
    weight_decay: float
    decoupled: bool
    penalty: Penalty | None
    proximal: bool
    penalty_params: str
    early_stopping: Any
    eval_every: int
    checkpoint_dir: Path | None
    checkpoint_every: int
    resume: bool
    seed: int
    progress: bool
    record_every: int | None
    callbacks: Sequence[Callback]

    @property
    def settings(self) -> dict[str, Any]:
        """What a checkpoint records to warn when a resume changes them."""
        return {
            "optimizer": self.opt_name, "lr": self.lr, "momentum": self.momentum,
            "batch_size": self.batch_size, "weight_decay": self.weight_decay,
            "decoupled": self.decoupled,
            "penalty": None if self.penalty is None else repr(self.penalty),
            "proximal": self.proximal, "penalty_params": self.penalty_params,
            "eval_every": self.eval_every, "seed": self.seed,
        }  # fmt: skip

    @property
    def decoupled_by_fit(self) -> bool:
        """fit applies the decoupled decay itself (torch's SGD and factories cannot)."""
        return self.decoupled and self.opt_name in ("sgd", "factory")

    @classmethod
    def check(cls, args: dict[str, Any]) -> FitConfig:
        """Check fit's arguments (a dict keyed by fit's parameter names)."""
        a = dict(args)
        model, loss_fn, train, val = _check_model_and_data(a)
        opt_name, factory, lr, momentum = _check_optimizer(a)
        batch_size, total_steps = _check_schedule(a, len(train[0]), opt_name)
        flags = {k: check_bool(a[k], k) for k in ("decoupled", "proximal", "resume", "progress")}
        penalty = _check_penalty(a, opt_name, flags["proximal"])
        directory, every = _check_checkpointing(a, flags["resume"])
        _check_early_stopping(a["early_stopping"], val)
        return cls(
            model=model, loss_fn=loss_fn, train=train, val=val, opt_name=opt_name,
            factory=factory, lr=lr, momentum=momentum, batch_size=batch_size,
            total_steps=total_steps,
            weight_decay=as_float(a["weight_decay"], "weight_decay", low=0.0),
            penalty=penalty, penalty_params=a["penalty_params"],
            early_stopping=a["early_stopping"],
            eval_every=as_int(a["eval_every"], "eval_every", low=1),
            checkpoint_dir=directory, checkpoint_every=every,
            seed=as_int(a["seed"], "seed"),
            record_every=_optional_int(a["record_every"], "record_every"),
            callbacks=_check_callbacks(a["callbacks"]), **flags,
        )  # fmt: skip


def _optional_int(value: Any, name: str, low: int = 1) -> int | None:
    return None if value is None else as_int(value, name, low=low)


def _check_model_and_data(a: dict[str, Any]) -> tuple[nn.Module, Any, Data, Data | None]:
    model = a["model"]
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    loss_fn = as_loss(a["loss_fn"], "loss_fn")  # names → modules; refuses reduction != "mean"
    if isinstance(a["loss_fn"], nn.Module):
        loss_fn = a["loss_fn"]  # the caller's own module, exactly as given
    train = as_tensor_pair(a["train_data"], "train_data")
    val = None if a["val_data"] is None else as_tensor_pair(a["val_data"], "val_data")
    for data, name in ((train, "train_data"), (val, "val_data")):
        if data is not None:
            _probe(model, loss_fn, data, name)
    return model, loss_fn, train, val


def _probe(model: nn.Module, loss_fn: Any, data: Data, name: str) -> None:
    """Target shapes and the mean-loss probe on the first samples, before any step.

    The forward pass runs in ``eval()`` mode without gradients, so it draws no dropout
    randomness and updates no batch-norm statistics: the run that follows is unchanged.
    """
    X, y = data
    if batch_weight(loss_fn, y) == 0:
        raise ValueError(
            f"{name}: every target is ignored (ignore_index) or has class weight 0, so its "
            "mean loss is 0/0"
        )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            prediction = model(X[:_PROBE_SAMPLES])
    finally:
        model.train(was_training)
    target = y[:_PROBE_SAMPLES]
    if isinstance(prediction, torch.Tensor):
        _check_no_broadcast(loss_fn, prediction, target, name)
        probe_mean_loss(loss_fn, prediction, target, "loss_fn")


def _check_no_broadcast(
    loss_fn: Any, prediction: torch.Tensor, target: torch.Tensor, name: str
) -> None:
    """Refuse prediction/target shapes that ``loss_fn`` would broadcast against each other.

    Equal element counts in different shapes (``(N, 1)`` against ``(N,)``) are tried: the loss
    of distinct predictions in their own shape must equal that of the same predictions
    reshaped to the target's (a loss such as :func:`half_mse` that reshapes passes; one that
    compares every prediction with every target does not). Other mismatches go through
    :func:`decaylab._inputs.check_target_shape`.
    """
    if not target.is_floating_point() or prediction.shape == target.shape:
        return
    if prediction.numel() != target.numel() or target.numel() < 2:
        check_target_shape(prediction, target, name, loss_fn=loss_fn)
        return
    distinct = torch.arange(prediction.numel(), dtype=prediction.dtype, device=prediction.device)
    spread = prediction + 0.1 * distinct.reshape(prediction.shape)
    shapes = f"predictions of shape {tuple(prediction.shape)}, targets y {tuple(target.shape)}"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's own broadcast warning
        try:
            as_is = float(checked_loss(loss_fn(spread, target)))
        except (ValueError, RuntimeError) as exc:  # a loss that refuses the shapes itself
            raise ValueError(f"{name}: loss_fn refuses the {shapes} ({exc})") from exc
        reshaped = float(checked_loss(loss_fn(spread.reshape(target.shape), target)))
    if not math.isclose(as_is, reshaped, rel_tol=1e-6, abs_tol=1e-12):
        grown = tuple(torch.broadcast_shapes(prediction.shape, target.shape))
        raise ValueError(
            f"{name}: the model's predictions have shape {tuple(prediction.shape)} but the "
            f"targets y have shape {tuple(target.shape)}, and loss_fn broadcasts them to "
            f"{grown} (it compares every prediction with every target). Reshape y to "
            f"{tuple(prediction.shape)} (e.g. y.reshape(-1, 1) for one output)"
        )


def _check_optimizer(a: dict[str, Any]) -> tuple[str, Any, float | str, float]:
    optimizer = a["optimizer"]
    factory = None
    if isinstance(optimizer, str):
        opt_name = optimizer.lower()
        if opt_name not in OPTIMIZER_NAMES:
            raise ValueError(
                f"optimizer must be one of {OPTIMIZER_NAMES} or a callable, got {optimizer!r}"
            )
    elif isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer):
        raise ValueError(
            f"optimizer must be a name or a factory, got the class {optimizer.__name__}, which "
            "fit would call with the parameter groups only (lr and momentum ignored); pass "
            f"optimizer=lambda groups: {optimizer.__name__}(groups, lr=...)"
        )
    elif callable(optimizer):
        opt_name, factory = "factory", optimizer
    else:
        raise ValueError(f"optimizer must be a name or a callable, got {optimizer!r}")
    lr = a["lr"]
    if isinstance(lr, str):
        if lr != "auto" or opt_name != "fista":
            raise ValueError(f"lr must be a positive number ('auto' only with fista), got {lr!r}")
    else:
        lr = as_float(lr, "lr", low=0.0, low_open=True)
    momentum = as_float(a["momentum"], "momentum", low=0.0, high=1.0)
    if momentum == 1.0:
        raise ValueError("momentum must be < 1 (1 never forgets a gradient), got 1.0")
    if momentum and opt_name != "sgd":
        raise ValueError(
            f"momentum={momentum!r} applies only to optimizer='sgd', got optimizer={optimizer!r}"
        )
    return opt_name, factory, lr, momentum


def _check_schedule(a: dict[str, Any], n_train: int, opt_name: str) -> tuple[int | None, int]:
    steps, epochs = a["steps"], a["epochs"]
    if (steps is None) == (epochs is None):
        raise ValueError(
            f"give exactly one of steps and epochs, got steps={steps!r}, epochs={epochs!r}"
        )
    batch_size = _optional_int(a["batch_size"], "batch_size")
    full_batch = batch_size is None or batch_size >= n_train
    if opt_name == "fista" and not full_batch:
        raise ValueError(
            f"batch_size must be None for optimizer='fista' (full-batch method), got {batch_size!r}"
        )
    if steps is not None:
        return batch_size, as_int(steps, "steps", low=1)
    per_epoch = 1 if full_batch else math.ceil(n_train / batch_size)  # type: ignore[operator]
    return batch_size, as_int(epochs, "epochs", low=1) * per_epoch


def _check_penalty(a: dict[str, Any], opt_name: str, proximal: bool) -> Penalty | None:
    penalty = a["penalty"]
    if penalty is not None and not isinstance(penalty, Penalty):
        raise ValueError(f"penalty must be an L1/L2/ElasticNet penalty or None, got {penalty!r}")
    if a["penalty_params"] not in ("decayed", "all"):
        raise ValueError(f"penalty_params must be 'decayed' or 'all', got {a['penalty_params']!r}")
    if opt_name == "fista" and penalty is not None and not proximal:
        raise ValueError(
            "proximal=False is not supported with optimizer='fista' (FISTA is a proximal method)"
        )
    return penalty


def _check_checkpointing(a: dict[str, Any], resume: bool) -> tuple[Path | None, int]:
    directory = a["checkpoint_dir"]
    if directory is None:
        if resume:
            raise ValueError("resume=True needs checkpoint_dir, got checkpoint_dir=None")
        if a["checkpoint_every"] is not None:
            raise ValueError("checkpoint_every needs checkpoint_dir, got checkpoint_dir=None")
    every = _optional_int(a["checkpoint_every"], "checkpoint_every")
    return (
        None if directory is None else Path(directory),
        DEFAULT_CHECKPOINT_EVERY if every is None else every,
    )


def _check_early_stopping(early_stopping: Any, val: Data | None) -> None:
    if early_stopping is None:
        return
    for attr in ("update", "on_train_end", "monitor", "state_dict", "load_state_dict"):
        if not hasattr(early_stopping, attr):
            raise ValueError(
                f"early_stopping must be an EarlyStopping, got {type(early_stopping).__name__}"
            )
    monitor = early_stopping.monitor
    available = [m for m in MONITORABLE if m != "val_loss" or val is not None]
    if monitor not in available:
        hint = " (val_loss needs val_data)" if monitor == "val_loss" else ""
        raise ValueError(
            f"early_stopping monitor {monitor!r} is not recorded by fit{hint}; "
            f"available: {available}"
        )


def _check_callbacks(callbacks: Any) -> list[Callback]:
    if isinstance(callbacks, Callback) or not isinstance(callbacks, (list, tuple)):
        raise ValueError(
            f"callbacks must be a list or tuple of Callback, got {type(callbacks).__name__}"
        )
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise ValueError(
                "callbacks must contain decaylab.training.Callback instances, got "
                f"{type(cb).__name__}"
            )
    return list(callbacks)
