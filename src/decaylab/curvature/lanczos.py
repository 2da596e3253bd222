"""Certified extreme eigenpairs of a symmetric operator by thick-restart (block) Lanczos.

The method is Lanczos' (1950) Krylov iteration with full reorthogonalization, restarted
by keeping Ritz vectors ("thick restart", Wu & Simon 2000; the Krylov-Schur form of
Stewart 2001). Two details make every returned pair *certifiable* at the cost of at
most one extra product:

* every product ``w_j = H v_j`` is **stored** (``W = H V``), and the projected matrix
  ``M = Vᵀ W`` is formed from the stored products, not from the three-term recurrence;
* the residual of a Ritz pair ``(θ, y = V s)`` is then the residual of the products
  actually computed, ``‖W s − θ V s‖``, evaluated in the small space from ``M`` (plus
  the pending basis block), with a tracked bound on what the small space misses.

So the residual is ``‖Σ_j s_j H v_j − θ y‖`` for the products as evaluated (up to
float64 rounding), whatever the loss of orthogonality or the asymmetry that float32
products introduce. What it cannot see is the rounding *inside* each product, i.e. that
``H y`` evaluated directly differs from ``Σ_j s_j (H v_j)``. For products coarser than
float64 this is measured once with one true product and added, with a margin, to every
residual before a pair is certified (see :func:`eigen`, Notes).

References
----------
C. Lanczos, "An iteration method for the solution of the eigenvalue problem of linear
differential and integral operators", J. Res. Nat. Bur. Standards 45 (1950).
K. Wu and H. Simon, "Thick-restart Lanczos method for large symmetric eigenvalue
problems", SIAM J. Matrix Anal. Appl. 22(2) (2000).
G. W. Stewart, "A Krylov-Schur algorithm for large eigenproblems", SIAM J. Matrix Anal.
Appl. 23(3) (2001).
G. H. Golub and R. Underwood, "The block Lanczos method for computing eigenvalues",
Mathematical Software III (1977).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from decaylab._checks import ConvergenceWarning, check_scalar
from decaylab.curvature._linop import LinOp, as_linop, gaussian, random_generator

__all__ = ["EigenResult", "eigen"]

WHICH = ("largest", "smallest", "magnitude")

#: Pairs are certified when ``residual ≤ tol · max(|θ|, FLOOR · ‖H‖_est)``: eigenvalues
#: near zero are judged on an absolute scale relative to the spectral norm.
_NORM_FLOOR = 1e-6

#: A new Krylov direction shorter than this fraction of the product it came from is
#: rounding noise: the Krylov space is (numerically) invariant. A fresh random
#: direction replaces it, which is how further copies of repeated eigenvalues and the
#: rest of a small space are found.
_BREAKDOWN = 1e-10

#: Completeness check (see :func:`eigen`, "Completeness"): fresh Gaussian directions added
#: once all wanted pairs certify, and the block steps they are followed for. A round after
#: a miss runs apart from the basis on the deflated operator, ``_RECHECK_STEPS`` steps.
_CHECK_BLOCK = 2
_CHECK_STEPS = 4
_RECHECK_STEPS = 5

#: Multiplier on the estimated per-product rounding error before it is added to a
#: residual (the estimate is statistical, so it is taken with a margin).
_ROUNDING_SAFETY = 3.0


@dataclass
class EigenResult:
    """Eigenpairs from :func:`eigen`, each certified or flagged.

    Attributes
    ----------
    eigenvalues : torch.Tensor
        ``(k,)`` float64 on the CPU; descending for ``which="largest"``, ascending for
        ``"smallest"``, by descending ``|θ|`` for ``"magnitude"`` (most extreme first).
    eigenvectors : torch.Tensor
        ``(P, k)`` orthonormal columns, in the operator's dtype and on its device.
    residuals : torch.Tensor
        ``(k,)`` float64: a bound from above on ``‖H q − θ q‖`` for the returned
        ``q`` (in the operator's dtype) and the operator's float64 counterpart: the
        residual of the stored products plus the allowance ``δ`` (:func:`eigen`, Notes).
    converged : torch.Tensor
        ``(k,)`` bool: ``residuals[j] ≤ tol · max(|θ_j|, 1e-6 · norm_estimate)`` for this
        pair and every more wanted one (``j ≤ i``).
    n_matvecs : int
        Operator-vector products used by this call.
    which : str
    tol : float
    norm_estimate : float
        ``max |θ|`` over all Ritz values seen, a lower bound on ``‖H‖₂``.
    product_error : float
        ``ε``, the relative rounding error of the operator's products: measured with one
        product, except for float64 matrices (``eps · sqrt(P)`` assumed).
    block_size : int
        Lanczos block size; exactly repeated eigenvalues are resolved only up to this
        multiplicity (see :func:`eigen`, "Repeated eigenvalues").
    n_restarts : int
    complete : bool
        True when no eigenvalue beyond the returned ones is missing as far as a check can
        tell: the basis spanned the whole space, or the randomized completeness check
        passed (:func:`eigen`, "Completeness"; bound: :meth:`miss_probability`). False
        when a pair is not certified, the check was switched off or ran out of budget.
    completeness_matvecs : int
        Products spent after all ``k`` pairs first certified: the completeness check and
        what it brought in.
    check_block, check_steps : int
        Fresh Gaussian starts and steps of the last (passed) check; 0 when none ran.
    n_dim : int
        ``P``.

    Examples
    --------
    >>> import torch
    >>> from decaylab.curvature.lanczos import eigen
    >>> res = eigen(torch.diag(torch.arange(1.0, 51.0, dtype=torch.float64)), k=2)
    >>> res.eigenvalues.round().tolist(), res.all_converged
    ([50.0, 49.0], True)
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residuals: torch.Tensor
    converged: torch.Tensor
    n_matvecs: int
    which: str = "largest"
    tol: float = 1e-3
    norm_estimate: float = float("nan")
    product_error: float = 0.0
    block_size: int = 1
    n_restarts: int = 0
    complete: bool = False
    completeness_matvecs: int = 0
    check_block: int = 0
    check_steps: int = 0
    n_dim: int = 0

    def miss_probability(self, gap: float) -> float:
        """Bound on the probability that the completeness check missed an eigenvalue.

        For an eigenvalue ``λ`` beyond the last returned value ``θ_k`` (above it for
        ``"largest"``, below for ``"smallest"``, larger ``|λ|`` for ``"magnitude"``) with
        ``|λ − θ_k| ≥ gap · (λ_max − λ_min)``: the probability that it is missing although
        ``complete`` is True is at most ``min(1, 1.648 sqrt(P) exp(−sqrt(gap)(2s − 1)))^r``
        for ``r`` fresh Gaussian starts followed for ``s`` steps (Kuczyński &
        Woźniakowski 1992, applied to the operator deflated by the returned pairs).
        ``0.0`` when the basis spanned the whole space, ``1.0`` when ``complete`` is False.
        It is a worst-case bound over spectra: small gaps give 1 (no guarantee).
        """
        gap = float(check_scalar(gap, "gap", low=0.0, high=1.0, low_inclusive=False))
        if not self.complete:
            return 1.0
        if self.check_block == 0:
            return 0.0
        exponent = -math.sqrt(gap) * (2 * self.check_steps - 1)
        one = min(1.0, 1.648 * math.sqrt(self.n_dim) * math.exp(exponent))
        return one**self.check_block

    @property
    def all_converged(self) -> bool:
        """Whether every returned pair is certified."""
        return bool(self.converged.all())


def _wanted_order(theta: torch.Tensor, which: str) -> torch.Tensor:
    """Indices of Ritz values, most wanted first."""
    if which == "largest":
        return torch.argsort(theta, descending=True)
    if which == "smallest":
        return torch.argsort(theta)
    return torch.argsort(theta.abs(), descending=True)


class _Krylov:
    """Basis ``V`` (orthonormal, float64), stored products ``W = H V[:, :n_w]``, ``M = VᵀW``.

    Vectors are stored as *rows* (``Vr = Vᵀ``, ``Wr = Wᵀ``) so each basis vector is
    contiguous. Rows ``n_w:n_v`` of ``Vr`` are the *pending* block: orthonormal directions
    not yet multiplied, which hold the part of ``W`` outside ``V[:, :n_w]``. ``defect``
    bounds ``‖W − V M‖_F`` (what the small-space residual cannot see; nonzero only after
    a restart with non-symmetric ``M``).
    """

    def __init__(
        self,
        lin: LinOp,
        capacity: int,
        block: int,
        gen: torch.Generator,
        start: torch.Tensor | None = None,
        extra: int = 0,
    ) -> None:
        self.lin = lin
        self.P = lin.size
        self.dev = lin.device
        self.gen = gen
        # Rows past n_v / n_w are never read, so the (large) buffers need no zeroing.
        # ``extra`` rows hold the fresh directions of the completeness check.
        rows_v = capacity + block + extra
        self.Vr = torch.empty(rows_v, self.P, dtype=torch.float64, device=self.dev)
        self.Wr = torch.empty(capacity, self.P, dtype=torch.float64, device=self.dev)
        self.M = torch.zeros(rows_v, capacity, dtype=torch.float64)
        self.w_norms = torch.zeros(capacity, dtype=torch.float64)
        self.n_v = 0
        self.n_w = 0
        self.defect = 0.0
        self.n_restarts = 0
        rows = gaussian(self.P, block, self.gen, self.dev).T
        if start is not None:
            rows[: start.shape[1]] = start.T.to(device=self.dev, dtype=torch.float64)
        self.extend(rows, scale=None)

    def _orth(self, x: torch.Tensor, passes: int = 2) -> torch.Tensor:
        # Classical Gram-Schmidt twice is enough ("twice is enough", Parlett).
        basis = self.Vr[: self.n_v]
        for _ in range(passes):
            x = x - (basis @ x) @ basis
        return x

    def extend(
        self, X: torch.Tensor, scale: torch.Tensor | None, coeffs: torch.Tensor | None = None
    ) -> None:
        """Append the orthonormalized rows of ``X`` to the pending block.

        ``coeffs`` are ``V[:, :n_v] ᵀ X_jᵀ`` when the caller has them already (the new
        column of ``M``): they serve as the first Gram-Schmidt pass, saving one pass over
        the basis per product.
        """
        n_start = self.n_v
        for j in range(X.shape[0]):
            if self.n_v >= self.P:
                return
            if coeffs is None:
                x = self._orth(X[j])
            else:
                x = X[j] - coeffs[:, j] @ self.Vr[:n_start]
                added = self.Vr[n_start : self.n_v]
                if added.shape[0]:
                    x = x - (added @ x) @ added
                x = self._orth(x, passes=1)
            norm = float(torch.linalg.vector_norm(x))
            if self.n_v == self.Vr.shape[0]:
                self._grow()
            ref = float(torch.linalg.vector_norm(X[j])) if scale is None else float(scale[j])
            if not norm > _BREAKDOWN * ref or ref == 0.0:
                x = self._orth(gaussian(self.P, 1, self.gen, self.dev)[:, 0])
                norm = float(torch.linalg.vector_norm(x))
                if not norm > 0.0:  # pragma: no cover - the space is exhausted
                    return
            self.Vr[self.n_v] = x / norm
            self.n_v += 1

    def _grow(self) -> None:
        """Room for more pending rows (each completeness check adds a fresh block)."""
        more = max(4, self.Vr.shape[0] // 4)
        self.Vr = torch.cat([self.Vr, self.Vr.new_empty(more, self.P)])
        self.M = torch.cat([self.M, self.M.new_zeros(more, self.M.shape[1])])

    def pending(self) -> int:
        return self.n_v - self.n_w

    def multiply(self, count: int) -> None:
        """Multiply the first ``count`` pending vectors; append the new Krylov directions."""
        lo, hi = self.n_w, self.n_w + count
        products = self.lin.matmat(self.Vr[lo:hi].T.contiguous()).T
        self.Wr[lo:hi] = products
        coeffs = self.Vr[: self.n_v] @ products.T
        self.M[: self.n_v, lo:hi] = coeffs.cpu()
        norms = torch.linalg.vector_norm(products, dim=1)
        self.w_norms[lo:hi] = norms.cpu()
        self.n_w = hi
        old_v = self.n_v
        # The parts of the new products outside the basis become pending directions, so
        # the small-space residual sees all of W (also when only part of a block was
        # multiplied because the budget ran out).
        self.extend(products, scale=norms, coeffs=coeffs)
        if self.n_v > old_v:
            new_rows = self.Vr[old_v : self.n_v] @ self.Wr[: self.n_w].T
            self.M[old_v : self.n_v, : self.n_w] = new_rows.cpu()

    def add_fresh(self, count: int) -> None:
        """Append ``count`` fresh random directions to the pending block."""
        self.extend(gaussian(self.P, count, self.gen, self.dev).T, scale=None)

    def ritz(self) -> tuple[torch.Tensor, torch.Tensor]:
        G = self.M[: self.n_w, : self.n_w]
        return torch.linalg.eigh(0.5 * (G + G.T))

    def product_scales(self, theta: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """``sqrt(θ² + Σ_j s_j² ‖w_j‖²)``: the size of the products a Ritz pair's residual
        is made of, which their rounding errors scale with."""
        spread = (S * S * (self.w_norms[: self.n_w, None] ** 2)).sum(dim=0)
        return torch.sqrt(theta * theta + spread)

    def product_sums(self, S: torch.Tensor) -> torch.Tensor:
        """``Σ_j |s_j| ‖w_j‖``: a worst-case (triangle-inequality) bound on how far a sum of
        products with relative errors ``ε`` can be off, divided by ``ε``."""
        return (S.abs() * self.w_norms[: self.n_w, None]).sum(dim=0)

    def residual_estimates(self, theta: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """``‖W s − θ V s‖`` from the small space, plus the tracked defect (an upper bound)."""
        R = self.M[: self.n_v, : self.n_w] @ S
        R[: self.n_w] -= S * theta
        return torch.linalg.vector_norm(R, dim=0) + self.defect

    def ritz_vectors(self, S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V S, W S)`` as ``(P, m)`` matrices."""
        S_dev = S.to(self.dev)
        return self.Vr[: self.n_w].T @ S_dev, self.Wr[: self.n_w].T @ S_dev

    def restart(self, S_keep: torch.Tensor) -> None:
        """Thick restart: keep the Ritz vectors ``V S_keep`` (and their products), then
        the pending block; rebuild ``M`` from the stored vectors and measure the defect."""
        keep = S_keep.shape[1]
        St = S_keep.T.to(self.dev)
        pend = self.Vr[self.n_w : self.n_v].clone()
        n_pend = pend.shape[0]
        self.Vr[:keep] = St @ self.Vr[: self.n_w]
        self.Wr[:keep] = St @ self.Wr[: self.n_w]
        self.Vr[keep : keep + n_pend] = pend
        self.n_w = keep
        self.n_v = keep + n_pend
        Vr = self.Vr[: self.n_v]
        Wr = self.Wr[: self.n_w]
        self.w_norms[:keep] = torch.linalg.vector_norm(Wr, dim=1).cpu()
        M = Vr @ Wr.T
        self.M.zero_()
        self.M[: self.n_v, : self.n_w] = M.cpu()
        self.defect = float(torch.linalg.matrix_norm(Wr - M.T @ Vr))
        self.n_restarts += 1


def _keys(theta: torch.Tensor, which: str) -> torch.Tensor:
    """Ritz values mapped so that larger means more wanted."""
    if which == "largest":
        return theta
    return -theta if which == "smallest" else theta.abs()


def _deflated_check(
    lin: LinOp,
    Q: torch.Tensor,
    bar: float,
    which: str,
    block: int,
    steps: int,
    gen: torch.Generator,
    budget: int,
) -> torch.Tensor | None:
    """Block Krylov iteration from ``block`` fresh Gaussian starts on ``(I − QQᵀ) H (I − QQᵀ)``.

    ``Q`` holds the certified wanted Ritz vectors, ``bar`` the key (:func:`_keys`) that a
    missed eigenvalue must beat: the last wanted value plus its threshold. Deflated, a
    missed eigenvalue is the most wanted one left, so ``steps`` block steps find it with
    Kuczyński & Woźniakowski's probability. Returns the check-space Ritz vectors whose key
    beats ``bar`` (``(P, m)``, ``m ≥ 1``; the iteration stops at the first step that finds
    one), an empty ``(P, 0)`` block when none does, or ``None`` when ``budget`` products do
    not allow the ``block · steps`` products of the check.
    """
    if block * steps > budget:
        return None

    def deflate(X: torch.Tensor) -> torch.Tensor:
        return X - Q @ (Q.T @ X)

    def new_part(X: torch.Tensor) -> torch.Tensor:
        for _ in range(2):  # against Q and the check space; twice is enough
            X = deflate(X)
            X = X - V @ (V.T @ X)
        return X

    X = gaussian(lin.size, block, gen, lin.device)
    V = torch.empty(lin.size, 0, dtype=torch.float64, device=lin.device)
    W = torch.empty_like(V)
    for _ in range(steps):
        before = torch.linalg.vector_norm(X, dim=0)
        X = new_part(X)
        lost = torch.linalg.vector_norm(X, dim=0) <= _BREAKDOWN * before
        if bool(lost.any()):  # an invariant direction: continue from a fresh one
            X[:, lost] = new_part(gaussian(lin.size, int(lost.sum()), gen, lin.device))
        X, _ = torch.linalg.qr(X)
        V = torch.cat([V, X], dim=1)
        W = torch.cat([W, deflate(lin.matmat(X))], dim=1)
        G = V.T @ W
        theta, S = torch.linalg.eigh(0.5 * (G + G.T))
        beats = _keys(theta, which).cpu() > bar
        if bool(beats.any()):
            return V @ S[:, beats.to(S.device)]
        X = W[:, -block:]
    return V[:, :0]


class _CompletenessCheck:
    """State of the randomized completeness check of :func:`eigen`.

    First round: once every wanted pair certifies, ``block`` fresh Gaussian directions join
    the basis and the iteration goes on for ``steps`` steps (every pending direction, the
    fresh ones and the Lanczos chain's, multiplied each step). If no wanted Ritz value moves
    by more than its threshold meanwhile, nothing the fresh starts can reveal was missed:
    the check passes. If one moves, a missed eigenvalue came in; the iteration continues
    until the pairs certify again, and the next round starts.

    Later rounds (:meth:`deflated_round`) run apart from the basis: by then the basis holds
    ``1 + 2·rounds`` chains, and an in-basis round would multiply all of them each step,
    while a deflated block iteration multiplies only its own fresh directions. The first
    round stays in the basis because, when it finds a miss, its products are kept.
    """

    def __init__(self, which: str, block: int, steps: int) -> None:
        self.which, self.block, self.steps = which, block, steps
        self.reference: torch.Tensor | None = None  # wanted keys when the check started
        self.done = 0
        self.rounds = 0
        self.found = 0
        self.passed = False
        self.passed_steps = 0  # steps of the round that passed

    def deflated_round(
        self,
        kry: _Krylov,
        theta: torch.Tensor,
        S: torch.Tensor,
        thresh: torch.Tensor,
        gen: torch.Generator,
        budget: int,
    ) -> bool:
        """A round after a miss, run apart from the basis (:func:`_deflated_check`) on the
        wanted, certified pairs ``(theta, V S)``. Returns whether the iteration stops: the
        round passed, or the budget cannot pay for it. A miss it finds joins the basis."""
        keys = _keys(theta, self.which)
        last = int(torch.argmin(keys))
        bar = float(keys[last] + thresh[last])
        Q = kry.ritz_vectors(S)[0]
        steps = _RECHECK_STEPS
        found = _deflated_check(kry.lin, Q, bar, self.which, self.block, steps, gen, budget)
        if found is None:
            return True
        if found.shape[1] == 0:
            self.passed, self.passed_steps = True, _RECHECK_STEPS
            return True
        # The missed directions (their parts outside the basis) become pending
        # directions, multiplied from the next step on; the pairs re-certify, then
        # the next round starts.
        kry.extend(found.T.contiguous(), scale=None)
        self.reference = None
        self.found += 1
        return False

    def step(self, theta: torch.Tensor, thresh: torch.Tensor, certified: bool) -> str:
        """``"stop"`` (check passed), ``"start"`` (add fresh directions) or ``"go"``."""
        keys = _keys(theta, self.which)
        if self.passed:  # the check passed; only the certification was still pending
            return "stop" if certified else "go"
        if self.reference is None:
            if not certified:
                return "go"
            self.reference, self.done = keys.clone(), 0
            self.rounds += 1
            return "start"
        self.done += 1
        if bool(((keys - self.reference).abs() > thresh).any()):
            self.reference = None  # a missed eigenvalue came in
            self.found += 1
            return "go"
        if self.done < self.steps:
            return "go"
        # Nothing moved: the check passed. The fresh directions may have unsettled a
        # residual (a tight cluster mixing); then iterate until it certifies again,
        # without a new round.
        self.reference = None
        self.passed, self.passed_steps = True, self.steps
        return "stop" if certified else "go"


def eigen(
    op: Any,
    k: int = 10,
    *,
    which: str = "largest",
    tol: float = 1e-3,
    max_matvecs: int | None = None,
    seed: int = 0,
    block_size: int | None = None,
    max_basis: int | None = None,
    v0: Any = None,
    check_complete: bool = True,
) -> EigenResult:
    """Top-``k`` eigenpairs of a symmetric operator, each certified or flagged.

    Thick-restart Lanczos (Lanczos 1950; Wu & Simon 2000) with full
    reorthogonalization and stored products. Iterates until every wanted Ritz pair
    ``(θ_i, q_i)`` satisfies

    .. math:: \\lVert H q_i - \\theta_i q_i \\rVert + \\delta
              \\le \\mathrm{tol} \\cdot \\max(|\\theta_i|,\\ 10^{-6} \\lVert H \\rVert_{est})

    or until ``max_matvecs`` products are spent; pairs that fail, and any pair after a
    more wanted one that failed (its index is then uncertain), are returned with
    ``converged[i] = False`` and a :class:`~decaylab._checks.ConvergenceWarning`.
    ``‖H‖_est`` is the largest ``|θ|`` seen and ``δ`` an allowance for the rounding
    inside each product (Notes).

    Parameters
    ----------
    op : operator, torch.Tensor, numpy.ndarray or scipy LinearOperator
        Symmetric ``(P, P)``. A decaylab operator (anything with ``matmat`` and
        ``shape``) is multiplied in its own dtype on its own device; the Krylov basis
        is always float64 on that device.
    k : int
        Number of eigenpairs, ``1 ≤ k ≤ P``.
    which : {"largest", "smallest", "magnitude"}
        Algebraically largest, algebraically smallest, or largest ``|λ|``.
    tol : float
        Relative residual tolerance, ``> 0``.
    max_matvecs : int, optional
        Product budget (``≥ k``), including the one product that measures rounding.
        Default ``max(20 k, 200)``, or ``P`` when the whole space fits in the basis
        (plus 1 for the measurement).
    seed : int
        Seed of the random start block.
    block_size : int, optional
        Lanczos block size ``b`` (default 1). Each block step costs ``b`` products.
    max_basis : int, optional
        Basis size at which the iteration restarts. Default ``max(3k, k + 30, k + 3b)``
        capped at ``P``; memory is ``2 · P · max_basis`` float64 numbers.
    v0 : torch.Tensor or numpy.ndarray, optional
        Start vector ``(P,)`` or start block ``(P, m)`` (as ``v0`` of
        :func:`scipy.sparse.linalg.eigsh`); a block sets ``block_size`` to ``m`` unless
        it is given (then ``m ≤ block_size``, the rest is random). Default: random from
        ``seed``. To follow the spectrum along training, start from the previous
        result's ``eigenvectors.sum(1)``: on the digits MLP after 20 SGD steps this
        took 16–17 products instead of 21–22. A start vector orthogonal to an eigenvector
        hides it from the Krylov space (exact arithmetic), so do not start from a
        vector built to lack directions.
    check_complete : bool
        Run the completeness check (Notes) once all ``k`` pairs certify (default). It
        costs ``3 × 4 = 12`` products when it finds nothing (block size 1), more when
        it brings in missed eigenvalues; ``False`` returns ``complete=False``.

    Returns
    -------
    EigenResult

    Notes
    -----
    *Certification.* Products are stored, so the residual of a Ritz pair is that of the
    products actually computed, ``‖W s − θ V s‖`` with ``W = H V``, taken from the
    projected matrix and the pending Krylov block (exact to float64 rounding, plus a
    tracked bound for what a restart leaves outside the basis); the reported residuals
    are recomputed from the stored vectors at the end. No loss of orthogonality can
    make it optimistic, unlike the classical estimate ``|β_m s_m|`` of the three-term
    recurrence. What no Krylov quantity can see is the rounding *inside* the products:
    evaluated directly, ``H fl(q)`` differs from ``Σ_j s_j (H v_j)``. For operators
    other than a float64 matrix handed in directly (decaylab operators, scipy linear
    operators, float32 matrices) one true product with the wanted Ritz vector of largest
    ``|θ|`` measures that difference ``d`` (reserved from ``max_matvecs``); modelling
    each product's error as ``ε · ‖product‖`` with independent directions gives
    ``ε = ‖d‖ / sqrt(θ² + Σ_j s_j² ‖H v_j‖²)`` (at least ``eps(dtype)``, or
    ``eps · sqrt(P)`` for a float32 matrix), and every pair gets
    ``δ = 3 ε sqrt(θ_i² + Σ_j s_ij² ‖H v_j‖²) + (eps/2)(‖H‖_est + |θ_i|) + 3 ε' ‖H‖_est``:
    the products' rounding; the cast of the returned vector to the operator's dtype
    (relative error ``≤ eps/2``); and, for operators other than float64 matrices, how
    far the operator may be from its float64 counterpart (``ε' = eps(dtype)`` for
    float32/16 operators, the measured ``ε`` for operators that claim float64). The
    last term is what made the reported residual of the digits MLP (float32 operator)
    up to 2.4× below the residual with its float64 Hessian before; with it, the bound
    held for every pair tested (tests compare with the float64 matrix). The measured
    pair reports its true residual ``‖H fl(q) − θ fl(q)‖`` plus ``δ``. For float64
    matrices ``ε = eps · sqrt(P)`` is assumed and no product is spent. Eigenvalues far
    below ``ε ‖H‖ / tol`` cannot be certified and are flagged. ``‖H‖_est`` is a lower
    bound on ``‖H‖₂`` (the largest ``|θ|`` seen), so the last two terms are estimates.

    *Repeated eigenvalues.* A Krylov space grown from ``b`` start vectors contains at
    most ``b`` independent vectors of any eigenspace (exact arithmetic): with ``b = 1``
    an exactly repeated eigenvalue is found once, and the next values returned would be
    later eigenvalues (ARPACK/``eigsh`` shares this). The completeness check below finds
    the missing copies; ``block_size ≥`` the multiplicity also resolves them. A cluster
    whose relative gaps are below ``tol`` acts like a repeated eigenvalue.

    *Completeness.* A certified pair is an eigenpair to ``tol``; that no eigenvalue was
    skipped (the ``i``-th value is the ``i``-th eigenvalue) cannot be certified
    matrix-free (it takes an inertia count, a factorization of ``H − σI``), but it can
    be checked with a probability statement. Once all ``k`` pairs certify, 2 fresh
    Gaussian directions join the basis and the iteration goes on for 4 steps,
    multiplying every pending direction each step. If a wanted Ritz value moves by more
    than its threshold, a missed eigenvalue came in: the iteration continues until the
    pairs certify again. If nothing moves, the check passes: ``complete=True``. After a
    miss, each further round starts 2 new Gaussian directions (a chain holds one copy of
    each eigenspace, so copies need new chains) and runs them apart from the basis: a
    block Lanczos iteration of 5 steps on ``(I − QQᵀ) H (I − QQᵀ)``, ``Q`` the certified
    wanted Ritz vectors, which multiplies only those 2 directions (an in-basis round
    multiplies every chain the earlier rounds brought in). A missed eigenvalue is the
    most wanted one of the deflated operator; if a Ritz value of the round beats the
    ``k``-th value by more than its threshold, those Ritz vectors join the basis, the
    pairs re-certify and a new round starts; if none does, the check passes. Either way
    the last round followed ``r = 2`` fresh starts for ``s`` steps (4 or 5) on the
    operator deflated by the certified pairs, so Kuczyński & Woźniakowski's bound gives
    :meth:`EigenResult.miss_probability`: an eigenvalue beyond ``θ_k`` by at least
    ``gap · (λ_max − λ_min)`` is missed with probability at most
    ``min(1, 1.648 sqrt(P) e^{−(2s−1) sqrt(gap)})²`` (useful for large gaps only; in
    practice far better, though not perfect: over 192 seeded float64/float32 runs with
    multiplicities 3-10, one missed a copy, in a first round; 2 with in-basis rounds
    only). What it cost is ``completeness_matvecs``: 12 products when nothing is missing
    (``b = 1``); on an MLP with six identical hidden units 31 (64 in all, against 33
    without the check, which misses three copies; 74 with in-basis rounds only).
    Measured with ``benchmarks/eigen_multiplicity.py``.

    Examples
    --------
    >>> import numpy as np
    >>> from decaylab.curvature.lanczos import eigen
    >>> rng = np.random.default_rng(0)
    >>> Q, _ = np.linalg.qr(rng.standard_normal((300, 300)))
    >>> lam = np.concatenate([[9.0, 7.0, -8.0], rng.uniform(-1, 1, 297)])
    >>> res = eigen((Q * lam) @ Q.T, k=3, which="magnitude", tol=1e-8)
    >>> np.allclose(res.eigenvalues, [9.0, -8.0, 7.0])
    True
    >>> bool(res.converged.all()), res.n_matvecs < 100
    (True, True)
    """
    plan = _plan(op, k, which, tol, max_matvecs, seed, block_size, max_basis, v0, check_complete)
    run = _Run(plan)
    run.iterate()
    result = run.result()
    for message in run.problems(result):
        warnings.warn(message, ConvergenceWarning, stacklevel=2)
    return result


@dataclass
class _Plan:
    """What one call of :func:`eigen` will do, resolved and checked before any product."""

    lin: LinOp
    k: int
    which: str
    tol: float
    seed: int
    block: int  # Lanczos block size b
    basis: int  # basis size at which the iteration restarts
    budget: int  # max_matvecs, the measuring product included
    loop_budget: int  # products the iteration itself may use
    measure: bool  # whether the products' rounding is measured (not a float64 matrix)
    calibrate: bool  # whether a product is reserved for that measurement
    start: torch.Tensor | None  # (P, ≤ b) start block
    check_complete: bool


def _plan(
    op: Any,
    k: Any,
    which: str,
    tol: Any,
    max_matvecs: Any,
    seed: Any,
    block_size: Any,
    max_basis: Any,
    v0: Any,
    check_complete: bool,
) -> _Plan:
    """:func:`eigen`'s arguments checked (errors name the argument) and its defaults filled."""
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    k = int(check_scalar(k, "k", low=1, integer=True))
    tol = float(check_scalar(tol, "tol", low=0.0, low_inclusive=False))
    seed = int(check_scalar(seed, "seed", integer=True))
    lin = as_linop(op)
    P = lin.size
    if k > P:
        raise ValueError(f"k must be <= P = {P}, got k={k}")
    start = _start_block(v0, P)
    b = _block_size(block_size, start, P)
    basis = _basis_size(max_basis, k, b, P)
    # Products whose rounding is not known (any operator but a float64 matrix handed in
    # directly) get one extra product that measures it (see Notes).
    measure = not (lin.known_arithmetic and lin.dtype == torch.float64)
    if max_matvecs is None:
        budget = (P if basis >= P else max(20 * k, 200)) + int(measure)
    else:
        budget = int(check_scalar(max_matvecs, "max_matvecs", low=1, integer=True))
        if budget < k:
            raise ValueError(f"max_matvecs must be >= k = {k}, got {budget}")
    calibrate = measure and budget > k
    loop_budget = budget - 1 if calibrate else budget
    b = min(b, loop_budget)
    return _Plan(
        lin=lin,
        k=k,
        which=which,
        tol=tol,
        seed=seed,
        block=b,
        basis=basis,
        budget=budget,
        loop_budget=loop_budget,
        measure=measure,
        calibrate=calibrate,
        start=None if start is None else start[:, :b],
        check_complete=check_complete,
    )


def _block_size(block_size: Any, start: torch.Tensor | None, P: int) -> int:
    """``block_size``, or the start block's width, or 1; at most ``P``."""
    b = 1 if start is None else start.shape[1]
    if block_size is not None:
        b = int(check_scalar(block_size, "block_size", low=1, integer=True))
        if start is not None and start.shape[1] > b:
            raise ValueError(
                f"v0 has {start.shape[1]} columns, more than block_size={b}; "
                "pass block_size >= v0.shape[1] or leave it out"
            )
    return min(b, P)


def _basis_size(max_basis: Any, k: int, b: int, P: int) -> int:
    """``max_basis`` checked, or its default ``max(3k, k + 30, k + 3b)``; at most ``P``."""
    if max_basis is None:
        return min(P, max(3 * k, k + 30, k + 3 * b))
    basis = int(check_scalar(max_basis, "max_basis", low=1, integer=True))
    if basis < min(P, k + 2 * b):
        raise ValueError(
            f"max_basis must be >= min(P, k + 2*block_size) = {min(P, k + 2 * b)}, got {basis}"
        )
    return min(basis, P)


class _Run:
    """One call of :func:`eigen`: the Krylov basis, what certifies a pair, the completeness check.

    :meth:`iterate` multiplies pending directions until the wanted pairs certify (and the
    check passes) or the budget is spent; :meth:`result` recomputes the residuals from the
    stored vectors and judges each pair; :meth:`problems` says what the result cannot vouch for.
    """

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.lin = lin = plan.lin
        self.gen = random_generator(plan.seed)
        self.check = (
            _CompletenessCheck(plan.which, _CHECK_BLOCK, _CHECK_STEPS)
            if plan.check_complete
            else None
        )
        self.kry = _Krylov(lin, plan.basis, plan.block, self.gen, plan.start, extra=_CHECK_BLOCK)
        # Thick restart keeps about half the basis beyond k (Wu & Simon's choice).
        self.keep = max(
            plan.k, min(plan.basis - plan.block - 1, plan.k + (plan.basis - plan.k) // 2)
        )
        # A float64 matrix product is trusted to sqrt(P) rounding units without measuring.
        self.rel_error: float | None = None if plan.measure else lin.eps * math.sqrt(lin.size)
        # When the whole space fits in the basis and the budget, fill it: P products give
        # the complete spectrum, repeated eigenvalues included, at a cost that is small.
        self.fill_space = plan.basis >= lin.size and plan.loop_budget >= lin.size
        self.hnorm = 0.0  # largest |θ| seen: ‖H‖_est
        self.measured: tuple[int, float] | None = None  # (Ritz index, true residual) of the probe
        self.first_certified: int | None = None  # products when all k pairs first certified

    def allowance(self, theta: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """What the stored-product residual cannot see (see :func:`eigen`, "Certification")."""
        lin, hnorm = self.lin, self.hnorm
        eps = lin.eps if self.rel_error is None else self.rel_error
        rounding = _ROUNDING_SAFETY * eps * self.kry.product_scales(theta, S)
        # The returned vector is cast to the operator's dtype (relative error ≤ eps/2);
        # an operator coarser than float64 may itself be off from its float64 version.
        cast = 0.5 * lin.eps * (hnorm + theta.abs())
        # Its scale: the dtype's unit roundoff for float32/16 operators (the measured ε
        # also holds non-reproducible summation order, far larger than the deviation on
        # some backends); the measured ε for operators that claim float64.
        dev_eps = eps if lin.dtype == torch.float64 else min(eps, lin.eps)
        deviation = _ROUNDING_SAFETY * dev_eps * hnorm if self.plan.measure else 0.0
        return rounding + cast + deviation

    def thresholds(self, theta: torch.Tensor) -> torch.Tensor:
        """``tol · max(|θ|, FLOOR · ‖H‖_est)``: what a pair's residual must not exceed."""
        return self.plan.tol * torch.clamp(theta.abs(), min=_NORM_FLOOR * self.hnorm)

    def certified(self, theta: torch.Tensor, S: torch.Tensor, thresh: torch.Tensor) -> bool:
        bound = self.kry.residual_estimates(theta, S) + self.allowance(theta, S)
        return bool((bound <= thresh).all())

    def iterate(self) -> None:
        """Block Lanczos steps with thick restarts until :meth:`judge` stops or products run out."""
        plan, kry, lin = self.plan, self.kry, self.lin
        while True:
            # Every pending direction is multiplied: a direction left out would hide what it
            # holds from the fresh starts of the completeness check (they are orthogonal to it).
            count = min(kry.pending(), plan.loop_budget - lin.n_matvecs, plan.basis - kry.n_w)
            if count <= 0:
                return
            kry.multiply(count)
            self.measured = None
            theta, S = kry.ritz()
            self.hnorm = max(self.hnorm, float(theta.abs().max()))
            order = _wanted_order(theta, plan.which)
            if kry.n_w >= plan.k and not self.fill_space and self.judge(theta, S, order[: plan.k]):
                return
            if lin.n_matvecs >= plan.loop_budget or kry.pending() == 0:
                return
            if kry.n_v > plan.basis:
                kry.restart(S[:, order[: self.keep]])
                self.measured = None  # it referred to a Ritz index of the old basis

    def judge(self, theta: torch.Tensor, S: torch.Tensor, want: torch.Tensor) -> bool:
        """Certify the wanted pairs and advance the completeness check; whether to stop."""
        theta_w, S_w = theta[want], S[:, want]
        thresh = self.thresholds(theta_w)
        certified = self.certified(theta_w, S_w, thresh)
        if certified and self.rel_error is None:
            # Measure the products' rounding once, then judge again.
            self.measured, self.rel_error = _measure_rounding(self.kry, theta, S, want)
            certified = self.certified(theta_w, S_w, thresh)
        if certified and self.first_certified is None:
            self.first_certified = self.lin.n_matvecs
        check = self.check
        if check is None:
            return certified
        action = check.step(theta_w, thresh, certified)
        if action == "stop" and certified:
            return True
        if action == "start" and check.found == 0:
            # Fresh random directions, multiplied from the next step. They must be
            # new: a chain from an earlier check holds its copy of each eigenspace.
            self.kry.add_fresh(check.block)
        elif action == "start":
            left = self.plan.loop_budget - self.lin.n_matvecs
            return check.deflated_round(self.kry, theta_w, S_w, thresh, self.gen, left)
        return False

    def result(self) -> EigenResult:
        """The wanted Ritz pairs with residuals recomputed from the stored vectors, judged."""
        plan, kry, lin = self.plan, self.kry, self.lin
        theta, S = kry.ritz()
        want = _wanted_order(theta, plan.which)[: min(plan.k, kry.n_w)]
        if self.rel_error is None:
            if plan.calibrate and lin.n_matvecs < plan.budget:
                self.measured, self.rel_error = _measure_rounding(kry, theta, S, want)
            else:  # no product left to measure with (max_matvecs == k): assume the worst
                self.rel_error = math.sqrt(lin.eps)
        vals = theta[want]
        vectors, residuals = self._residuals(vals, S[:, want], want)
        # A pair is certified only if every more wanted pair is: past an unconverged Ritz
        # value the Krylov space may still lack an eigenvalue, so a later pair, although a
        # true eigenpair, could sit at the wrong index (typically pairs from the far end of
        # the spectrum when k is a large part of P and the budget runs out).
        within = residuals <= self.thresholds(vals)
        converged = torch.cumprod(within.to(torch.int64), dim=0).bool()
        vals, vectors, residuals, converged = _pad(plan.k, vals, vectors, residuals, converged)
        spans_space = kry.n_w >= lin.size
        # The check's bound applies when it ran; a basis that spans the space needs none.
        check = None if spans_space else self.check
        first = self.first_certified
        return EigenResult(
            eigenvalues=vals.clone(),
            eigenvectors=vectors.to(lin.dtype),
            residuals=residuals,
            converged=converged,
            n_matvecs=lin.n_matvecs,
            which=plan.which,
            tol=plan.tol,
            norm_estimate=self.hnorm,
            product_error=float(self.rel_error),
            block_size=plan.block,
            n_restarts=kry.n_restarts,
            complete=bool(converged.all())
            and (spans_space or (check is not None and check.passed)),
            completeness_matvecs=0 if first is None else lin.n_matvecs - first,
            check_block=0 if check is None else check.block,
            check_steps=0 if check is None else check.passed_steps,
            n_dim=lin.size,
        )

    def _residuals(
        self, vals: torch.Tensor, S_w: torch.Tensor, want: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ritz vectors ``V s`` and their residual bounds ``‖W s − θ V s‖ + δ``; the measured
        pair keeps its true residual (its own product's rounding is in it: keep the margin)."""
        vectors, products = self.kry.ritz_vectors(S_w)
        resid = products - vectors * vals.to(self.lin.device)
        margin = self.allowance(vals, S_w)
        residuals = torch.linalg.vector_norm(resid, dim=0).cpu() + margin
        if self.measured is not None:
            index, true_residual = self.measured
            hit = (want == index).nonzero()
            if hit.numel():
                i = int(hit[0, 0])
                residuals[i] = true_residual + margin[i]
        return vectors, residuals

    def problems(self, result: EigenResult) -> list[str]:
        """What ``result`` cannot vouch for, as :class:`ConvergenceWarning` messages."""
        plan, k = self.plan, self.plan.k
        n_bad = int((~result.converged).sum())
        if n_bad:
            rel = result.product_error
            floor = _ROUNDING_SAFETY * rel * self.hnorm / plan.tol
            return [
                f"eigen: {n_bad} of {k} eigenpairs ({plan.which}) are not certified to "
                f"tol={plan.tol:g} after {result.n_matvecs} products (max_matvecs={plan.budget}); "
                "they are flagged converged=False. Raise max_matvecs or tol; products with "
                f"relative rounding {rel:.1e} cannot certify eigenvalues below about "
                f"{floor:.3g} in magnitude."
            ]
        if self.check is not None and not result.complete:
            return [
                f"eigen: the {k} pairs are certified, but the completeness check did not finish "
                f"within max_matvecs={plan.budget}: an eigenvalue beyond the returned ones may "
                "have been missed (complete=False). Raise max_matvecs."
            ]
        return []


def _pad(
    k: int, vals: torch.Tensor, vectors: torch.Tensor, resid: torch.Tensor, conv: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fewer than ``k`` pairs found: pad with NaN values, infinite residuals, unconverged."""
    pad = k - vals.shape[0]
    if pad > 0:  # pragma: no cover - max_matvecs >= k rules this out
        vals = torch.cat([vals, torch.full((pad,), float("nan"), dtype=torch.float64)])
        resid = torch.cat([resid, torch.full((pad,), float("inf"), dtype=torch.float64)])
        conv = torch.cat([conv, torch.zeros(pad, dtype=torch.bool)])
        vectors = torch.cat([vectors, vectors.new_zeros(vectors.shape[0], pad)], dim=1)
    return vals, vectors, resid, conv


def _start_block(v0: Any, P: int) -> torch.Tensor | None:
    """``v0`` as a float64 CPU ``(P, m)`` block, checked."""
    if v0 is None:
        return None
    if not isinstance(v0, (torch.Tensor, np.ndarray)):
        raise ValueError(f"v0 must be a torch.Tensor or numpy array, got {type(v0).__name__}")
    block = torch.as_tensor(v0).detach().to(device="cpu", dtype=torch.float64)
    if block.ndim == 1:
        block = block[:, None]
    if block.ndim != 2 or block.shape[0] != P or block.shape[1] < 1:
        raise ValueError(f"v0 must have shape ({P},) or ({P}, m), got {tuple(np.shape(v0))}")
    if not bool(torch.isfinite(block).all()):
        raise ValueError("v0 must be finite, got NaN or inf")
    if not bool((torch.linalg.vector_norm(block, dim=0) > 0).all()):
        raise ValueError("v0 must not have a zero column")
    return block


def _measure_rounding(
    kry: _Krylov, theta: torch.Tensor, S: torch.Tensor, want: torch.Tensor
) -> tuple[tuple[int, float], float]:
    """One true product with the wanted Ritz vector of largest ``|θ|``.

    ``d = H fl(y) − W s`` is what the stored products miss for that vector: the rounding
    of its own product, of the products it is combined from, and of casting ``y`` to the
    operator's dtype. Under the model ``‖error‖ ≈ ε · ‖product‖`` (independent errors),
    ``‖d‖ ≈ ε · sqrt(θ² + Σ s_j² ‖w_j‖²)``, which gives the relative error ``ε``. Returns
    ``((index, ‖H fl(y) − θ fl(y)‖), ε)``.
    """
    index = int(want[torch.argmax(theta[want].abs())])
    s = S[:, index : index + 1]
    y, w_comb = kry.ritz_vectors(s)
    y_cast = y.to(kry.lin.dtype).to(torch.float64)
    hy = kry.lin.matmat(y_cast)
    miss = float(torch.linalg.vector_norm(hy - w_comb))
    true_residual = float(torch.linalg.vector_norm(hy - float(theta[index]) * y_cast))
    scale = float(kry.product_scales(theta[index : index + 1], s)[0])
    # A float32 matrix product accumulates about sqrt(P) roundings per entry; an
    # operator of unknown arithmetic is floored at one rounding unit.
    floor = kry.lin.eps * (math.sqrt(kry.P) if kry.lin.known_arithmetic else 1.0)
    rel = max(miss / scale if scale > 0 else 0.0, floor)
    return (index, true_residual), rel
