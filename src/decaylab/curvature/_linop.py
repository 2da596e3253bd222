"""One internal interface for every symmetric operator the curvature routines accept.

:func:`as_linop` turns a decaylab operator (anything with ``matmat`` and ``shape``,
e.g. :class:`~decaylab.curvature.operators.HessianOperator`), a dense symmetric
``torch.Tensor``, a ``numpy.ndarray`` or a ``scipy.sparse.linalg.LinearOperator``
(or scipy sparse matrix) into a :class:`LinOp`. A ``LinOp`` multiplies float64
``(P, m)`` torch blocks on the operator's device, computes each product in the
operator's own dtype, and counts the columns it pushed through in
:attr:`LinOp.n_matvecs`, so every routine reports the products *it* used.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: Dense inputs whose asymmetry ``max|A - A^T|`` exceeds this multiple of
#: ``eps(dtype) * max|A|`` are rejected: an eigen-solver for symmetric matrices would
#: silently answer for ``(A + A^T)/2`` instead.
_SYMMETRY_SLACK = 100.0

#: Columns sent to the wrapped operator per call; bounds the operator's scratch memory
#: (a vmapped Hessian-vector product holds one set of activations per column).
_MAX_BLOCK = 64


class LinOp:
    """A symmetric ``(P, P)`` operator with a float64 block product and a product counter.

    Attributes
    ----------
    size : int
        ``P``.
    dtype : torch.dtype
        The dtype products are computed in (that of the wrapped operator).
    device : torch.device
        Where the basis vectors live and products are computed.
    n_matvecs : int
        Vector products made through this adapter (a block of ``m`` columns counts ``m``).
    known_arithmetic : bool
        True when products are plain matrix products in :attr:`dtype` (a dense or sparse
        matrix handed in directly); False for operators whose internal precision is
        unknown (a scipy ``LinearOperator`` may compute in float32 behind float64).
    """

    def __init__(
        self,
        apply: Any,
        size: int,
        dtype: torch.dtype,
        device: torch.device,
        known_arithmetic: bool = False,
    ) -> None:
        self._apply = apply
        self.size = int(size)
        self.dtype = dtype
        self.device = device
        self.known_arithmetic = known_arithmetic
        self.n_matvecs = 0

    @property
    def eps(self) -> float:
        """Unit roundoff of the product dtype: the floor of any product's relative error."""
        return float(torch.finfo(self.dtype).eps)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``H @ V`` for a float64 ``(P, m)`` block; returns float64 on :attr:`device`."""
        m = V.shape[1]
        if m == 0:
            return torch.zeros_like(V)
        parts = []
        for start in range(0, m, _MAX_BLOCK):
            block = V[:, start : start + _MAX_BLOCK]
            out = self._apply(block)
            self.n_matvecs += block.shape[1]
            parts.append(out.to(device=self.device, dtype=torch.float64))
        result = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if not bool(torch.isfinite(result).all()):
            raise ValueError("op produced a non-finite product (NaN or inf)")
        return result


def _check_square(shape: Any) -> int:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"op must be a square (P, P) operator, got shape {shape}")
    if shape[0] < 1:
        raise ValueError(f"op must have P >= 1, got shape {shape}")
    return shape[0]


def dense_linop(A: torch.Tensor, *, symmetric: bool = True) -> LinOp:
    """A dense real matrix as a :class:`LinOp` in its own float dtype (integers: float64).

    Refused: not square, complex, not finite, and (``symmetric``) not symmetric.
    """
    size = _check_square(A.shape)
    if A.is_complex():  # casting would keep only the real part, with a mere warning
        raise ValueError(f"op must be a real numeric matrix, got dtype {A.dtype}")
    if not A.is_floating_point():
        A = A.to(torch.float64)
    A = A.detach()
    if not bool(torch.isfinite(A).all()):
        raise ValueError("op must be finite, got NaN or inf in the matrix")
    if symmetric:
        _check_symmetric(A)
    dtype = A.dtype

    def apply(V: torch.Tensor) -> torch.Tensor:
        return A @ V.to(dtype)

    return LinOp(apply, size, dtype, A.device, known_arithmetic=True)


def _check_symmetric(A: torch.Tensor) -> None:
    scale = float(A.abs().max())
    asym = float((A - A.T).abs().max())
    if asym > _SYMMETRY_SLACK * torch.finfo(A.dtype).eps * max(scale, np.finfo(float).tiny):
        raise ValueError(
            f"op must be symmetric, got max|A - A^T| = {asym:.3g} for max|A| = {scale:.3g}"
        )


def _from_scipy(op: Any, known_arithmetic: bool) -> LinOp:
    size = _check_square(op.shape)
    np_dtype = np.dtype(getattr(op, "dtype", None) or np.float64)
    if np_dtype.kind != "f":
        np_dtype = np.dtype(np.float64)
    dtype = torch.float32 if np_dtype == np.float32 else torch.float64

    def apply(V: torch.Tensor) -> torch.Tensor:
        X = V.detach().cpu().numpy().astype(np_dtype, copy=False)
        if hasattr(op, "matmat"):
            Y = op.matmat(X)
        else:  # scipy sparse matrices
            Y = op @ X
        return torch.from_numpy(np.asarray(Y, dtype=np.float64).reshape(size, -1))

    return LinOp(apply, size, dtype, torch.device("cpu"), known_arithmetic=known_arithmetic)


def as_linop(op: Any) -> LinOp:
    """Wrap any supported symmetric operator as a :class:`LinOp` (see module docstring).

    Raises
    ------
    ValueError
        If ``op`` is of no supported kind, is not square, or (dense input) is not
        symmetric or not finite.
    """
    if isinstance(op, LinOp):
        return op
    if isinstance(op, torch.Tensor):
        if op.ndim != 2:
            raise ValueError(f"op must be a square (P, P) matrix, got shape {tuple(op.shape)}")
        return dense_linop(op)
    if isinstance(op, np.ndarray):
        if op.ndim != 2:
            raise ValueError(f"op must be a square (P, P) matrix, got shape {op.shape}")
        if op.dtype.kind not in "fiub":
            raise ValueError(f"op must be a real numeric matrix, got dtype {op.dtype}")
        array = op if op.dtype in (np.float32, np.float64) else op.astype(np.float64)
        return dense_linop(torch.from_numpy(np.ascontiguousarray(array)))
    # scipy objects first: a scipy LinearOperator also has matmat and shape, but takes numpy.
    import scipy.sparse as sparse  # a hard dependency; imported late to keep import time low
    from scipy.sparse.linalg import LinearOperator

    if sparse.issparse(op):
        return _from_scipy(op, known_arithmetic=True)
    if isinstance(op, LinearOperator):
        return _from_scipy(op, known_arithmetic=False)
    if hasattr(op, "matmat") and hasattr(op, "shape"):
        size = _check_square(op.shape)
        dtype = getattr(op, "dtype", torch.float32)
        if not isinstance(dtype, torch.dtype):
            dtype = torch.float64
        device = torch.device(getattr(op, "device", "cpu"))

        def apply(V: torch.Tensor) -> torch.Tensor:
            out = op.matmat(V.to(device=device, dtype=dtype))
            if not isinstance(out, torch.Tensor):
                out = torch.as_tensor(np.asarray(out))
            return out.reshape(size, -1)

        return LinOp(apply, size, dtype, device)
    raise ValueError(
        "op must be a decaylab operator (with matmat and shape), a dense symmetric torch "
        f"tensor, a numpy array or a scipy LinearOperator, got {type(op).__name__}"
    )


def random_generator(seed: int) -> torch.Generator:
    """A seeded CPU generator (draws are made on the CPU so results do not depend on device)."""
    return torch.Generator(device="cpu").manual_seed(int(seed))


def rademacher(size: int, m: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``(size, m)`` float64 matrix of independent ±1 entries."""
    signs = torch.randint(0, 2, (size, m), generator=generator, dtype=torch.int8)
    return (signs.to(torch.float64) * 2 - 1).to(device)


def gaussian(size: int, m: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``(size, m)`` float64 standard normal matrix."""
    return torch.randn(size, m, generator=generator, dtype=torch.float64).to(device)
