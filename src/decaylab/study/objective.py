"""A task seen as functions of one flat parameter vector ``w`` (float64 by default).

``J(w)`` is the mean training loss; the penalized objectives of the study are
``J(w) + (α/2) ‖D (w − c)‖²`` with ``D`` the 0/1 mask of the decayed parameters (those
:func:`decaylab.regularize.param_groups` decays: biases and normalization layers are not)
and ``c`` the centre (zero for weight decay, the initialization for the early-stopping
equivalence). Flat order: ``model.named_parameters()`` (the conventions).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

from decaylab.regularize import param_groups
from decaylab.tasks import Task

__all__ = ["Objective"]


class Objective:
    """``J``, its gradient and the validation loss as functions of a flat vector.

    Attributes
    ----------
    model : nn.Module
        The seeded, validated model (its own weights are never changed here).
    names : list of str
        Trainable parameter names in flat order.
    w_init : torch.Tensor
        The task's initialization (seeded), flat.
    mask : torch.Tensor
        1.0 on decayed entries, 0.0 elsewhere.
    decayed_names : list of str
    """

    def __init__(self, task: Task, seed: int, dtype: torch.dtype = torch.float64) -> None:
        self.task = task
        self.model: nn.Module = task.validate(seed).to(dtype)
        self.dtype = dtype
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.w_init = torch.cat([p.detach().reshape(-1) for _, p in named]).clone()
        groups = param_groups(self.model, 1.0)
        decayed = set(groups[0]["names"]) if groups[0]["weight_decay"] > 0 else set()
        self.decayed_names = [n for n in self.names if n in decayed]
        self.mask = torch.cat(
            [
                torch.full((s,), float(n in decayed), dtype=dtype)
                for n, s in zip(self.names, self.sizes, strict=True)
            ]
        )
        self.train = self._cast(task.train)
        self.val = self._cast(task.val)

    def _cast(self, data: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        X, y = data
        return X.to(self.dtype), (y.to(self.dtype) if y.is_floating_point() else y)

    @property
    def n_params(self) -> int:
        return int(self.w_init.numel())

    def unflatten(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            n: t.view(s)
            for n, t, s in zip(self.names, torch.split(w, self.sizes), self.shapes, strict=True)
        }

    def loss(self, w: torch.Tensor, split: str = "train") -> torch.Tensor:
        """Mean data loss at ``w`` on ``"train"`` or ``"val"`` (differentiable)."""
        X, y = self.train if split == "train" else self.val
        return self.task.loss_fn(functional_call(self.model, self.unflatten(w), (X,)), y)

    def penalized(
        self, alpha: float, center: torch.Tensor | None = None
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``w ↦ J(w) + (α/2) ‖D (w − center)‖²`` (center 0 by default)."""

        def f(w: torch.Tensor) -> torch.Tensor:
            d = w if center is None else w - center
            return self.loss(w) + 0.5 * alpha * torch.sum(self.mask * d * d)

        return f

    def value(self, w: torch.Tensor, split: str = "train") -> float:
        with torch.no_grad():
            return float(self.loss(w, split))

    def grad(self, fn: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor) -> torch.Tensor:
        w = w.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(w), w)
        return g.detach()

    def model_at(self, w: torch.Tensor) -> nn.Module:
        """A copy of the model holding the weights ``w`` (for the curvature operators)."""
        import copy

        model = copy.deepcopy(self.model)
        with torch.no_grad():
            for (_, p), t in zip(
                ((n, p) for n, p in model.named_parameters() if p.requires_grad),
                torch.split(w, self.sizes),
                strict=True,
            ):
                p.copy_(t.view_as(p))
        return model
