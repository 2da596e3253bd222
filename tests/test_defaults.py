"""Documented defaults users rely on, each pinned by what it does (issue 13 case 8).

Every test here fails if the default it names changes (checked with ``tools/mutate.py``): the
default call is compared with an independent reference (an explicit loop, scikit-learn, a
closed form) or with the same call given the documented value explicitly *and* with a
neighbouring value that must behave differently, so the test cannot pass by accident.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes
from sklearn.linear_model import BayesianRidge
from torch import nn

from decaylab import ConvergenceWarning
from decaylab.bayes import evidence_ridge
from decaylab.early_stopping import EarlyStopping
from decaylab.regularize import param_groups

# --------------------------------------------------------------------------- EarlyStopping


def _first_stop(es: EarlyStopping, values: list[float]) -> int | None:
    for i, v in enumerate(values):
        if es.update(v):
            return i
    return None


def _reference_patience_stop(values: list[float], patience: int) -> int | None:
    """Explicit loop of docs/early_stopping.md: strict improvement, stop at wait >= patience."""
    best, wait = math.inf, 0
    for i, v in enumerate(values):
        if v < best:
            best, wait = v, 0
        else:
            wait += 1
            if wait >= patience:
                return i
    return None


def test_early_stopping_default_patience_is_five():
    values = [3.0, 2.0, 1.0] + [1.5] * 10
    stop = _first_stop(EarlyStopping(), values)
    assert stop == _reference_patience_stop(values, 5) == 7  # the 5th non-improving check
    assert _first_stop(EarlyStopping(patience=4), values) == 6  # the test can tell 4 from 5


def test_early_stopping_default_mode_is_min_and_min_delta_zero():
    es = EarlyStopping()
    es.update(1.0)
    es.update(1.0 - 1e-12)  # any strict decrease improves: min mode, min_delta = 0
    assert es.best_step == 1 and es.wait == 0
    es.update(1.0 - 1e-12)  # an equal value does not
    assert es.wait == 1
    es.update(2.0)  # larger is worse in min mode
    assert es.best == 1.0 - 1e-12 and es.wait == 2


def test_early_stopping_default_restores_best_weights():
    net = nn.Linear(1, 1, bias=False)
    es = EarlyStopping()
    for step, loss in enumerate([3.0, 1.0, 2.0]):
        with torch.no_grad():
            net.weight.fill_(float(step))
        es.update(loss, net)
    assert es.on_train_end(net) is True
    assert net.weight.item() == 1.0  # the weights of the best check (loss 1.0)


def test_early_stopping_default_stops_at_once_on_nan_even_first():
    es = EarlyStopping()
    assert es.update(float("nan")) is True
    assert es.stopped_step == 0 and str(es.reason.value) == "non-finite"


def test_early_stopping_default_has_no_warm_up_and_monitors_val_loss():
    es = EarlyStopping()
    es.update(5.0)
    assert es.best == 5.0 and es.best_step == 0  # check 0 already counts (start_from = 0)
    assert es.monitor == "val_loss"


# --------------------------------------------------------------------------- evidence_ridge


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    return X, y


def test_evidence_ridge_default_tolerance_is_1e_10(diabetes):
    X, y = diabetes
    default = evidence_ridge(X, y)
    explicit = evidence_ridge(X, y, tol=1e-10)
    looser = evidence_ridge(X, y, tol=1e-6)
    assert default.n_iter == explicit.n_iter and default.alpha == explicit.alpha
    assert looser.n_iter < default.n_iter  # the default is distinguishable from 1e-6
    # Independent: scikit-learn's BayesianRidge, hyperpriors off, run to tol 1e-14.
    ref = BayesianRidge(
        alpha_1=0.0, alpha_2=0.0, lambda_1=0.0, lambda_2=0.0, tol=1e-14, max_iter=100_000
    ).fit(X, y)
    assert default.prior_precision == pytest.approx(ref.lambda_, rel=1e-8)
    assert default.noise_precision == pytest.approx(ref.alpha_, rel=1e-8)


def test_evidence_ridge_default_max_iter_is_1000():
    # A slowly converging case (weak signal): 279 fixed-point updates at the default tol.
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 6))
    y = X @ (0.05 * rng.normal(size=6)) + rng.normal(size=40)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        res = evidence_ridge(X, y)
    assert res.converged and 10 < res.n_iter < 1000
    # Pure noise: the evidence has no interior maximum and delta grows without bound (no
    # fixed point to reach, unlike a tiny tol, which an exact floating-point fixed point can
    # meet). Given room, the iteration runs 2334 updates until the mean underflows; by
    # default it stops at the budget of 1000 and flags it.
    rng = np.random.default_rng(14)
    X, y = rng.normal(size=(40, 6)), rng.normal(size=40)
    with pytest.warns(ConvergenceWarning, match="posterior mean is zero"):
        assert evidence_ridge(X, y, max_iter=100_000).n_iter > 1000
    with pytest.warns(ConvergenceWarning, match="max_iter=1000"):
        stalled = evidence_ridge(X, y)
    assert stalled.n_iter == 1000 and not stalled.converged


# --------------------------------------------------------------------------- param_groups


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.scale = nn.Parameter(torch.ones(4))  # 1-D, neither bias nor norm
        self.proj = nn.Linear(4, 2, bias=False)
        self.attn_bias = nn.Parameter(torch.zeros(2, 2))  # 2-D, bias by name only


def test_param_groups_default_exclusions():
    groups = param_groups(_Net(), 0.1)
    decayed = groups[0]["names"]
    assert groups[0]["weight_decay"] == 0.1
    # Each default exclusion (bias names, norm layers, 1-D) is needed to get exactly this set.
    assert decayed == ["lin.weight", "proj.weight"]
    assert "attn_bias" in param_groups(_Net(), 0.1, exclude_bias=False)[0]["names"]
    assert (
        "norm.weight" in param_groups(_Net(), 0.1, exclude_norm=False, exclude_1d=False)[0]["names"]
    )
    assert "scale" in param_groups(_Net(), 0.1, exclude_1d=False)[0]["names"]


# --------------------------------------------------------------------------- fit's evaluation


def test_fit_records_the_mean_over_all_samples_with_minibatches():
    """History's losses equal one call of the loss on the whole data (chunks weighted by size)."""
    from decaylab.training import fit, half_mse

    torch.manual_seed(0)
    X, Xv = torch.randn(37, 3, dtype=torch.float64), torch.randn(23, 3, dtype=torch.float64)
    y, yv = X.sum(1, keepdim=True), Xv.sum(1, keepdim=True) + 0.3
    model = nn.Linear(3, 1).double()
    hist = fit(
        model,
        half_mse,
        (X, y),
        val_data=(Xv, yv),
        batch_size=8,
        steps=5,
        lr=0.05,
        eval_every=5,
        progress=False,
    )
    assert hist.step[-1] == 5
    with torch.no_grad():  # independent: 0.5 * mean squared error in one call
        train_ref = float(0.5 * ((model(X) - y) ** 2).mean())
        val_ref = float(0.5 * ((model(Xv) - yv) ** 2).mean())
    assert hist.train_loss[-1] == pytest.approx(train_ref, rel=1e-12)
    assert hist.val_loss[-1] == pytest.approx(val_ref, rel=1e-12)


# --------------------------------------------------------------------------- curvature


def _spd(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    vals = torch.cat([torch.tensor([10.0, 9.0, 8.5, 8.0]), torch.linspace(7.9, 0.1, n - 4)])
    return (Q * vals.to(torch.float64)) @ Q.T


def test_eigen_default_tol_is_1e_3():
    from decaylab.curvature.lanczos import eigen

    H = _spd(150, 0)
    default = eigen(H, k=4)
    explicit = eigen(H, k=4, tol=1e-3)
    looser = eigen(H, k=4, tol=1e-2)
    assert default.n_matvecs == explicit.n_matvecs
    assert looser.n_matvecs < default.n_matvecs  # the test can tell 1e-2 from 1e-3
    ref = np.linalg.eigvalsh(H.numpy())[::-1][:4]
    # Certified at 1e-3: residual r bounds the eigenvalue error by r (Weyl/Bauer-Fike).
    assert np.all(np.asarray(default.residuals) <= 1e-3 * ref[0] * 1.0001)
    assert np.allclose(np.asarray(default.eigenvalues), ref, atol=1e-3 * ref[0])


# diagonal's Bessel-corrected standard error: tests/test_stochastic.py::
# test_diagonal_standard_error_uses_bessels_correction.


# --------------------------------------------------------------------------- fit's defaults


def _linear_task():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(30, 3))
    y = X @ np.array([1.0, -0.5, 2.0]) + 0.1 * rng.normal(size=30)
    w0 = np.array([0.3, -0.2, 0.1])
    model = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(w0[None, :]))
    return X, y, w0, model


def _grad(X, y, w):
    """Gradient of the mean ½ squared error: Xᵀ(Xw − y) / N."""
    return X.T @ (X @ w - y) / len(y)


def test_fit_defaults_are_plain_sgd_with_lr_0_1_and_coupled_decay():
    from decaylab.training import fit, half_mse

    X, y, w, model = _linear_task()
    fit(
        model,
        half_mse,
        (torch.tensor(X), torch.tensor(y)),
        steps=3,
        weight_decay=0.05,
        progress=False,
    )
    for _ in range(3):  # explicit loop: w ← w − 0.1 (∇J(w) + 0.05 w), no momentum
        w = w - 0.1 * (_grad(X, y, w) + 0.05 * w)
    np.testing.assert_allclose(model.weight.detach().numpy()[0], w, rtol=1e-12)


def test_fit_default_decay_with_adam_is_coupled_l2():
    from decaylab.training import fit, half_mse

    X, y, w, model = _linear_task()
    fit(
        model,
        half_mse,
        (torch.tensor(X), torch.tensor(y)),
        optimizer="adam",
        lr=0.01,
        steps=3,
        weight_decay=0.5,
        progress=False,
    )
    m, v = np.zeros(3), np.zeros(3)
    for t in range(1, 4):  # torch's Adam with L2 in the gradient (not AdamW)
        g = _grad(X, y, w) + 0.5 * w
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        w = w - 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    np.testing.assert_allclose(model.weight.detach().numpy()[0], w, rtol=1e-10)


def test_trace_and_diagonal_default_budget_and_methods():
    """Hutch++ and Diag++ with 100 products: equal to the explicit call, and more accurate
    on a matrix with a dominant part than the plain estimators at the same budget."""
    from decaylab.curvature.stochastic import diagonal, trace

    gen = torch.Generator().manual_seed(1)
    U = torch.randn(300, 5, generator=gen, dtype=torch.float64)
    noise = torch.randn(300, 300, generator=gen, dtype=torch.float64) * 0.01
    H = U @ torch.diag(torch.tensor([50.0, 40.0, 30.0, 20.0, 10.0], dtype=torch.float64)) @ U.T
    H = H + (noise + noise.T) / 2
    tr, dg = trace(H), diagonal(H)
    assert tr.n_matvecs == dg.n_matvecs == 100
    assert tr.method == "hutch++" and dg.method == "diag++"
    explicit = trace(H, n_matvecs=100, method="hutch++", seed=0)
    assert tr.estimate == explicit.estimate
    exact_tr, exact_dg = float(torch.trace(H)), torch.diagonal(H)
    # Low-rank part captured exactly: far below the plain estimators' error.
    assert abs(tr.estimate - exact_tr) < 1e-3 * abs(exact_tr)
    assert float((dg.estimate - exact_dg).abs().max()) < 1e-2 * float(exact_dg.abs().max())


def test_eigen_certificate_is_relative_to_each_eigenvalue_down_to_1e_6_norm():
    """Small eigenvalues are certified relative to themselves (floor 1e-6 ‖H‖), not to ‖H‖.

    The smallest end of this spectrum (1e-5 … 1e-4 under a bulk at 0.5 … 1) is slow to
    converge; a pair flagged converged must still meet ``tol · max(|θ|, 1e-6 ‖H‖)`` and so
    be within ``tol`` relative of numpy's eigenvalue.
    """
    from decaylab.curvature.lanczos import eigen

    vals = np.concatenate([np.linspace(1e-5, 1e-4, 40), np.linspace(0.5, 1.0, 160)])
    Q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(200, 200)))
    H = torch.tensor((Q * vals) @ Q.T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the slow pairs are flagged
        res = eigen(H, k=3, which="smallest")
    ref = np.sort(np.linalg.eigvalsh(H.numpy()))[:3]
    theta, resid = np.asarray(res.eigenvalues), np.asarray(res.residuals)
    certified = np.asarray(res.converged)
    assert certified.any()
    bound = 1e-3 * np.maximum(np.abs(theta), 1e-6 * vals.max())
    assert np.all(resid[certified] <= bound[certified])
    order = np.argsort(theta)
    rel = np.abs(theta[order] - ref) / ref
    assert np.all(rel[certified[order]] <= 1e-3)
