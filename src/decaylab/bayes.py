"""Bayesian reading of weight decay: priors, and evidence maximization for ridge.

Conventions (``docs/conventions.md``): the loss is the mean ``(1/N) sum (1/2)(y - f)^2``,
the L2 penalty is ``(alpha/2)||w||^2``. With noise precision ``beta`` and a Gaussian
prior of precision ``delta = 1/sigma^2``, MAP equals L2 with ``alpha = delta / (beta N)``.
A Laplace prior of scale ``b`` equals L1 with ``alpha = 1/(beta N b)`` (``beta = 1``
for an exact per-example negative log-likelihood).

``evidence_ridge`` picks ``delta`` and ``beta`` by MacKay's fixed point (type-II
maximum likelihood) from one SVD of the design; ``log_evidence_ridge`` evaluates
the log marginal likelihood on a grid of ``alpha``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from decaylab._checks import ConvergenceWarning, as_float64, check_bool, check_scalar

__all__ = [
    "EvidenceResult",
    "alpha_from_gaussian_prior",
    "gaussian_prior_std",
    "alpha_from_laplace_prior",
    "evidence_ridge",
    "log_evidence_ridge",
]


def _positive_array(value: Any, name: str) -> np.ndarray:
    arr = as_float64(value, name)
    if np.any(arr <= 0):
        bad = arr[arr <= 0].ravel()[0]
        raise ValueError(f"{name} must be > 0, got {bad!r}")
    return arr


def _scalar_or_array(arr: np.ndarray) -> np.ndarray | np.float64:
    return np.float64(arr) if arr.ndim == 0 else arr


def alpha_from_gaussian_prior(
    prior_std: Any, n: int, noise_precision: float = 1.0
) -> np.ndarray | np.float64:
    """L2 strength equal to a prior ``N(0, prior_std^2 I)``: ``alpha = 1/(beta N sigma^2)``.

    Parameters
    ----------
    prior_std : float or array-like
        Prior standard deviation ``sigma > 0``.
    n : int
        Number of training examples ``N >= 1``.
    noise_precision : float
        ``beta > 0``; 1 when the loss is an exact per-example negative log-likelihood.

    Examples
    --------
    >>> float(alpha_from_gaussian_prior(0.5, 100))
    0.04
    """
    sigma = _positive_array(prior_std, "prior_std")
    n_val = check_scalar(n, "n", low=1, integer=True)
    beta = check_scalar(noise_precision, "noise_precision", low=0.0, low_inclusive=False)
    return _scalar_or_array(1.0 / (beta * n_val * sigma**2))


def gaussian_prior_std(alpha: Any, n: int, noise_precision: float = 1.0) -> np.ndarray | np.float64:
    """Prior standard deviation equivalent to L2 strength alpha: ``sigma = 1/sqrt(beta N alpha)``.

    Inverse of :func:`alpha_from_gaussian_prior`; ``alpha = 0`` gives ``inf`` (flat prior).

    Examples
    --------
    >>> float(gaussian_prior_std(0.04, 100))
    0.5
    """
    a = as_float64(alpha, "alpha")
    if np.any(a < 0):
        raise ValueError(f"alpha must be >= 0, got {a[a < 0].ravel()[0]!r}")
    n_val = check_scalar(n, "n", low=1, integer=True)
    beta = check_scalar(noise_precision, "noise_precision", low=0.0, low_inclusive=False)
    with np.errstate(divide="ignore"):
        return _scalar_or_array(1.0 / np.sqrt(beta * n_val * a))


def alpha_from_laplace_prior(
    scale: Any, n: int, noise_precision: float = 1.0
) -> np.ndarray | np.float64:
    """L1 strength equal to a Laplace prior ``p(w) ~ exp(-|w|/b)``: ``alpha = 1/(beta N b)``.

    With the default ``noise_precision = 1`` this is ``1/(N b)`` (exact per-example NLL).

    Examples
    --------
    >>> float(alpha_from_laplace_prior(0.1, 50))
    0.2
    """
    b = _positive_array(scale, "scale")
    n_val = check_scalar(n, "n", low=1, integer=True)
    beta = check_scalar(noise_precision, "noise_precision", low=0.0, low_inclusive=False)
    return _scalar_or_array(1.0 / (beta * n_val * b))


@dataclass(frozen=True, eq=False)
class EvidenceResult:
    """Result of :func:`evidence_ridge`.

    Attributes
    ----------
    prior_precision : float
        ``delta = 1/sigma^2`` (scikit-learn ``BayesianRidge.lambda_``).
    noise_precision : float
        ``beta`` (scikit-learn ``BayesianRidge.alpha_``).
    alpha : float
        decaylab's L2 strength ``delta / (beta N)``.
    gamma : float
        Effective number of parameters ``sum_i beta s_i^2 / (delta + beta s_i^2)``,
        ``s_i^2`` the eigenvalues of ``X^T X`` (centred when ``fit_intercept``).
    log_evidence : float
        Log marginal likelihood of ``y`` at ``(delta, beta)`` (no hyperprior).
    coef : ndarray, shape (d,)
        Posterior mean of the weights, in the units of ``X``.
    intercept : float
        ``mean(y) - mean(X) @ coef`` when ``fit_intercept``, else 0.
    n_iter : int
        Fixed-point iterations done.
    converged : bool
        Whether the relative change of ``delta`` and ``beta`` fell below ``tol``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(50, 3)); y = X @ [1.0, -2.0, 0.5] + 0.1 * rng.normal(size=50)
    >>> res = evidence_ridge(X, y)
    >>> res.converged, bool(0 < res.gamma <= 3)
    (True, True)
    """

    prior_precision: float
    noise_precision: float
    alpha: float
    gamma: float
    log_evidence: float
    coef: np.ndarray
    intercept: float
    n_iter: int
    converged: bool


def _prepare(X: Any, y: Any, fit_intercept: bool) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    check_bool(fit_intercept, "fit_intercept")
    Xa = as_float64(X, "X", ndim=2)
    ya = as_float64(y, "y", ndim=1)
    if Xa.shape[0] != ya.shape[0]:
        raise ValueError(f"X has {Xa.shape[0]} rows but y has length {ya.shape[0]}")
    if Xa.shape[0] < 2 or Xa.shape[1] < 1:
        raise ValueError(f"X needs at least 2 rows and 1 column, got shape {Xa.shape}")
    if fit_intercept:
        x_mean = Xa.mean(axis=0)
        y_mean = float(ya.mean())
        return Xa - x_mean, ya - y_mean, x_mean, y_mean
    return Xa, ya, None, None


class _Spectral:
    """Design in the SVD basis: every evidence quantity costs O(d) per evaluation."""

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        n, d = X.shape
        U, s, Vt = np.linalg.svd(X, full_matrices=False)
        self.n, self.d = n, d
        self.Vt = Vt
        self.s2 = s**2
        self.uty = U.T @ y
        # Part of y outside the column space, computed directly (no cancellation).
        self.sse_perp = float(np.sum((y - U @ self.uty) ** 2))
        # log det over the d - k directions with zero data curvature (n < d).
        self.n_null = d - s.size

    def mean_and_sse(self, ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Posterior mean coordinates ``m = s u^T y / (s^2 + delta/beta)``, its norm^2, sse."""
        s = np.sqrt(self.s2)
        m = s * self.uty / (self.s2 + ratio[..., None])
        resid = self.uty - s * m
        sse = self.sse_perp + np.sum(resid**2, axis=-1)
        return m, np.sum(m**2, axis=-1), sse

    def log_evidence(self, delta, beta, m_sq, sse):
        logdet = np.sum(np.log(delta[..., None] + beta[..., None] * self.s2), axis=-1)
        logdet = logdet + self.n_null * np.log(delta)
        return 0.5 * (
            self.d * np.log(delta)
            + self.n * np.log(beta)
            - beta * sse
            - delta * m_sq
            - logdet
            - self.n * math.log(2.0 * math.pi)
        )


def evidence_ridge(
    X: Any,
    y: Any,
    *,
    fit_intercept: bool = True,
    max_iter: int = 1000,
    tol: float = 1e-10,
) -> EvidenceResult:
    """Evidence-optimal ridge regression by MacKay's fixed point.

    Model ``y = X w + noise``, ``w ~ N(0, delta^-1 I)``, ``noise ~ N(0, beta^-1)``.
    From one SVD ``X = U S V^T`` (``s_i^2`` = eigenvalues of ``X^T X``) iterate

    ``m = (delta/beta I + X^T X)^-1 X^T y``,
    ``gamma = sum_i beta s_i^2 / (delta + beta s_i^2)``,
    ``delta <- gamma / ||m||^2``,  ``beta <- (N - gamma) / ||y - X m||^2``,

    starting from ``delta = 1``, ``beta = 1/var(y)`` as scikit-learn's
    ``BayesianRidge`` does, and stop when the relative change of both is below
    ``tol``. The fixed point is a stationary point of the log evidence

    ``log p(y) = d/2 log delta + N/2 log beta - beta/2 ||y - X m||^2
    - delta/2 ||m||^2 - 1/2 log det(delta I + beta X^T X) - N/2 log 2 pi``.

    This is ``BayesianRidge`` with its Gamma hyperpriors switched off
    (``alpha_1 = alpha_2 = lambda_1 = lambda_2 = 0``). Like scikit-learn, the
    intercept is handled by centring ``X`` and ``y`` and ``N`` counts all samples
    (the degree of freedom the mean uses is not subtracted).

    Parameters
    ----------
    X : array-like, shape (N, d)
    y : array-like, shape (N,)
    fit_intercept : bool
        Centre ``X`` and ``y`` first and report the intercept.
    max_iter : int
        At most this many fixed-point updates.
    tol : float
        Relative tolerance on ``delta`` and ``beta``.

    Returns
    -------
    EvidenceResult
        ``alpha = delta / (beta N)`` is decaylab's L2 strength for the mean
        ``(1/2)``-squared-error loss.

    Warns
    -----
    ConvergenceWarning
        If ``max_iter`` is reached first, or the evidence is maximized on the
        boundary (``m = 0``: ``delta -> inf``; a fit to rounding level, typical when
        ``N <= d``: ``beta -> inf``), in which case ``converged`` is False and the
        last finite iterate is returned.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> X = rng.normal(size=(200, 4)); y = X @ [1.0, 0.0, -1.0, 2.0] + 0.5 * rng.normal(size=200)
    >>> res = evidence_ridge(X, y)
    >>> round(float(1 / np.sqrt(res.noise_precision)), 1)  # noise std, true 0.5
    0.5
    >>> bool(np.isclose(res.alpha, res.prior_precision / (res.noise_precision * 200)))
    True
    """
    max_iter_val = check_scalar(max_iter, "max_iter", low=1, integer=True)
    tol_val = check_scalar(tol, "tol", low=0.0, low_inclusive=False)
    Xc, yc, x_mean, y_mean = _prepare(X, y, fit_intercept)
    spec = _Spectral(Xc, yc)
    n = spec.n

    # Residuals this small are rounding: X interpolates y and beta would run to infinity.
    sse_floor = n * float(np.finfo(np.float64).eps) * float(np.sum(yc**2))
    delta = 1.0
    beta = 1.0 / (float(np.var(yc)) + float(np.finfo(np.float64).eps))
    converged = False
    reason = f"max_iter={max_iter_val} reached before the relative change fell below tol={tol_val}"
    n_iter = 0
    while n_iter < max_iter_val:
        n_iter += 1
        _, m_sq, sse = spec.mean_and_sse(np.asarray(delta / beta))
        gamma = float(np.sum(beta * spec.s2 / (delta + beta * spec.s2)))
        if m_sq <= 0.0:
            reason = (
                "the posterior mean is zero (y carries no signal along X): delta -> inf; "
                "the evidence has no interior maximum"
            )
            break
        if sse <= sse_floor:
            reason = (
                "the residual fell to rounding level (X interpolates y, e.g. N <= d): "
                "beta -> inf; the evidence has no interior maximum"
            )
            break
        new_delta = gamma / float(m_sq)
        new_beta = (n - gamma) / float(sse)
        change = max(abs(new_delta - delta) / new_delta, abs(new_beta - beta) / new_beta)
        delta, beta = new_delta, new_beta
        if change < tol_val:
            converged = True
            break
    if not converged:
        warnings.warn(
            f"evidence_ridge did not converge: {reason}", ConvergenceWarning, stacklevel=2
        )

    m, m_sq, sse = spec.mean_and_sse(np.asarray(delta / beta))
    gamma = float(np.sum(beta * spec.s2 / (delta + beta * spec.s2)))
    coef = spec.Vt.T @ m
    log_ev = float(spec.log_evidence(np.asarray(delta), np.asarray(beta), m_sq, sse))
    intercept = float(y_mean - x_mean @ coef) if fit_intercept else 0.0
    return EvidenceResult(
        prior_precision=float(delta),
        noise_precision=float(beta),
        alpha=float(delta / (beta * n)),
        gamma=gamma,
        log_evidence=log_ev,
        coef=coef,
        intercept=intercept,
        n_iter=n_iter,
        converged=converged,
    )


def log_evidence_ridge(
    X: Any,
    y: Any,
    alpha: Any,
    noise_precision: float | None = None,
    *,
    fit_intercept: bool = True,
) -> np.ndarray:
    """Log marginal likelihood of ridge regression for each decaylab ``alpha``.

    For each ``alpha`` the prior precision is ``delta = alpha beta N`` and the value
    is the log evidence of :func:`evidence_ridge`'s docstring. ``beta`` is either
    given (``noise_precision``) or, by default, maximized out for that ``alpha``:
    with ``delta/beta = alpha N`` fixed the maximizer is
    ``beta = N / (||y - X m||^2 + alpha N ||m||^2)`` in closed form. The profiled
    curve peaks at the same ``alpha`` and value as :func:`evidence_ridge`.

    Parameters
    ----------
    X : array-like, shape (N, d)
    y : array-like, shape (N,)
    alpha : float or array-like, shape (m,)
        ``alpha >= 0``; ``alpha = 0`` (a flat prior) has evidence ``-inf``.
    noise_precision : float, optional
        Fixed ``beta > 0``; ``None`` profiles it out per ``alpha``.
    fit_intercept : bool
        Centre ``X`` and ``y`` first.

    Returns
    -------
    numpy.float64 or ndarray, shape (m,)

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> X = rng.normal(size=(200, 4)); y = X @ [1.0, 0.0, -1.0, 2.0] + 0.5 * rng.normal(size=200)
    >>> res = evidence_ridge(X, y)
    >>> grid = res.alpha * np.array([0.5, 1.0, 2.0])
    >>> int(np.argmax(log_evidence_ridge(X, y, grid)))
    1
    >>> bool(np.isclose(log_evidence_ridge(X, y, res.alpha), res.log_evidence))
    True
    """
    a = as_float64(alpha, "alpha", ndim=(0, 1))
    if np.any(a < 0):
        raise ValueError(f"alpha must be >= 0, got {a[a < 0].ravel()[0]!r}")
    Xc, yc, _, _ = _prepare(X, y, fit_intercept)
    spec = _Spectral(Xc, yc)
    n = spec.n
    ratio = a * n
    _, m_sq, sse = spec.mean_and_sse(ratio)
    if noise_precision is None:
        energy = sse + ratio * m_sq
        if np.any(energy <= 0):
            raise ValueError(
                "y is fitted exactly (zero residual): noise_precision cannot be profiled"
            )
        beta = n / energy
    else:
        beta = np.broadcast_to(
            check_scalar(noise_precision, "noise_precision", low=0.0, low_inclusive=False),
            a.shape,
        ).astype(np.float64)
    delta = ratio * beta
    with np.errstate(divide="ignore", invalid="ignore"):
        out = spec.log_evidence(delta, beta, m_sq, sse)
    out = np.where(a == 0, -np.inf, out)
    return _scalar_or_array(out)
