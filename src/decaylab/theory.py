"""Closed-form theory of weight decay, L1 and early stopping on a quadratic model.

Every function follows ``docs/conventions.md``: ``J`` is the mean loss, ``H`` its
Hessian at the reference minimizer ``w*``, eigenvalues are sorted descending, and
``alpha`` multiplies ``(1/2)||w||^2`` (L2) or ``||w||_1`` (L1).

Inputs may be numpy arrays, torch tensors, lists or scalars; outputs are float64
numpy arrays (or numpy float64 scalars). Assumptions the theory needs (a minimum,
a convergent step size, positive curvature for L1) are checked and reported as
:class:`~decaylab._checks.TheoryWarning`; bad arguments raise ``ValueError``
naming the argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from decaylab._checks import TheoryWarning, as_float64, check_scalar, warn_theory

__all__ = [
    "TheoryWarning",
    "eigh_descending",
    "shrink_factors",
    "effective_parameters",
    "l2_solution",
    "l1_solution",
    "gd_iterate",
    "early_stopping_alpha",
    "approx_alpha",
    "equivalent_steps",
]

_F64_EPS = float(np.finfo(np.float64).eps)


# --------------------------------------------------------------------------- helpers


def _input_eps(value: Any) -> float:
    """Machine epsilon of the precision the caller computed ``value`` in.

    A Hessian built in float32 is only symmetric to float32 rounding, so the
    symmetry tolerance must follow the input's dtype, not float64.
    """
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return _F64_EPS
    if hasattr(value, "detach"):
        import torch

        return float(torch.finfo(dtype).eps) if dtype.is_floating_point else _F64_EPS
    if np.issubdtype(dtype, np.floating):
        return float(np.finfo(dtype).eps)
    return _F64_EPS


def _negative_tolerance(eigvals: np.ndarray) -> float:
    """Eigenvalues above ``-tol`` count as zero: rounding of a singular PSD matrix."""
    if eigvals.size == 0:
        return 0.0
    return 100.0 * _F64_EPS * eigvals.size * float(np.max(np.abs(eigvals)))


def _warn_if_negative(eigvals: np.ndarray, stacklevel: int) -> None:
    tol = _negative_tolerance(eigvals)
    negative = eigvals < -tol
    if np.any(negative):
        warn_theory(
            f"{int(negative.sum())} eigenvalue(s) are negative (smallest {eigvals.min():.3g}): "
            "w* is not a minimum, so shrink factors leave [0, 1] and the quadratic "
            "theory does not describe a regularized minimum",
            stacklevel=stacklevel + 1,
        )


def _as_alpha(value: Any, name: str = "alpha") -> np.ndarray:
    """Regularization strengths: float64, no NaN, no negatives; ``+inf`` allowed.

    ``alpha = inf`` is the meaningful limit "everything shrunk to zero" (it is
    what :func:`early_stopping_alpha` returns for ``steps=0``), so it is accepted.
    """
    arr = as_float64(value, name, allow_inf=True)
    if np.any(arr < 0):
        bad = arr[arr < 0].ravel()[0]
        raise ValueError(f"{name} must be >= 0, got {bad!r}")
    return arr


def _as_eigvals(value: Any, name: str = "eigvals") -> np.ndarray:
    return as_float64(value, name, ndim=1)


def _symmetric_checked(H: Any, name: str) -> np.ndarray:
    """Validate a square, finite, symmetric matrix and return its symmetric part."""
    eps = _input_eps(H)
    arr = as_float64(H, name, ndim=2)
    if arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be square, got shape {arr.shape}")
    scale = float(np.max(np.abs(arr))) if arr.size else 0.0
    asym = float(np.max(np.abs(arr - arr.T))) if arr.size else 0.0
    # sqrt(eps) of the input dtype: far above rounding of an autograd Hessian,
    # far below any genuine asymmetry (e.g. a transposed Jacobian by mistake).
    if asym > np.sqrt(eps) * max(scale, np.finfo(np.float64).tiny):
        raise ValueError(
            f"{name} must be symmetric: max |{name} - {name}.T| = {asym:.3g} "
            f"exceeds rounding (max |{name}| = {scale:.3g})"
        )
    return 0.5 * (arr + arr.T)


def _eigh_desc(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vals, vecs = np.linalg.eigh(arr)
    return vals[::-1].copy(), vecs[:, ::-1].copy()


def _spectrum(d: int, hessian: Any, eigvals: Any, eigvecs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Resolve ``hessian`` xor ``(eigvals, eigvecs)`` into a checked eigen-pair."""
    given_pair = eigvals is not None or eigvecs is not None
    if hessian is not None and given_pair:
        raise ValueError("give either hessian or (eigvals, eigvecs), not both")
    if hessian is None and not (eigvals is not None and eigvecs is not None):
        raise ValueError(
            "give hessian=, or both eigvals= and eigvecs=; got "
            f"hessian=None, eigvals={'given' if eigvals is not None else 'None'}, "
            f"eigvecs={'given' if eigvecs is not None else 'None'}"
        )
    if hessian is not None:
        arr = _symmetric_checked(hessian, "hessian")
        if arr.shape[0] != d:
            raise ValueError(f"hessian has shape {arr.shape} but w_star has length {d}")
        return _eigh_desc(arr)
    eps = _input_eps(eigvecs)
    lam = _as_eigvals(eigvals)
    Q = as_float64(eigvecs, "eigvecs", ndim=2)
    if lam.shape != (d,):
        raise ValueError(f"eigvals has shape {lam.shape} but w_star has length {d}")
    if Q.shape != (d, d):
        raise ValueError(
            f"eigvecs must be the full ({d}, {d}) eigenbasis (columns), got shape {Q.shape}"
        )
    # A non-orthonormal Q would make Q f(Lambda) Q^T w* silently wrong.
    err = float(np.max(np.abs(Q.T @ Q - np.eye(d)))) if d else 0.0
    if err > np.sqrt(eps):
        raise ValueError(f"eigvecs must have orthonormal columns: max |Q^T Q - I| = {err:.3g}")
    return lam, Q


def _as_w(value: Any, name: str = "w_star") -> np.ndarray:
    return as_float64(value, name, ndim=1)


def _shrink(lam: np.ndarray, alpha: np.ndarray, stacklevel: int) -> np.ndarray:
    """``lam / (lam + alpha)`` with the ``lam + alpha == 0`` cases resolved and warned."""
    lam_b, alpha_b = np.broadcast_arrays(lam, alpha)
    denom = lam_b + alpha_b
    with np.errstate(divide="ignore", invalid="ignore"):
        out = lam_b / denom
    out = np.where(np.isposinf(alpha_b), 0.0, out)
    singular = (denom == 0) & ~np.isposinf(alpha_b)
    if np.any(singular):
        flat = singular & (lam_b == 0)
        # lam = alpha = 0: the alpha -> 0+ limit, i.e. the minimum-norm solution.
        out = np.where(flat, 0.0, out)
        # lam = -alpha < 0: J + (alpha/2)||w||^2 is unbounded along that direction.
        out = np.where(singular & ~flat, np.nan, out)
        warn_theory(
            f"lambda + alpha = 0 in {int(singular.sum())} place(s): the regularized "
            "problem has no unique minimizer there. Where lambda = alpha = 0 the shrink "
            "factor is set to 0 (the alpha -> 0+ limit, minimum-norm solution); where "
            "lambda = -alpha < 0 there is no minimizer and the factor is NaN",
            stacklevel=stacklevel + 1,
        )
    return out


def _as_steps(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.ndim > 1:
        raise ValueError(f"steps must be an int or a 1-D array of ints, got shape {arr.shape}")
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise ValueError(f"steps must be an int or a 1-D array of ints, got {value!r}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"steps must be whole numbers, got {value!r}")
    if np.any(arr < 0):
        bad = arr[arr < 0].ravel()[0]
        raise ValueError(f"steps must be >= 0, got {bad!r}")
    return arr.astype(np.int64)


# --------------------------------------------------------------------------- public API


def eigh_descending(H: Any) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of a symmetric matrix, eigenvalues sorted descending.

    ``H = Q diag(lambda) Q^T`` with ``lambda_1 >= lambda_2 >= ...`` and ``Q[:, i]``
    the eigenvector of ``lambda_i``.

    Parameters
    ----------
    H : array-like, shape (d, d)
        Symmetric, finite matrix (numpy or torch). Asymmetry up to ``sqrt(eps)``
        of the input dtype (relative to ``max |H|``) is rounding and is removed
        by symmetrizing; larger asymmetry raises ``ValueError``.

    Returns
    -------
    eigvals : ndarray, shape (d,)
        Eigenvalues, descending.
    eigvecs : ndarray, shape (d, d)
        Orthonormal eigenvectors as columns, matching ``eigvals``.

    Examples
    --------
    >>> vals, vecs = eigh_descending([[1.0, 0.0], [0.0, 3.0]])
    >>> vals.tolist()
    [3.0, 1.0]
    >>> np.abs(vecs[:, 0]).tolist()
    [0.0, 1.0]
    """
    return _eigh_desc(_symmetric_checked(H, "H"))


def shrink_factors(eigvals: Any, alpha: Any) -> np.ndarray:
    """L2 shrink factor along each eigenvector: ``lambda_i / (lambda_i + alpha)``.

    Parameters
    ----------
    eigvals : array-like, shape (d,)
        Hessian eigenvalues ``lambda_i``.
    alpha : float or array-like
        ``alpha >= 0`` (``+inf`` allowed: factor 0). Shapes broadcast against
        ``eigvals``: a scalar or shape ``(d,)`` (one alpha per direction) gives
        shape ``(d,)``; a column ``(m, 1)`` of several alphas gives a path of
        shape ``(m, d)``; ``(m, d)`` gives per-direction rows.

    Returns
    -------
    ndarray, shape (d,) or (m, d)

    Warns
    -----
    TheoryWarning
        If some ``lambda_i < 0`` (not a minimum: factors leave [0, 1]), or if
        ``lambda_i + alpha = 0``: there the factor is 0 when ``lambda_i = alpha = 0``
        (the ``alpha -> 0+`` limit) and NaN when ``lambda_i = -alpha < 0``
        (no minimizer exists).

    Examples
    --------
    >>> shrink_factors([3.0, 1.0], 1.0).tolist()
    [0.75, 0.5]
    >>> shrink_factors([3.0, 1.0], [[0.0], [1.0]]).tolist()
    [[1.0, 1.0], [0.75, 0.5]]
    """
    lam = _as_eigvals(eigvals)
    a = _as_alpha(alpha)
    if a.ndim > 2:
        raise ValueError(f"alpha must have at most 2 dimensions, got shape {a.shape}")
    try:
        np.broadcast_shapes(lam.shape, a.shape)
    except ValueError as exc:
        raise ValueError(
            f"alpha of shape {a.shape} does not broadcast against eigvals of shape "
            f"{lam.shape}; for a path of alphas pass a column, alpha.reshape(-1, 1)"
        ) from exc
    _warn_if_negative(lam, stacklevel=2)
    return _shrink(lam, a, stacklevel=2)


def effective_parameters(eigvals: Any, alpha: Any) -> np.ndarray:
    """Effective number of parameters ``gamma(alpha) = sum_i lambda_i / (lambda_i + alpha)``.

    Parameters
    ----------
    eigvals : array-like, shape (d,)
        Hessian eigenvalues.
    alpha : float or array-like
        A scalar gives a scalar; a 1-D array of shape ``(m,)`` is a grid and gives
        one ``gamma`` per alpha, shape ``(m,)``; a 2-D array ``(m, d)`` holds
        per-direction alphas (e.g. from :func:`early_stopping_alpha`) and gives ``(m,)``.

    Returns
    -------
    numpy.float64 or ndarray, shape (m,)
        For ``lambda_i >= 0`` each value lies in ``[0, d]``.

    Warns
    -----
    TheoryWarning
        As :func:`shrink_factors`.

    Examples
    --------
    >>> float(effective_parameters([3.0, 1.0], 1.0))
    1.25
    >>> effective_parameters([3.0, 1.0], [0.0, 1.0, np.inf]).tolist()
    [2.0, 1.25, 0.0]
    """
    lam = _as_eigvals(eigvals)
    a = _as_alpha(alpha)
    if a.ndim == 0:
        factors = a
    elif a.ndim == 1:
        factors = a[:, None]
    elif a.ndim == 2 and a.shape[1] in (1, lam.size):
        factors = a
    else:
        raise ValueError(
            f"alpha must be a scalar, a 1-D grid, or shape (m, {lam.size}); got shape {a.shape}"
        )
    _warn_if_negative(lam, stacklevel=2)
    gamma = _shrink(lam, factors, stacklevel=2).sum(axis=-1)
    return np.float64(gamma) if a.ndim == 0 else gamma


def l2_solution(
    w_star: Any,
    alpha: Any,
    *,
    hessian: Any = None,
    eigvals: Any = None,
    eigvecs: Any = None,
) -> np.ndarray:
    """Minimizer of the quadratic model plus L2: ``w~ = (H + alpha I)^-1 H w*``.

    Computed as ``Q (Lambda + alpha I)^-1 Lambda Q^T w*`` from one
    eigen-decomposition, so a whole path of alphas costs one ``eigh``.

    Parameters
    ----------
    w_star : array-like, shape (d,)
        Reference minimizer ``w*``.
    alpha : float or array-like, shape (m,)
        ``alpha >= 0``. A 1-D array gives the ridge path.
    hessian : array-like, shape (d, d), optional
        Symmetric ``H``. Give exactly one of ``hessian`` or ``(eigvals, eigvecs)``.
    eigvals, eigvecs : array-like, shapes (d,) and (d, d), optional
        A precomputed eigen-decomposition ``H = Q diag(eigvals) Q^T`` (any order,
        orthonormal columns).

    Returns
    -------
    ndarray, shape (d,) for scalar alpha, (m, d) for a 1-D alpha.

    Warns
    -----
    TheoryWarning
        Negative eigenvalues (not a minimum) or ``lambda_i + alpha = 0`` (see
        :func:`shrink_factors`).

    Examples
    --------
    >>> H = np.array([[2.0, 0.0], [0.0, 0.5]])
    >>> l2_solution([1.0, 1.0], 0.5, hessian=H).tolist()
    [0.8, 0.5]
    >>> l2_solution([1.0, 1.0], [0.0, 0.5], hessian=H).shape
    (2, 2)
    """
    w = _as_w(w_star)
    a = _as_alpha(alpha)
    if a.ndim > 1:
        raise ValueError(f"alpha must be a scalar or a 1-D array, got shape {a.shape}")
    lam, Q = _spectrum(w.size, hessian, eigvals, eigvecs)
    _warn_if_negative(lam, stacklevel=2)
    factors = _shrink(lam, a[..., None] if a.ndim == 1 else a, stacklevel=2)
    coords = Q.T @ w
    return (factors * coords) @ Q.T


def l1_solution(w_star: Any, h_diag: Any, alpha: Any) -> np.ndarray:
    """Minimizer of the quadratic model plus L1 when ``H`` is diagonal.

    ``w~_i = sign(w*_i) max(|w*_i| - alpha / H_ii, 0)`` (soft thresholding).

    Parameters
    ----------
    w_star : array-like, shape (d,)
        Reference minimizer.
    h_diag : array-like, shape (d,)
        Diagonal of ``H``; the formula needs ``H_ii > 0``.
    alpha : float or array-like, shape (m,)
        ``alpha >= 0``. A 1-D array gives the path, shape ``(m, d)``.

    Returns
    -------
    ndarray, shape (d,) or (m, d)

    Warns
    -----
    TheoryWarning
        If some ``H_ii <= 0``. Where ``H_ii = 0`` the loss is flat along that
        coordinate and the exact minimizer is returned: 0 if ``alpha > 0``, ``w*_i``
        if ``alpha = 0``. Where ``H_ii < 0`` no minimizer exists and ``w*_i`` is
        returned unchanged (no prediction made).

    Examples
    --------
    >>> l1_solution([3.0, -1.0, 0.5], [1.0, 2.0, 1.0], 1.0).tolist()
    [2.0, -0.5, 0.0]
    """
    w = _as_w(w_star)
    h = as_float64(h_diag, "h_diag", ndim=1)
    if h.shape != w.shape:
        raise ValueError(f"h_diag has shape {h.shape} but w_star has shape {w.shape}")
    a = _as_alpha(alpha)
    if a.ndim > 1:
        raise ValueError(f"alpha must be a scalar or a 1-D array, got shape {a.shape}")
    a_col = a[:, None] if a.ndim == 1 else a
    positive = h > 0
    safe_h = np.where(positive, h, 1.0)
    with np.errstate(invalid="ignore"):
        shrunk = np.sign(w) * np.maximum(np.abs(w) - a_col / safe_h, 0.0)
    if np.all(positive):
        return np.asarray(shrunk, dtype=np.float64)
    flat = h == 0
    flat_value = np.where(a_col > 0, 0.0, w)
    out = np.where(positive, shrunk, np.where(flat, flat_value, w))
    warn_theory(
        f"h_diag <= 0 at {int((~positive).sum())} coordinate(s) {np.flatnonzero(~positive)[:6]}: "
        "soft thresholding needs positive curvature. Where h_diag = 0 the exact minimizer "
        "is returned (0 if alpha > 0, w_star if alpha = 0); where h_diag < 0 there is no "
        "minimizer and w_star is returned unchanged",
        stacklevel=2,
    )
    return np.asarray(out, dtype=np.float64)


def gd_iterate(
    w_star: Any,
    lr: float,
    steps: Any,
    *,
    hessian: Any = None,
    eigvals: Any = None,
    eigvecs: Any = None,
    w0: Any = None,
) -> np.ndarray:
    """Iterate of plain gradient descent on the quadratic model after ``steps`` steps.

    ``w_tau = w* + Q (I - lr Lambda)^tau Q^T (w_0 - w*)``; with ``w_0 = 0`` this is
    ``Q [I - (I - lr Lambda)^tau] Q^T w*``.

    Parameters
    ----------
    w_star : array-like, shape (d,)
        Minimizer of the quadratic.
    lr : float
        Learning rate ``epsilon > 0``.
    steps : int or 1-D array of ints
        Number of steps ``tau >= 0``; an array gives the trajectory, shape ``(len(steps), d)``.
    hessian, eigvals, eigvecs
        As in :func:`l2_solution` (exactly one of ``hessian`` or the pair).
    w0 : array-like, shape (d,), optional
        Start point, default 0.

    Returns
    -------
    ndarray, shape (d,) or (len(steps), d)

    Warns
    -----
    TheoryWarning
        If ``lr * lambda_max >= 2`` (the iteration diverges or oscillates forever)
        or some ``lambda_i < 0`` (not a minimum: the iteration moves away from ``w*``).

    Examples
    --------
    >>> H = np.diag([1.0, 0.5])
    >>> gd_iterate([1.0, 1.0], 0.5, 1, hessian=H).round(12).tolist()
    [0.5, 0.25]
    >>> gd_iterate([1.0, 1.0], 0.5, [0, 1, 2], hessian=H).shape
    (3, 2)
    """
    w = _as_w(w_star)
    lr_val = check_scalar(lr, "lr", low=0.0, low_inclusive=False)
    tau = _as_steps(steps)
    start = np.zeros_like(w) if w0 is None else _as_w(w0, "w0")
    if start.shape != w.shape:
        raise ValueError(f"w0 has shape {start.shape} but w_star has shape {w.shape}")
    lam, Q = _spectrum(w.size, hessian, eigvals, eigvecs)
    _warn_if_negative(lam, stacklevel=2)
    if lam.size and lr_val * float(np.max(lam)) >= 2.0:
        warn_theory(
            f"lr * lambda_max = {lr_val * float(np.max(lam)):.4g} >= 2: gradient descent "
            "does not converge (it diverges, or oscillates forever at exactly 2)",
            stacklevel=2,
        )
    exponent = (tau[:, None] if tau.ndim == 1 else tau).astype(np.float64)
    # w_tau = w_0 + Q [I - (I - lr Lambda)^tau] Q^T (w* - w_0): exact at tau = 0 and,
    # via expm1/log1p, accurate when lr * lambda * tau is tiny.
    progress = _gd_progress(lr_val * lam, exponent)
    with np.errstate(over="ignore", invalid="ignore"):
        return start + (progress * (Q.T @ (w - start))) @ Q.T


def _gd_progress(x: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """``1 - (1 - x)^tau`` elementwise (broadcast), without cancellation for small ``x``."""
    x_b, tau_b = np.broadcast_arrays(x, tau)
    out = np.empty(x_b.shape, dtype=np.float64)
    smooth = x_b < 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        out[smooth] = -np.expm1(tau_b[smooth] * np.log1p(-x_b[smooth]))
        out[~smooth] = 1.0 - np.power(1.0 - x_b[~smooth], tau_b[~smooth])
    return out


def early_stopping_alpha(eigvals: Any, lr: float, steps: Any) -> np.ndarray:
    """Per-direction L2 strength that early stopping after ``steps`` steps equals.

    ``alpha_i = lambda_i (1 - lr lambda_i)^tau / (1 - (1 - lr lambda_i)^tau)``, the
    unique alpha with ``lambda_i / (lambda_i + alpha_i) = 1 - (1 - lr lambda_i)^tau``
    (gradient descent from ``w_0 = 0``).

    Computed as ``lambda_i / expm1(-tau log1p(-lr lambda_i))`` where
    ``lr lambda_i < 1``, which stays accurate for small ``lr lambda_i``.
    Limits: ``tau = 0`` gives ``inf`` (nothing learned); ``lambda_i = 0`` gives
    ``1 / (lr tau)``; ``lr lambda_i = 1`` gives 0 (one step reaches ``w*_i``).

    Parameters
    ----------
    eigvals : array-like, shape (d,)
        Hessian eigenvalues.
    lr : float
        Learning rate ``> 0``.
    steps : int or 1-D array of ints
        ``tau >= 0``; an array gives shape ``(len(steps), d)``.

    Returns
    -------
    ndarray, shape (d,) or (len(steps), d)

    Warns
    -----
    TheoryWarning
        If ``lr lambda_i > 1`` for some ``i`` (the iterate overshoots and oscillates
        in sign: ``alpha_i`` may be negative and is not monotone in ``tau``), if
        ``lr lambda_max >= 2`` (divergence), or if some ``lambda_i < 0``.

    Examples
    --------
    >>> early_stopping_alpha([1.0, 0.0], 0.5, 1).tolist()
    [1.0, 2.0]
    """
    lam = _as_eigvals(eigvals)
    lr_val = check_scalar(lr, "lr", low=0.0, low_inclusive=False)
    tau = _as_steps(steps).astype(np.float64)
    tau_b = tau[:, None] if tau.ndim == 1 else tau
    _warn_if_negative(lam, stacklevel=2)
    x = lr_val * lam
    if np.any(x >= 2.0):
        warn_theory(
            f"lr * lambda_max = {float(np.max(x)):.4g} >= 2: gradient descent does not "
            "converge; the equivalent alpha describes a diverging or oscillating iterate",
            stacklevel=2,
        )
    elif np.any(x > 1.0):
        warn_theory(
            f"lr * lambda_i > 1 for {int((x > 1).sum())} direction(s): the iterate "
            "overshoots and oscillates, so alpha_i alternates (negative for odd steps) "
            "and is not an L2 strength there",
            stacklevel=2,
        )
    lam_b, x_b, tau_b = np.broadcast_arrays(lam, x, tau_b)
    out = np.empty(lam_b.shape, dtype=np.float64)
    smooth = x_b < 1.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # 1/q - 1 with q = (1 - x)^tau, computed without cancellation for small x.
        inv_q_minus_1 = np.expm1(-tau_b[smooth] * np.log1p(-x_b[smooth]))
        out[smooth] = lam_b[smooth] / inv_q_minus_1
        q = np.power(1.0 - x_b[~smooth], tau_b[~smooth])
        # lambda / (1/q - 1) rather than lambda q / (1 - q): stays finite when |q| overflows.
        out[~smooth] = lam_b[~smooth] / (1.0 / q - 1.0)
    zero_lam = lam_b == 0
    out = np.where(zero_lam & (tau_b > 0), 1.0 / (lr_val * np.where(tau_b > 0, tau_b, 1.0)), out)
    out = np.where(tau_b == 0, np.inf, out)
    return out


def approx_alpha(lr: float, steps: Any) -> np.ndarray | np.float64:
    """Scalar approximation of the L2 strength early stopping equals: ``alpha ~ 1/(lr tau)``.

    Valid only when ``lr lambda_i << 1`` and ``lambda_i << alpha``; compare with
    :func:`early_stopping_alpha` to see how far off it is. ``steps = 0`` gives ``inf``.

    Examples
    --------
    >>> float(approx_alpha(0.1, 100))
    0.1
    >>> approx_alpha(0.5, [0, 2]).tolist()
    [inf, 1.0]
    """
    lr_val = check_scalar(lr, "lr", low=0.0, low_inclusive=False)
    tau = _as_steps(steps).astype(np.float64)
    with np.errstate(divide="ignore"):
        out = 1.0 / (lr_val * tau)
    return np.float64(out) if out.ndim == 0 else out


def equivalent_steps(alpha: Any, lr: float) -> np.ndarray | np.float64:
    """Number of gradient steps roughly equivalent to L2 strength alpha: ``tau ~ 1/(lr alpha)``.

    Returned as a float (not rounded); ``alpha = 0`` gives ``inf``. Same validity
    conditions as :func:`approx_alpha`.

    Examples
    --------
    >>> round(float(equivalent_steps(0.1, 0.1)), 6)
    100.0
    """
    a = _as_alpha(alpha)
    lr_val = check_scalar(lr, "lr", low=0.0, low_inclusive=False)
    with np.errstate(divide="ignore"):
        out = 1.0 / (lr_val * a)
    return np.float64(out) if out.ndim == 0 else out
