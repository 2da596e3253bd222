"""The advisor's methods against independent references: explicit loops over fit, exact
penalized optima (L-BFGS in float64), finite differences, numpy solves."""

from __future__ import annotations

import json
import math
import types
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import decaylab
from decaylab import TheoryWarning, fit
from decaylab.advise import Advice, Protocol, advise
from decaylab.advise import advice as trust
from decaylab.advise._curv import (
    conjugate_gradient,
    decay_mask,
    hypergradient,
    newton_predictor,
)
from decaylab.advise._train import Budget, Trainer
from decaylab.advise.early_stopping import gamma_matched_alpha
from decaylab.advise.grid import grid_search, log_grid
from decaylab.advise.path import parabola_vertex


def _logistic_task(n=80, d=6, seed=0, noise=1.5, dtype=torch.float64):
    """Noisy two-class data with a few informative features: weight decay matters."""
    g = torch.Generator().manual_seed(seed)
    w = torch.zeros(d)
    w[:2] = torch.tensor([2.0, -1.5])

    def draw(m):
        X = torch.randn(m, d, generator=g)
        y = ((X @ w + noise * torch.randn(m, generator=g)) > 0).long()
        return X.to(dtype), y

    return types.SimpleNamespace(
        name="tiny-logistic",
        model=lambda: nn.Linear(d, 2).to(dtype),
        loss_fn=nn.CrossEntropyLoss(),
        train=draw(n),
        val=draw(200),
    )


FAST = Protocol(optimizer="adam", lr=0.05, steps=150)


def _exact_optimum(task, alpha):
    """The penalized optimum ``J(w) + (α/2)‖W‖²`` (bias free) by L-BFGS to machine precision."""
    torch.manual_seed(0)
    model = task.model()
    opt = torch.optim.LBFGS(
        model.parameters(),
        lr=1,
        max_iter=500,
        tolerance_grad=1e-13,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )
    X, y = task.train

    def closure():
        opt.zero_grad()
        loss = task.loss_fn(model(X), y) + 0.5 * alpha * model.weight.pow(2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    return model


def _val_loss(task, model):
    with torch.no_grad():
        return float(task.loss_fn(model(task.val[0]), task.val[1]))


# --------------------------------------------------------------------------- pieces


def test_trainer_is_decaylab_fit():
    task = _logistic_task()
    for optimizer in ("adam", "sgd"):
        proto = Protocol(optimizer=optimizer, lr=0.05, steps=40)
        trainer = Trainer(task, proto, 3e-2, Budget())
        trainer.run(40)
        torch.manual_seed(proto.seed)
        model = task.model()
        fit(
            model,
            task.loss_fn,
            task.train,
            optimizer=optimizer,
            lr=0.05,
            steps=40,
            weight_decay=3e-2,
            progress=False,
            eval_every=40,
        )
        for a, b in zip(model.parameters(), trainer.model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_online_alpha_goes_through_fit_callbacks():
    """A callback that keeps α reproduces the fixed-α training; one that changes it is seen."""
    from decaylab.advise._online import run_online
    from decaylab.advise._train import train_at

    task = _logistic_task()
    proto = Protocol(optimizer="adam", lr=0.05, steps=60)
    seen = []
    view = run_online(
        task, proto, 1e-2, Budget(), updates=3, update=lambda v, a: seen.append(a) or a
    )
    ref = train_at(task, proto, 1e-2, Budget())
    for a, b in zip(view.model.parameters(), ref.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert seen == [1e-2] * 3
    halved = run_online(task, proto, 1e-2, Budget(), updates=2, update=lambda v, a: a / 2)
    assert halved.alpha == pytest.approx(2.5e-3)


def test_conjugate_gradient_solves_and_flags_indefinite():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(8, 8))
    A = torch.tensor(M @ M.T + 0.5 * np.eye(8))
    b = torch.tensor(rng.normal(size=8))
    res = conjugate_gradient(lambda v: A @ v, b, tol=1e-12, max_iter=50)
    assert res.converged and not res.negative_curvature
    np.testing.assert_allclose(res.x.numpy(), np.linalg.solve(A.numpy(), b.numpy()), rtol=1e-8)
    indefinite = torch.diag(torch.tensor([1.0, -1.0], dtype=torch.float64))
    res = conjugate_gradient(lambda v: indefinite @ v, torch.tensor([0.0, 1.0]).double())
    assert res.negative_curvature and not res.converged


def test_hypergradient_equals_finite_differences_of_the_validation_loss():
    task = _logistic_task()
    alpha, h = 2e-2, 1e-3
    model = _exact_optimum(task, alpha)
    for curvature in ("hessian", "ggn"):
        g, res = hypergradient(
            model, task.loss_fn, task.train, task.val, alpha, curvature=curvature, tol=1e-12
        )
        assert not res.negative_curvature
        if curvature == "hessian":
            up = _val_loss(task, _exact_optimum(task, alpha * math.exp(h)))
            down = _val_loss(task, _exact_optimum(task, alpha * math.exp(-h)))
            fd = (up - down) / (2 * h)
            assert g == pytest.approx(fd, rel=1e-4)
        else:  # logistic regression: GGN = Hessian
            assert g == pytest.approx(fd, rel=1e-4)


def test_newton_predictor_is_the_newton_step_of_the_new_objective():
    """Against an explicit Newton step with the Hessian of torch.func (logistic regression:
    GGN = Hessian), and it moves most of the way to the new exact optimum."""
    task = _logistic_task()
    start = _exact_optimum(task, 1e-1)
    target = torch.cat([p.detach().reshape(-1) for p in _exact_optimum(task, 1e-2).parameters()])
    trainer = Trainer(task, FAST, 1e-1, Budget())
    trainer.model.load_state_dict(start.state_dict())
    w0 = torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])
    X, y = task.train

    def objective(w):
        W, b = w[:12].reshape(2, 6), w[12:]
        return task.loss_fn(X @ W.T + b, y) + 0.5 * 1e-2 * W.pow(2).sum()

    # Two-class softmax: shifting both biases alike changes nothing (a null direction); CG
    # from zero stays out of it, as the pseudo-inverse does.
    H = torch.func.hessian(objective)(w0)
    step = -torch.linalg.pinv(H, hermitian=True, rtol=1e-10) @ torch.func.grad(objective)(w0)
    info = newton_predictor(trainer, 1e-2, max_iter=50, damping_rel=0.0)
    after = torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])
    assert info["taken"] == 1.0 and trainer.alpha == 1e-2
    torch.testing.assert_close(after, w0 + step, rtol=1e-6, atol=1e-8)
    assert (after - target).norm() < 0.4 * (w0 - target).norm()


def test_decay_mask_marks_weights_not_biases():
    mask = decay_mask(nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1)))
    assert mask.tolist() == [1.0] * 6 + [0.0] * 2 + [1.0] * 2 + [0.0]


def test_parabola_vertex_and_gamma_matched_alpha_against_brute_force():
    x = np.array([-1.0, 0.5, 2.0])
    assert parabola_vertex(x, (x - 0.3) ** 2 + 1) == pytest.approx(0.3)
    assert parabola_vertex(x, -(x**2)) is None
    lam = np.logspace(-4, 0, 30)
    a = gamma_matched_alpha(lam, 0.5, 40, low=1e-8, high=10.0)
    grid = np.logspace(-8, 1, 200001)
    gam = np.sum(lam[None, :] / (lam[None, :] + grid[:, None]), axis=1)
    target = np.sum(1 - (1 - 0.5 * lam) ** 40)
    assert a == pytest.approx(grid[np.argmin(np.abs(gam - target))], rel=1e-3)


# --------------------------------------------------------------------------- methods


def test_grid_search_is_an_explicit_loop_over_fit():
    task = _logistic_task()
    alphas = log_grid(1e-3, 1e-1, 3)
    res = grid_search(task, FAST, alphas)
    for alpha, val in zip(alphas, res["val_loss"], strict=True):
        torch.manual_seed(0)
        model = task.model()
        fit(
            model,
            task.loss_fn,
            task.train,
            optimizer="adam",
            lr=0.05,
            steps=150,
            weight_decay=float(alpha),
            progress=False,
            eval_every=150,
        )
        assert val == pytest.approx(_val_loss(task, model), rel=1e-10)
    assert res["best_val_loss"] == min(res["val_loss"])
    assert res["grad_evals"] == 3 * 150


def _exact_best_alpha(task, low, high, n=25):
    alphas = np.logspace(math.log10(low), math.log10(high), n)
    vals = [_val_loss(task, _exact_optimum(task, a)) for a in alphas]
    return alphas, np.array(vals)


@pytest.mark.parametrize("method", ["path", "hypergradient", "evidence", "early_stopping"])
def test_every_method_returns_checked_advice(method):
    task = _logistic_task()
    proto = Protocol(optimizer="adam", lr=0.05, steps=120)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adv = advise(task, method=method, protocol=proto, alpha_range=(1e-4, 1.0))
    assert isinstance(adv, Advice) and 1e-4 <= adv.alpha <= 1.0
    # The advised val loss is that of the protocol's training at the advised alpha.
    trainer = Trainer(task, proto, adv.alpha, Budget())
    trainer.run(proto.steps)
    assert adv.val_loss == pytest.approx(trainer.val_loss(), rel=1e-10)
    assert adv.grad_evals >= proto.steps and adv.compute_seconds > 0
    json.dumps(adv.to_dict())


@pytest.mark.parametrize("predictor", [False, True])
def test_path_finds_the_exact_validation_optimum_on_a_convex_task(predictor):
    """Logistic regression: the path's α is within a factor 1.6 of the fine-grid argmin of the
    validation loss at the exact penalized optima."""
    task = _logistic_task(noise=2.0, n=60)
    alphas, vals = _exact_best_alpha(task, 1e-4, 1.0)
    best = alphas[np.argmin(vals)]
    assert 1e-3 < best < 0.3  # interior, so the test can fail either way
    proto = Protocol(optimizer="adam", lr=0.05, steps=400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adv = advise(
            task,
            method="path",
            protocol=proto,
            alpha_range=(1e-4, 1.0),
            trust_checks=False,
            options={"predictor": predictor},
        )
    assert abs(math.log(adv.alpha / best)) < math.log(1.6)
    assert adv.val_loss <= 1.01 * vals.min()


def test_evidence_method_reaches_the_evidence_maximum():
    """At the online method's final α the Laplace evidence of the final weights peaks."""
    task = _logistic_task()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adv = advise(
            task,
            method="evidence",
            protocol=Protocol(lr=0.05, steps=300),
            alpha_range=(1e-4, 1.0),
            options={"updates": 8},
        )
    a, logz = np.array(adv.curves["alpha"]), np.array(adv.curves["log_evidence"])
    i = int(np.argmax(logz))
    assert a[max(i - 1, 0)] <= adv.alpha <= a[min(i + 1, a.size - 1)]


def test_compare_grid_attaches_the_grid():
    task = _logistic_task()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adv = advise(
            task,
            method="grid",
            compare_grid=True,
            n_grid=3,
            protocol=FAST,
            alpha_range=(1e-3, 1e-1),
            trust_checks=False,
        )
    assert adv.grid["best_val_loss"] == pytest.approx(adv.val_loss)
    assert adv.alpha == adv.grid["best_alpha"]


# --------------------------------------------------------------------------- trust


def test_trust_checks_on_constructed_cases():
    assert trust.edge_warning(1.1e-6, 1e-6, 1e-1) and trust.edge_warning(0.09, 1e-6, 1e-1)
    assert trust.edge_warning(1e-3, 1e-6, 1e-1) is None
    a = np.logspace(-5, -1, 9)
    assert "flat" in trust.curve_warning(a, 1.0 + 1e-4 * np.arange(9))
    assert "noisy" in trust.curve_warning(a, [5, 3, 4, 3.5, 2, 3, 4, 5, 6])
    assert trust.curve_warning(a, (np.log(a) + 7) ** 2 + 1) is None
    assert trust.gamma_warning(95.0, 100) and trust.gamma_warning(30.0, 100) is None
    assert trust.curvature_warning(-0.5, 10.0) and trust.curvature_warning(-1e-6, 10.0) is None
    assert trust.settled_warning("x", 0.5) and trust.settled_warning("x", 0.01) is None
    assert trust.unconverged_warning(1.1, 1.0) and trust.unconverged_warning(1.0, 1.0) is None


@pytest.mark.filterwarnings("ignore:the validation loss varies")
def test_advice_warns_when_the_optimum_is_outside_the_range():
    task = _logistic_task()
    with pytest.warns(TheoryWarning, match="edge of the range"):
        adv = advise(
            task,
            method="grid",
            n_grid=3,
            protocol=FAST,
            alpha_range=(1e-8, 1e-7),
            trust_checks=False,
        )
    assert any("edge" in w for w in adv.warnings)


def test_advice_flags_negative_curvature_at_a_saddle():
    """A network stopped after one step is nowhere near a minimum."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = torch.sin(2 * X[:, :1])
    task = types.SimpleNamespace(
        model=lambda: nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double(),
        loss_fn=decaylab.half_mse,
        train=(X, y),
        val=(X, y),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adv = advise(
            task,
            method="grid",
            n_grid=3,
            alpha_range=(1e-4, 1e-2),
            protocol=Protocol(optimizer="sgd", lr=0.01, steps=1),
        )
    assert any("negative eigenvalue" in w for w in adv.warnings)
    assert any(issubclass(c.category, TheoryWarning) for c in caught)


@pytest.mark.filterwarnings("ignore::decaylab.TheoryWarning")
def test_advice_flags_an_unconverged_final_training():
    task = _logistic_task()
    with pytest.warns(decaylab.ConvergenceWarning, match="not converged"):
        adv = advise(
            task,
            method="grid",
            n_grid=3,
            alpha_range=(1e-4, 1e-2),
            protocol=Protocol(optimizer="adam", lr=0.05, steps=10),
            trust_checks=False,
        )
    assert any("not converged" in w for w in adv.warnings)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"alpha_range": (0.0, 1.0)}, r"alpha_range\[0\] must be > 0"),
        ({"alpha_range": (1.0, 1e-3)}, "low < high"),
        ({"alpha_range": (1e-3, float("nan"))}, r"alpha_range\[1\] must be finite"),
        ({"method": "bayes"}, "method must be one of"),
        ({"protocol": {"lr": -1.0}}, "lr must be > 0"),
        ({"protocol": {"epochs": 3}}, "unknown keys"),
        ({"task_val": None}, r"task.val is missing"),
        ({"task_nan": True}, r"task.train contains NaN"),
    ],
)
def test_bad_input_is_refused_before_any_compute(change, match):
    task = _logistic_task()
    if "task_val" in change:
        task.val = change.pop("task_val")
    if change.pop("task_nan", False):
        X = task.train[0].clone()
        X[0, 0] = float("nan")
        task.train = (X, task.train[1])
    with pytest.raises(ValueError, match=match):
        advise(task, **change)


def test_package_is_callable_and_lazy_names():
    assert decaylab.advise.advise is advise
    assert callable(decaylab.advise)
    assert decaylab.Advice is Advice


def test_evidence_fixed_point_on_linear_regression_is_evidence_ridge():
    """At evidence_ridge's weights (whose α matches scikit-learn's BayesianRidge, test_bayes),
    the advisor's fixed point with β maximized out returns evidence_ridge's α; with β = 1
    (the earlier update) it did not (the noise precision here is about 11)."""
    from decaylab.advise._spectrum import evidence_fixed_point
    from decaylab.bayes import evidence_ridge, ggn_spectrum
    from decaylab.training import half_mse

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = X @ np.array([0.5, -0.3, 0.0, 0.2]) + 0.3 * rng.normal(size=60)
    # No intercept: a bias held fixed would see the uncentred X^T X, evidence_ridge the centred.
    ref = evidence_ridge(X, y, fit_intercept=False)
    model = nn.Linear(4, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.as_tensor(ref.coef)[None])
    data = (torch.as_tensor(X), torch.as_tensor(y)[:, None])
    spec = ggn_spectrum(model, half_mse, data)
    alpha, ok = evidence_fixed_point(spec, 1e-2, low=1e-8, high=1e2, tol=1e-12)
    assert ok and ref.noise_precision > 5
    assert alpha == pytest.approx(ref.alpha, rel=1e-6)
