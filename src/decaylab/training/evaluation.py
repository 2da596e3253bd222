"""Losses and evaluation: :func:`half_mse`, the whole-set mean loss, the :class:`Evaluator`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from decaylab.training.regularization import Regularization

__all__ = ["Evaluator", "checked_loss", "half_mse", "mean_loss"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``weight(loss_fn, target)``: the normalizer a mean-reduced loss divides this batch by.
WeightFn = Callable[[LossFn, torch.Tensor], float]


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


def checked_loss(loss: Any) -> torch.Tensor:
    """``loss`` itself when it is a 0-d tensor, else a ``ValueError`` naming ``loss_fn``."""
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise ValueError(
            "loss_fn must return a 0-d tensor (the mean loss over the batch), got "
            f"{type(loss).__name__} of shape {tuple(getattr(loss, 'shape', ()))}"
        )
    return loss


def sample_count(loss_fn: LossFn, target: torch.Tensor) -> float:
    """The per-sample normalizer ``N`` (the fallback :data:`WeightFn`)."""
    return len(target)


def mean_loss(
    model: nn.Module,
    loss_fn: LossFn,
    X: torch.Tensor,
    y: torch.Tensor,
    chunk: int,
    weight: WeightFn = sample_count,
    weights: Sequence[float] | None = None,
) -> float:
    r"""The loss of the whole set ``(X, y)`` as one call of ``loss_fn`` would give it.

    Evaluated in chunks of ``chunk`` samples and combined as
    ``Σ_b w_b·ℓ_b / Σ_b w_b``, with ``ℓ_b`` the chunk's mean loss and ``w_b = weight(loss_fn,
    y_b)`` the normalizer ``loss_fn``'s mean divided it by (``N_b`` for a per-sample mean; the
    summed class weights of the non-ignored targets for a weighted / ``ignore_index``
    cross-entropy). A chunk with ``w_b = 0`` (every target ignored) adds nothing. ``weights``:
    the ``w_b`` when the caller has them already (:func:`chunk_weights`).

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Identity()
    >>> X = torch.tensor([1.0, 2.0, 3.0]); y = torch.zeros(3)
    >>> round(mean_loss(model, half_mse, X, y, chunk=2), 12), round(half_mse(X, y).item(), 6)
    (2.333333333333, 2.333333)
    """
    n = len(X)
    if chunk >= n:
        return float(checked_loss(loss_fn(model(X), y)))
    if weights is None:
        weights = chunk_weights(loss_fn, y, chunk, weight)
    total = 0.0
    total_weight: float = 0
    for start, w in zip(range(0, n, chunk), weights, strict=True):
        if w == 0:
            continue
        xb, yb = X[start : start + chunk], y[start : start + chunk]
        total += float(checked_loss(loss_fn(model(xb), yb))) * w
        total_weight += w
    return total / total_weight


def chunk_weights(
    loss_fn: LossFn, y: torch.Tensor, chunk: int, weight: WeightFn = sample_count
) -> list[float]:
    """``weight(loss_fn, y_b)`` of every chunk of ``chunk`` targets, as :func:`mean_loss` uses."""
    return [weight(loss_fn, y[start : start + chunk]) for start in range(0, len(y), chunk)]


class Evaluator:
    """Measures ``train_loss``, ``val_loss`` and ``objective`` at the current weights.

    In ``eval()`` mode (no dropout draws, no batch-norm updates) and without gradients; the
    model's mode is restored afterwards.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        train: tuple[torch.Tensor, torch.Tensor],
        val: tuple[torch.Tensor, torch.Tensor] | None,
        regularization: Regularization,
        *,
        batch_size: int | None,
        weight: WeightFn = sample_count,
    ) -> None:
        self.model, self.loss_fn, self.train, self.val = model, loss_fn, train, val
        self.regularization = regularization
        self.weight = weight
        self.chunk = len(train[0]) if batch_size is None else batch_size
        self.val_chunk = None if val is None else (self.chunk if batch_size else len(val[0]))
        # The chunks' normalizers depend on the data only: computed here, not per measure.
        self.train_weights = chunk_weights(loss_fn, train[1], self.chunk, weight)
        self.val_weights = None
        if val is not None and self.val_chunk is not None:
            self.val_weights = chunk_weights(loss_fn, val[1], self.val_chunk, weight)

    def _loss(
        self, data: tuple[torch.Tensor, torch.Tensor], chunk: int, weights: list[float] | None
    ) -> float:
        return mean_loss(self.model, self.loss_fn, data[0], data[1], chunk, weights=weights)

    def measure(self) -> dict[str, float]:
        """``{"train_loss", "objective"[, "val_loss"]}`` at the model's weights now."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                train = self._loss(self.train, self.chunk, self.train_weights)
                out = {"train_loss": train, "objective": train + self.regularization.value()}
                if self.val is not None:
                    assert self.val_chunk is not None
                    out["val_loss"] = self._loss(self.val, self.val_chunk, self.val_weights)
        finally:
            self.model.train(was_training)
        return out
