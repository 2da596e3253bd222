"""The :class:`Task` record and the checks every task passes before any compute."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["Task", "loss_name", "seeded_model"]

_STOCHASTIC_LAYERS = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


def _as_pair(data: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, y) of tensors or arrays → tensors (the shared input layer); X must be floating."""
    from decaylab._inputs import as_tensor_pair

    X, y = as_tensor_pair(data, name)
    if not X.is_floating_point():
        raise ValueError(f"{name}: X must be floating point, got {X.dtype}")
    return X.detach(), y.detach()


@dataclass(frozen=True)
class Task:
    """A model to study: ``Task(name=..., model=..., loss_fn=..., train=(X, y), val=(X, y))``.

    Parameters
    ----------
    name : str
        Shown in reports.
    model : callable
        Zero arguments → a fresh ``nn.Module``. decaylab seeds torch (``torch.manual_seed``)
        before calling it, so the initialization is reproducible.
    loss_fn : callable or str
        ``loss_fn(prediction, target)`` → the **mean** loss over the batch (e.g.
        ``nn.CrossEntropyLoss()``, ``decaylab.half_mse``) or one of the names
        ``"half_mse"``, ``"mse"``, ``"cross_entropy"``, ``"bce_with_logits"``.
    train, val : (X, y)
        Tensors (or arrays) with the same first dimension; ``X`` floating, finite.
    description : str
        One sentence for the report.

    Cheap checks (types, shapes, finite data) run at construction; :meth:`validate`
    builds the model once and checks the loss and the model before any training.
    """

    name: str
    model: Callable[[], nn.Module]
    loss_fn: Any
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Task name must be a non-empty string, got {self.name!r}")
        if not callable(self.model) or isinstance(self.model, nn.Module):
            raise ValueError(
                "Task model must be a zero-argument callable returning a fresh nn.Module "
                f"(e.g. a function or a class), got {type(self.model).__name__}"
            )
        from decaylab._inputs import as_loss

        object.__setattr__(self, "loss_fn", as_loss(self.loss_fn, "Task loss_fn"))
        object.__setattr__(self, "train", _as_pair(self.train, "train"))
        object.__setattr__(self, "val", _as_pair(self.val, "val"))
        if not isinstance(self.description, str):
            raise ValueError("Task description must be a string")

    @property
    def n_train(self) -> int:
        return int(self.train[0].shape[0])

    @property
    def n_val(self) -> int:
        return int(self.val[0].shape[0])

    @property
    def n_params(self) -> int:
        """Trainable parameters of a fresh model."""
        return sum(p.numel() for p in seeded_model(self, 0).parameters() if p.requires_grad)

    def validate(self, seed: int = 0) -> nn.Module:
        """Build the model and check it with the loss on two samples; return the model.

        Raises ``ValueError`` when the model is not an ``nn.Module`` without trainable
        parameters, holds Dropout/BatchNorm in training mode (the study needs a
        deterministic objective), its output does not fit the targets, or the loss is not
        a finite **mean** (a sum doubles when the batch is duplicated).
        """
        model = seeded_model(self, seed)
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(f"task {self.name!r}: the model has no trainable parameters")
        for mod_name, mod in model.named_modules():
            if isinstance(mod, _STOCHASTIC_LAYERS) and mod.training:
                raise ValueError(
                    f"task {self.name!r}: module {mod_name!r} ({type(mod).__name__}) is in "
                    "training mode; the study needs a deterministic objective: return "
                    "model.eval() from model() or remove Dropout/BatchNorm"
                )
        X, y = self.train
        X2, y2 = X[:2].to(_param_dtype(model)), y[:2]
        try:
            with torch.no_grad():
                pred = model(X2)
        except Exception as exc:  # the user's model: show its own error
            raise ValueError(
                f"task {self.name!r}: model(X) failed on two training samples: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        from decaylab._inputs import check_target_shape, probe_mean_loss

        check_target_shape(pred, y2, f"task {self.name!r}", loss_fn=self.loss_fn)
        probe_mean_loss(self.loss_fn, pred, y2, f"task {self.name!r}: loss_fn")
        return model

    def fingerprint(self, seed: int = 0) -> str:
        """Hash of the data, the initial weights and the loss: the key of cached results."""
        h = hashlib.sha256(self.name.encode())
        for t in (*self.train, *self.val):
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        for k, v in seeded_model(self, seed).state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().double().contiguous().numpy().tobytes())
        h.update(loss_name(self).encode())
        return h.hexdigest()[:16]


def _param_dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def seeded_model(task: Task, seed: int) -> nn.Module:
    """``torch.manual_seed(seed)`` then ``task.model()``; checked to be an ``nn.Module``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = task.model()
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"task {task.name!r}: model() must return an nn.Module, got {type(model).__name__}"
        )
    return model


def loss_name(task: Task) -> str:
    """A readable name of the task's loss (class name, or function name)."""
    fn = task.loss_fn
    if isinstance(fn, nn.Module):
        return type(fn).__name__
    return getattr(fn, "__name__", type(fn).__name__)
