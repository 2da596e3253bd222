"""decaylab.bayes against scikit-learn, scipy densities and dense Gaussian marginals."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import optimize, stats
from sklearn.datasets import load_diabetes
from sklearn.linear_model import BayesianRidge, Lasso, Ridge

from decaylab._checks import ConvergenceWarning
from decaylab.bayes import (
    EvidenceResult,
    alpha_from_gaussian_prior,
    alpha_from_laplace_prior,
    evidence_ridge,
    gaussian_prior_std,
    log_evidence_ridge,
)


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


@pytest.fixture(scope="module")
def diabetes_raw():
    return load_diabetes(return_X_y=True)


def _bayesian_ridge(X, y, fit_intercept):
    """BayesianRidge with the Gamma hyperpriors off: the same fixed point as evidence_ridge."""
    return BayesianRidge(
        alpha_1=0.0,
        alpha_2=0.0,
        lambda_1=0.0,
        lambda_2=0.0,
        tol=1e-14,
        max_iter=100_000,
        compute_score=True,
        fit_intercept=fit_intercept,
    ).fit(X, y)


# --------------------------------------------------------------------------- priors


def test_gaussian_prior_map_equals_ridge_with_that_alpha():
    """Maximize an explicit log posterior (scipy densities) and compare with Ridge(N alpha)."""
    rng = np.random.default_rng(0)
    n, d = 40, 3
    X = rng.normal(size=(n, d))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.7 * rng.normal(size=n)
    sigma, beta = 0.4, 2.5

    def neg_log_post(w):
        lik = stats.norm.logpdf(y, loc=X @ w, scale=1 / np.sqrt(beta)).sum()
        prior = stats.norm.logpdf(w, scale=sigma).sum()
        return -(lik + prior)

    w_map = optimize.minimize(neg_log_post, np.zeros(d), method="BFGS", options={"gtol": 1e-10}).x
    alpha = alpha_from_gaussian_prior(sigma, n, noise_precision=beta)
    w_ridge = Ridge(alpha=n * float(alpha), fit_intercept=False).fit(X, y).coef_
    assert _rel(w_ridge, w_map) < 1e-6
    assert float(gaussian_prior_std(alpha, n, noise_precision=beta)) == pytest.approx(sigma)


def test_gaussian_prior_std_inverse_and_arrays():
    stds = np.array([0.1, 1.0, 10.0])
    alphas = alpha_from_gaussian_prior(stds, 50, 3.0)
    assert alphas.shape == (3,) and alphas.dtype == np.float64
    assert np.allclose(gaussian_prior_std(alphas, 50, 3.0), stds, rtol=1e-14)
    with np.errstate(all="raise"):
        assert np.isposinf(gaussian_prior_std(0.0, 50))


def test_laplace_prior_map_equals_lasso_with_that_alpha():
    """Lasso(alpha=1/(N b)) satisfies the optimality conditions of the Laplace-prior posterior."""
    rng = np.random.default_rng(1)
    n, d = 60, 6
    X = rng.normal(size=(n, d))
    y = X @ np.array([2.0, 0.0, -1.0, 0.0, 0.1, 0.0]) + rng.normal(size=n)
    b = 0.05
    alpha = float(alpha_from_laplace_prior(b, n))
    w = Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=100_000).fit(X, y).coef_
    assert 0 < int((w == 0).sum()) < d
    # d/dw of the Gaussian log-likelihood (beta = 1) must balance the Laplace prior's
    # subgradient -sign(w)/b (scipy's laplace density: exp(-|w|/b) / 2b).
    grad_lik = X.T @ (y - X @ w)
    nonzero = w != 0
    prior_slope = -np.sign(w[nonzero]) / b
    eps = 1e-7
    log_prior = stats.laplace(scale=b).logpdf
    numeric = (log_prior(w[nonzero] + eps) - log_prior(w[nonzero] - eps)) / (2 * eps)
    assert np.allclose(numeric, prior_slope, rtol=1e-6)
    assert np.allclose(grad_lik[nonzero] + prior_slope, 0.0, atol=1e-6)
    assert np.all(np.abs(grad_lik[~nonzero]) <= 1 / b + 1e-6)


@pytest.mark.parametrize("beta", [0.25, 4.0])
def test_laplace_prior_with_noise_precision_equals_lasso(beta):
    """With noise precision beta the log-likelihood gradient is beta X^T (y - Xw)."""
    rng = np.random.default_rng(2)
    n, d = 60, 5
    X = rng.normal(size=(n, d))
    y = X @ np.array([1.5, 0.0, -1.0, 0.05, 0.0]) + rng.normal(size=n)
    b = 0.05 / beta  # so that alpha = 1/3 either way: a few exact zeros
    alpha = float(alpha_from_laplace_prior(b, n, noise_precision=beta))
    w = Lasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=100_000).fit(X, y).coef_
    assert 0 < int((w == 0).sum()) < d
    grad_lik = beta * X.T @ (y - X @ w)
    nonzero = w != 0
    assert np.allclose(grad_lik[nonzero] - np.sign(w[nonzero]) / b, 0.0, atol=1e-6)
    assert np.all(np.abs(grad_lik[~nonzero]) <= 1 / b + 1e-6)


def _mackay_loop(X, y, tol, max_iter=1000):
    """The fixed point of evidence_ridge's docstring, written out with dense numpy solves."""
    X = X - X.mean(axis=0)
    y = y - y.mean()
    n, d = X.shape
    s2 = np.linalg.eigvalsh(X.T @ X)
    delta, beta = 1.0, 1.0 / (np.var(y) + np.finfo(float).eps)
    for it in range(1, max_iter + 1):
        m = np.linalg.solve(X.T @ X + (delta / beta) * np.eye(d), X.T @ y)
        gamma = np.sum(beta * s2 / (delta + beta * s2))
        new_delta = gamma / (m @ m)
        new_beta = (n - gamma) / np.sum((y - X @ m) ** 2)
        change = max(abs(new_delta - delta) / new_delta, abs(new_beta - beta) / new_beta)
        delta, beta = new_delta, new_beta
        if change < tol:
            return delta, beta, it
    return delta, beta, max_iter


@pytest.mark.parametrize("tol", [1e-4, 1e-6])
def test_evidence_ridge_follows_the_documented_iteration_step_for_step(tol):
    """Same start (delta = 1, beta = 1/var y), same stopping rule: the same iteration count."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 6))
    y = X @ (0.05 * rng.normal(size=6)) + rng.normal(size=40)  # slow: ~100s of iterations
    delta, beta, n_iter = _mackay_loop(X, y, tol)
    res = evidence_ridge(X, y, tol=tol)
    assert res.converged and res.n_iter == n_iter
    assert res.prior_precision == pytest.approx(delta, rel=1e-9)
    assert res.noise_precision == pytest.approx(beta, rel=1e-9)


# --------------------------------------------------------------------------- evidence


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("standardize", [True, False])
def test_evidence_ridge_matches_bayesian_ridge(diabetes_raw, fit_intercept, standardize):
    X, y = diabetes_raw
    if standardize:
        X = (X - X.mean(axis=0)) / X.std(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = evidence_ridge(X, y, fit_intercept=fit_intercept)
    ref = _bayesian_ridge(X, y, fit_intercept)
    assert isinstance(res, EvidenceResult) and res.converged
    assert res.prior_precision == pytest.approx(ref.lambda_, rel=1e-5)
    assert res.noise_precision == pytest.approx(ref.alpha_, rel=1e-5)
    assert _rel(res.coef, ref.coef_) < 1e-5
    assert res.intercept == pytest.approx(ref.intercept_, rel=1e-5, abs=1e-8)
    assert res.log_evidence == pytest.approx(ref.scores_[-1], rel=1e-8)
    n = X.shape[0]
    assert res.alpha == pytest.approx(ref.lambda_ / (ref.alpha_ * n), rel=1e-5)
    # gamma from the eigenvalues of X^T X / N via the fixed point delta = gamma / ||m||^2
    assert res.gamma == pytest.approx(ref.lambda_ * np.sum(ref.coef_**2), rel=1e-5)


def test_evidence_ridge_wide_design_and_torch_input():
    """N < d (the SVD path with null directions), rank below N so the maximum is interior."""
    rng = np.random.default_rng(2)
    n, d, rank = 30, 50, 12
    X = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d))
    y = X @ rng.normal(size=d) * 0.1 + 0.5 * rng.normal(size=n)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = evidence_ridge(torch.tensor(X), torch.tensor(y))
    ref = _bayesian_ridge(X, y, True)
    assert res.converged and ref.n_iter_ < 100_000
    assert res.prior_precision == pytest.approx(ref.lambda_, rel=1e-5)
    assert res.noise_precision == pytest.approx(ref.alpha_, rel=1e-5)
    assert _rel(res.coef, ref.coef_) < 1e-5
    assert res.log_evidence == pytest.approx(ref.scores_[-1], rel=1e-8)
    assert res.coef.dtype == np.float64


def test_evidence_ridge_warns_when_x_interpolates_y():
    """Full-rank N < d: beta -> inf (BayesianRidge keeps iterating); we stop and say so."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 50))
    y = X[:, :5] @ np.array([1.0, -1.0, 2.0, 0.5, -0.5]) + 0.5 * rng.normal(size=30)
    with pytest.warns(ConvergenceWarning, match="beta -> inf"):
        res = evidence_ridge(X, y)
    assert not res.converged


def test_log_evidence_equals_gaussian_marginal_likelihood(diabetes_raw):
    """Fixed beta: compare with the density of y ~ N(0, I/beta + X X^T/delta) from scipy."""
    X, y = diabetes_raw
    X = X[:120]
    y = y[:120]
    Xc, yc = X - X.mean(axis=0), y - y.mean()
    n = X.shape[0]
    beta = 1 / 3000.0
    alphas = np.array([1e-4, 1e-2, 1.0])
    got = log_evidence_ridge(X, y, alphas, noise_precision=beta)
    for a, value in zip(alphas, got, strict=True):
        delta = a * beta * n
        cov = np.eye(n) / beta + Xc @ Xc.T / delta
        ref = stats.multivariate_normal(mean=np.zeros(n), cov=cov).logpdf(yc)
        assert value == pytest.approx(ref, rel=1e-9)


def test_profiled_log_evidence_peaks_at_evidence_ridge(diabetes_raw):
    X, y = diabetes_raw
    res = evidence_ridge(X, y)
    grid = res.alpha * np.logspace(-1, 1, 201)
    curve = log_evidence_ridge(X, y, grid)
    assert grid[np.argmax(curve)] == pytest.approx(res.alpha, rel=0.02)
    assert float(log_evidence_ridge(X, y, res.alpha)) == pytest.approx(res.log_evidence, rel=1e-10)
    # the profile really maximizes over beta: nudging beta either way lowers the evidence
    for factor in (0.99, 1.01):
        nudged = log_evidence_ridge(X, y, res.alpha, noise_precision=res.noise_precision * factor)
        assert float(nudged) < res.log_evidence
    assert np.isneginf(log_evidence_ridge(X, y, [0.0, 1.0])[0])


def test_evidence_ridge_warns_when_not_converged(diabetes_raw):
    X, y = diabetes_raw
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        res = evidence_ridge(X, y, max_iter=2)
    assert not res.converged and res.n_iter == 2


def test_evidence_ridge_warns_without_signal():
    X = np.random.default_rng(3).normal(size=(20, 3))
    with pytest.warns(ConvergenceWarning, match="delta -> inf"):
        res = evidence_ridge(X, np.ones(20))  # constant y: nothing left after centring
    assert not res.converged


def test_result_is_frozen(diabetes_raw):
    res = evidence_ridge(*diabetes_raw)
    with pytest.raises(AttributeError):
        res.alpha = 1.0  # type: ignore[misc]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: alpha_from_gaussian_prior(0.0, 10), "prior_std"),
        (lambda: alpha_from_gaussian_prior(-1.0, 10), "prior_std"),
        (lambda: alpha_from_gaussian_prior(np.nan, 10), "prior_std"),
        (lambda: alpha_from_gaussian_prior(1.0, 0), "n"),
        (lambda: alpha_from_gaussian_prior(1.0, 2.5), "n"),
        (lambda: alpha_from_gaussian_prior(1.0, 10, noise_precision=0.0), "noise_precision"),
        (lambda: gaussian_prior_std(-0.1, 10), "alpha"),
        (lambda: gaussian_prior_std(np.inf, 10), "alpha"),
        (lambda: alpha_from_laplace_prior(0.0, 10), "scale"),
        (lambda: alpha_from_laplace_prior(1.0, -3), "n"),
        (lambda: evidence_ridge(np.ones((5, 2)), np.ones(4)), "X"),
        (lambda: evidence_ridge(np.ones(5), np.ones(5)), "X"),
        (lambda: evidence_ridge(np.ones((5, 2)), [1.0, np.nan, 0.0, 0.0, 1.0]), "y"),
        (lambda: evidence_ridge(np.eye(3), np.ones(3), max_iter=0), "max_iter"),
        (lambda: evidence_ridge(np.eye(3), np.ones(3), tol=0.0), "tol"),
        (lambda: log_evidence_ridge(np.eye(3), np.ones(3), -1.0), "alpha"),
        (
            lambda: log_evidence_ridge(np.eye(3), np.ones(3), 1.0, noise_precision=-2.0),
            "noise_precision",
        ),
    ],
)
def test_bad_input_raises_value_error_naming_argument(call, name):
    # a word boundary: match="n" alone would be met by almost any message
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        call()


_X5 = np.arange(10.0).reshape(5, 2) ** 0.5
_Y5 = np.array([0.3, -1.0, 2.0, 0.5, 1.0])


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: alpha_from_gaussian_prior("0.5", 10), "prior_std"),
        (lambda: alpha_from_gaussian_prior(True, 10), "prior_std"),
        (lambda: alpha_from_gaussian_prior(0.5, "10"), "n"),
        (lambda: alpha_from_gaussian_prior(0.5, True), "n"),
        (lambda: alpha_from_gaussian_prior(0.5, 10, noise_precision="1"), "noise_precision"),
        (lambda: gaussian_prior_std("0.04", 10), "alpha"),
        (lambda: gaussian_prior_std(True, 10), "alpha"),
        (lambda: gaussian_prior_std(np.nan, 10), "alpha"),
        (lambda: alpha_from_laplace_prior("0.1", 10), "scale"),
        (lambda: alpha_from_laplace_prior(0.1, 10, noise_precision=np.nan), "noise_precision"),
        (lambda: evidence_ridge(_X5, [str(v) for v in _Y5]), "y"),
        (lambda: evidence_ridge(_X5.astype(str), _Y5), "X"),
        (lambda: evidence_ridge(_X5, _Y5, fit_intercept="no"), "fit_intercept"),
        (lambda: evidence_ridge(_X5, _Y5, tol="1e-3"), "tol"),
        (lambda: evidence_ridge(_X5, _Y5, max_iter=True), "max_iter"),
        (lambda: log_evidence_ridge(_X5, _Y5, "0.1"), "alpha"),
        (lambda: log_evidence_ridge(_X5, _Y5, True), "alpha"),
        (lambda: log_evidence_ridge(_X5, _Y5, [0.1, np.nan]), "alpha"),
        (lambda: log_evidence_ridge(_X5, _Y5, 0.1, fit_intercept=1), "fit_intercept"),
        (lambda: log_evidence_ridge(_X5, _Y5, 0.1, noise_precision="2"), "noise_precision"),
    ],
)
def test_strings_bools_and_nan_are_refused_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must"):
        call()


# --------------------------------------------------------------------------- laplace_log_evidence


def _trained_classifier(seed=0, n=60):
    from torch import nn

    torch.manual_seed(seed)
    X = torch.randn(n, 4)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long() + (X[:, 2] > 1).long()
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    return model, X, y


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_laplace_log_evidence_equals_laplace_torch():
    laplace = pytest.importorskip("laplace")
    from decaylab.bayes import laplace_log_evidence

    model, X, y = _trained_classifier()
    alphas = np.array([1e-3, 3e-2, 1.0])
    ours = laplace_log_evidence(model, "cross_entropy", (X, y), alphas, params="all")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=25)
    for alpha, value in zip(alphas, ours, strict=True):
        la = laplace.Laplace(
            model,
            "classification",
            subset_of_weights="all",
            hessian_structure="full",
            prior_precision=float(alpha * len(X)),
        )
        la.fit(loader)
        ref = float(la.log_marginal_likelihood())
        assert abs(value - ref) <= 1e-5 * abs(ref)


def test_laplace_log_evidence_decayed_against_explicit_jacobian():
    """params='decayed': the subnetwork Laplace over the weight matrices, by slogdet."""
    from decaylab.bayes import laplace_log_evidence

    model, X, y = _trained_classifier(seed=1)
    m64 = __import__("copy").deepcopy(model).double()
    names = ["0.weight", "2.weight"]
    params = {n: t.detach() for n, t in m64.named_parameters()}
    w = torch.cat([params[n].detach().reshape(-1) for n in names])
    sizes = [params[n].numel() for n in names]

    def logits(flat):
        parts = dict(
            zip(
                names,
                (
                    t.reshape(params[n].shape)
                    for t, n in zip(torch.split(flat, sizes), names, strict=True)
                ),
                strict=True,
            )
        )
        return torch.func.functional_call(m64, {**params, **parts}, (X.double(),))

    Jac = torch.func.jacrev(logits)(w)  # (N, C, P)
    Jac = Jac.detach()
    p = torch.softmax(logits(w), dim=1).detach()
    Hout = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    G_sum = torch.einsum("ncp,ncd,ndq->pq", Jac, Hout, Jac).numpy()  # N * GGN of the mean
    with torch.no_grad():
        nll = float(torch.nn.functional.cross_entropy(logits(w), y, reduction="sum"))
    N, P = len(X), w.numel()
    for alpha in (1e-3, 0.1):
        delta = alpha * N
        logdet = np.linalg.slogdet(G_sum + delta * np.eye(P))[1] - P * np.log(delta)
        ref = -nll - 0.5 * delta * float(w @ w) - 0.5 * logdet
        ours = laplace_log_evidence(model, torch.nn.CrossEntropyLoss(), (X, y), alpha)
        assert ours == pytest.approx(ref, rel=1e-9)


def test_laplace_log_evidence_equals_ridge_at_the_ridge_solution():
    from decaylab.bayes import laplace_log_evidence
    from decaylab.training import half_mse

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 5))
    y = X @ rng.normal(size=5) + 0.3 * rng.normal(size=80)
    model = torch.nn.Linear(5, 1, bias=False).double()
    data = (torch.tensor(X), torch.tensor(y).reshape(-1, 1))
    for alpha in (1e-3, 0.05, 2.0):
        w = np.linalg.solve(X.T @ X / 80 + alpha * np.eye(5), X.T @ y / 80)
        with torch.no_grad():
            model.weight.copy_(torch.tensor(w)[None, :])
        for beta in (None, 4.0):
            ref = log_evidence_ridge(X, y, alpha, beta, fit_intercept=False)
            ours = laplace_log_evidence(model, half_mse, data, alpha, noise_precision=beta)
            assert ours == pytest.approx(float(ref), rel=1e-10)


def test_laplace_log_evidence_topk_is_labelled_and_errs_low():
    from decaylab.bayes import ggn_spectrum, log_evidence_from_spectrum

    model, X, y = _trained_classifier(seed=2)
    full = ggn_spectrum(model, "cross_entropy", (X, y), params="all")
    top = ggn_spectrum(
        model, "cross_entropy", (X, y), params="all", structure="topk", k=10, n_matvecs=400
    )
    assert full.exact and not top.exact
    assert top.eigenvalues[:3] == pytest.approx(full.eigenvalues[:3], rel=1e-6)
    alphas = np.array([1e-3, 1e-2, 1e-1])
    exact = log_evidence_from_spectrum(full, alphas)
    approx = log_evidence_from_spectrum(top, alphas)
    # Jensen: the evenly spread remainder over-estimates the log det (trace estimate aside).
    assert np.all(approx <= exact + 0.05 * np.abs(exact))
    # The spread-out tail is coarse where alpha is below the tail eigenvalues, good above.
    assert abs(approx[-1] - exact[-1]) <= 0.01 * abs(exact[-1])
    all_k = ggn_spectrum(
        model, "cross_entropy", (X, y), params="all", structure="topk", k=full.n_params
    )
    assert log_evidence_from_spectrum(all_k, alphas) == pytest.approx(exact, rel=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 0.0}, "alpha must be > 0"),
        ({"alpha": [1e-3, -1.0]}, "alpha must be > 0"),
        ({"alpha": float("nan")}, "alpha must not be NaN"),
        ({"loss_fn": "mse"}, "loss_fn must be a negative log-likelihood"),
        ({"structure": "kfac"}, "structure must be one of"),
        ({"noise_precision": 2.0}, "noise_precision applies to regression"),
        ({"nan_data": True}, r"data \(X\) contains NaN"),
    ],
)
def test_laplace_log_evidence_bad_input(kwargs, match):
    from decaylab.bayes import laplace_log_evidence

    model, X, y = _trained_classifier(n=20)
    if kwargs.pop("nan_data", False):
        X = X.clone()
        X[3, 1] = float("nan")
    args = {"loss_fn": "cross_entropy", "alpha": 1e-2, **kwargs}
    with pytest.raises(ValueError, match=match):
        laplace_log_evidence(model, args.pop("loss_fn"), (X, y), args.pop("alpha"), **args)
