"""The legacy closed-form demo (decaylab.demo.run_demo, still read by the old report code)
against independent computations (scikit-learn, explicit loops)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_diabetes
from sklearn.linear_model import BayesianRidge, Lasso, LinearRegression, Ridge
from sklearn.preprocessing import StandardScaler

from decaylab._checks import TheoryWarning
from decaylab.demo import run_demo, to_jsonable
from decaylab.tasks.legacy import LinearTask as Task
from decaylab.tasks.legacy import available_tasks, diabetes, get_task


@pytest.fixture(scope="module")
def res():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default demo must raise no warning at all
        return run_demo("diabetes")


@pytest.fixture(scope="module")
def data():
    task = diabetes()
    return task.X, task.y


def _rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# --------------------------------------------------------------------------- task


def test_task_is_standardized_diabetes():
    raw = load_diabetes(scaled=False)
    task = diabetes()
    np.testing.assert_allclose(task.X, StandardScaler().fit_transform(raw.data), atol=1e-12)
    z = (raw.target - raw.target.mean()) / raw.target.std()
    np.testing.assert_allclose(task.y, z, atol=1e-12)
    assert task.feature_names == tuple(raw.feature_names)
    assert task.loss == "half_squared_error" and task.kind == "linear_regression"
    raw_back = task.X * task.preprocessing["x_scale"] + task.preprocessing["x_mean"]
    np.testing.assert_allclose(raw_back, raw.data, rtol=1e-12)


def test_task_registry():
    assert "diabetes" in available_tasks()
    assert isinstance(get_task("diabetes"), Task)
    with pytest.raises(ValueError, match="task must be one of .*'nope'"):
        get_task("nope")


def test_unstandardized_target_keeps_units():
    task = diabetes(standardize_target=False)
    raw = load_diabetes(scaled=False)
    np.testing.assert_allclose(task.y, raw.target - raw.target.mean())


# --------------------------------------------------------------------------- spectrum, w*


def test_hessian_is_correlation_matrix_and_eigs_descending(res):
    raw = load_diabetes(scaled=False).data
    corr = np.corrcoef(raw, rowvar=False)
    np.testing.assert_allclose(res.hessian, corr, atol=1e-12)
    np.testing.assert_allclose(res.eigvals, np.sort(np.linalg.eigvalsh(corr))[::-1], rtol=1e-10)
    # the eigenvectors reproduce H
    Q = res.eigvecs
    np.testing.assert_allclose(Q @ np.diag(res.eigvals) @ Q.T, corr, atol=1e-12)


def test_w_star_is_least_squares(res, data):
    X, y = data
    ols = LinearRegression(fit_intercept=False).fit(X, y)
    assert _rel(res.w_star, ols.coef_) < 1e-10
    assert math.isclose(res.loss_at_w_star, 0.5 * np.mean((y - X @ ols.coef_) ** 2), rel_tol=1e-12)
    assert math.isclose(res.r_squared, ols.score(X, y), rel_tol=1e-10)


# --------------------------------------------------------------------------- ridge, L1


def test_ridge_path_matches_sklearn_ridge(res, data):
    X, y = data
    n = X.shape[0]
    for k in (0, 57, 120, 199):
        alpha = res.alphas[k]
        ridge = Ridge(alpha=n * alpha, fit_intercept=False, solver="cholesky").fit(X, y)
        assert _rel(res.ridge_path[k], ridge.coef_) < 1e-8, (k, alpha)


def test_picture_point_is_ridge_at_evidence_alpha(res, data):
    X, y = data
    n = X.shape[0]
    ridge = Ridge(alpha=n * res.alpha_picture, fit_intercept=False, solver="cholesky").fit(X, y)
    assert _rel(res.w_tilde, ridge.coef_) < 1e-8
    # shrink factors are the eigen-coordinates of w̃ over those of w*
    np.testing.assert_allclose(res.eigvecs.T @ ridge.coef_, res.shrink_at_picture * res.v_star,
                               atol=1e-10)


def test_l1_path_matches_sklearn_lasso_on_decorrelated_design(res, data):
    X, y = data
    Z = X @ res.eigvecs  # PCA rotation: ZᵀZ/N is diagonal
    off_diag = Z.T @ Z / len(y) - np.diag(res.eigvals)
    assert np.max(np.abs(off_diag)) < 1e-12
    for k in (40, 90, 110, 130, 150):
        alpha = res.alphas[k]
        lasso = Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=100_000).fit(Z, y)
        np.testing.assert_allclose(res.l1_path_rotated[k], lasso.coef_, rtol=1e-8, atol=1e-10)
        np.testing.assert_array_equal(res.l1_path_rotated[k] == 0, lasso.coef_ == 0)
    # some but not all coefficients are exactly zero somewhere on the grid: the figure's point
    zeros = (res.l1_path_rotated == 0).sum(axis=1)
    assert zeros[0] == 0 and zeros[-1] == res.n_features and np.any((zeros > 0) & (zeros < 10))


def test_l1_zero_alpha_is_where_lasso_drops_the_coefficient(res, data):
    X, y = data
    Z = X @ res.eigvecs
    for i in (0, 8, 9):
        a0 = res.l1_zero_alpha[i]
        below = Lasso(alpha=0.99 * a0, fit_intercept=False, tol=1e-14, max_iter=100_000).fit(Z, y)
        above = Lasso(alpha=1.01 * a0, fit_intercept=False, tol=1e-14, max_iter=100_000).fit(Z, y)
        assert below.coef_[i] != 0 and above.coef_[i] == 0


def test_effective_parameters_is_trace_of_hat_matrix(res):
    H = res.hessian
    for k in (0, 100, 199):
        a = res.alphas[k]
        trace = np.trace(np.linalg.solve(H + a * np.eye(len(H)), H))
        assert math.isclose(res.effective_parameters[k], trace, rel_tol=1e-10)


# --------------------------------------------------------------------------- gradient descent


def test_gd_trajectory_matches_explicit_loop(res, data):
    X, y = data
    n = len(y)
    wanted = {int(s): i for i, s in enumerate(res.gd_steps)}
    checkpoints = {10, 100, 239, int(res.gd_steps[-1])}
    w = np.zeros(X.shape[1])
    traj = res.gd_trajectory
    checked = 0
    for step in range(1, int(res.gd_steps[-1]) + 1):
        w = w - res.lr * (X.T @ (X @ w - y) / n)
        if step in checkpoints and step in wanted:
            assert _rel(traj[wanted[step]], w) < 1e-8, step
            checked += 1
    assert checked >= 3
    assert _rel(traj[-1], w) < 1e-8
    # the run ends with the flattest direction 99 % converged, as documented
    gap = abs(res.eigvecs[:, -1] @ (w - res.w_star)) / abs(res.v_star[-1])
    assert 0.0099 < gap <= 0.01


def test_early_stopping_alpha_reproduces_gd(res, data):
    X, y = data
    n = len(y)
    for row in res.early_stopping:
        tau = row["steps"]
        w = np.zeros(X.shape[1])
        for _ in range(tau):
            w = w - res.lr * (X.T @ (X @ w - y) / n)
        # ridge with one α_i per eigen-direction equals GD after τ steps
        a = np.asarray(row["alpha_per_direction"])
        ridge_per_dir = res.eigvecs @ (res.eigvals / (res.eigvals + a) * res.v_star)
        np.testing.assert_allclose(ridge_per_dir, w, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(res.eigvecs @ row["w_gd_eigenbasis"], w, atol=1e-12)
        assert row["alpha_scalar_1_over_lr_steps"] == pytest.approx(1 / (res.lr * tau))
    evidence_rows = [r for r in res.early_stopping if r["matches"]]
    assert len(evidence_rows) == 1
    assert evidence_rows[0]["steps"] == round(1 / (res.lr * res.evidence["alpha"]))


# --------------------------------------------------------------------------- evidence


def test_evidence_alpha_matches_bayesian_ridge(res, data):
    X, y = data
    br = BayesianRidge(
        fit_intercept=False, tol=1e-12, max_iter=10_000,
        alpha_1=0.0, alpha_2=0.0, lambda_1=0.0, lambda_2=0.0, compute_score=True,
    ).fit(X, y)
    ev = res.evidence
    assert ev["converged"]
    assert math.isclose(ev["prior_precision"], br.lambda_, rel_tol=1e-5)
    assert math.isclose(ev["noise_precision"], br.alpha_, rel_tol=1e-5)
    assert math.isclose(ev["alpha"], br.lambda_ / (br.alpha_ * len(y)), rel_tol=1e-5)
    assert _rel(ev["coef"], br.coef_) < 1e-5
    assert math.isclose(ev["log_evidence"], br.scores_[-1], rel_tol=1e-6)


def test_log_evidence_curve_peaks_at_evidence_alpha(res):
    k = int(np.argmax(res.log_evidence))
    lo, hi = res.alphas[max(k - 1, 0)], res.alphas[min(k + 1, len(res.alphas) - 1)]
    assert lo <= res.evidence["alpha"] <= hi
    assert res.log_evidence[k] <= res.evidence["log_evidence"] + 1e-9


def test_map_equals_ridge_at_evidence_alpha(res):
    assert res.consistency["max_abs_map_minus_ridge_at_evidence_alpha"] < 1e-10
    assert abs(res.consistency["evidence_gamma_minus_effective_parameters"]) < 1e-10


# --------------------------------------------------------------------------- warnings, JSON


def test_divergent_lr_is_recorded_and_reemitted():
    lam_max = float(np.linalg.eigvalsh(diabetes().X.T @ diabetes().X / 442).max())
    with pytest.warns(TheoryWarning, match="lr \\* lambda_max"):
        out = run_demo("diabetes", lr=2.5 / lam_max)
    assert any(w["category"] == "TheoryWarning" for w in out.warnings)


def test_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        run_demo("diabetes", alpha=-1.0)
    with pytest.raises(ValueError, match="lr"):
        run_demo("diabetes", lr=0.0)
    task = diabetes()
    other = Task(task.name, "classification", task.X, task.y, task.feature_names,
                 "cross_entropy", "", "")
    with pytest.raises(ValueError, match="linear-regression"):
        run_demo(other)


def test_results_are_json_safe(res):
    nulls: dict[str, str] = {}
    data = to_jsonable(res.to_dict(), nulls=nulls)
    text = json.dumps(data, allow_nan=False)
    back = json.loads(text)
    assert back["evidence"]["alpha"] == pytest.approx(res.evidence["alpha"])
    nulls2: dict[str, str] = {}
    assert to_jsonable({"x": [1.0, float("nan"), -np.inf]}, nulls=nulls2) == {
        "x": [1.0, None, None]
    }
    assert set(nulls2) == {"x[1]", "x[2]"}
