"""Which samples each step sees: the full batch, or minibatches of a per-epoch permutation."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["Batches"]


class Batches:
    """The batch of every step, reproducible from ``seed`` and resumable from a checkpoint.

    Full batch when ``batch_size`` is ``None`` or ``≥ N``. Otherwise step ``s`` takes the
    ``(s mod B)``-th slice of ``batch_size`` samples (``B = ceil(N / batch_size)``, the last
    slice may be smaller) of a permutation drawn from a ``torch.Generator`` seeded with
    ``seed`` at the first step of each epoch (and after a resume that has none).

    Examples
    --------
    >>> import torch
    >>> X = torch.arange(5.0)[:, None]; y = torch.arange(5.0)
    >>> b = Batches(X, y, batch_size=2, seed=0)
    >>> b.per_epoch, sorted(torch.cat([b.batch(s)[1] for s in range(3)]).tolist())
    (3, [0.0, 1.0, 2.0, 3.0, 4.0])
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, batch_size: int | None, seed: int) -> None:
        self.X, self.y = X, y
        self.n = len(X)
        self.full = batch_size is None or batch_size >= self.n
        self.batch_size = self.n if batch_size is None else batch_size
        self.per_epoch = 1 if self.full else math.ceil(self.n / self.batch_size)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self.perm: torch.Tensor | None = None

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X_b, y_b)`` for the step that follows ``step`` completed steps."""
        if self.full:
            return self.X, self.y
        position = step % self.per_epoch
        if position == 0 or self.perm is None:
            self.perm = torch.randperm(self.n, generator=self.generator)
        size = self.batch_size
        idx = self.perm[position * size : (position + 1) * size].to(self.X.device)
        return self.X[idx], self.y[idx]

    def size(self, step: int) -> int:
        """How many samples :meth:`batch` gives at ``step`` (an epoch's last slice may be
        smaller), without drawing the permutation."""
        if self.full:
            return self.n
        return min(self.batch_size, self.n - (step % self.per_epoch) * self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        """The permutation in use and the generator state."""
        return {"perm": self.perm, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.perm = state["perm"]
        self.generator.set_state(state["generator"])
