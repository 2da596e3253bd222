"""Matrix-free stochastic estimates: trace and diagonal of a square operator, spectral density
of a symmetric one.

Everything is built from products with random sign vectors (Rademacher probes) and
returns its own uncertainty:

* :func:`trace` — Hutchinson (1989) or Hutch++ (Meyer, Musco, Musco & Woodruff 2021),
  with a standard error;
* :func:`diagonal` — Bekas, Kokiopoulou & Saad (2007), optionally deflated by a
  low-rank sketch as in Diag++ (Baston & Nakatsukasa 2022), with a standard error per
  entry;
* :func:`spectral_density` — stochastic Lanczos quadrature (Golub & Meurant; Ubaru,
  Chen & Saad 2017; used for neural-network Hessians by Ghorbani, Krishnan & Xiao
  2019) with full reorthogonalization and Gaussian broadening.

Operators are anything :func:`decaylab.curvature._linop.as_linop` accepts: a decaylab
operator, a dense torch tensor or numpy array (symmetric for the spectral density), or a
scipy ``LinearOperator``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from decaylab._checks import ConvergenceWarning, as_float64, check_scalar
from decaylab.curvature._linop import LinOp, as_linop, dense_linop, rademacher, random_generator

__all__ = [
    "TraceResult",
    "DiagonalResult",
    "SpectralDensity",
    "trace",
    "diagonal",
    "spectral_density",
]

TRACE_METHODS = ("hutch++", "hutchinson")
DIAGONAL_METHODS = ("diag++", "bekas")

#: ``P · probes · (probes − 1)`` from which the pair estimate of ``Σ_j R_jj²`` is trusted
#: (its noise relative to ``‖R‖_F²`` is then below about 10 %).
_RELIABLE_PAIRS = 100

#: Float64 bytes that a block of probe vectors (or an SLQ basis) may take at once.
_BLOCK_BYTES = 2**30


def _probe_chunk(P: int, per_vector: int = 1) -> int:
    return max(1, _BLOCK_BYTES // (8 * P * per_vector))


def _split(n_matvecs: int, P: int) -> tuple[int, int]:
    """Products for the sketch (used twice) and for the residual probes."""
    n_sketch = min(n_matvecs // 3, P)
    return n_sketch, n_matvecs - 2 * n_sketch


def _square_linop(op: Any) -> LinOp:
    """Like :func:`as_linop`, but a dense matrix need not be symmetric: the trace and
    diagonal estimators hold for any square matrix."""
    if not isinstance(op, (torch.Tensor, np.ndarray)):
        return as_linop(op)
    A = torch.as_tensor(op).detach()
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] < 1:
        raise ValueError(f"op must be a square (P, P) matrix, got shape {tuple(A.shape)}")
    if A.is_complex():
        raise ValueError(f"op must be a real numeric matrix, got dtype {op.dtype}")
    return dense_linop(A, symmetric=False)


def _too_few_probes(what: str, n_probe: int, n_matvecs: int) -> None:
    warnings.warn(
        f"{what}: only {n_probe} probe(s) remain of n_matvecs={n_matvecs}, too few to estimate "
        "the standard error; std_error is None. Use n_matvecs >= 6 (Hutch++/Diag++) or >= 2.",
        ConvergenceWarning,
        stacklevel=3,
    )


def _sketch_basis(
    lin: LinOp, n_sketch: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal ``Q`` spanning ``H S`` for Rademacher ``S``, and ``H Q``."""
    S = rademacher(lin.size, n_sketch, gen, lin.device)
    Q, _ = torch.linalg.qr(lin.matmat(S))
    return Q, lin.matmat(Q)


# --------------------------------------------------------------------------- trace


@dataclass
class TraceResult:
    """Stochastic trace estimate.

    Attributes
    ----------
    estimate : float
        Unbiased estimate of ``tr(H)``.
    std_error : float or None
        Its standard error (float rounding only when the estimate is exact, e.g. ``P``
        small); ``None``, with a :class:`~decaylab.ConvergenceWarning`, when fewer than
        2 probes remain to estimate it.
    n_matvecs : int
        Products used.
    method : str
    exact_part : float
        Hutch++ only: ``tr(Qᵀ H Q)``, the part captured exactly by the sketch.
    n_probes : int
        Random probes behind the stochastic part (0 when the sketch spans the space).
    """

    estimate: float
    std_error: float | None
    n_matvecs: int
    method: str
    exact_part: float = 0.0
    n_probes: int = 0


def _checked_setup(
    op: Any, n_matvecs: int, seed: int, method: str, methods: tuple[str, str]
) -> tuple[LinOp, torch.Generator, int]:
    """Check the arguments shared by :func:`trace` and :func:`diagonal`; wrap ``op``.

    Any budget ``≥ 1`` is used: the sketched method spends ``n_matvecs // 3`` products
    on its sketch (none below 3) and the rest on probes.
    """
    if method not in methods:
        raise ValueError(f"method must be one of {methods}, got {method!r}")
    n_matvecs = int(check_scalar(n_matvecs, "n_matvecs", low=1, integer=True))
    seed = int(check_scalar(seed, "seed", integer=True))
    lin = _square_linop(op)
    return lin, random_generator(seed), n_matvecs


def trace(op: Any, n_matvecs: int = 100, method: str = "hutch++", seed: int = 0) -> TraceResult:
    """Estimate ``tr(H)`` from ``n_matvecs`` products with random sign vectors.

    Hutchinson (1989): ``tr(H) ≈ (1/m) Σ_i g_iᵀ H g_i`` for Rademacher ``g_i``, variance
    ``2 (‖H‖_F² − Σ H_jj²) / m``.

    Hutch++ (Meyer et al. 2021): spend ``m/3`` products on a sketch ``Q = orth(H S)``,
    ``m/3`` on ``H Q`` and the rest on Hutchinson for the deflated remainder,

    .. math:: \\mathrm{tr}(H) \\approx \\mathrm{tr}(Q^\\top H Q)
              + \\frac{1}{m'} \\sum_i g_i^\\top (I - QQ^\\top) H (I - QQ^\\top) g_i ,

    whose error scales with the Frobenius norm of ``H`` *without its top eigenvalues*,
    which is what makes it much better on Hessians with a few large outliers.

    The standard error is ``sqrt(v / m')`` with ``v`` an estimate of the variance of one
    term, ``Var(gᵀRg) = 2 (‖R_s‖_F² − Σ_j R_jj²)`` (``R`` the deflated operator, ``R_s``
    its symmetric part, Rademacher ``g``), made from every entry of the probe products:
    ``‖R‖_F² ≈ mean_i ‖R g_i‖²`` (exact in expectation for symmetric ``R``, an upper
    bound otherwise) and ``Σ_j R_jj² ≈ Σ_{a≠b} (g_a ⊙ R g_a)·(g_b ⊙ R g_b) / (m'(m'−1))``
    (unbiased). The sample variance of the ``m'`` scalar terms, which this replaces, is
    too noisy with few probes (with 2 probes it was near 0 in some seeds: mean ``z²`` in
    the hundreds). Where ``P · m'(m'−1) < 100`` the ``Σ R_jj²`` part is too noisy and is
    left out, which makes the error an upper estimate (mean ``z² ≈ 0.3–0.6`` on
    10 × 10 matrices with 6 products). Float rounding of the products is added. For
    Hutch++ the error is conditional on the sketch, for which the remainder's estimate
    is unbiased, so it is the error of the whole estimate. Over 300 seeds on 100 × 100
    positive semi-definite matrices with 30 products, ``|z| > 3`` in at most 2 % of seeds
    (tested).

    Parameters
    ----------
    op : operator, torch.Tensor, numpy.ndarray or scipy LinearOperator
        Any square ``(P, P)`` (the estimators do not need symmetry).
    n_matvecs : int
        Product budget, ``≥ 1``. Hutch++ spends ``n_matvecs // 3`` products on the sketch
        and as many on ``H Q`` (none below 3 products: it is then Hutchinson) and the rest
        on probes; it stops early, exactly, when the sketch spans the whole space. With
        fewer than 2 probes, ``std_error`` is ``None`` (with a ConvergenceWarning).
    method : {"hutch++", "hutchinson"}
    seed : int

    Returns
    -------
    TraceResult

    References
    ----------
    M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix for
    Laplacian smoothing splines", Comm. Statist. Simulation Comput. 18 (1989).
    R. A. Meyer, C. Musco, C. Musco and D. P. Woodruff, "Hutch++: Optimal stochastic
    trace estimation", SOSA (2021).

    Examples
    --------
    >>> import torch
    >>> from decaylab.curvature.stochastic import trace
    >>> H = torch.diag(torch.cat([torch.tensor([50.0, 20.0]), torch.ones(198)])).double()
    >>> res = trace(H, n_matvecs=30)
    >>> abs(res.estimate - 268.0) < 4 * res.std_error + 1e-9
    True
    """
    lin, gen, n_matvecs = _checked_setup(op, n_matvecs, seed, method, TRACE_METHODS)
    P = lin.size

    exact, floor = 0.0, 0.0
    Q = None
    n_probe = n_matvecs
    if method == "hutch++":
        n_sketch, n_probe = _split(n_matvecs, P)
        if n_sketch:
            Q, HQ = _sketch_basis(lin, n_sketch, gen)
            exact = float((Q * HQ).sum())
            floor = lin.eps * math.sqrt(P) * float(torch.linalg.matrix_norm(HQ))
            if n_sketch == P:  # Q spans everything: the trace is exact
                return TraceResult(exact, floor, lin.n_matvecs, method, exact, 0)

    terms, frob, diag_pairs, probes = [], 0.0, 0.0, 0
    diag_sum = torch.zeros(P, dtype=torch.float64, device=lin.device)
    chunk = _probe_chunk(P)
    for start in range(0, n_probe, chunk):
        G = rademacher(P, min(chunk, n_probe - start), gen, lin.device)
        if Q is not None:
            G = G - Q @ (Q.T @ G)
        RG = lin.matmat(G)
        if Q is not None:
            RG = RG - Q @ (Q.T @ RG)  # R g with R = (I - QQᵀ) H (I - QQᵀ)
        U = G * RG  # column i: Bekas' estimate of diag(R) from probe i
        terms.append(U.sum(dim=0).cpu())
        frob += float((RG * RG).sum())
        # Σ_{a≠b} u_a·u_b, merged over chunks: unbiased for (#pairs) Σ_j R_jj².
        block = U.sum(dim=1)
        diag_pairs += float(2 * (diag_sum * block).sum() + (block * block).sum() - (U * U).sum())
        diag_sum += block
        probes += U.shape[1]
    values = torch.cat(terms)
    estimate = exact + float(values.mean())
    if n_probe < 2:
        _too_few_probes("trace", n_probe, n_matvecs)
        return TraceResult(estimate, None, lin.n_matvecs, method, exact, n_probe)
    # Var(gᵀRg) = 2 (‖R_s‖_F² − Σ_j R_jj²), R_s = (R + Rᵀ)/2, for Rademacher g.
    # E‖Rg‖² = ‖R‖_F² ≥ ‖R_s‖_F² (equal for symmetric R) and the pair sum is unbiased
    # for Σ R_jj², so this estimates the variance from every entry of every product,
    # not from the n_probe scalar terms alone (whose spread is too noisy with few).
    n_pairs = probes * (probes - 1)
    frob_mean = frob / probes
    # The pair sum's noise relative to ‖R‖_F² is about 1/sqrt(P · pairs); where that is
    # large (tiny P, 2-3 probes) subtracting it could zero the variance, so it is left
    # out: 2‖R‖_F² bounds the variance from above (and equals it for Gaussian probes).
    diag_part = diag_pairs / n_pairs if P * n_pairs >= _RELIABLE_PAIRS else 0.0
    variance = 2.0 * max(frob_mean - diag_part, 0.0)
    floor += lin.eps * math.sqrt(P * frob_mean)
    std_error = math.sqrt(variance / n_probe) + floor
    return TraceResult(estimate, std_error, lin.n_matvecs, method, exact, n_probe)


# ------------------------------------------------------------------------ diagonal


@dataclass
class DiagonalResult:
    """Stochastic diagonal estimate.

    Attributes
    ----------
    estimate : torch.Tensor
        ``(P,)`` float64 on the operator's device, unbiased for ``diag(H)``.
    std_error : torch.Tensor or None
        ``(P,)`` standard error of each entry; ``None``, with a
        :class:`~decaylab.ConvergenceWarning`, when fewer than 2 probes remain.
    n_matvecs : int
    method : str
    """

    estimate: torch.Tensor
    std_error: torch.Tensor | None
    n_matvecs: int
    method: str


def diagonal(
    op: Any, n_matvecs: int = 100, seed: int = 0, method: str = "diag++"
) -> DiagonalResult:
    """Estimate ``diag(H)`` from ``n_matvecs`` products with random sign vectors.

    Bekas, Kokiopoulou & Saad (2007): for Rademacher ``g_i``,
    ``diag(H) ≈ (1/m) Σ_i g_i ⊙ H g_i``; entry ``j`` has variance
    ``Σ_{l≠j} H_jl² / m``.

    ``"diag++"`` (default; Baston & Nakatsukasa 2022) first captures a low-rank part
    exactly, like Hutch++: with ``Q = orth(H S)`` (``m/3`` products) and ``H Q``
    (``m/3``),

    .. math:: \\mathrm{diag}(H) = \\mathrm{diag}(QQ^\\top H)
              + \\mathrm{diag}((I - QQ^\\top) H),

    the first term exact (``Σ_k Q_jk (HQ)_jk``) and the second by Bekas' estimator with
    the remaining probes, ``(I − QQᵀ) H g = H g − Q (HQ)ᵀ g``. Its variance involves only
    the rows of ``H`` without its dominant eigen-directions, so it wins when a few
    eigenvalues dominate (neural-network Hessians); ``"bekas"`` is better for nearly
    diagonal matrices.

    For a non-symmetric ``H`` the split is ``diag(H QQᵀ) + diag(H (I − QQᵀ))`` (the same
    for symmetric ``H``), with ``H (I − QQᵀ) g = H g − (HQ)(Qᵀ g)``.

    The standard error of entry ``j`` is the sample standard deviation of its ``m'``
    per-probe terms (with Bessel's correction, divisor ``m' − 1``) over ``sqrt(m')``.

    Parameters
    ----------
    op : operator, torch.Tensor, numpy.ndarray or scipy LinearOperator
        Any square ``(P, P)``.
    n_matvecs : int
        Product budget, ``≥ 1`` (Diag++: a third on the sketch, none below 3 products).
        With fewer than 2 probes, ``std_error`` is ``None`` (with a ConvergenceWarning).
    seed : int
    method : {"diag++", "bekas"}

    Returns
    -------
    DiagonalResult

    References
    ----------
    C. Bekas, E. Kokiopoulou and Y. Saad, "An estimator for the diagonal of a matrix",
    Appl. Numer. Math. 57 (2007).
    R. A. Baston and Y. Nakatsukasa, "Stochastic diagonal estimation: probabilistic
    bounds and an improved algorithm", arXiv:2201.10684 (2022).

    Examples
    --------
    >>> import torch
    >>> from decaylab.curvature.stochastic import diagonal
    >>> H = torch.diag(torch.linspace(1.0, 2.0, 50, dtype=torch.float64))
    >>> res = diagonal(H, n_matvecs=8, method="bekas")
    >>> bool(torch.allclose(res.estimate, torch.diagonal(H)))   # exact for a diagonal H
    True
    """
    lin, gen, n_matvecs = _checked_setup(op, n_matvecs, seed, method, DIAGONAL_METHODS)
    P = lin.size

    exact = torch.zeros(P, dtype=torch.float64, device=lin.device)
    Q = HQ = None
    n_probe = n_matvecs
    if method == "diag++":
        n_sketch, n_probe = _split(n_matvecs, P)
        if n_sketch:
            Q, HQ = _sketch_basis(lin, n_sketch, gen)
            exact = (Q * HQ).sum(dim=1)  # diag(H Q Qᵀ)
            if n_sketch == P:
                return DiagonalResult(exact, torch.zeros_like(exact), lin.n_matvecs, method)

    # Per-entry mean and sum of squared deviations, merged chunk by chunk (Chan, Golub &
    # LeVeque) so the variance has no cancellation and memory stays at one chunk.
    mean = torch.zeros(P, dtype=torch.float64, device=lin.device)
    m2 = torch.zeros_like(mean)
    seen = 0
    chunk = _probe_chunk(P)
    for start in range(0, n_probe, chunk):
        G = rademacher(P, min(chunk, n_probe - start), gen, lin.device)
        HG = lin.matmat(G)
        if Q is not None and HQ is not None:
            HG = HG - HQ @ (Q.T @ G)  # H (I - QQᵀ) g: also right for non-symmetric H
        terms = G * HG
        n_b = terms.shape[1]
        mean_b = terms.mean(dim=1)
        m2_b = ((terms - mean_b[:, None]) ** 2).sum(dim=1)
        delta = mean_b - mean
        total = seen + n_b
        mean = mean + delta * (n_b / total)
        m2 = m2 + m2_b + delta * delta * (seen * n_b / total)
        seen = total
    if n_probe < 2:
        _too_few_probes("diagonal", n_probe, n_matvecs)
        return DiagonalResult(exact + mean, None, lin.n_matvecs, method)
    var = m2 / (n_probe - 1)  # Bessel's correction: unbiased for the per-probe variance
    return DiagonalResult(exact + mean, (var / n_probe).sqrt(), lin.n_matvecs, method)


# ---------------------------------------------------------------- spectral density


@dataclass
class SpectralDensity:
    """Spectral density by stochastic Lanczos quadrature.

    Attributes
    ----------
    grid : torch.Tensor
        ``(G,)`` float64 points ``t``.
    density : torch.Tensor
        ``(G,)`` ``φ(t) = Σ_k w_k N(t; θ_k, σ²)``, an estimate of
        ``(1/P) Σ_i N(t; λ_i, σ²)``; integrates to ~1 when the grid covers the nodes.
    nodes : torch.Tensor
        ``(K,)`` quadrature nodes ``θ_k`` (Ritz values of every probe, concatenated).
    weights : torch.Tensor
        ``(K,)`` weights ``w_k`` (squared first components of the Ritz vectors divided by
        the number of probes); ``Σ w_k = 1`` and ``Σ w_k θ_k`` is the Hutchinson estimate
        of ``tr(H)/P``.
    sigma : float
        Gaussian broadening used.
    n_matvecs : int
    """

    grid: torch.Tensor
    density: torch.Tensor
    nodes: torch.Tensor
    weights: torch.Tensor
    sigma: float
    n_matvecs: int

    def moment(self, power: int = 1) -> float:
        """Quadrature estimate of ``tr(H^power) / P`` (exact in the nodes, no broadening)."""
        return float((self.weights * self.nodes**power).sum())


def _lanczos_block(lin: LinOp, V0: torch.Tensor, n_steps: int) -> list[torch.Tensor]:
    """Independent Lanczos runs (full reorthogonalization) from the columns of ``V0``.

    Returns one symmetric tridiagonal matrix per column; a run stops early at an
    invariant subspace (its quadrature is then exact). Runs advance together: one block
    product per step over the runs still going.
    """
    P, nb = V0.shape
    dev = lin.device
    basis = torch.zeros(nb, n_steps, P, dtype=torch.float64, device=dev)
    alpha = torch.zeros(nb, n_steps, dtype=torch.float64)
    beta = torch.zeros(nb, n_steps, dtype=torch.float64)
    length = torch.full((nb,), n_steps, dtype=torch.long)
    alive = torch.ones(nb, dtype=torch.bool)
    v = (V0 / torch.linalg.vector_norm(V0, dim=0)).T.contiguous()  # (nb, P)
    for j in range(n_steps):
        basis[:, j] = v
        idx = alive.nonzero()[:, 0]
        w = torch.zeros_like(v)
        w[idx.to(dev)] = lin.matmat(v[idx.to(dev)].T.contiguous()).T
        a = (w * v).sum(dim=1)
        alpha[idx, j] = a.cpu()[idx]
        if j == n_steps - 1:  # the last step's beta and next vector would go unused
            break
        scale = torch.linalg.vector_norm(w, dim=1)
        Q = basis[:, : j + 1]  # (nb, j+1, P), a view; finished runs have w = 0
        for _ in range(2):  # full reorthogonalization, twice
            w = w - torch.bmm(Q.transpose(1, 2), torch.bmm(Q, w[:, :, None]))[:, :, 0]
        b = torch.linalg.vector_norm(w, dim=1)
        beta[idx, j] = b.cpu()[idx]
        going = (b > 1e-10 * scale.clamp_min(1e-300)).cpu() & alive
        length[alive & ~going] = j + 1
        alive = going
        if not bool(alive.any()):
            break
        v = torch.where(going.to(dev)[:, None], w / b.clamp_min(1e-300)[:, None], 0.0)
    out = []
    for i in range(nb):
        n = int(length[i])
        T = torch.diag(alpha[i, :n])
        if n > 1:
            off = beta[i, : n - 1]
            T = T + torch.diag(off, 1) + torch.diag(off, -1)
        out.append(T)
    return out


def spectral_density(
    op: Any,
    n_probes: int = 10,
    n_steps: int = 80,
    grid: Any = None,
    sigma: float | None = None,
    seed: int = 0,
) -> SpectralDensity:
    """Eigenvalue density of a symmetric operator by stochastic Lanczos quadrature.

    For each Rademacher probe ``g`` (normalized), ``n_steps`` Lanczos steps with full
    reorthogonalization give a tridiagonal ``T = U diag(θ) Uᵀ``; Gauss quadrature
    ``gᵀ f(H) g / P ≈ Σ_k U_1k² f(θ_k)`` (Golub & Meurant 2010) averaged over probes
    estimates ``(1/P) tr f(H)``. With ``f`` a Gaussian of width ``σ`` centred at ``t``,

    .. math:: \\phi(t) = \\frac{1}{n_{probes}} \\sum_{probes} \\sum_k U_{1k}^2
              \\frac{1}{\\sigma\\sqrt{2\\pi}} e^{-(t-\\theta_k)^2 / (2\\sigma^2)}
              \\approx \\frac{1}{P} \\sum_i \\frac{1}{\\sigma\\sqrt{2\\pi}}
              e^{-(t-\\lambda_i)^2 / (2\\sigma^2)} .

    Parameters
    ----------
    op : operator, torch.Tensor, numpy.ndarray or scipy LinearOperator
        Symmetric ``(P, P)``.
    n_probes : int
        Random probes (``≥ 1``); all run together as blocks of products.
    n_steps : int
        Lanczos steps per probe (``≥ 1``; at most ``P`` are taken). Costs
        ``n_probes · n_steps`` products.
    grid : array-like, optional
        1-D points at which to evaluate the density. Default: 1,000 points over
        ``[min θ − 5σ, max θ + 5σ]``.
    sigma : float, optional
        Gaussian broadening (``> 0``). Default: 1 % of the node range (or of their
        magnitude if all nodes coincide).
    seed : int

    Returns
    -------
    SpectralDensity

    References
    ----------
    S. Ubaru, J. Chen and Y. Saad, "Fast estimation of tr(f(A)) via stochastic Lanczos
    quadrature", SIAM J. Matrix Anal. Appl. 38(4) (2017).
    B. Ghorbani, S. Krishnan and Y. Xiao, "An investigation into neural net optimization
    via Hessian eigenvalue density", ICML (2019).
    G. H. Golub and G. Meurant, *Matrices, Moments and Quadrature with Applications*,
    Princeton University Press (2010).

    Examples
    --------
    >>> import torch
    >>> from decaylab.curvature.stochastic import spectral_density
    >>> H = torch.diag(torch.linspace(-1.0, 3.0, 400, dtype=torch.float64))
    >>> sd = spectral_density(H, n_probes=4, n_steps=30)
    >>> round(float(torch.trapezoid(sd.density, sd.grid)), 3)
    1.0
    >>> abs(sd.moment(1) - 1.0) < 0.1      # tr(H)/P = 1
    True
    """
    n_probes = int(check_scalar(n_probes, "n_probes", low=1, integer=True))
    n_steps = int(check_scalar(n_steps, "n_steps", low=1, integer=True))
    seed = int(check_scalar(seed, "seed", integer=True))
    if sigma is not None:
        sigma = float(check_scalar(sigma, "sigma", low=0.0, low_inclusive=False))
    grid_values = None
    if grid is not None:
        grid_values = as_float64(grid, "grid", ndim=1)
        if grid_values.size < 2:
            raise ValueError(f"grid must have at least 2 points, got {grid_values.size}")
    lin = as_linop(op)
    gen = random_generator(seed)
    P = lin.size
    steps = min(n_steps, P)

    nodes, weights = [], []
    chunk = _probe_chunk(P, per_vector=steps + 1)
    for start in range(0, n_probes, chunk):
        nb = min(chunk, n_probes - start)
        G = rademacher(P, nb, gen, lin.device)
        for T in _lanczos_block(lin, G, steps):
            theta, U = torch.linalg.eigh(T)
            nodes.append(theta)
            weights.append(U[0] ** 2 / n_probes)
    node_t = torch.cat(nodes)
    weight_t = torch.cat(weights)

    lo, hi = float(node_t.min()), float(node_t.max())
    if sigma is None:
        width = hi - lo
        sigma = 0.01 * width if width > 0 else 1e-3 * max(abs(hi), 1.0)
    if grid_values is None:
        grid_t = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, 1000, dtype=torch.float64)
    else:
        grid_t = torch.from_numpy(np.ascontiguousarray(grid_values))
    z = (grid_t[:, None] - node_t[None, :]) / sigma
    density = (torch.exp(-0.5 * z * z) * weight_t).sum(dim=1) / (sigma * math.sqrt(2 * math.pi))
    return SpectralDensity(grid_t, density, node_t, weight_t, float(sigma), lin.n_matvecs)
