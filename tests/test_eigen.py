"""Tests of decaylab.curvature.lanczos.eigen against numpy/scipy eigensolvers on dense matrices.

Every check is: each pair flagged converged is a true eigenpair to ``tol`` (residual
recomputed here with the dense float64 matrix, eigenvalue compared with numpy.linalg.eigh),
and every pair that is not gets ``converged=False`` and a ConvergenceWarning.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sparse
import scipy.sparse.linalg as sla
import torch
from torch import nn

from _benchmarks import load_benchmark
from _spectra import DenseDuckOperator, nn_like, rotated
from decaylab._checks import ConvergenceWarning
from decaylab.curvature.lanczos import EigenResult, eigen
from decaylab.curvature.operators import HessianOperator

TOL = 1e-3


def reference(A: np.ndarray, k: int, which: str) -> np.ndarray:
    lam = np.linalg.eigvalsh(A)
    if which == "largest":
        return lam[::-1][:k]
    if which == "smallest":
        return lam[:k]
    return lam[np.argsort(-np.abs(lam), kind="stable")][:k]


def triple_top(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 300 x 300 matrix whose top eigenvalue 5 has multiplicity three, and its spectrum."""
    lam = np.concatenate([[5.0, 5.0, 5.0, 4.0, 3.5, 3.4], rng.uniform(-1, 1, 294)])
    return rotated(lam, seed=4), lam


def tiny_smallest_float32() -> np.ndarray:
    """Three eigenvalues far below float32 rounding of ||A||; exactly representable in float32."""
    rng = np.random.default_rng(7)
    lam = np.concatenate([[100.0, 50.0], rng.uniform(1e-9, 1e-8, 3), rng.uniform(1.0, 10.0, 195)])
    return rotated(lam, seed=7).astype(np.float32).astype(np.float64)


def check_certified(
    A: np.ndarray, res: EigenResult, ref: np.ndarray, tol: float = TOL, slack: float = 1e-12
) -> None:
    """Every converged pair: honest residual, eigenvalue right to tol; the rest are flagged.

    ``slack * ||A||`` absorbs what no check on the operator can see: float64 rounding, or,
    when ``A`` is the float64 matrix behind a float32 operator, the float32 operator being
    a slightly different matrix.
    """
    A64 = np.asarray(A, dtype=np.float64)
    norm = (
        abs(sla.eigsh(A64, k=1, which="LM")[0][0])
        if A64.shape[0] > 500
        else (np.abs(np.linalg.eigvalsh(A64)).max())
    )
    assert res.norm_estimate <= norm * (1 + 1e-6)
    vals = res.eigenvalues.numpy()
    Q = res.eigenvectors.detach().cpu().double().numpy()
    assert np.allclose(Q.T @ Q, np.eye(Q.shape[1]), atol=1e-5)
    true_res = np.linalg.norm(A64 @ Q - Q * vals, axis=0)
    thresh = tol * np.maximum(np.abs(vals), 1e-6 * res.norm_estimate)
    conv = res.converged.numpy()
    assert np.array_equal(conv, np.cumprod(res.residuals.numpy() <= thresh).astype(bool))
    for i in np.flatnonzero(conv):
        # the reported residual is not optimistic (float64 rounding slack only) ...
        assert true_res[i] <= res.residuals[i].item() * (1 + 1e-6) + slack * norm, i
        # ... so the certified eigenvalue is right to tol
        assert abs(vals[i] - ref[i]) <= thresh[i] * (1 + 1e-6) + slack * norm, (i, vals[i], ref[i])


@pytest.mark.parametrize("which", ["largest", "smallest", "magnitude"])
def test_indefinite_all_which(which: str) -> None:
    rng = np.random.default_rng(1)
    lam = np.concatenate([[9.0, 7.5, 6.0, -8.0, -6.5, -5.0], rng.uniform(-1, 1, 394)])
    A = rotated(lam, seed=1)
    res = eigen(torch.from_numpy(A), k=4, which=which, tol=TOL)
    check_certified(A, res, reference(A, 4, which))
    assert res.all_converged
    order = {"largest": -res.eigenvalues, "smallest": res.eigenvalues}.get(
        which, -res.eigenvalues.abs()
    )
    assert torch.all(order[:-1] <= order[1:])


def test_nn_like_spectrum_float32_few_products() -> None:
    A = rotated(nn_like(1500), seed=2).astype(np.float32).astype(np.float64)
    A32 = torch.from_numpy(A).float()  # the same matrix, exactly
    res = eigen(A32, k=10, tol=TOL)
    check_certified(A, res, reference(A, 10, "largest"))
    assert res.all_converged
    # Lanczos steps plus one rounding measurement, then the completeness check: two fresh
    # starts and the Lanczos chain for four steps, which find nothing here
    assert res.n_matvecs - res.completeness_matvecs <= 30
    assert res.complete and res.completeness_matvecs == 12
    assert res.eigenvectors.dtype == torch.float32
    assert res.product_error >= torch.finfo(torch.float32).eps


def test_clustered_eigenvalues() -> None:
    rng = np.random.default_rng(3)
    cluster = 10.0 - 0.02 * np.arange(5)  # relative gaps 2e-3, above tol
    lam = np.concatenate([cluster, [8.0, 7.9, 7.85], rng.uniform(-2, 2, 392)])
    A = rotated(lam, seed=3)
    res = eigen(A, k=8, tol=TOL)
    check_certified(A, res, reference(A, 8, "largest"))
    assert res.all_converged


def test_multiplicity_three_block() -> None:
    A, _ = triple_top(np.random.default_rng(4))
    res = eigen(A, k=6, tol=1e-6, block_size=3)
    check_certified(A, res, reference(A, 6, "largest"), tol=1e-6)
    assert res.all_converged and res.block_size == 3
    assert np.allclose(res.eigenvalues.numpy()[:3], 5.0, rtol=1e-6)


def test_multiplicity_three_single_vector_pairs_still_true() -> None:
    """b = 1 may see one copy only (documented); each certified pair is still an eigenpair."""
    A, lam = triple_top(np.random.default_rng(4))
    res = eigen(A, k=6, tol=TOL)
    assert res.block_size == 1
    Q = res.eigenvectors.numpy()
    vals = res.eigenvalues.numpy()
    true_res = np.linalg.norm(A @ Q - Q * vals, axis=0)
    nearest = np.abs(vals[:, None] - lam[None, :]).min(axis=1)
    conv = res.converged.numpy()
    assert conv.any()
    assert np.all(true_res[conv] <= res.residuals.numpy()[conv] * (1 + 1e-6))
    assert np.all(nearest[conv] <= TOL * np.abs(vals[conv]))


def test_small_space_finds_all_copies() -> None:
    """When the Krylov space becomes invariant, fresh directions find the other copies."""
    lam = np.array([3.0, 3.0, 3.0, 2.0, 2.0, 1.0, 1.0, 1.0, 0.0, -1.0, -1.0, -2.0])
    A = rotated(lam, seed=5)
    res = eigen(A, k=12, tol=1e-8)
    check_certified(A, res, reference(A, 12, "largest"), tol=1e-8)
    assert res.all_converged and res.n_matvecs <= 12


@pytest.mark.parametrize("P", [1, 2, 3, 7])
def test_tiny_P(P: int) -> None:
    rng = np.random.default_rng(P)
    A = rotated(rng.uniform(-3, 3, P), seed=P)
    for k in sorted({1, P}):
        res = eigen(A, k=k, which="magnitude", tol=1e-8)
        check_certified(A, res, reference(A, k, "magnitude"), tol=1e-8)
        assert res.all_converged
        assert res.eigenvectors.shape == (P, k)


def test_zero_matrix() -> None:
    res = eigen(np.zeros((5, 5)), k=2)
    assert res.all_converged and np.allclose(res.eigenvalues.numpy(), 0.0)


def test_restarts_keep_certification() -> None:
    A = rotated(nn_like(800, seed=6), seed=6)
    res = eigen(A, k=6, tol=1e-8, max_basis=14)
    assert res.n_restarts > 0
    check_certified(A, res, reference(A, 6, "largest"), tol=1e-8)
    assert res.all_converged


def test_float32_tiny_eigenvalues_are_flagged() -> None:
    """float32 products cannot certify eigenvalues far below their rounding: flagged."""
    A = tiny_smallest_float32()
    with pytest.warns(ConvergenceWarning, match="not certified"):
        res = eigen(torch.from_numpy(A).float(), k=3, which="smallest", tol=1e-3)
    assert not res.converged.any()
    check_certified(A, res, reference(A, 3, "smallest"))


def test_float32_behind_float64_linear_operator_is_measured() -> None:
    """A LinearOperator that claims float64 but computes in float32 is not trusted blindly."""
    A = tiny_smallest_float32()
    A32 = A.astype(np.float32)
    op = sla.LinearOperator(
        A.shape, matvec=lambda x: (A32 @ x.astype(np.float32)).astype(np.float64), dtype=np.float64
    )
    with pytest.warns(ConvergenceWarning):
        res = eigen(op, k=3, which="smallest", tol=1e-3)
    assert res.product_error > 1e-9
    check_certified(A, res, reference(A, 3, "smallest"))


def test_tiny_P_float32_operator_budget_includes_measurement() -> None:
    A = rotated(np.array([2.0, -1.0, 0.5]), seed=8).astype(np.float32).astype(np.float64)
    res = eigen(DenseDuckOperator(A, torch.float32), k=3)
    assert res.all_converged and res.n_matvecs == 4
    check_certified(A, res, reference(A, 3, "largest"))


def test_budget_too_small_flags_and_warns() -> None:
    A = rotated(nn_like(600, seed=8), seed=8)
    with pytest.warns(ConvergenceWarning, match="not certified"):
        res = eigen(A, k=10, tol=1e-6, max_matvecs=12)
    assert res.n_matvecs <= 12
    assert not res.all_converged
    check_certified(A, res, reference(A, 10, "largest"), tol=1e-6)


def test_input_kinds_and_product_count() -> None:
    A = rotated(nn_like(300, seed=9), seed=9)
    ref = reference(A, 3, "largest")

    class Counting:
        shape = A.shape
        dtype = torch.float64
        device = torch.device("cpu")
        n_matvecs = 0

        def matmat(self, V: torch.Tensor) -> torch.Tensor:
            self.n_matvecs += V.shape[1]
            return torch.from_numpy(A) @ V

    duck = Counting()
    inputs = [A, torch.from_numpy(A), sla.aslinearoperator(A), sparse.csr_matrix(A), duck]
    for op in inputs:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            res = eigen(op, k=3, tol=1e-6)
        assert np.allclose(res.eigenvalues.numpy(), ref, rtol=1e-6)
    assert duck.n_matvecs == res.n_matvecs > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k must be"),
        ({"k": 2.5}, "k must be"),
        ({"k": 9}, "k must be <= P"),
        ({"tol": 0.0}, "tol must be"),
        ({"tol": -1e-3}, "tol must be"),
        ({"which": "biggest"}, "which must be"),
        ({"max_matvecs": 1, "k": 2}, "max_matvecs must be"),
        ({"block_size": 0, "k": 1}, "block_size must be"),
        ({"max_basis": 2, "k": 1}, "max_basis must be"),
        ({"k": 2, "v0": np.ones(7)}, "v0 must have shape"),
        ({"k": 2, "v0": np.ones((8, 2, 1))}, "v0 must have shape"),
        ({"k": 2, "v0": np.full(8, np.nan)}, "v0 must be finite"),
        ({"k": 2, "v0": np.zeros((8, 2))}, "v0 must not have a zero column"),
        ({"k": 2, "v0": np.ones((8, 3)), "block_size": 2}, "v0 has 3 columns"),
        ({"k": 2, "v0": [1.0] * 8}, "v0 must be a torch.Tensor"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    A = np.diag(np.arange(8.0))
    with pytest.raises(ValueError, match=match):
        eigen(A, **kwargs)


def test_start_vector_on_an_eigenvector_converges_at_once() -> None:
    rng = np.random.default_rng(7)
    A = rotated(np.concatenate([[4.0, 3.0], rng.uniform(-1, 1, 198)]), seed=7)
    q = np.linalg.eigh(A)[1][:, -1]  # numpy's top eigenvector
    cold = eigen(A, k=1, tol=1e-8)
    warm = eigen(A, k=1, tol=1e-8, v0=q)
    assert warm.all_converged and cold.all_converged
    assert abs(warm.eigenvalues[0].item() - 4.0) < 1e-8
    # one product certifies; the completeness check (fresh random starts) comes on top
    assert warm.n_matvecs - warm.completeness_matvecs == 1 < cold.n_matvecs
    assert warm.complete and warm.completeness_matvecs == 12
    unchecked = eigen(A, k=1, tol=1e-8, v0=q, check_complete=False)
    assert unchecked.n_matvecs == 1 and not unchecked.complete


def test_start_block_sets_the_block_size_and_finds_a_triple_eigenvalue() -> None:
    rng = np.random.default_rng(4)
    A, _ = triple_top(rng)  # rng goes on to draw the start block
    res = eigen(A, k=6, tol=1e-6, v0=rng.standard_normal((300, 3)))
    assert res.block_size == 3
    check_certified(A, res, reference(A, 6, "largest"), tol=1e-6)
    assert res.all_converged


def test_warm_start_from_the_previous_spectrum_saves_products() -> None:
    """Following a slowly changing matrix: start from the last eigenvectors' sum."""
    rng = np.random.default_rng(8)
    lam = np.concatenate([40.0 * 0.8 ** np.arange(10), rng.uniform(-3, 3, 1990)])
    A = rotated(lam, seed=8)
    E = rng.standard_normal(A.shape) * 2e-3
    B = A + E + E.T  # the next checkpoint's matrix
    before = eigen(A, k=10, tol=TOL)
    cold = eigen(B, k=10, tol=TOL)
    warm = eigen(B, k=10, tol=TOL, v0=before.eigenvectors.sum(1))
    check_certified(B, warm, reference(B, 10, "largest"))
    assert warm.all_converged and cold.all_converged
    assert warm.n_matvecs < cold.n_matvecs


def test_bad_operators() -> None:
    with pytest.raises(ValueError, match="square"):
        eigen(torch.zeros(3, 4), k=1)
    with pytest.raises(ValueError, match="square"):
        eigen(np.zeros(5), k=1)
    with pytest.raises(ValueError, match="symmetric"):
        eigen(np.triu(np.ones((4, 4))), k=1)
    with pytest.raises(ValueError, match="finite"):
        eigen(np.full((3, 3), np.nan), k=1)
    with pytest.raises(ValueError, match="op must be"):
        eigen([[1.0, 0.0], [0.0, 1.0]], k=1)


# ------------------------------------------------------------------ digits MLP


def test_digits_mlp_top10_matches_dense_hessian(digits_mlp) -> None:
    model, X, y, H = digits_mlp
    assert H.shape == (4810, 4810)
    # Exact reference: ARPACK on the dense float64 Hessian to 1e-12 (a full eigh of a
    # 4,810 x 4,810 matrix would dominate the test time), checked by its residuals.
    ref, vecs = sla.eigsh(H, k=10, which="LA", tol=1e-12)
    ref, vecs = ref[::-1], vecs[:, ::-1]
    assert np.linalg.norm(H @ vecs - vecs * ref, axis=0).max() < 1e-9
    op = HessianOperator(model, nn.CrossEntropyLoss(), (X, y))
    res = eigen(op, k=10, tol=TOL)
    assert res.all_converged
    # H is float64; the operator computes a float32 model's Hessian (differs by ~eps32 ||H||)
    check_certified(H, res, ref, slack=10 * torch.finfo(torch.float32).eps)
    assert np.all(np.abs(res.eigenvalues.numpy() - ref) <= TOL * np.abs(ref))
    assert res.n_matvecs < 40


# --------------------------------------------- repeated eigenvalues and completeness


# benchmarks/eigen_multiplicity.py: the repeated-spectrum matrices and the MLP with duplicated
# hidden units (shared with the benchmark that records the product counts).
BENCH = load_benchmark("eigen_multiplicity")


@pytest.mark.parametrize(("mult", "k"), [(6, 10), (10, 14)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torture_multiplicity_six_and_ten(mult: int, k: int, dtype: torch.dtype) -> None:
    """Top spectrum 6, 5, 4, then 3.0 repeated ``mult`` times: every copy is returned."""
    A = BENCH.rotated(BENCH.repeated_spectrum(mult), seed=mult)
    A = A.astype(np.float32).astype(np.float64)  # exactly the float32 operator's matrix
    res = eigen(torch.from_numpy(A).to(dtype), k=k)
    ref = reference(A, k, "largest")
    check_certified(A, res, ref)
    assert res.all_converged and res.complete and res.completeness_matvecs > 0
    assert np.allclose(res.eigenvalues.numpy(), ref, rtol=TOL)
    # without the check the single-vector Krylov space misses copies (today's behaviour)
    plain = eigen(torch.from_numpy(A).to(dtype), k=k, check_complete=False)
    assert not np.allclose(plain.eigenvalues.numpy(), ref, rtol=TOL)
    assert not plain.complete


@pytest.mark.parametrize("which", ["smallest", "magnitude"])
def test_multiplicity_six_smallest_and_magnitude(which: str) -> None:
    lam = -BENCH.repeated_spectrum(6)  # -6, -5, -4, then -3 six times, -2.9, -2.5, bulk
    A = BENCH.rotated(lam, seed=11)
    res = eigen(A, k=10, which=which)
    ref = reference(A, 10, which)
    check_certified(A, res, ref)
    assert res.all_converged and res.complete
    assert np.allclose(res.eigenvalues.numpy(), ref, rtol=TOL)


def test_duplicated_hidden_units_all_copies() -> None:
    """Issue 13, case 1. Hidden units 0-6 of a 30-12-1 BCE network are identical copies, so
    by symmetry one Hessian eigenvalue has multiplicity 6, at positions 7-12. Today's
    single-vector call returned it once and then the 13th-15th values as the 8th-10th."""
    model, X, y = BENCH.duplicated_unit_mlp()
    H = BENCH.dense_hessian64(model, X, y)  # torch.func.hessian in float64
    ref = reference(H, 10, "largest")
    assert np.allclose(ref[6:], ref[6], rtol=1e-6)  # the four copies inside the top 10
    op = HessianOperator(model, nn.BCEWithLogitsLoss(), (X, y))
    plain = eigen(op, k=10, check_complete=False)
    assert abs(plain.eigenvalues[8].item() - ref[8]) > 0.01 * ref[8]  # a copy missing
    res = eigen(op, k=10)
    assert res.all_converged and res.complete
    check_certified(H, res, ref, slack=10 * torch.finfo(torch.float32).eps)
    assert np.allclose(res.eigenvalues.numpy(), ref, rtol=TOL)
    # The issue asks for at most twice today's products. Measured: 62 against 33; the
    # round after the miss ran apart from the basis (5 steps on the deflated operator),
    # where an in-basis round would also multiply the 2 chains the first round brought in
    # (74 products, 2.24x).
    assert res.check_steps == 5
    assert res.n_matvecs <= 2 * plain.n_matvecs


def test_deflated_round_finds_what_the_deflation_leaves() -> None:
    """The round run apart from the basis: with the top-3 eigenvectors of a 200 x 200
    matrix deflated, it must report the 4th eigenvalue (found by numpy) when it beats the
    bar, nothing when no eigenvalue does, and refuse (None) when the budget is short."""
    from decaylab.curvature._linop import as_linop, random_generator
    from decaylab.curvature.lanczos import _deflated_check

    lam = np.concatenate([[9.0, 8.0, 7.0, 6.0], np.linspace(-1.0, 1.0, 196)])
    A = rotated(lam, seed=3)
    w, U = np.linalg.eigh(A)
    Q = torch.from_numpy(U[:, ::-1][:, :3].copy())
    gen = random_generator(0)
    lin = as_linop(A)
    found = _deflated_check(lin, Q, 5.0, "largest", 2, 5, gen, 100)
    assert found is not None and found.shape[1] >= 1
    v = found[:, 0].numpy() / np.linalg.norm(found[:, 0].numpy())
    assert abs(v @ A @ v - w[-4]) < 0.5 and abs(v @ U[:, -4]) > 0.9  # the 4th eigenpair
    assert np.abs(U[:, -3:].T @ v).max() < 1e-8  # nothing of the deflated vectors
    none = _deflated_check(lin, Q, 6.5, "largest", 2, 5, gen, 100)  # 6 does not beat 6.5
    assert none is not None and none.shape[1] == 0
    assert _deflated_check(lin, Q, 5.0, "largest", 2, 5, gen, 9) is None  # 10 products needed


def test_completeness_check_out_of_budget_is_flagged() -> None:
    A = BENCH.rotated(BENCH.repeated_spectrum(6), seed=6)
    first = eigen(A, k=10, check_complete=False)
    with pytest.warns(ConvergenceWarning, match="completeness check did not finish"):
        res = eigen(A, k=10, max_matvecs=first.n_matvecs + 3)
    assert not res.complete and res.miss_probability(0.5) == 1.0


def test_miss_probability_statement() -> None:
    A = rotated(nn_like(400, seed=12), seed=12)
    res = eigen(A, k=5)
    assert res.complete and (res.check_block, res.check_steps) == (2, 4)
    p = [res.miss_probability(g) for g in (0.01, 0.3, 0.9)]
    assert p[0] == 1.0 and 0.0 < p[2] < p[1] <= 1.0  # no guarantee for small gaps
    # Kuczynski & Wozniakowski: one start fails with probability <= 1.648 sqrt(P) e^(-sqrt(g)(2s-1))
    assert p[2] == pytest.approx((1.648 * np.sqrt(400) * np.exp(-np.sqrt(0.9) * 7)) ** 2)
    whole = eigen(np.diag(np.arange(6.0)), k=6)  # the basis spans the space: nothing missed
    assert whole.complete and whole.miss_probability(0.01) == 0.0
    with pytest.raises(ValueError, match="gap must be"):
        res.miss_probability(0.0)


# ------------------------------------------------ the residual bounds the float64 one


@pytest.mark.parametrize("which", ["largest", "smallest", "magnitude"])
def test_residual_bounds_float64_residual_of_float32_operators(which: str) -> None:
    """A float32 operator of a float64 matrix it cannot represent exactly: the reported
    residual bounds ‖A q − θ q‖ with the float64 A and the returned (float32) q."""
    for seed in range(3):
        lam = nn_like(300, seed=seed) if seed % 2 else np.random.default_rng(seed).normal(0, 1, 300)
        A = rotated(lam, seed=seed)
        for op in (torch.from_numpy(A).float(), DenseDuckOperator(A, torch.float32)):
            for max_matvecs in (None, 15):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    res = eigen(op, k=6, which=which, tol=1e-6, max_matvecs=max_matvecs)
                Q = res.eigenvectors.double().numpy()
                true = np.linalg.norm(A @ Q - Q * res.eigenvalues.numpy(), axis=0)
                assert np.all(true <= res.residuals.numpy()), (seed, max_matvecs)


def test_residual_bounds_float64_residual_on_digits_mlp(digits_mlp) -> None:
    """The float32 operator's pairs against the float64 Hessian: on today's main the
    reported residual was up to 2.4x below the true one at tol=1e-5."""
    model, X, y, H = digits_mlp
    op = HessianOperator(model, nn.CrossEntropyLoss(), (X, y))
    for seed in (0, 1):
        res = eigen(op, k=10, tol=1e-5, seed=seed)
        Q = res.eigenvectors.double().numpy()
        true = np.linalg.norm(H @ Q - Q * res.eigenvalues.numpy(), axis=0)
        assert np.all(true <= res.residuals.numpy())
        assert res.all_converged


# ------------------------------------------------------------ documented defaults


def test_default_tolerance_is_1e_3() -> None:
    """Every pair of the default call has a true residual <= 1e-3 |θ|; the spectrum is chosen
    so that stopping at 1e-2 leaves a pair above that."""
    A = rotated(np.concatenate([[10.0, 9.5, 9.2, 9.0], np.linspace(-1.0, 8.8, 296)]), seed=13)
    res = eigen(A, k=4)
    assert res.tol == 1e-3
    Q = res.eigenvectors.numpy()
    vals = res.eigenvalues.numpy()
    true = np.linalg.norm(A @ Q - Q * vals, axis=0)
    assert np.all(true <= 1e-3 * np.abs(vals))
    loose = eigen(A, k=4, tol=1e-2)
    true_loose = np.linalg.norm(
        A @ loose.eigenvectors.numpy() - loose.eigenvectors.numpy() * loose.eigenvalues.numpy(),
        axis=0,
    )
    assert np.any(true_loose > 1e-3 * np.abs(loose.eigenvalues.numpy()))


def test_other_eigen_defaults() -> None:
    """k=10, which="largest", seed=0, block_size=1, completeness check on, budget
    max(20k, 200) products (+1 rounding measurement for operators other than float64
    matrices)."""
    A = rotated(nn_like(300, seed=14), seed=14)
    res = eigen(A)
    assert res.eigenvalues.shape == (10,) and res.which == "largest" and res.block_size == 1
    assert np.allclose(res.eigenvalues.numpy(), reference(A, 10, "largest"), rtol=1e-3)
    assert res.complete
    assert torch.equal(res.eigenvalues, eigen(A, seed=0).eigenvalues)
    flat = np.diag(np.linspace(1.0, 2.0, 500))  # rounding alone exceeds tol=1e-15
    with pytest.warns(ConvergenceWarning):
        assert eigen(flat, k=2, tol=1e-15).n_matvecs == 200
    with pytest.warns(ConvergenceWarning):
        assert eigen(flat, k=11, tol=1e-15).n_matvecs == 220
    with pytest.warns(ConvergenceWarning):
        assert eigen(DenseDuckOperator(flat, torch.float32), k=2, tol=1e-15).n_matvecs == 201
