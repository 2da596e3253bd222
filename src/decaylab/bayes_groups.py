"""Per-group evidence: one weight decay ``α_g`` per decayed weight tensor, at fixed weights.

A separate module because :mod:`decaylab.bayes` is already long and this one needs the
dense GGN *matrix* (not only its eigenvalues): with different ``α_g`` the prior no longer
commutes with the GGN, so the spectrum of :class:`~decaylab.bayes.GGNSpectrum` is not enough.

The math, in decaylab's conventions (``docs/conventions.md``: mean loss ``J``, prior precision
``δ_g = β N α_g`` on group ``g``'s ``n_g`` coordinates ``w_g``, ``s_g = ‖w_g‖²``). Let ``G`` be
the GGN of the **mean** loss on the ``P`` decayed parameters (the matrix whose eigenvalues are
:attr:`GGNSpectrum.eigenvalues`) and ``A = diag(α_g on group g's coordinates)``. The Laplace
log evidence of :func:`decaylab.bayes.laplace_log_evidence`,
``log Z = −βN (J + ½ Σ_g α_g s_g) − ½ [log det(βN G + D) − log det D] (+ β normalizer)``
with ``D = βN A``, becomes, since ``βN`` factors out of both determinants,

``log Z(α) = −β N J − (β N/2) Σ_g α_g s_g − ½ log det(G + A) + ½ Σ_g n_g log α_g``

(classification: ``β = 1``; regression adds ``(N n_out/2) log(β/2π)``). With one group this is
``−NJ − (Nα/2)‖w‖² − ½ Σ_i log(1 + λ_i/α)``, the scalar formula. Its derivative,

``∂ log Z/∂α_g = −(β N/2) s_g − ½ tr_g[(G + A)⁻¹] + n_g/(2 α_g)``,

(``tr_g`` the trace over group ``g``'s diagonal block) vanishes where

``α_g = γ_g / (β N s_g)``,  ``γ_g = n_g − α_g tr_g[(G + A)⁻¹]``,

MacKay's fixed point per group; ``Σ_g γ_g`` reduces to ``γ(α) = Σ_i λ_i/(λ_i + α)`` when all
``α_g`` are equal. For regression with ``β`` not given it is maximized out at each iterate,
``β = n_out / (2J + Σ_g α_g s_g)`` (the envelope theorem keeps the same stationarity condition).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import linalg

from decaylab._checks import ConvergenceWarning, check_scalar

__all__ = [
    "GroupedGGN",
    "GroupEvidence",
    "grouped_ggn",
    "log_evidence_groups",
    "evidence_groups_fixed_point",
    "evidence_groups",
    "MAX_GROUP_PARAMS",
]

MAX_GROUP_PARAMS = 3000


@dataclass(frozen=True, eq=False)
class GroupedGGN:
    """The dense GGN of the mean loss on the decayed parameters, with a group per coordinate.

    Attributes
    ----------
    matrix : ndarray, shape (P, P)
        ``G``, float64, projected onto the positive semi-definite cone (negative rounding
        eigenvalues set to 0, as :class:`~decaylab.bayes.GGNSpectrum` clips them).
    group_of : ndarray of int, shape (P,)
        The group index of each coordinate (flat order of ``named_parameters()``).
    names : tuple of str
        Group names: the parameter name, or the ``"+"``-joined names of a merged group.
    sizes, sq_norms : ndarray, shape (K,)
        ``n_g`` and ``s_g = ‖w_g‖²``.
    n_samples, mean_loss, likelihood, n_outputs
        As in :class:`~decaylab.bayes.GGNSpectrum`.
    """

    matrix: np.ndarray
    group_of: np.ndarray
    names: tuple[str, ...]
    sizes: np.ndarray
    sq_norms: np.ndarray
    n_samples: int
    mean_loss: float
    likelihood: str
    n_outputs: int

    def tied(self) -> GroupedGGN:
        """The same matrix with all groups merged into one (a single, scalar ``α``)."""
        return dataclasses.replace(
            self,
            group_of=np.zeros_like(self.group_of),
            names=("+".join(self.names),),
            sizes=np.array([self.group_of.size]),
            sq_norms=np.array([float(self.sq_norms.sum())]),
        )

    def per_coordinate(self, alpha: np.ndarray) -> np.ndarray:
        """``diag(A)``: each group's ``α_g`` on its coordinates."""
        return np.asarray(alpha, dtype=np.float64)[self.group_of]

    def logdet_and_block_traces(self, alpha: np.ndarray) -> tuple[float, np.ndarray]:
        """``log det(G + A)`` and ``tr_g[(G + A)⁻¹]`` per group, from one Cholesky factor."""
        C = self.matrix + np.diag(self.per_coordinate(alpha))
        L, _ = linalg.cho_factor(C, lower=True, check_finite=False)
        logdet = 2.0 * float(np.sum(np.log(np.diag(L))))
        inv, info = linalg.lapack.dpotri(L, lower=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"G + A is not positive definite (dpotri info={info})")
        traces = np.bincount(self.group_of, weights=np.diag(inv), minlength=len(self.names))
        return logdet, traces

    def noise_precision(self, alpha: np.ndarray, given: float | None) -> float:
        """``β``: 1 for classification; regression: ``given`` or the maximizer at ``alpha``."""
        if self.likelihood == "classification":
            if given is not None:
                raise ValueError("noise_precision applies to regression (half_mse) only")
            return 1.0
        if given is not None:
            return float(given)
        return self.n_outputs / (2.0 * self.mean_loss + float(np.dot(alpha, self.sq_norms)))


def _group_indices(
    names: list[str], sizes: list[int], groups: Sequence[Sequence[str]] | None
) -> tuple[tuple[str, ...], np.ndarray]:
    """Group names and the group index of each flat coordinate."""
    if groups is None:
        groups = [[n] for n in names]
    label = {}
    for g, members in enumerate(groups):
        for n in members:
            if n not in names:
                raise ValueError(f"groups names {n!r}, not a decayed parameter; those are {names}")
            if n in label:
                raise ValueError(f"parameter {n!r} is in more than one group")
            label[n] = g
    missing = [n for n in names if n not in label]
    if missing:
        raise ValueError(f"groups leave out the decayed parameters {missing}")
    group_of = np.repeat([label[n] for n in names], sizes)
    return tuple("+".join(members) for members in groups), group_of


def grouped_ggn(
    model: Any,
    loss_fn: Any,
    data: Any,
    *,
    groups: Sequence[Sequence[str]] | None = None,
    max_params: int = MAX_GROUP_PARAMS,
) -> GroupedGGN:
    """The dense GGN of the decayed parameters and their groups, at the model's weights.

    ``groups``: ``None`` gives one group per decayed tensor (named by its parameter name);
    otherwise a partition of the decayed parameter names, e.g. ``[all names]`` for one ``α``.
    Raises ``ValueError`` above ``max_params`` decayed parameters (a dense ``P×P`` matrix and
    one Cholesky factorization per fixed-point iteration).
    """

    from decaylab._inputs import as_tensor_pair
    from decaylab.bayes import _float64_fit, _likelihood_of, _selected_names
    from decaylab.curvature import dense_ggn, resolve_loss

    likelihood, loss = _likelihood_of(resolve_loss(loss_fn))
    X, y = as_tensor_pair(data, "data")
    names = _selected_names(model, "decayed")
    max_params = int(check_scalar(max_params, "max_params", low=1, integer=True))
    tensors = dict(model.named_parameters())
    sizes = [tensors[n].numel() for n in names]
    if sum(sizes) > max_params:
        raise ValueError(
            f"the per-group evidence needs the dense GGN of the {sum(sizes)} decayed parameters, "
            f"above the limit of {max_params}; it is meant for small models"
        )
    group_names, group_of = _group_indices(names, sizes, groups)
    out, y, mean_loss, sq = _float64_fit(model, loss, likelihood, X, y)
    per_tensor = np.array([float(sq[n].pow(2).sum()) for n in names])
    G = dense_ggn(model, loss, (X, y), params=names, max_params=sum(sizes)).cpu().numpy()
    lam, Q = np.linalg.eigh(G)
    G = (Q * np.clip(lam, 0.0, None)) @ Q.T
    tensor_group = group_of[np.cumsum([0, *sizes[:-1]])]
    return GroupedGGN(
        matrix=0.5 * (G + G.T),
        group_of=group_of,
        names=group_names,
        sizes=np.bincount(group_of).astype(np.int64),
        sq_norms=np.bincount(tensor_group, weights=per_tensor, minlength=len(group_names)),
        n_samples=int(X.shape[0]),
        mean_loss=mean_loss,
        likelihood=likelihood,
        n_outputs=int(out[0].numel()),
    )


def log_evidence_groups(ggn: GroupedGGN, alpha: Any, noise_precision: float | None = None) -> float:
    """``log Z(α_1..α_K)`` of the module docstring at the fixed weights (``alpha`` per group).

    Equals :func:`decaylab.bayes.laplace_log_evidence` when all ``α_g`` are equal, and
    laplace-torch's ``log_marginal_likelihood`` with the layerwise prior ``δ_g = N α_g`` when
    every parameter of the model is decayed (classification).
    """
    a = np.asarray(alpha, dtype=np.float64).reshape(-1)
    if a.size != len(ggn.names) or np.any(a <= 0):
        raise ValueError(f"alpha needs {len(ggn.names)} values > 0, got {alpha!r}")
    beta = ggn.noise_precision(a, noise_precision)
    logdet, _ = ggn.logdet_and_block_traces(a)
    return _log_evidence(ggn, a, beta, logdet)


def _log_evidence(ggn: GroupedGGN, a: np.ndarray, beta: float, logdet: float) -> float:
    """``log Z`` given ``β`` and ``log det(G + A)`` at ``a``."""
    N = ggn.n_samples
    out = (
        -beta * N * (ggn.mean_loss + 0.5 * float(np.dot(a, ggn.sq_norms)))
        - 0.5 * logdet
        + 0.5 * float(np.dot(ggn.sizes, np.log(a)))
    )
    if ggn.likelihood == "regression":
        out += 0.5 * N * ggn.n_outputs * math.log(beta / (2.0 * math.pi))
    return out


@dataclass(frozen=True, eq=False)
class GroupEvidence:
    """Result of :func:`evidence_groups_fixed_point`.

    Attributes
    ----------
    alpha : dict of str to float
        The evidence-optimal ``α_g`` per group (decaylab's L2 strength; ``δ_g = β N α_g``).
    gamma : dict of str to float
        ``γ_g = n_g − α_g tr_g[(G + A)⁻¹]``, the well-determined parameters of each group.
    log_evidence : float
        ``log Z`` at ``alpha``.
    noise_precision : float
        ``β`` used at the end (1 for classification).
    n_iter : int
    converged : bool
        Whether the largest ``|Δ log α_g|`` fell below ``tol`` (clipped values included).
    """

    alpha: dict[str, float]
    gamma: dict[str, float]
    log_evidence: float
    noise_precision: float
    n_iter: int
    converged: bool

    @property
    def spread(self) -> float:
        """``max α_g / min α_g``."""
        values = list(self.alpha.values())
        return max(values) / min(values)


def evidence_groups_fixed_point(
    ggn: GroupedGGN,
    alpha0: Any,
    *,
    alpha_range: tuple[float, float] | None = None,
    noise_precision: float | None = None,
    max_iter: int = 200,
    tol: float = 1e-8,
) -> GroupEvidence:
    """Iterate ``α_g ← γ_g(α)/(β N s_g)`` from ``alpha0`` (one value or one per group),
    clipped to ``alpha_range`` when given; ``ConvergenceWarning`` if ``max_iter`` is reached or
    a group has ``s_g = 0`` (its evidence increases without bound in ``α_g``: it is set to the
    range's top, or the fixed point is refused without a range)."""
    ggn.noise_precision(np.zeros(len(ggn.names)), noise_precision)  # refused for classifiers
    K = len(ggn.names)
    a = np.broadcast_to(np.asarray(alpha0, dtype=np.float64), (K,)).copy()
    low, high = alpha_range if alpha_range is not None else (0.0, math.inf)
    zero = ggn.sq_norms <= 0
    if np.any(zero) and alpha_range is None:
        raise ValueError(
            f"groups {[n for n, z in zip(ggn.names, zero, strict=True) if z]} have zero weights: "
            "their evidence-optimal α is infinite; give alpha_range"
        )
    converged, n_iter = False, 0
    while n_iter < max_iter:
        n_iter += 1
        beta = ggn.noise_precision(a, noise_precision)
        _, traces = ggn.logdet_and_block_traces(a)
        gamma = ggn.sizes - a * traces
        with np.errstate(divide="ignore"):
            new = np.clip(gamma / (beta * ggn.n_samples * ggn.sq_norms), low, high)
        new[zero] = high
        change = float(np.max(np.abs(np.log(new / a))))
        a = new
        if change < tol:
            converged = not np.any(zero)
            break
    if not converged:
        warnings.warn(
            f"the per-group evidence fixed point did not converge in {n_iter} iterations"
            + (" (a group has zero weights)" if np.any(zero) else ""),
            ConvergenceWarning,
            stacklevel=2,
        )
    # One factorization at the final α gives both γ and the log evidence.
    logdet, traces = ggn.logdet_and_block_traces(a)
    gamma = ggn.sizes - a * traces
    beta = ggn.noise_precision(a, noise_precision)
    return GroupEvidence(
        alpha=dict(zip(ggn.names, a.tolist(), strict=True)),
        gamma=dict(zip(ggn.names, gamma.tolist(), strict=True)),
        log_evidence=_log_evidence(ggn, a, beta, logdet),
        noise_precision=beta,
        n_iter=n_iter,
        converged=converged,
    )


def evidence_groups(
    model: Any,
    loss_fn: Any,
    data: Any,
    *,
    alpha0: Any = 1e-3,
    alpha_range: tuple[float, float] | None = None,
    groups: Sequence[Sequence[str]] | None = None,
    noise_precision: float | None = None,
    max_iter: int = 200,
    tol: float = 1e-8,
    max_params: int = MAX_GROUP_PARAMS,
) -> GroupEvidence:
    """The evidence-optimal ``α`` per decayed weight tensor at the model's current weights.

    :func:`grouped_ggn` then :func:`evidence_groups_fixed_point`; see the module docstring
    for the formulas. A diagnostic: the weights are held fixed (they are the MAP only for the
    ``α`` they were trained with).

    Examples
    --------
    >>> import torch
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> X = torch.randn(50, 3, dtype=torch.float64); y = (X[:, 0] > 0).long()
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(),
    ...                             torch.nn.Linear(4, 2)).double()
    >>> res = evidence_groups(model, "cross_entropy", (X, y), alpha_range=(1e-6, 1e3))
    >>> sorted(res.alpha), res.converged
    (['0.weight', '2.weight'], True)
    """
    ggn = grouped_ggn(model, loss_fn, data, groups=groups, max_params=max_params)
    return evidence_groups_fixed_point(
        ggn,
        alpha0,
        alpha_range=alpha_range,
        noise_precision=noise_precision,
        max_iter=max_iter,
        tol=tol,
    )
