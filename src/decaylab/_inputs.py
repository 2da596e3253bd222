"""The one input layer: what every entry point accepts, and what it refuses.

``fit``, the curvature operators, the study and the advisor take data, losses and
numbers through these functions, so they accept the same forms (tensors or numpy
arrays, loss names or modules or callables) and refuse the same mistakes, each with a
``ValueError`` that names the argument, before any compute.

The mean loss over all samples
------------------------------
A loss's ``"mean"`` divides the batch's summed loss by a normalizer ``W_b`` (its
:func:`batch_weight`): the number of samples for most losses, but the total class weight
``Σ_n weight[y_n]`` over targets ``y_n != ignore_index`` for ``CrossEntropyLoss`` and
``NLLLoss``. The mean over all the data, computed in one call, is then

.. math:: L = \\frac{\\sum_b W_b L_b}{\\sum_b W_b},

however the data is split into batches ``b`` (a batch with ``W_b = 0``, all targets
ignored, contributes nothing). :func:`probe_mean_loss` checks once that a custom
callable really is such a mean.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from decaylab._losses import HalfMSELoss, MSELossForwardAD

__all__ = [
    "as_tensor_pair",
    "check_finite",
    "as_loss",
    "probe_mean_loss",
    "check_additive",
    "scalar_loss",
    "batch_weight",
    "known_normalizer",
    "check_target_shape",
    "as_float",
    "as_int",
    "loss_to",
    "LOSS_NAMES",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Loss names accepted everywhere, and the module each stands for.
LOSS_NAMES: dict[str, Callable[[], nn.Module]] = {
    "half_mse": HalfMSELoss,
    "half_squared_error": HalfMSELoss,
    "mse": MSELossForwardAD,
    "cross_entropy": nn.CrossEntropyLoss,
    "bce_with_logits": nn.BCEWithLogitsLoss,
}

# Reductions that are a mean over samples ("batchmean": KLDivLoss's per-sample mean).
_MEAN_REDUCTIONS = ("mean", "batchmean")

# torch losses that compare prediction and target element by element (a shape mismatch
# broadcasts silently or is a mistake).
_ELEMENTWISE = (
    nn.MSELoss,
    nn.L1Loss,
    nn.HuberLoss,
    nn.SmoothL1Loss,
    nn.BCELoss,
    nn.BCEWithLogitsLoss,
    nn.SoftMarginLoss,
    HalfMSELoss,
)

# Relative rounding allowed when comparing two ways of computing one mean loss.
_PROBE_RTOL = {torch.float64: 1e-9, torch.float32: 1e-4}
_PROBE_RTOL_LOW = 2e-2


# --------------------------------------------------------------------------- numbers


def _real(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if value.ndim != 0 or value.dtype == torch.bool or value.dtype == np.bool_:
            raise ValueError(f"{name} must be a real number, got {value!r}")
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return result


def as_float(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """``value`` as a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``).

    Strings, bools, NaN and infinities are refused (``ValueError`` naming ``name``).

    >>> as_float(np.float32(0.5), "lr", low=0, low_open=True)
    0.5
    >>> as_float("0.1", "alpha")
    Traceback (most recent call last):
    ...
    ValueError: alpha must be a real number, got '0.1'
    """
    result = _real(value, name)
    if low is not None and (result < low or (low_open and result == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and result > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")
    return result


def as_int(value: Any, name: str, *, low: int | None = None) -> int:
    """``value`` as an int ``>= low``; integral floats (``1e3``) pass, ``2.5`` and bools do not.

    >>> as_int(np.int64(3), "k", low=1)
    3
    """
    result = _real(value, name)
    if not result.is_integer():
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if low is not None and result < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return int(result)


# --------------------------------------------------------------------------- data


def check_finite(tensor: torch.Tensor, name: str) -> None:
    """``ValueError`` when a floating tensor holds NaN or inf (integer tensors pass)."""
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return
    bad = ~torch.isfinite(tensor)
    if bool(bad.any()):
        kinds = "NaN" if bool(torch.isnan(tensor).any()) else "inf"
        if kinds == "NaN" and bool(torch.isinf(tensor).any()):
            kinds = "NaN and inf"
        raise ValueError(
            f"{name} contains {kinds} ({int(bad.sum())} of {tensor.numel()} entries); "
            "remove or impute them first"
        )


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{name} must hold numbers, got a numpy array of dtype {value.dtype}")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        return value.detach()
    raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")


def as_tensor_pair(
    data: Any,
    name: str,
    *,
    dtype: torch.dtype | None = None,
    device: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``data = (X, y)`` as two tensors with the same first dimension ``N >= 1``, all finite.

    Numpy arrays become tensors. Floating ``X`` and ``y`` are converted to ``dtype`` when
    given; integer ``X`` (indices for an embedding) and integer ``y`` (class labels) keep
    their dtype. Both move to ``device`` when given.

    >>> X, y = as_tensor_pair((np.zeros((3, 2)), np.arange(3)), "train_data", dtype=torch.float32)
    >>> X.dtype, y.dtype, tuple(X.shape)
    (torch.float32, torch.int64, (3, 2))
    """
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        got = type(data).__name__ + (
            f" of length {len(data)}" if isinstance(data, (tuple, list)) else ""
        )
        raise ValueError(f"{name} must be an (X, y) pair, got {got}")
    X = _as_tensor(data[0], f"{name}: X")
    y = _as_tensor(data[1], f"{name}: y")
    if X.ndim == 0 or y.ndim == 0 or X.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name}: X of shape {tuple(X.shape)} and y of shape {tuple(y.shape)} must share "
            "their first (sample) dimension"
        )
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: X has 0 samples")
    if X.dtype == torch.bool:
        raise ValueError(f"{name}: X must be numeric, got dtype {X.dtype}")
    X, y = (
        t.to(device=device, dtype=dtype if (dtype is not None and t.is_floating_point()) else None)
        for t in (X, y)
    )
    check_finite(X, f"{name} (X)")
    check_finite(y, f"{name} (y)")
    return X, y


def check_target_shape(
    prediction: torch.Tensor,
    target: torch.Tensor,
    name: str = "train_data",
    *,
    loss_fn: Any = None,
) -> None:
    """Refuse floating targets whose shape would silently broadcast against the prediction.

    With an element-wise torch loss (MSE, ½ MSE, L1, Huber, BCE, ...; ``loss_fn`` given)
    any shape difference is refused. Otherwise only a difference that broadcasting would
    *expand* (``(N, 1)`` against ``(N,)`` makes ``(N, N)``) is refused. Integer targets
    (class labels) are left to the loss.
    """
    if not target.is_floating_point() or prediction.shape == target.shape:
        return
    p, t = tuple(prediction.shape), tuple(target.shape)
    strict = isinstance(loss_fn, _ELEMENTWISE) or (
        isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss))
    )
    try:
        grown = tuple(torch.broadcast_shapes(p, t))
    except RuntimeError:
        grown = None  # the loss itself will refuse them
    if strict or (grown is not None and grown != p and grown != t):
        raise ValueError(
            f"{name}: the model's predictions have shape {p} but the targets y have shape {t}; "
            f"they would be broadcast to {grown} and compared pairwise. Reshape y to {p} "
            "(e.g. y.reshape(-1, 1) for one output)"
        )


# --------------------------------------------------------------------------- losses


def as_loss(loss: Any, name: str = "loss_fn") -> LossFn:
    """A loss name, ``nn.Module`` loss or callable as a callable returning the batch **mean**.

    Names: ``"half_mse"`` (:class:`~decaylab._losses.HalfMSELoss`, ½ squared error per
    sample), ``"mse"`` (``nn.MSELoss``, mean over all elements), ``"cross_entropy"``,
    ``"bce_with_logits"``. A torch loss must use ``reduction="mean"``. ``nn.MSELoss`` is
    replaced by an equal one that torch can differentiate in forward mode.

    >>> type(as_loss("half_mse")).__name__
    'HalfMSELoss'
    >>> as_loss(torch.nn.MSELoss(reduction="sum"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: loss_fn has reduction='sum'; decaylab needs the mean over the batch: ...
    """
    if isinstance(loss, str):
        key = loss.lower()
        if key not in LOSS_NAMES:
            raise ValueError(
                f"{name} must be one of {sorted(LOSS_NAMES)} or a callable, got {loss!r}"
            )
        return LOSS_NAMES[key]()
    if not callable(loss):
        raise ValueError(f"{name} must be a callable or a loss name, got {loss!r}")
    reduction = getattr(loss, "reduction", "mean")
    if reduction not in _MEAN_REDUCTIONS:
        raise ValueError(
            f"{name} has reduction={reduction!r}; decaylab needs the mean over the batch: "
            "pass the same loss with reduction='mean'"
        )
    if type(loss) is nn.MSELoss:
        return MSELossForwardAD()
    return loss


def known_normalizer(loss_fn: Any) -> bool:
    """Whether :func:`batch_weight` knows ``loss_fn``'s normalizer beyond "``N`` samples".

    True for ``CrossEntropyLoss``/``NLLLoss`` and for callables with a ``batch_weight``
    method; for other losses the count ``N`` is assumed and :func:`check_additive` checks it.
    """
    return isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)) or callable(
        getattr(loss_fn, "batch_weight", None)
    )


def batch_weight(loss_fn: Any, target: torch.Tensor) -> float:
    """The normalizer ``W`` that ``loss_fn``'s mean divides this batch's summed loss by.

    - ``CrossEntropyLoss``/``NLLLoss`` with class-index targets: ``Σ weight[y_n]`` over
      the targets ``!= ignore_index`` (their count without ``weight``);
    - a callable with a ``batch_weight(target)`` method: what it returns;
    - anything else (and probability targets): the number of samples ``N``.

    The mean loss over all data is ``Σ_b W_b L_b / Σ_b W_b``; a batch whose targets are
    all ignored has ``W = 0``.

    >>> ce = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 10.0]), ignore_index=-1)
    >>> batch_weight(ce, torch.tensor([0, 1, 1, -1]))
    21.0
    """
    custom = getattr(loss_fn, "batch_weight", None)
    if callable(custom) and not isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)):
        return as_float(custom(target), "loss_fn.batch_weight(target)", low=0)
    n = float(target.shape[0]) if target.ndim else 1.0
    if not isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)):
        return n
    if target.is_floating_point():  # class probabilities: torch divides by N
        return n
    kept = target[target != loss_fn.ignore_index]
    if loss_fn.weight is None:
        return float(kept.numel())
    weight = loss_fn.weight.detach().to(device=kept.device, dtype=torch.float64)
    return float(weight[kept].sum())


def _probe_rtol(dtype: torch.dtype) -> float:
    return _PROBE_RTOL.get(dtype, _PROBE_RTOL_LOW)


def scalar_loss(
    loss_fn: LossFn, prediction: torch.Tensor, target: torch.Tensor, name: str = "loss_fn"
) -> torch.Tensor:
    """``loss_fn(prediction, target)``, refused unless it is a one-element tensor (a mean)."""
    value = loss_fn(prediction, target)
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name} must return a scalar (the mean loss over the batch), got {got}")
    return value


def _scalar_loss(
    loss_fn: LossFn, prediction: torch.Tensor, target: torch.Tensor, name: str
) -> float:
    return float(scalar_loss(loss_fn, prediction, target, name).detach().reshape(()))


def _close(a: float, b: float, scale: float, dtype: torch.dtype) -> bool:
    return abs(a - b) <= _probe_rtol(dtype) * scale + 1e-300


def check_additive(
    loss_fn: LossFn,
    prediction: torch.Tensor,
    target: torch.Tensor,
    name: str = "loss_fn",
    *,
    mean: float | None = None,
) -> None:
    """Check ``W·L = W₁L₁ + W₂L₂`` when the batch is cut in two (at a third and at half).

    ``W`` is :func:`batch_weight`. This holds for a mean normalized as
    :func:`batch_weight` says; a loss that divides by something else (a callable with
    class weights or an ignored label inside) fails it, and is refused with a message
    that says how to pass it. Cheap: a few loss evaluations on given predictions.
    ``mean``: ``L``, the loss on the whole batch, when the caller has it already.
    """
    n = prediction.shape[0] if prediction.ndim else 0
    if n < 2 or target.ndim == 0 or target.shape[0] != n:
        return
    with torch.no_grad():
        total = batch_weight(loss_fn, target)
        if mean is None or total == 0.0:
            whole = _weighted(loss_fn, prediction, target, total, name)
        else:
            whole = total * mean
        if not math.isfinite(whole):
            return  # a non-finite loss is the caller's to report
        for cut in sorted({max(1, n // 3), n // 2}):
            parts = [
                _weighted(loss_fn, prediction[s], target[s], batch_weight(loss_fn, target[s]), name)
                for s in (slice(0, cut), slice(cut, n))
            ]
            if not _close(whole, sum(parts), abs(whole) + sum(map(abs, parts)), prediction.dtype):
                raise ValueError(
                    f"{name}: its batch mean is not normalized by the number of samples (a batch "
                    f"cut in two gives W·L = {whole:.6g}, but the parts give {sum(parts):.6g}), "
                    "so batches cannot be combined into the mean over all data. If it weights "
                    "classes or ignores a label, pass torch.nn.CrossEntropyLoss(weight=..., "
                    "ignore_index=...) (or NLLLoss) instead of a function, or give the callable "
                    "a batch_weight(target) method returning the number its mean divides by"
                )


def _weighted(
    loss_fn: LossFn, prediction: torch.Tensor, target: torch.Tensor, weight: float, name: str
) -> float:
    """``W·L`` of one batch; ``0`` for a batch of weight 0 (its mean is 0/0)."""
    if weight == 0.0:
        return 0.0
    return weight * _scalar_loss(loss_fn, prediction, target, name)


def probe_mean_loss(
    loss_fn: LossFn,
    prediction: torch.Tensor,
    target: torch.Tensor,
    name: str = "loss_fn",
    *,
    mean: float | None = None,
) -> None:
    """Check once, cheaply, that ``loss_fn`` returns the batch **mean**.

    A mean is unchanged when every sample is duplicated; a sum doubles. A sum (or any
    other scaling with the batch size) is refused with a message that says to divide by
    the count. Then :func:`check_additive` checks the normalizer. ``prediction`` is the
    model's output on a batch (detached here); ``mean``, the loss on it when the caller
    has it already.
    """
    prediction = prediction.detach()
    if prediction.ndim == 0 or target.ndim == 0:
        return
    with torch.no_grad():
        once = _scalar_loss(loss_fn, prediction, target, name) if mean is None else mean
        twice = _scalar_loss(
            loss_fn, torch.cat([prediction, prediction]), torch.cat([target, target]), name
        )
    if math.isfinite(once) and not _close(once, twice, abs(once) + abs(twice), prediction.dtype):
        kind = "a sum" if _close(2 * once, twice, abs(twice), prediction.dtype) else "no mean"
        raise ValueError(
            f"{name} returns {kind} over the batch, not the mean: duplicating every sample "
            f"changed its value from {once:.6g} to {twice:.6g} (a mean stays the same). "
            "Divide by the number of samples (reduction='mean' for torch losses)"
        )
    check_additive(loss_fn, prediction, target, name, mean=once)


def loss_to(loss_fn: LossFn, *, dtype: torch.dtype | None = None, device: Any = None) -> LossFn:
    """``loss_fn`` with its tensors (class ``weight``, ``pos_weight``) in ``dtype`` on ``device``.

    A loss module whose floating tensors are elsewhere is copied and converted (the
    caller's module is left alone); other losses come back as they are.

    >>> ce = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 10.0]))
    >>> loss_to(ce, dtype=torch.float64).weight.dtype, ce.weight.dtype
    (torch.float64, torch.float32)
    """
    if not isinstance(loss_fn, nn.Module):
        return loss_fn
    where = torch.device(device) if device is not None else None
    tensors = [*loss_fn.parameters(), *loss_fn.buffers()]
    moves = any(
        (where is not None and t.device != where)
        or (dtype is not None and t.is_floating_point() and t.dtype != dtype)
        for t in tensors
    )
    if not moves:
        return loss_fn
    return copy.deepcopy(loss_fn).to(device=where, dtype=dtype)
