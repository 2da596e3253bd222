"""Shared argument checks and warning classes.

Every public function validates its inputs through these helpers so that a bad
value always produces a ``ValueError`` that names the argument and shows the
value, and a value the theory cannot vouch for produces a ``TheoryWarning``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np


class TheoryWarning(UserWarning):
    """An assumption of the quadratic theory does not hold for these inputs.

    Raised, for example, when gradient descent would diverge (``lr * lambda_max >= 2``),
    when a Hessian has negative eigenvalues (not a minimum), or when an L1 prediction
    needs a non-positive diagonal curvature.
    """


class ConvergenceWarning(UserWarning):
    """An iterative algorithm stopped before it could certify its answer."""


def _show(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.size > 6:
        return f"array of shape {value.shape}"
    return repr(value)


def _numeric_array(value: Any, name: str) -> np.ndarray:
    """``value`` as a float64 ndarray; strings, bytes and bools are refused, not parsed.

    ``np.asarray("0.1", dtype=float)`` would quietly read a string as 0.1 and ``True`` as 1.0;
    a number given as text or a flag given where a number goes is a caller's mistake.
    """
    if hasattr(value, "detach"):  # torch.Tensor without importing torch here
        if str(value.dtype) == "torch.bool" or value.is_complex():
            raise ValueError(f"{name} must hold real numbers, got a tensor of dtype {value.dtype}")
        value = value.detach().cpu().double().numpy()
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as exc:  # ragged nested lists
        raise ValueError(f"{name} must be numeric array-like, got {_show(value)}") from exc
    if raw.dtype.kind == "O":
        if any(isinstance(v, (str, bytes, bool, np.bool_)) for v in raw.flat):
            raise ValueError(f"{name} must hold numbers, not str or bool, got {_show(value)}")
    elif raw.dtype.kind not in "iuf":
        raise ValueError(
            f"{name} must hold real numbers (not str, bool or complex), got {_show(value)}"
        )
    try:
        return np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric array-like, got {_show(value)}") from exc


def as_float64(
    value: Any,
    name: str,
    *,
    ndim: int | tuple[int, ...] | None = None,
    allow_inf: bool = False,
) -> np.ndarray:
    """Convert an array-like (numpy, torch, list, scalar) to a float64 ndarray without NaN.

    Strings and bools are refused (``ValueError`` naming ``name``), and so is ``inf`` unless
    ``allow_inf`` (``alpha = inf`` is a meaningful limit, a Hessian entry of ``inf`` is not).
    """
    arr = _numeric_array(value, name)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimension(s), "
                f"got shape {arr.shape}"
            )
    if np.any(np.isnan(arr)):
        also = "" if allow_inf else f" ({name} must be finite)"
        raise ValueError(f"{name} must not be NaN{also}, got NaN in {_show(arr)}")
    if not allow_inf and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got NaN or inf in {_show(arr)}")
    return arr


def check_scalar(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
) -> float | int:
    """Check a real scalar lies in a range; return it as float (or int)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        # A 0-d array or tensor holds its number; one holding a bool is a flag, refused too.
        item = value.item() if hasattr(value, "item") and getattr(value, "ndim", 1) == 0 else None
        if item is None or isinstance(item, bool):
            raise ValueError(f"{name} must be a real number, got {value!r}")
        value = item
    if integer and (not float(value).is_integer()):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (value < low or (not low_inclusive and value == low)):
        op = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {op} {low}, got {value!r}")
    if high is not None and (value > high or (not high_inclusive and value == high)):
        op = "<=" if high_inclusive else "<"
        raise ValueError(f"{name} must be {op} {high}, got {value!r}")
    return int(value) if integer else float(value)


def check_bool(value: Any, name: str) -> bool:
    """``value`` itself if it is a ``bool`` (not merely truthy), else ``ValueError``."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def warn_theory(message: str, stacklevel: int = 3) -> None:
    warnings.warn(message, TheoryWarning, stacklevel=stacklevel)
