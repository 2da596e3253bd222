"""decaylab.theory against independent computations (scikit-learn, explicit loops, dense solves)."""

from __future__ import annotations

import warnings
from decimal import Decimal, getcontext

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Lasso, Ridge

from decaylab._checks import TheoryWarning
from decaylab.theory import (
    approx_alpha,
    early_stopping_alpha,
    effective_parameters,
    eigh_descending,
    equivalent_steps,
    gd_iterate,
    l1_solution,
    l2_solution,
    shrink_factors,
)


def _rel(a, b):
    return np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b))


@pytest.fixture(scope="module")
def diabetes():
    """Centred, standardized diabetes; H = X^T X / N, w* = least squares."""
    X, y = load_diabetes(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    y = y - y.mean()
    n = X.shape[0]
    H = X.T @ X / n
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]
    return X, y, H, w_star


@pytest.fixture()
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --------------------------------------------------------------------------- exact checks


def test_ridge_path_equals_sklearn_ridge(diabetes, no_warnings):
    X, y, H, w_star = diabetes
    n = X.shape[0]
    alphas = np.logspace(-4, 2, 13)
    path = l2_solution(w_star, alphas, hessian=H)
    assert path.shape == (alphas.size, X.shape[1])
    for a, w in zip(alphas, path, strict=True):
        ref = Ridge(alpha=n * a, fit_intercept=False, solver="cholesky").fit(X, y).coef_
        assert _rel(w, ref) < 1e-8
    # The path from a precomputed eigen-pair and a single alpha agree with it.
    vals, vecs = eigh_descending(H)
    assert np.allclose(l2_solution(w_star, alphas, eigvals=vals, eigvecs=vecs), path, rtol=1e-12)
    assert np.allclose(l2_solution(w_star, alphas[3], hessian=H), path[3], rtol=1e-12)


def test_ridge_alpha_zero_returns_w_star(diabetes, no_warnings):
    _, _, H, w_star = diabetes
    assert _rel(l2_solution(w_star, 0.0, hessian=H), w_star) < 1e-12


def test_l2_solution_accepts_torch(diabetes):
    _, _, H, w_star = diabetes
    alphas = torch.tensor([0.1, 1.0], dtype=torch.float64)
    out = l2_solution(torch.tensor(w_star), alphas, hessian=torch.tensor(H))
    assert out.dtype == np.float64
    assert _rel(out[0], np.linalg.solve(H + 0.1 * np.eye(len(H)), H @ w_star)) < 1e-12


def _explicit_gd(X, y, lr, steps, w0):
    """Plain gradient descent on the mean half squared error, one step at a time."""
    n = X.shape[0]
    w = w0.copy()
    out = [w.copy()]
    for _ in range(steps):
        w = w - lr * (X.T @ (X @ w - y)) / n
        out.append(w.copy())
    return np.array(out)


@pytest.mark.parametrize("start", ["zero", "random"])
def test_gd_iterate_equals_explicit_loop(diabetes, start, no_warnings):
    X, y, H, w_star = diabetes
    lam_max = np.linalg.eigvalsh(H).max()
    lr = 1.0 / lam_max
    w0 = np.zeros(X.shape[1]) if start == "zero" else np.random.default_rng(3).normal(size=10)
    loop = _explicit_gd(X, y, lr, 2000, w0)
    kwargs = {} if start == "zero" else {"w0": w0}
    final = gd_iterate(w_star, lr, 2000, hessian=H, **kwargs)
    assert _rel(final, loop[-1]) < 1e-8
    steps = np.array([0, 1, 7, 100, 999, 2000])
    traj = gd_iterate(w_star, lr, steps, hessian=H, **kwargs)
    assert traj.shape == (steps.size, X.shape[1])
    for tau, w in zip(steps, traj, strict=True):
        if tau == 0:
            assert np.array_equal(w, w0)
        else:
            assert _rel(w, loop[tau]) < 1e-8


def test_early_stopping_alpha_reproduces_gd_iterate(diabetes, no_warnings):
    """Per-direction L2 with alpha_i gives exactly the explicit gradient-descent iterate."""
    X, y, H, w_star = diabetes
    vals, vecs = eigh_descending(H)
    lr = 0.9 / vals[0]
    for tau in (1, 10, 300):
        alpha_i = early_stopping_alpha(vals, lr, tau)
        w_l2 = vecs @ (shrink_factors(vals, alpha_i) * (vecs.T @ w_star))
        loop = _explicit_gd(X, y, lr, tau, np.zeros(10))[-1]
        assert _rel(w_l2, loop) < 1e-8


def test_l1_solution_equals_sklearn_lasso_on_diagonal_design(no_warnings):
    rng = np.random.default_rng(0)
    n, d = 200, 8
    q, _ = np.linalg.qr(rng.normal(size=(n, d)))
    q -= q.mean(axis=0)  # keep columns orthogonal after re-orthogonalizing below
    q, _ = np.linalg.qr(q)
    scales = np.array([3.0, 2.0, 1.5, 1.0, 0.8, 0.5, 0.3, 0.2])
    X = q * np.sqrt(n) * scales
    y = X @ np.array([1.0, -0.5, 0.2, 0.0, 0.3, -1.0, 0.05, 0.4]) + 0.3 * rng.normal(size=n)
    H = X.T @ X / n
    assert np.allclose(H, np.diag(np.diag(H)), atol=1e-12)
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]
    alphas = np.array([1e-3, 0.01, 0.05, 0.1, 0.3, 1.0])
    path = l1_solution(w_star, np.diag(H), alphas)
    assert path.shape == (alphas.size, d)
    n_zero_seen = 0
    for a, w in zip(alphas, path, strict=True):
        ref = Lasso(alpha=a, fit_intercept=False, tol=1e-14, max_iter=100_000).fit(X, y).coef_
        assert np.array_equal(w == 0, ref == 0)
        assert np.allclose(w, ref, rtol=1e-8, atol=1e-10)
        n_zero_seen += int((w == 0).sum())
    assert 0 < n_zero_seen < alphas.size * d  # the test exercises both regimes


def test_eigh_descending_matches_numpy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 6))
    H = a @ a.T
    vals, vecs = eigh_descending(H)
    assert np.all(np.diff(vals) <= 0)
    assert np.allclose(vals, np.sort(np.linalg.eigvalsh(H))[::-1], rtol=1e-12)
    assert np.allclose(vecs @ np.diag(vals) @ vecs.T, H, atol=1e-12)
    assert np.allclose(H @ vecs, vecs * vals, atol=1e-10)


def test_eigh_descending_accepts_float32_rounding():
    H = torch.tensor([[2.0, 0.5], [0.5000001, 1.0]], dtype=torch.float32)
    vals, vecs = eigh_descending(H)
    # Independent: the 2x2 closed form on the symmetric part, (tr ± sqrt(tr² − 4 det)) / 2.
    a, b, d = 2.0, (0.5 + float(np.float32(0.5000001))) / 2, 1.0
    root = np.sqrt((a + d) ** 2 - 4 * (a * d - b * b))
    np.testing.assert_allclose(vals, [(a + d + root) / 2, (a + d - root) / 2], rtol=1e-12)
    assert vals.dtype == np.float64 and np.allclose(vecs.T @ vecs, np.eye(2), atol=1e-12)
    # The same asymmetry is refused in float64, whose rounding cannot explain it.
    with pytest.raises(ValueError, match="symmetric"):
        eigh_descending(H.double() + torch.tensor([[0.0, 0.0], [1e-3, 0.0]], dtype=torch.float64))


# --------------------------------------------------------------------------- early stopping


def _alpha_decimal(lam, lr, tau):
    getcontext().prec = 60
    lam_d, lr_d = Decimal(repr(lam)), Decimal(repr(lr))
    q = (1 - lr_d * lam_d) ** tau
    return float(lam_d * q / (1 - q))


@pytest.mark.parametrize(
    ("lam", "lr", "tau"),
    [(1e-9, 0.01, 10), (1e-6, 1.0, 1_000_000), (0.5, 0.1, 3), (1.5, 1.0, 2), (1.9, 1.0, 5)],
)
def test_early_stopping_alpha_high_precision(lam, lr, tau):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryWarning)  # lr * lam > 1 cases warn, on purpose
        got = float(early_stopping_alpha([lam], lr, tau)[0])
    assert got == pytest.approx(_alpha_decimal(lam, lr, tau), rel=1e-10)


def test_early_stopping_alpha_limits(no_warnings):
    lam = np.array([2.0, 0.5, 0.0])
    out = early_stopping_alpha(lam, 0.1, [0, 4])
    assert out.shape == (2, 3)
    assert np.all(np.isposinf(out[0]))  # nothing learned yet
    assert out[1, 2] == pytest.approx(1 / (0.1 * 4), rel=1e-14)  # lambda -> 0 limit
    assert out[1, 2] == pytest.approx(_alpha_decimal(1e-12, 0.1, 4), rel=1e-9)
    assert early_stopping_alpha([10.0], 0.1, 3)[0] == 0.0  # one step lands on w*


def test_approx_alpha_is_the_small_step_limit(no_warnings):
    lam = np.array([1e-4, 1e-5])
    lr, tau = 1e-3, 100
    exact = early_stopping_alpha(lam, lr, tau)
    assert np.allclose(exact, approx_alpha(lr, tau), rtol=1e-3)
    assert float(equivalent_steps(approx_alpha(lr, tau), lr)) == pytest.approx(tau)
    assert np.isposinf(approx_alpha(lr, 0)) and np.isposinf(equivalent_steps(0.0, lr))


# --------------------------------------------------------------------------- properties

dims = st.integers(min_value=1, max_value=6)


@st.composite
def spd_matrices(draw):
    d = draw(dims)
    a = draw(arrays(np.float64, (d, d), elements=st.floats(-3, 3, allow_subnormal=False)))
    ridge = draw(st.floats(1e-3, 2.0))
    return a @ a.T + ridge * np.eye(d)


alphas_st = st.floats(min_value=0.0, max_value=1e3, allow_subnormal=False)


@settings(max_examples=50, deadline=None)
@given(H=spd_matrices(), a1=alphas_st, a2=alphas_st)
def test_shrink_factors_in_unit_interval_and_monotone(H, a1, a2):
    vals, _ = eigh_descending(H)
    lo, hi = sorted((a1, a2))
    f = shrink_factors(vals, np.array([[lo], [hi]]))
    assert np.all(f > 0) and np.all(f <= 1)
    assert np.all(f[1] <= f[0])
    assert np.array_equal(shrink_factors(vals, 0.0), np.ones_like(vals))
    gamma = effective_parameters(vals, [lo, hi])
    assert np.all(gamma >= 0) and np.all(gamma <= len(vals) + 1e-12)
    assert gamma[1] <= gamma[0] + 1e-12
    ref = np.trace(H @ np.linalg.inv(H + lo * np.eye(len(H))))  # gamma = tr(H (H + alpha I)^-1)
    assert float(effective_parameters(vals, lo)) == pytest.approx(ref, rel=1e-8)


@settings(max_examples=50, deadline=None)
@given(
    H=spd_matrices(),
    alpha=alphas_st,
    w=arrays(np.float64, 6, elements=st.floats(-10, 10, allow_subnormal=False)),
)
def test_l2_solution_equals_dense_solve(H, alpha, w):
    d = len(H)
    w_star = w[:d]
    ref = np.linalg.solve(H + alpha * np.eye(d), H @ w_star)
    got = l2_solution(w_star, alpha, hessian=H)
    assert np.allclose(got, ref, rtol=1e-8, atol=1e-8 * (1 + np.abs(w_star).max()))


@settings(max_examples=50, deadline=None)
@given(H=spd_matrices(), frac=st.floats(0.01, 0.999), tau=st.integers(1, 5000))
def test_early_stopping_alpha_is_an_l2_shrink_factor(H, frac, tau):
    vals, _ = eigh_descending(H)
    lr = frac / vals[0]  # lr * lambda < 1: no overshoot
    alpha_i = early_stopping_alpha(vals, lr, tau)
    assert np.all(alpha_i >= 0)
    expected = 1.0 - (1.0 - lr * vals) ** tau
    assert np.allclose(shrink_factors(vals, alpha_i), expected, rtol=1e-9, atol=1e-15)


# --------------------------------------------------------------------------- bad input: errors

H2 = np.array([[2.0, 0.3], [0.3, 1.0]])
W2 = np.array([1.0, -1.0])


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: shrink_factors([1.0, 2.0], -0.1), "alpha"),
        (lambda: shrink_factors([1.0, 2.0], [0.1, -1.0]), "alpha"),
        (lambda: effective_parameters([1.0, 2.0], [-1.0]), "alpha"),
        (lambda: l2_solution(W2, -1.0, hessian=H2), "alpha"),
        (lambda: l1_solution(W2, [1.0, 1.0], -0.5), "alpha"),
        (lambda: equivalent_steps(-1.0, 0.1), "alpha"),
        (lambda: gd_iterate(W2, 0.0, 3, hessian=H2), "lr"),
        (lambda: gd_iterate(W2, -0.1, 3, hessian=H2), "lr"),
        (lambda: early_stopping_alpha([1.0], 0.0, 3), "lr"),
        (lambda: approx_alpha(-1.0, 3), "lr"),
        (lambda: equivalent_steps(1.0, 0.0), "lr"),
        (lambda: gd_iterate(W2, 0.1, -1, hessian=H2), "steps"),
        (lambda: gd_iterate(W2, 0.1, [1, -2], hessian=H2), "steps"),
        (lambda: gd_iterate(W2, 0.1, 2.5, hessian=H2), "steps"),
        (lambda: early_stopping_alpha([1.0], 0.1, -3), "steps"),
        (lambda: approx_alpha(0.1, -1), "steps"),
        (lambda: shrink_factors([1.0, np.nan], 1.0), "eigvals"),
        (lambda: shrink_factors([1.0, 2.0], np.nan), "alpha"),
        (lambda: l2_solution([np.inf, 1.0], 1.0, hessian=H2), "w_star"),
        (lambda: l2_solution(W2, 1.0, hessian=[[1.0, np.nan], [np.nan, 1.0]]), "hessian"),
        (lambda: l1_solution(W2, [1.0, np.inf], 0.1), "h_diag"),
        (lambda: gd_iterate(W2, np.nan, 3, hessian=H2), "lr"),
        (lambda: gd_iterate(W2, 0.1, 3, hessian=H2, w0=[np.nan, 0.0]), "w0"),
        (lambda: eigh_descending([[1.0, np.inf], [np.inf, 1.0]]), "H"),
        (lambda: l2_solution(W2, 1.0, hessian=np.eye(3)), "hessian"),
        (lambda: l2_solution(W2, 1.0, hessian=np.ones((2, 3))), "hessian"),
        (lambda: l2_solution(W2, 1.0, eigvals=[1.0, 2.0, 3.0], eigvecs=np.eye(2)), "eigvals"),
        (lambda: l2_solution(W2, 1.0, eigvals=[1.0, 2.0], eigvecs=np.eye(3)), "eigvecs"),
        (lambda: l2_solution(W2, 1.0, eigvals=[1.0, 2.0], eigvecs=np.ones((2, 2))), "eigvecs"),
        (lambda: l2_solution(W2, [[1.0]], hessian=H2), "alpha"),
        (lambda: l1_solution(W2, [1.0, 1.0, 1.0], 0.1), "h_diag"),
        (lambda: gd_iterate(W2, 0.1, 3, hessian=H2, w0=[0.0]), "w0"),
        (lambda: shrink_factors([1.0, 2.0], [1.0, 2.0, 3.0]), "alpha"),
        (lambda: eigh_descending(np.ones((2, 3))), "H"),
        (lambda: l2_solution(W2, 1.0, hessian=[[1.0, 0.5], [0.0, 1.0]]), "hessian"),
        (lambda: eigh_descending([[1.0, 1e-3], [0.0, 1.0]]), "H"),
        (lambda: l2_solution(W2, 1.0), "hessian"),
        (lambda: l2_solution(W2, 1.0, eigvals=[1.0, 2.0]), "eigvecs"),
        (lambda: l2_solution(W2, 1.0, hessian=H2, eigvals=[1.0, 2.0]), "hessian"),
        (lambda: gd_iterate(W2, 0.1, 3), "hessian"),
    ],
)
def test_bad_input_raises_value_error_naming_argument(call, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()


# Issue 13 case 6: numpy reads "0.1" as 0.1 and True as 1.0; a number given as text or a flag
# where a number goes is refused, naming the argument, before any compute.
@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: shrink_factors([1.0, 2.0], "0.1"), "alpha"),
        (lambda: shrink_factors([1.0, 2.0], True), "alpha"),
        (lambda: shrink_factors([1.0, 2.0], ["0.1", 1.0]), "alpha"),
        (lambda: shrink_factors(["1", "2"], 0.1), "eigvals"),
        (lambda: shrink_factors([True, False], 0.1), "eigvals"),
        (lambda: shrink_factors(torch.tensor([True, False]), 0.1), "eigvals"),
        (lambda: effective_parameters([1.0, 2.0], "0.1"), "alpha"),
        (lambda: l2_solution(["1", "1"], 0.1, hessian=H2), "w_star"),
        (lambda: l2_solution(W2, "0.1", hessian=H2), "alpha"),
        (lambda: l2_solution(W2, 0.1, hessian=[["2", "0"], ["0", "1"]]), "hessian"),
        (lambda: l2_solution(W2, 0.1, eigvals=["2", "1"], eigvecs=np.eye(2)), "eigvals"),
        (lambda: l2_solution(W2, 0.1, eigvals=[2.0, 1.0], eigvecs=np.eye(2) > 0), "eigvecs"),
        (lambda: l1_solution(W2, ["1", "1"], 0.1), "h_diag"),
        (lambda: l1_solution(W2, [1.0, 1.0], "0.1"), "alpha"),
        (lambda: gd_iterate(W2, "0.1", 3, hessian=H2), "lr"),
        (lambda: gd_iterate(W2, True, 3, hessian=H2), "lr"),
        (lambda: gd_iterate(W2, 0.1, "3", hessian=H2), "steps"),
        (lambda: gd_iterate(W2, 0.1, 3, hessian=H2, w0=["0", "0"]), "w0"),
        (lambda: early_stopping_alpha([1.0], "0.1", 3), "lr"),
        (lambda: early_stopping_alpha([1.0], 0.1, True), "steps"),
        (lambda: approx_alpha("0.1", 3), "lr"),
        (lambda: equivalent_steps("0.1", 0.1), "alpha"),
        (lambda: equivalent_steps(0.1, "0.1"), "lr"),
        (lambda: eigh_descending([["1", "0"], ["0", "1"]]), "H"),
        (lambda: effective_parameters([1.0, 2.0], np.nan), "alpha"),
        (lambda: l2_solution(W2, [0.1, np.nan], hessian=H2), "alpha"),
    ],
)
def test_strings_bools_and_nan_are_refused_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must"):
        call()


def test_alpha_inf_is_still_the_shrink_to_zero_limit(no_warnings):
    # Refusing strings must not refuse the documented alpha = inf limit.
    assert shrink_factors([3.0, 1.0], np.inf).tolist() == [0.0, 0.0]
    assert float(equivalent_steps(np.inf, 0.1)) == 0.0


def test_symmetry_tolerates_rounding(no_warnings):
    H = H2.copy()
    H[0, 1] += 1e-14
    assert np.allclose(eigh_descending(H)[0], eigh_descending(H2)[0])
    l2_solution(W2, 1.0, hessian=H)


# --------------------------------------------------------------------------- bad input: warnings

HNEG = np.array([[2.0, 0.0], [0.0, -0.5]])


@pytest.mark.parametrize(
    "call",
    [
        lambda: shrink_factors([2.0, -0.5], 1.0),
        lambda: effective_parameters([2.0, -0.5], [1.0, 2.0]),
        lambda: l2_solution(W2, 1.0, hessian=HNEG),
        lambda: gd_iterate(W2, 0.1, 5, hessian=HNEG),
        lambda: early_stopping_alpha([2.0, -0.5], 0.1, 5),
    ],
)
def test_negative_eigenvalues_warn(call):
    with pytest.warns(TheoryWarning, match="negative"):
        call()


def test_divergent_step_size_warns():
    with pytest.warns(TheoryWarning, match="lr \\* lambda_max"):
        gd_iterate(W2, 2.0 / np.linalg.eigvalsh(H2).max(), 5, hessian=H2)
    with pytest.warns(TheoryWarning, match="lr \\* lambda_max"):
        out = gd_iterate(W2, 10.0, [10, 2000], hessian=H2)
    assert not np.all(np.isfinite(out[-1])) or np.abs(out[-1]).max() > 1e10
    with pytest.warns(TheoryWarning, match="lr \\* lambda_max"):
        early_stopping_alpha([3.0, 1.0], 1.0, 4)


def test_overshooting_step_warns_negative_alpha():
    with pytest.warns(TheoryWarning, match="overshoots"):
        alpha = early_stopping_alpha([1.5, 0.2], 1.0, 1)
    assert alpha[0] < 0  # (1 - 1.5)^1 < 0: not an L2 strength


def test_l1_nonpositive_curvature_warns_and_documents_values():
    w = np.array([2.0, -3.0, 1.5, 0.5])
    h = np.array([1.0, 0.0, -1.0, 1.0])
    with pytest.warns(TheoryWarning, match="h_diag"):
        out = l1_solution(w, h, [0.0, 1.0])
    assert np.array_equal(out[0], w)  # alpha = 0: nothing shrinks
    assert out[1].tolist() == [1.0, 0.0, 1.5, 0.0]  # h=0 -> exact minimizer 0; h<0 -> w*


def test_singular_direction_warns_not_silent_nan():
    with pytest.warns(TheoryWarning, match="lambda \\+ alpha = 0"):
        f = shrink_factors([1.0, 0.0], 0.0)
    assert f.tolist() == [1.0, 0.0]
    with pytest.warns(TheoryWarning):
        f = shrink_factors([1.0, -0.5], 0.5)
    assert np.isnan(f[1])


def test_good_inputs_do_not_warn(no_warnings):
    shrink_factors([3.0, 1.0, 0.0], 0.5)
    effective_parameters([3.0, 1.0, 0.0], np.logspace(-3, 3, 7))
    gd_iterate(W2, 0.5, np.arange(5), hessian=H2)
    early_stopping_alpha([3.0, 1.0, 0.0], 0.3, [0, 1, 10])
    l1_solution(W2, [1.0, 2.0], [0.0, 0.5])
    # rounding noise below zero in a PSD eigenvalue is not a negative eigenvalue
    shrink_factors([3.0, -1e-17], 0.1)


def test_step_size_exactly_two_over_lambda_max_warns_divergence():
    # lr * lambda_max = 2 exactly: the iterate oscillates forever, documented as ">= 2".
    with pytest.warns(TheoryWarning, match="does not converge"):
        early_stopping_alpha([4.0, 1.0], 0.5, 3)
    with pytest.warns(TheoryWarning, match="does not converge"):
        gd_iterate(W2, 0.5, 3, hessian=np.diag([4.0, 1.0]))


def test_negative_eigenvalue_tolerance_is_rounding_level(no_warnings):
    # -1e-15 of a unit spectrum is rounding (no warning); -1e-6 is a real negative direction.
    shrink_factors([1.0, 0.5, -1e-15], 0.1)
    with pytest.warns(TheoryWarning, match="negative"):
        shrink_factors([1.0, 0.5, -1e-6], 0.1)


def test_eigvecs_must_be_orthonormal_to_sqrt_eps():
    c, s_ = np.cos(0.3), np.sin(0.3)
    Q = np.array([[c, -s_], [s_, c]])
    l2_solution(W2, 0.1, eigvals=[2.0, 1.0], eigvecs=Q)  # orthonormal: accepted
    with pytest.raises(ValueError, match="orthonormal"):
        l2_solution(W2, 0.1, eigvals=[2.0, 1.0], eigvecs=Q * (1 + 1e-4))  # 1e-4 off: refused
