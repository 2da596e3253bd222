"""Tests of decaylab.training.fit against independent computations.

Independent references: scikit-learn (Ridge, liblinear L1 logistic regression), explicit numpy
loops for SGD and Adam/AdamW, and direct inspection of batches and weights.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler
from torch import nn

from _benchmarks import load_benchmark
from decaylab._checks import ConvergenceWarning, TheoryWarning
from decaylab.early_stopping import EarlyStopping
from decaylab.regularize import L1, L2, ElasticNet
from decaylab.training import FISTA, History, fit, half_mse


def _linear(d_in: int, bias: bool = False, d_out: int = 1) -> nn.Linear:
    model = nn.Linear(d_in, d_out, bias=bias).double()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model


@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    y = y - y.mean()
    return X, y


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    return X, y.astype(np.float64)


# benchmarks/l1_solvers.py: the L1 logistic objective and the liblinear reference (shared with
# the benchmark that compares the L1 solvers).
L1_BENCH = load_benchmark("l1_solvers")


# ----------------------------------------------------------------------------- L2 / weight decay


def test_full_batch_sgd_weight_decay_converges_to_ridge(diabetes):
    X, y = diabetes
    n = len(y)
    alpha = 0.1
    lam_max = np.linalg.eigvalsh(X.T @ X / n).max()
    model = _linear(X.shape[1])
    hist = fit(
        model,
        half_mse,
        (torch.tensor(X), torch.tensor(y)),
        lr=1.0 / (lam_max + alpha),
        steps=1500,
        weight_decay=alpha,
        eval_every=500,
        progress=False,
    )
    ridge = Ridge(alpha=n * alpha, fit_intercept=False, solver="cholesky", tol=1e-12).fit(X, y)
    w = model.weight.detach().numpy().ravel()
    np.testing.assert_allclose(w, ridge.coef_, rtol=1e-8, atol=1e-8)
    # History records the mean ½-squared-error and the L2-penalized objective at the final weights.
    resid = y - X @ w
    assert hist.step[-1] == 1500 and hist.steps_done == 1500
    assert math.isclose(hist.train_loss[-1], 0.5 * np.mean(resid**2), rel_tol=1e-12)
    assert math.isclose(
        hist.objective[-1], 0.5 * np.mean(resid**2) + 0.5 * alpha * w @ w, rel_tol=1e-12
    )


def _numpy_sgd_l2(X, y, w0, b0, lr, wd, steps):
    """Explicit loop: w ← (1 − ε wd) w − ε ∇J(w), bias not decayed (½-squared-error mean loss)."""
    w, b = w0.copy(), b0
    traj = [np.append(w, b)]
    for _ in range(steps):
        r = X @ w + b - y
        gw, gb = X.T @ r / len(y), r.mean()
        w = (1 - lr * wd) * w - lr * gw
        b = b - lr * gb
        traj.append(np.append(w, b))
    return np.array(traj)


def test_sgd_decoupled_equals_coupled_step_by_step():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5)) * np.array([1.0, 3.0, 0.3, 1.0, 2.0])
    y = X @ rng.normal(size=5) + 0.5 + 0.1 * rng.normal(size=40)
    data = (torch.tensor(X), torch.tensor(y))
    runs = {}
    for decoupled in (False, True):
        snaps = fit_snapshots(_linear(5, bias=True), data, decoupled)
        runs[decoupled] = torch.stack([v for _, v in snaps])
    expected = _numpy_sgd_l2(X, y, np.zeros(5), 0.0, 0.05, 0.3, 60)
    for decoupled, traj in runs.items():
        np.testing.assert_allclose(
            traj.numpy(), expected, rtol=1e-12, atol=1e-13, err_msg=f"decoupled={decoupled}"
        )
    np.testing.assert_allclose(runs[True].numpy(), runs[False].numpy(), rtol=1e-13, atol=1e-14)


def fit_snapshots(model, data, decoupled, momentum=0.0):
    """Re-run from zeros and return the per-step snapshots (step, flat params)."""
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    hist = fit(
        model,
        half_mse,
        data,
        lr=0.05,
        steps=60,
        weight_decay=0.3,
        decoupled=decoupled,
        momentum=momentum,
        record_every=1,
        progress=False,
    )
    assert [s for s, _ in hist.snapshots] == list(range(61))
    return hist.snapshots


def test_sgd_with_momentum_decoupled_differs_from_coupled():
    # With momentum the decoupled decay stays out of the velocity, so the two forms part ways.
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 5))
    y = X @ rng.normal(size=5)
    data = (torch.tensor(X), torch.tensor(y))
    coupled = fit_snapshots(_linear(5, bias=True), data, False, momentum=0.9)[-1][1]
    decoupled = fit_snapshots(_linear(5, bias=True), data, True, momentum=0.9)[-1][1]
    assert not torch.allclose(coupled, decoupled, rtol=1e-3)


def _numpy_adam(X, y, lr, wd, steps, decoupled, b1=0.9, b2=0.999, eps=1e-8):
    """Explicit Adam on ½-squared-error, either coupled L2 or decoupled (AdamW) decay."""
    w = np.zeros(X.shape[1])
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t in range(1, steps + 1):
        g = X.T @ (X @ w - y) / len(y)
        if decoupled:
            w = w - lr * wd * w
        else:
            g = g + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    return w


def test_adamw_differs_materially_from_adam_with_l2():
    rng = np.random.default_rng(2)
    scales = np.array([10.0, 1.0, 0.1, 0.01])
    X = rng.normal(size=(64, 4)) * scales
    y = X @ (np.array([1.0, -2.0, 3.0, 5.0]) / scales)
    data = (torch.tensor(X), torch.tensor(y))
    wd, lr, steps = 0.5, 0.05, 400
    results = {}
    for name, decoupled in (("adam", False), ("adamw", False), ("adam", True)):
        model = _linear(4)
        fit(
            model,
            half_mse,
            data,
            optimizer=name,
            lr=lr,
            steps=steps,
            weight_decay=wd,
            decoupled=decoupled,
            eval_every=steps,
            progress=False,
        )
        results[(name, decoupled)] = model.weight.detach().numpy().ravel()
    adam_l2, adamw = results[("adam", False)], results[("adamw", False)]
    np.testing.assert_allclose(adam_l2, _numpy_adam(X, y, lr, wd, steps, False), rtol=1e-9)
    np.testing.assert_allclose(adamw, _numpy_adam(X, y, lr, wd, steps, True), rtol=1e-9)
    # "adam" with decoupled=True is AdamW.
    np.testing.assert_array_equal(results[("adam", True)], adamw)
    # Material difference: L2 through Adam's normalisation shrinks the poorly scaled weights
    # far less evenly than AdamW's uniform decay.
    rel = np.linalg.norm(adamw - adam_l2) / np.linalg.norm(adam_l2)
    assert rel > 0.3, rel


# ----------------------------------------------------------------------------- L1


def test_fista_reaches_liblinear_l1_logistic_optimum(cancer):
    X, y = cancer
    alpha = 0.01
    n = len(y)
    w_ref = L1_BENCH.liblinear(X, y, alpha)
    f_ref = L1_BENCH.objective(X, y, w_ref, alpha)
    lipschitz = np.linalg.eigvalsh(X.T @ X / n).max() / 4.0
    data = (torch.tensor(X), torch.tensor(y).reshape(-1, 1))
    zeros_ref = set(np.flatnonzero(w_ref == 0))
    assert 5 <= len(zeros_ref) <= 25  # α is chosen so that a good share of weights vanish
    for lr, steps in ((1.0 / lipschitz, 1500), ("auto", 1500)):
        model = _linear(30)
        hist = fit(
            model,
            nn.BCEWithLogitsLoss(),
            data,
            optimizer="fista",
            lr=lr,
            steps=steps,
            penalty=L1(alpha),
            eval_every=500,
            progress=False,
        )
        w = model.weight.detach().numpy().ravel()
        f = L1_BENCH.objective(X, y, w, alpha)
        assert abs(f - f_ref) / f_ref <= 1e-6, (lr, f, f_ref)
        assert set(np.flatnonzero(w == 0)) == zeros_ref, lr  # exact zeros, same support
        assert math.isclose(hist.objective[-1], f, rel_tol=1e-10)


def test_subgradient_l1_has_no_exact_zeros_but_prox_does(cancer):
    X, y = cancer
    lipschitz = np.linalg.eigvalsh(X.T @ X / len(y)).max() / 4.0
    data = (torch.tensor(X), torch.tensor(y).reshape(-1, 1))
    zeros = {}
    for proximal in (False, True):
        model = _linear(30)
        fit(
            model,
            nn.BCEWithLogitsLoss(),
            data,
            lr=1.0 / lipschitz,
            steps=400,
            penalty=L1(0.01),
            proximal=proximal,
            eval_every=400,
            progress=False,
        )
        zeros[proximal] = int((model.weight == 0).sum())
    assert zeros[False] == 0
    assert zeros[True] >= 5


def test_elastic_net_prox_matches_closed_form_for_orthogonal_design():
    # With XᵀX/N = I the elastic-net optimum of ½-squared-error is coordinate-wise:
    # w_i = S(z_i, αρ) / (1 + α(1−ρ)), z = Xᵀy/N.
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(50, 6)))
    X = q * np.sqrt(50)
    y = X @ np.array([2.0, -1.0, 0.05, 0.0, 0.5, -0.02]) + 0.01 * rng.normal(size=50)
    alpha, rho = 0.2, 0.5
    z = X.T @ y / 50
    expected = np.sign(z) * np.maximum(np.abs(z) - alpha * rho, 0) / (1 + alpha * (1 - rho))
    model = _linear(6)
    fit(
        model,
        half_mse,
        (torch.tensor(X), torch.tensor(y)),
        lr=0.5,
        steps=200,
        penalty=ElasticNet(alpha, rho),
        eval_every=200,
        progress=False,
    )
    w = model.weight.detach().numpy().ravel()
    np.testing.assert_allclose(w, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(w == 0, expected == 0)


def test_penalty_params_decayed_leaves_bias_alone_and_all_includes_it():
    rng = np.random.default_rng(4)
    X = torch.tensor(rng.normal(size=(30, 3)))
    y = torch.tensor(rng.normal(size=30) * 0.01 + 0.02)  # a small true bias L1 will kill
    biases = {}
    for which in ("decayed", "all"):
        model = _linear(3, bias=True)
        fit(
            model,
            half_mse,
            (X, y),
            lr=0.3,
            steps=200,
            penalty=L1(0.1),
            penalty_params=which,
            eval_every=200,
            progress=False,
        )
        biases[which] = model.bias.item()
        assert torch.all(model.weight == 0)
    assert biases["all"] == 0.0
    # Weights all zero, so the unpenalized bias is the mean target.
    assert math.isclose(biases["decayed"], float(y.mean()), rel_tol=1e-9)


def test_fista_optimizer_standalone_lasso_orthogonal():
    # Independent check of the FISTA class on a lasso with a known closed form.
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.normal(size=(40, 4)))
    X = torch.tensor(q * np.sqrt(40))
    y = X @ torch.tensor([1.0, -0.05, 0.3, 0.0], dtype=torch.float64)
    w = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = FISTA([w], lr=0.9, prox=L1(0.1).prox)

    def closure():
        opt.zero_grad()
        loss = half_mse(X @ w, y)
        loss.backward()
        return loss

    for _ in range(100):
        opt.step(closure)
    np.testing.assert_allclose(w.detach().numpy(), [0.9, 0.0, 0.2, 0.0], atol=1e-12)


@pytest.mark.parametrize(("optimizer", "momentum"), [("sgd", 0.9), ("adam", 0.0), ("adamw", 0.0)])
def test_biased_prox_combinations_warn(optimizer, momentum):
    X = torch.randn(10, 2, dtype=torch.float64)
    with pytest.warns(TheoryWarning, match="L1 prox"):
        fit(
            _linear(2),
            half_mse,
            (X, X.sum(1)),
            optimizer=optimizer,
            momentum=momentum,
            lr=0.01,
            steps=2,
            penalty=L1(0.1),
            progress=False,
        )


def test_heavy_ball_prox_settles_at_the_optimum_for_alpha_times_one_minus_momentum():
    # What the warning claims, checked on an orthogonal design where the lasso is closed-form:
    # w = S(z, a) with z = Xᵀy/N, for a = α(1 − μ) and not for a = α.
    rng = np.random.default_rng(11)
    q, _ = np.linalg.qr(rng.normal(size=(40, 5)))
    X = q * np.sqrt(40)
    y = X @ np.array([1.0, -0.3, 0.12, 0.05, -0.6])
    z = X.T @ y / 40
    alpha, mu = 0.2, 0.5
    model = _linear(5)
    with pytest.warns(TheoryWarning):
        fit(
            model,
            half_mse,
            (torch.tensor(X), torch.tensor(y)),
            lr=0.3,
            momentum=mu,
            steps=400,
            penalty=L1(alpha),
            eval_every=400,
            progress=False,
        )
    w = model.weight.detach().numpy().ravel()
    biased = np.sign(z) * np.maximum(np.abs(z) - alpha * (1 - mu), 0)
    exact = np.sign(z) * np.maximum(np.abs(z) - alpha, 0)
    np.testing.assert_allclose(w, biased, atol=1e-10)
    assert np.abs(w - exact).max() > 0.05


# ----------------------------------------------------------------------------- loop mechanics


def test_minibatches_are_a_fresh_permutation_each_epoch():
    n, batch = 25, 10
    X = torch.arange(n, dtype=torch.float64).reshape(-1, 1)
    y = torch.arange(n, dtype=torch.float64)
    seen: list[list[int]] = []
    model = _linear(1)

    def loss_fn(pred, target):
        if torch.is_grad_enabled():  # training batches only, not the evaluations
            seen.append([int(v) for v in target])
        return half_mse(pred, target)

    hist = fit(
        model, loss_fn, (X, y), lr=1e-4, epochs=3, batch_size=batch, eval_every=100, progress=False
    )
    assert hist.steps_done == 9 and [len(b) for b in seen] == [10, 10, 5] * 3
    epochs = [sum(seen[3 * e : 3 * e + 3], []) for e in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(n))
    assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != list(range(n))
    # Same seed, same batches; another seed, other batches.
    again: list[list[int]] = []
    seen, first = again, seen
    fit(_linear(1), loss_fn, (X, y), lr=1e-4, epochs=3, batch_size=batch, progress=False)
    assert again == first
    seen = []
    fit(_linear(1), loss_fn, (X, y), lr=1e-4, epochs=1, batch_size=batch, seed=1, progress=False)
    assert sum(seen, []) != epochs[0]


def test_history_records_eval_grid_snapshots_and_final_step():
    rng = np.random.default_rng(6)
    X = torch.tensor(rng.normal(size=(20, 3)))
    y = torch.tensor(rng.normal(size=20))
    model = _linear(3, bias=True)
    hist = fit(
        model,
        half_mse,
        (X, y),
        val_data=(X[:5], y[:5]),
        lr=0.1,
        steps=23,
        eval_every=5,
        record_every=10,
        progress=False,
    )
    assert hist.step == [0, 5, 10, 15, 20, 23]
    assert len(hist.train_loss) == len(hist.val_loss) == len(hist.objective) == 6
    assert [s for s, _ in hist.snapshots] == [0, 10, 20, 23]
    final = torch.cat([model.weight.detach().ravel(), model.bias.detach()])
    assert torch.equal(hist.snapshots[-1][1], final)
    assert torch.equal(hist.snapshots[0][1], torch.zeros(4, dtype=torch.float64))
    # Recorded losses are the full-data means at those weights.
    with torch.no_grad():
        val_final = float(half_mse(model(X[:5]), y[:5]))
    assert math.isclose(hist.val_loss[-1], val_final, rel_tol=1e-12)
    assert hist.stop_reason is None and hist.best_step is None
    d = hist.to_dict(plain=True)
    assert isinstance(d["snapshots"][0][1], list)
    assert History.from_dict(hist.to_dict()) == hist


def test_early_stopping_stops_restores_best_and_is_always_finalized():
    rng = np.random.default_rng(7)
    X = torch.tensor(rng.normal(size=(30, 3)))
    y = X @ torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    # Fitting y makes the loss on −y grow from the first step: best is step 0.
    model = _linear(3)
    es = EarlyStopping(patience=3)
    hist = fit(
        model,
        half_mse,
        (X, y),
        val_data=(X, -y),
        lr=0.1,
        steps=100,
        early_stopping=es,
        progress=False,
    )
    assert hist.stop_reason == "patience" and hist.best_step == 0 and hist.step[-1] == 3
    assert torch.all(model.weight == 0)  # restored to the step-0 weights
    # Reusing the stopped instance in a fresh run starts over (no instant stop).
    hist = fit(
        _linear(3),
        half_mse,
        (X, y),
        val_data=(X, y),
        lr=0.1,
        steps=5,
        early_stopping=es,
        progress=False,
    )
    assert hist.stop_reason is None and hist.best_step == 5

    # A run that ends without stopping still gets the best weights back (on_train_end).
    model = _linear(3)
    es = EarlyStopping(patience=1000, monitor="val_loss")
    hist = fit(
        model,
        half_mse,
        (X, y),
        val_data=(X, -y),
        lr=0.1,
        steps=10,
        early_stopping=es,
        record_every=1,
        progress=False,
    )
    assert hist.stop_reason is None and hist.best_step == 0
    assert torch.all(model.weight == 0) and not torch.all(hist.snapshots[-1][1] == 0)


def test_early_stopping_on_train_loss_threshold():
    rng = np.random.default_rng(8)
    X = torch.tensor(rng.normal(size=(30, 3)))
    y = X @ torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    es = EarlyStopping(monitor="train_loss", stopping_threshold=1e-3)
    model = _linear(3)
    hist = fit(
        model, half_mse, (X, y), lr=0.1, steps=1000, early_stopping=es, eval_every=2, progress=False
    )
    assert hist.stop_reason == "threshold"
    assert hist.train_loss[-1] <= 1e-3 < hist.train_loss[-2]
    assert hist.step[-1] % 2 == 0 and hist.step[-1] < 1000


def test_non_finite_loss_stops_without_early_stopping():
    rng = np.random.default_rng(9)
    X = torch.tensor(rng.normal(size=(30, 3)), dtype=torch.float32)
    y = X @ torch.tensor([1.0, 2.0, -1.0])
    model = nn.Linear(3, 1, bias=False)
    with pytest.warns(ConvergenceWarning, match="non-finite"):
        hist = fit(model, half_mse, (X, y), lr=5.0, steps=10_000, eval_every=10, progress=False)
    assert hist.stop_reason == "non-finite"
    assert hist.steps_done < 10_000
    assert not math.isfinite(hist.train_loss[-1])
    assert all(math.isfinite(v) for v in hist.train_loss[:-1])


def test_progress_bar_silent_when_not_a_terminal(capsys, monkeypatch):
    X = torch.randn(10, 2, dtype=torch.float64)
    y = torch.randn(10, dtype=torch.float64)
    fit(_linear(2), half_mse, (X, y), steps=5, progress=True)
    assert capsys.readouterr().out == ""
    import rich.console

    monkeypatch.setattr(rich.console.Console, "is_terminal", property(lambda self: True))
    fit(_linear(2), half_mse, (X, y), steps=5, progress=True)
    shown = capsys.readouterr().out
    assert "5/5" in shown and "loss" in shown
    fit(_linear(2), half_mse, (X, y), steps=5, progress=False)
    assert capsys.readouterr().out == ""


def test_optimizer_factory_and_l2_penalty_equal_weight_decay():
    rng = np.random.default_rng(10)
    X = torch.tensor(rng.normal(size=(30, 3)))
    y = torch.tensor(rng.normal(size=30))
    a, b = _linear(3), _linear(3)
    fit(a, half_mse, (X, y), lr=0.1, steps=50, weight_decay=0.2, progress=False)
    fit(
        b,
        half_mse,
        (X, y),
        steps=50,
        penalty=L2(0.2),
        progress=False,
        optimizer=lambda groups: torch.optim.SGD(groups, lr=0.1),
    )
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- bad input


@pytest.fixture()
def small():
    X = torch.randn(8, 2, dtype=torch.float64)
    return _linear(2), (X, X.sum(1))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": -0.1, "steps": 5}, "lr"),
        ({"lr": 0.0, "steps": 5}, "lr"),
        ({"weight_decay": -1.0, "steps": 5}, "weight_decay"),
        ({}, "steps"),
        ({"steps": 5, "epochs": 2}, "epochs"),
        ({"steps": 0}, "steps"),
        ({"epochs": 1.5}, "epochs"),
        ({"steps": 5, "eval_every": 0}, "eval_every"),
        ({"steps": 5, "optimizer": "lbfgs"}, "optimizer"),
        ({"steps": 5, "optimizer": 3}, "optimizer"),
        ({"steps": 5, "momentum": 1.0}, "momentum"),
        ({"steps": 5, "optimizer": "adam", "momentum": 0.9}, "momentum"),
        ({"steps": 5, "lr": "auto"}, "lr"),
        ({"steps": 5, "batch_size": 0}, "batch_size"),
        ({"steps": 5, "optimizer": "fista", "batch_size": 2}, "batch_size"),
        ({"steps": 5, "penalty": 0.1}, "penalty"),
        ({"steps": 5, "penalty": L1(0.1), "penalty_params": "some"}, "penalty_params"),
        ({"steps": 5, "optimizer": "fista", "penalty": L1(0.1), "proximal": False}, "proximal"),
        ({"steps": 5, "resume": True}, "checkpoint_dir"),
        ({"steps": 5, "checkpoint_every": 2}, "checkpoint_dir"),
        ({"steps": 5, "record_every": 0}, "record_every"),
        ({"steps": 5, "early_stopping": EarlyStopping()}, "monitor"),  # val_loss without val_data
        ({"steps": 5, "early_stopping": EarlyStopping(monitor="accuracy")}, "monitor"),
    ],
)
def test_bad_arguments_name_the_argument(small, kwargs, name):
    model, data = small
    before = model.weight.detach().clone()
    with pytest.raises(ValueError, match=name):
        fit(model, half_mse, data, progress=False, **kwargs)
    assert torch.equal(model.weight, before)  # rejected before any training


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ((torch.zeros(0, 2), torch.zeros(0)), "empty"),
        ((torch.zeros(3, 2), torch.zeros(4)), "sample"),
        (torch.zeros(3, 2), "pair"),
    ],
)
def test_bad_data(data, match):
    with pytest.raises(ValueError, match=f"train_data.*{match}|{match}"):
        fit(_linear(2), half_mse, data, steps=1, progress=False)
    with pytest.raises(ValueError, match="val_data"):
        good = (torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3, dtype=torch.float64))
        fit(_linear(2), half_mse, good, val_data=data, steps=1, progress=False)


def test_loss_fn_must_return_a_scalar(small):
    model, data = small
    with pytest.raises(ValueError, match="loss_fn"):
        fit(model, lambda p, t: (p.squeeze() - t) ** 2, data, steps=1, progress=False)


@pytest.mark.parametrize("optimizer", ["sgd", "fista"])
def test_non_finite_loss_records_each_step_once(optimizer):
    """A loss that turns NaN mid-run stops the run; no step is recorded twice."""
    X = torch.tensor(np.random.default_rng(10).normal(size=(30, 3)))
    y = X.sum(1)
    training_calls = []

    def loss_fn(output, target):
        if torch.is_grad_enabled():  # training objective, not the no-grad measurement
            training_calls.append(1)
            if len(training_calls) == 4:
                return half_mse(output, target) * float("nan")
        return half_mse(output, target)

    with pytest.warns(ConvergenceWarning, match="non-finite"):
        hist = fit(
            _linear(3), loss_fn, (X, y), optimizer=optimizer, lr=0.1, steps=10, progress=False
        )
    assert hist.stop_reason == "non-finite"
    assert len(hist.step) == len(set(hist.step))
    assert hist.step == sorted(hist.step)
