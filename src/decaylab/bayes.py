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

import copy
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
    "GGNSpectrum",
    "ggn_spectrum",
    "laplace_log_evidence",
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
) -> np.ndarray | np.float64:
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


# --------------------------------------------------------------------------- networks

_STRUCTURES = ("full", "topk")
DEFAULT_MAX_DENSE = 6000


@dataclass(frozen=True, eq=False)
class GGNSpectrum:
    """What the Laplace evidence of a network needs, computed once at the current weights.

    Attributes
    ----------
    eigenvalues : ndarray
        Eigenvalues of the GGN of the **mean** loss on the selected parameters, descending
        (all ``P`` with ``structure="full"``; the top ``k`` with ``"topk"``).
    n_params : int
        ``P``, the number of selected (prior-carrying) parameters.
    n_samples : int
        ``N``.
    mean_loss : float
        ``J(w)``, the mean training loss.
    sq_norm : float
        ``‖w_p‖²`` of the selected parameters.
    likelihood : str
        ``"classification"`` (cross-entropy: an exact per-example NLL) or ``"regression"``
        (½ squared error with a Gaussian noise precision ``β``).
    n_outputs : int
        Outputs per example (the Gaussian normalizer counts ``N · n_outputs`` values).
    structure : str
        ``"full"`` (exact dense GGN) or ``"topk"`` (an approximation, see
        :func:`laplace_log_evidence`).
    remainder_trace : float
        ``"topk"`` only: ``tr(G) − Σ top-k``, the curvature mass outside the top ``k``.
    names : list of str
        The selected parameters.
    """

    eigenvalues: np.ndarray
    n_params: int
    n_samples: int
    mean_loss: float
    sq_norm: float
    likelihood: str
    n_outputs: int
    structure: str
    remainder_trace: float = 0.0
    names: tuple[str, ...] = ()

    @property
    def exact(self) -> bool:
        """True for the dense GGN, False for the top-k approximation."""
        return self.structure == "full"

    def log_det_ratio(self, alpha: np.ndarray) -> np.ndarray:
        """``Σ_i log(1 + λ_i/α)`` = ``log det(N G + δ I) − P log δ`` for ``δ = N α`` (β = 1).

        With ``"topk"`` the ``P − k`` remaining eigenvalues are replaced by their mean
        ``r/(P − k)``; by the concavity of ``log`` this over-estimates their term (for an
        exact trace), so the approximate evidence errs low, never silently high.
        """
        lam = np.clip(self.eigenvalues, 0.0, None)
        out = np.sum(np.log1p(lam[None, :] / alpha[:, None]), axis=1)
        rest = self.n_params - lam.size
        if rest > 0 and self.remainder_trace > 0:
            out = out + rest * np.log1p(self.remainder_trace / (rest * alpha))
        return out

    def gamma(self, alpha: np.ndarray) -> np.ndarray:
        """Effective number of parameters ``γ(α) = Σ λ_i/(λ_i + α)`` (same approximation)."""
        lam = np.clip(self.eigenvalues, 0.0, None)
        out = np.sum(lam[None, :] / (lam[None, :] + alpha[:, None]), axis=1)
        rest = self.n_params - lam.size
        if rest > 0 and self.remainder_trace > 0:
            mean = self.remainder_trace / rest
            out = out + rest * mean / (mean + alpha)
        return out


def _likelihood_of(loss: Any) -> tuple[str, Any]:
    """(``"classification"`` | ``"regression"``, the matching torch loss module) for losses
    that are negative log-likelihoods; ``ValueError`` for anything else."""
    import torch.nn.functional as F
    from torch import nn

    from decaylab.curvature.operators import HalfMSELoss
    from decaylab.training import half_mse

    if isinstance(loss, nn.CrossEntropyLoss):
        if loss.weight is None and loss.label_smoothing == 0.0:
            return "classification", loss
    elif isinstance(loss, nn.BCEWithLogitsLoss):
        if loss.weight is None and loss.pos_weight is None:
            return "classification", loss
    elif loss is F.cross_entropy:
        return "classification", nn.CrossEntropyLoss()
    elif loss is F.binary_cross_entropy_with_logits:
        return "classification", nn.BCEWithLogitsLoss()
    elif isinstance(loss, HalfMSELoss) or loss is half_mse:
        return "regression", HalfMSELoss()
    raise ValueError(
        "loss_fn must be a negative log-likelihood the Laplace evidence understands: "
        "'cross_entropy' / nn.CrossEntropyLoss() (no class weights or label smoothing), "
        "'bce_with_logits' / nn.BCEWithLogitsLoss() (no weights), or 'half_mse' / "
        f"decaylab.half_mse for regression; got {loss!r}"
    )


def _selected_names(model: Any, params: Any) -> list[str]:
    from decaylab.curvature import select_params
    from decaylab.regularize import param_groups

    if params == "all":
        return select_params(model, None)[0]
    if params == "decayed":
        names = param_groups(model, 1.0)[0]
        if names["weight_decay"] <= 0:
            raise ValueError(
                "params='decayed' selects no parameter (the model has no weight matrices); "
                "use params='all'"
            )
        return list(names["names"])
    return select_params(model, params)[0]


def _float64_fit(model: Any, loss: Any, likelihood: str, X: Any, y: Any) -> tuple[Any, ...]:
    """``(outputs, targets, mean loss, parameters)`` of a float64 copy of ``model``; regression
    targets of shape ``(N,)`` for ``(N, 1)`` outputs are reshaped, as ``half_mse`` does."""
    import torch

    with torch.no_grad():
        m64 = copy.deepcopy(model).double()
        out = m64(X.double())
        if likelihood == "regression" and y.shape != out.shape and y.numel() == out.numel():
            y = y.reshape(out.shape)
        mean_loss = float(loss(out, y.double() if y.is_floating_point() else y))
        return out, y, mean_loss, {n: p.detach() for n, p in m64.named_parameters()}


def ggn_spectrum(
    model: Any,
    loss_fn: Any,
    data: Any,
    *,
    params: Any = "decayed",
    structure: str = "full",
    k: int = 100,
    n_matvecs: int = 200,
    max_dense: int = DEFAULT_MAX_DENSE,
    seed: int = 0,
) -> GGNSpectrum:
    """GGN eigenvalues and the other ingredients of the Laplace evidence, once per weights.

    ``structure="full"``: the dense GGN of the mean loss in float64 and all its eigenvalues
    (refused above ``max_dense`` parameters). ``"topk"``: the top ``k`` eigenvalues by
    Lanczos on :class:`~decaylab.curvature.GGNOperator` plus ``tr(G)`` by Hutch++ with
    ``n_matvecs`` products, for models too large for a dense matrix. ``params`` as in
    :func:`laplace_log_evidence`.
    """
    import torch

    from decaylab._inputs import as_tensor_pair
    from decaylab.curvature import GGNOperator, dense_ggn, eigen, resolve_loss
    from decaylab.curvature import trace as op_trace

    if structure not in _STRUCTURES:
        raise ValueError(f"structure must be one of {_STRUCTURES}, got {structure!r}")
    likelihood, loss = _likelihood_of(resolve_loss(loss_fn))
    X, y = as_tensor_pair(data, "data")
    names = _selected_names(model, params)
    max_dense = int(check_scalar(max_dense, "max_dense", low=1, integer=True))
    out, y, mean_loss, tensors = _float64_fit(model, loss, likelihood, X, y)
    sq_norm = float(sum(tensors[n].pow(2).sum() for n in names))
    n_outputs = int(out[0].numel())
    P = int(sum(tensors[n].numel() for n in names))
    remainder = 0.0
    if structure == "full":
        if P > max_dense:
            raise ValueError(
                f"structure='full' builds a dense {P}x{P} GGN, above max_dense={max_dense}; "
                "use structure='topk' (top-k eigenvalues plus the trace remainder) or raise "
                "max_dense"
            )
        G = dense_ggn(model, loss, (X, y), params=names, max_params=P)
        eigvals = np.linalg.eigvalsh(G.cpu().numpy())[::-1].copy()
    else:
        k = int(check_scalar(k, "k", low=1, high=P, integer=True))
        op = GGNOperator(model, loss, (X, y), params=names, dtype=torch.float64)
        eigvals = eigen(op, k=k, seed=seed).eigenvalues.numpy().copy()
        total = op_trace(op, n_matvecs=n_matvecs, seed=seed).estimate if k < P else 0.0
        remainder = max(float(total) - float(np.clip(eigvals, 0, None).sum()), 0.0)
    return GGNSpectrum(
        eigenvalues=eigvals,
        n_params=P,
        n_samples=int(X.shape[0]),
        mean_loss=mean_loss,
        sq_norm=sq_norm,
        likelihood=likelihood,
        n_outputs=n_outputs,
        structure=structure,
        remainder_trace=remainder,
        names=tuple(names),
    )


def log_evidence_from_spectrum(
    spectrum: GGNSpectrum, alpha: Any, noise_precision: float | None = None
) -> np.ndarray | np.float64:
    """The Laplace log evidence of :func:`laplace_log_evidence` for each ``alpha``, O(P) each."""
    a = _positive_array(alpha, "alpha")
    flat = np.atleast_1d(a)
    s = spectrum
    N = s.n_samples
    logdet = s.log_det_ratio(flat)
    if s.likelihood == "classification":
        if noise_precision is not None:
            raise ValueError(
                "noise_precision applies to regression (half_mse) only, got "
                f"{noise_precision!r} with a classification loss"
            )
        out = -N * s.mean_loss - 0.5 * N * flat * s.sq_norm - 0.5 * logdet
    else:
        if noise_precision is None:
            # Maximizer of the evidence in beta at fixed alpha (the log det does not depend on it).
            beta = s.n_outputs / (2.0 * s.mean_loss + flat * s.sq_norm)
        else:
            beta = np.full_like(
                flat, check_scalar(noise_precision, "noise_precision", low=0.0, low_inclusive=False)
            )
        n_values = N * s.n_outputs
        out = (
            0.5 * n_values * np.log(beta / (2.0 * math.pi))
            - beta * N * (s.mean_loss + 0.5 * flat * s.sq_norm)
            - 0.5 * logdet
        )
    return _scalar_or_array(out.reshape(a.shape))


def laplace_log_evidence(
    model: Any,
    loss_fn: Any,
    data: Any,
    alpha: Any,
    *,
    params: Any = "decayed",
    structure: str = "full",
    noise_precision: float | None = None,
    k: int = 100,
    n_matvecs: int = 200,
    max_dense: int = DEFAULT_MAX_DENSE,
) -> np.ndarray | np.float64:
    """Laplace–GGN log marginal likelihood of a network at its current weights, per ``alpha``.

    In decaylab's conventions (mean loss ``J``, penalty ``(α/2)‖w_p‖²``, prior precision
    ``δ = αβN``), with ``λ_i`` the eigenvalues of the GGN of ``J`` on the ``P`` prior-carrying
    parameters ``w_p``:

    * classification (cross-entropy, ``β = 1``):
      ``log Z(α) = −N J(w) − (N α/2) ‖w_p‖² − ½ Σ_i log(1 + λ_i/α)``;
    * regression (½ squared error, ``n_out`` outputs, noise precision ``β``):
      ``log Z(α) = (N n_out/2) log(β/2π) − β N (J(w) + (α/2)‖w_p‖²) − ½ Σ_i log(1 + λ_i/α)``,
      with ``β`` given or, by default, maximized out per ``α``: ``β = n_out/(2J + α‖w_p‖²)``.

    The last term is ``½ log det(δI + βN G) − (P/2) log δ``. For classification this is
    laplace-torch's ``log_marginal_likelihood()`` with ``prior_precision = N α`` (no ``2π``
    terms, which cancel between prior and posterior); at the ridge solution of a linear
    model it is :func:`log_evidence_ridge`. The GGN eigenvalues are computed once and every
    ``alpha`` costs O(P). The weights are taken as they are: the value is the Laplace
    evidence *at these weights*, which is the textbook quantity only when they are the MAP
    for that ``α``.

    Parameters
    ----------
    model : nn.Module
    loss_fn : "cross_entropy", "bce_with_logits", "half_mse" or the matching torch losses
        Anything else raises ``ValueError``: only a negative log-likelihood has an evidence.
    data : (X, y)
        The training data (``N`` = its length).
    alpha : float or array-like
        ``> 0``.
    params : "decayed", "all", or names / tensors
        Which parameters carry the Gaussian prior and are integrated over. ``"decayed"``
        (default) is the group that weight decay acts on (biases and norm layers excluded);
        the others are held at their values (a subnetwork Laplace, since a flat prior on
        them would make the evidence improper). ``"all"`` matches laplace-torch's
        ``subset_of_weights="all"``.
    structure : "full" or "topk"
        ``"full"``: the exact dense GGN (up to ``max_dense`` parameters). ``"topk"``: an
        **approximation** for large models: the top ``k`` eigenvalues (Lanczos) plus the
        trace remainder (Hutch++, ``n_matvecs`` products) spread evenly over the other
        ``P − k`` directions; by Jensen's inequality its log det errs high, so the returned
        evidence errs low.
    noise_precision : float, optional
        Regression only: a fixed ``β``; ``None`` maximizes it out.

    Returns
    -------
    numpy.float64 or ndarray shaped like ``alpha``.

    Examples
    --------
    >>> import torch
    >>> X = torch.randn(40, 3, dtype=torch.float64); y = (X[:, 0] > 0).long()
    >>> model = torch.nn.Linear(3, 2).double()
    >>> val = laplace_log_evidence(model, "cross_entropy", (X, y), [1e-3, 1e-1], params="all")
    >>> val.shape
    (2,)
    """
    a = _positive_array(alpha, "alpha")
    spectrum = ggn_spectrum(
        model,
        loss_fn,
        data,
        params=params,
        structure=structure,
        k=k,
        n_matvecs=n_matvecs,
        max_dense=max_dense,
    )
    return log_evidence_from_spectrum(spectrum, a, noise_precision)
