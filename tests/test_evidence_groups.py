"""Per-group evidence (decaylab.bayes_groups) against independent references: the scalar
fixed point on the GGN spectrum, laplace-torch's layerwise prior, finite differences."""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from decaylab._checks import ConvergenceWarning
from decaylab.advise import Protocol, advise
from decaylab.advise._spectrum import evidence_fixed_point
from decaylab.advise._train import Budget, Trainer
from decaylab.advise.evidence import evidence_search
from decaylab.advise.run import _curves_and_messages
from decaylab.bayes import ggn_spectrum, log_evidence_from_spectrum
from decaylab.bayes_groups import (
    evidence_groups,
    evidence_groups_fixed_point,
    grouped_ggn,
    log_evidence_groups,
)
from decaylab.training import half_mse


def _classifier(bias=True, seed=0, n=60):
    """A 2-layer tanh MLP in float64, trained a little (not to an optimum: the evidence is
    taken at fixed weights either way)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).long() + (X[:, 2] > 1).long()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6, bias=bias), nn.Tanh(), nn.Linear(6, 3, bias=bias))
    model = model.double()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    return model, X, y


def _all_names(model):
    return [n for n, p in model.named_parameters() if p.dim() > 1]


@pytest.mark.parametrize("bias", [False, True])
def test_one_group_is_the_scalar_fixed_point(bias):
    """All groups tied: the scalar MacKay fixed point of advise/_spectrum on the same weights,
    and the same log evidence as the GGN spectrum's."""
    model, X, y = _classifier(bias=bias)
    ggn = grouped_ggn(model, "cross_entropy", (X, y), groups=[_all_names(model)])
    assert ggn.names == grouped_ggn(model, "cross_entropy", (X, y)).tied().names
    spec = ggn_spectrum(model, "cross_entropy", (X, y))
    ours = evidence_groups_fixed_point(ggn, 1e-2, alpha_range=(1e-6, 1e2), tol=1e-12)
    ref, ok = evidence_fixed_point(spec, 1e-2, low=1e-6, high=1e2, tol=1e-12)
    assert ours.converged and ok
    (alpha,) = ours.alpha.values()
    assert alpha == pytest.approx(ref, rel=1e-9)
    (gamma,) = ours.gamma.values()
    assert gamma == pytest.approx(float(spec.gamma(np.array([ref]))[0]), rel=1e-9)
    for a in (1e-3, 0.3):
        assert log_evidence_groups(ggn, [a]) == pytest.approx(
            float(log_evidence_from_spectrum(spec, a)), rel=1e-10
        )


def test_one_group_regression_matches_the_spectrum_with_and_without_beta():
    torch.manual_seed(3)
    X = torch.randn(40, 3, dtype=torch.float64)
    y = torch.sin(X[:, :1]) + 0.1 * torch.randn(40, 1, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    ggn = grouped_ggn(model, half_mse, (X, y), groups=[_all_names(model)])
    spec = ggn_spectrum(model, half_mse, (X, y))
    for beta in (None, 4.0):
        got = log_evidence_groups(ggn, [0.02], beta)
        assert got == pytest.approx(float(log_evidence_from_spectrum(spec, 0.02, beta)), rel=1e-10)
    # beta maximized out at each alpha, as the scalar fixed point does for half_mse
    ours = evidence_groups_fixed_point(ggn, 1e-2, alpha_range=(1e-6, 1e2))
    ref, _ = evidence_fixed_point(spec, 1e-2, low=1e-6, high=1e2)
    assert next(iter(ours.alpha.values())) == pytest.approx(ref, rel=1e-7)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_per_group_evidence_equals_laplace_torch_layerwise_prior():
    """Bias-free layers, so laplace-torch's ``subset_of_weights="all"`` layers are exactly
    decaylab's decayed groups; its layerwise prior precision is ``δ_g = N α_g``."""
    laplace = pytest.importorskip("laplace")
    model, X, y = _classifier(bias=False)
    N = len(X)
    ggn = grouped_ggn(model, "cross_entropy", (X, y))
    assert ggn.names == ("0.weight", "2.weight")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=20)
    la = laplace.Laplace(
        model,
        "classification",
        subset_of_weights="all",
        hessian_structure="full",
        prior_precision=torch.tensor([1.0, 1.0], dtype=torch.float64),
    )
    la.fit(loader)
    for alpha in ([1e-3, 1e-1], [0.5, 2e-3], [0.03, 0.03]):
        delta = torch.tensor(alpha, dtype=torch.float64) * N
        ref = float(la.log_marginal_likelihood(prior_precision=delta))
        ours = log_evidence_groups(ggn, alpha)
        assert abs(ours - ref) <= 1e-8 * abs(ref)


def test_per_group_optimum_is_a_stationary_point_of_the_evidence():
    """Central differences of log Z in each log α_g vanish at the fixed point (relative to
    the size of the derivative one decade away)."""
    model, X, y = _classifier(bias=False, seed=1)
    ggn = grouped_ggn(model, "cross_entropy", (X, y))
    res = evidence_groups_fixed_point(ggn, 1e-2, tol=1e-12)
    a = np.array(list(res.alpha.values()))
    assert res.converged and res.spread > 1.5  # the groups really want different α
    h = 1e-4
    for g in range(a.size):
        step = np.zeros_like(a)
        step[g] = h
        fd = (
            log_evidence_groups(ggn, a * np.exp(step)) - log_evidence_groups(ggn, a * np.exp(-step))
        ) / (2 * h)
        step[g] = 1.0  # a decade-scale move: a non-stationary slope for scale
        far = log_evidence_groups(ggn, a * np.exp(step)) - res.log_evidence
        assert abs(fd) < 1e-6 * max(abs(far), 1.0)
        assert far < 0
    # The joint optimum is at least as good as the best tied α.
    scalar = evidence_groups_fixed_point(ggn.tied(), 1e-2, tol=1e-12)
    assert res.log_evidence >= scalar.log_evidence


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_laplace_torch_layerwise_marglik_reaches_the_same_alpha():
    laplace = pytest.importorskip("laplace")
    model, X, y = _classifier(bias=False, seed=1)
    N = len(X)
    res = evidence_groups(model, "cross_entropy", (X, y), tol=1e-12)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=30)
    la = laplace.Laplace(model, "classification", subset_of_weights="all", hessian_structure="full")
    la.fit(loader)
    ours = np.array(list(res.alpha.values()))
    # laplace-torch's autograd slope of its marglik in log δ_g vanishes at our optimum ...
    log_delta = torch.tensor(np.log(ours * N), requires_grad=True)
    la.log_marginal_likelihood(prior_precision=log_delta.exp()).backward()
    assert np.all(np.abs(log_delta.grad.numpy()) < 1e-6)
    # ... and its own optimizer (Adam on log δ_g from δ = 1) gets there
    la.optimize_prior_precision(
        pred_type="glm", method="marglik", prior_structure="layerwise", n_steps=300, lr=0.05
    )
    theirs = la.prior_precision.detach().numpy() / N
    np.testing.assert_allclose(theirs, ours, rtol=1e-6)


def test_refuses_large_models_and_flags_non_convergence():
    model = nn.Sequential(nn.Linear(60, 60), nn.Tanh(), nn.Linear(60, 2))
    X, y = torch.randn(10, 60), torch.randint(0, 2, (10,))
    with pytest.raises(ValueError, match=r"the 3720 decayed parameters, above the limit of 3000"):
        grouped_ggn(model, "cross_entropy", (X, y))
    small, X, y = _classifier(bias=False)
    with pytest.warns(ConvergenceWarning, match="did not converge in 2 iterations"):
        res = evidence_groups(small, "cross_entropy", (X, y), max_iter=2)
    assert not res.converged
    with pytest.raises(ValueError, match="not a decayed parameter"):
        grouped_ggn(small, "cross_entropy", (X, y), groups=[["0.weight", "nope"]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clipped = evidence_groups(small, "cross_entropy", (X, y), alpha_range=(1e-6, 1e-4))
    assert clipped.converged and set(clipped.alpha.values()) == {1e-4}


# --------------------------------------------------------------------------- the advisor


def _mlp_task(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)

    def draw(m):
        X = torch.randn(m, 4, generator=g, dtype=torch.float64)
        return X, (X[:, 0] - X[:, 1] + 0.8 * torch.randn(m, generator=g) > 0).long()

    return types.SimpleNamespace(
        name="tiny-mlp",
        model=lambda: nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double(),
        loss_fn=nn.CrossEntropyLoss(),
        train=draw(n),
        val=draw(100),
    )


PROTO = Protocol(optimizer="adam", lr=0.05, steps=120)


def test_evidence_search_per_group_reports_the_alpha_at_the_final_weights():
    """``updates=0`` makes the online run a plain training at α0, which the Trainer
    reproduces; the reported α per group is evidence_groups at those weights. The scalar
    result is untouched by the option."""
    task, rng = _mlp_task(), (1e-4, 1.0)
    plain = evidence_search(task, PROTO, rng, Budget(), alpha0=0.01, updates=0)
    with_groups = evidence_search(
        task, PROTO, rng, Budget(), alpha0=0.01, updates=0, per_group=True
    )
    assert set(with_groups) - set(plain) == {
        "alpha_per_group",
        "per_group_converged",
        "per_group_note",
    }
    assert all(with_groups[k] == plain[k] for k in plain)
    trainer = Trainer(task, PROTO, 0.01, Budget())
    trainer.run(PROTO.steps)
    ref = evidence_groups(trainer.model, task.loss_fn, task.train, alpha0=0.01, alpha_range=rng)
    got = with_groups["alpha_per_group"]
    assert list(got) == ["0.weight", "2.weight"] and with_groups["per_group_converged"]
    for name, a in ref.alpha.items():
        assert got[name] == pytest.approx(a, rel=1e-5)


def test_per_group_is_refused_with_a_note_above_the_dense_limit(monkeypatch):
    import decaylab.advise._spectrum as spectrum

    monkeypatch.setattr(spectrum, "MAX_GROUP_PARAMS", 10)
    res = evidence_search(_mlp_task(), PROTO, (1e-4, 1.0), Budget(), updates=0, per_group=True)
    assert res["alpha_per_group"] is None
    assert "30 decayed parameters is above its limit of 10" in res["per_group_note"]


def test_advise_passes_per_group_to_details_and_warns_about_a_compromise():
    task = _mlp_task()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adv = advise(
            task,
            method="evidence",
            protocol=PROTO,
            alpha_range=(1e-4, 1.0),
            trust_checks=False,
            options={"per_group": True, "updates": 2},
        )
    per_group = adv.details["alpha_per_group"]
    assert set(per_group) == {"0.weight", "2.weight"}
    spread = max(per_group.values()) / min(per_group.values())
    flagged = [w for w in adv.warnings if "compromise between layers" in w]
    assert len(flagged) == (1 if spread > 10 else 0)
    assert len([w for w in caught if "compromise" in str(w.message)]) == len(flagged)
    # The message's rule, on made-up results either side of 10x.
    base = {"curve_alpha": [], "curve_log_evidence": [], "step": [], "alpha_trace": []}
    base.update(last_change=0.0, exact_spectrum=True)
    for values, expected in (({"a": 1e-3, "b": 2e-2}, 1), ({"a": 1e-3, "b": 9e-3}, 0)):
        _, msgs = _curves_and_messages("evidence", {**base, "alpha_per_group": values}, PROTO)
        assert sum("compromise" in (m or "") for m in msgs) == expected
    _, msgs = _curves_and_messages("evidence", base, PROTO)
    assert not any(msgs)
