"""Each part of the training package on its own, against explicit computations.

Regularization (where α lives and how it is applied), Batches, the whole-set mean loss,
the step rules, FISTA's line-search flag, History, and the final-weights check.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from decaylab._checks import ConvergenceWarning
from decaylab._inputs import batch_weight
from decaylab.regularize import L1, L2
from decaylab.training import FISTA, History, fit, half_mse
from decaylab.training.batches import Batches
from decaylab.training.evaluation import mean_loss, sample_count
from decaylab.training.regularization import Regularization
from decaylab.training.steps import GradientStep


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def _regularization(model, *, wd=0.1, decoupled=False, penalty=None, params="decayed"):
    return Regularization(
        model, wd, decoupled_by_fit=decoupled, penalty=penalty, proximal=True,
        penalty_params=params,
    )  # fmt: skip


# ----------------------------------------------------------------------------- Regularization


@pytest.mark.parametrize(
    ("decoupled", "key"), [(False, "weight_decay"), (True, "decaylab_decoupled_decay")]
)
def test_weight_decay_setter_reaches_only_the_decayed_group(decoupled, key):
    reg = _regularization(_net(), decoupled=decoupled)
    opt = torch.optim.SGD(reg.groups, lr=0.1)
    reg.attach(opt)
    reg.weight_decay = 0.3
    groups = {tuple(g["names"]): g for g in opt.param_groups}
    decayed, other = groups[("0.weight", "2.weight")], groups[("0.bias", "2.bias")]
    assert decayed[key] == 0.3 and other.get(key, 0.0) == 0.0
    if decoupled:  # torch's own coupled decay stays off
        assert decayed["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="weight_decay"):
        reg.weight_decay = -1.0


def test_decoupled_decay_multiplies_decayed_weights_by_one_minus_lr_alpha():
    model = _net()
    reg = _regularization(model, wd=0.25, decoupled=True)
    opt = torch.optim.SGD(reg.groups, lr=0.2)
    reg.attach(opt)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    reg.decay_before_step(opt)
    for n, p in model.named_parameters():
        factor = 1 - 0.2 * 0.25 if n.endswith("weight") else 1.0
        np.testing.assert_array_equal(p.detach().numpy(), (before[n] * factor).numpy())


def test_prox_soft_thresholds_only_the_penalized_parameters():
    model = _net()
    reg = _regularization(model, wd=0.0, penalty=L1(0.5))
    before = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    reg.prox(list(model.parameters()), 0.1)
    for n, p in model.named_parameters():
        w = before[n]
        want = np.sign(w) * np.maximum(np.abs(w) - 0.05, 0) if n.endswith("weight") else w
        np.testing.assert_allclose(p.detach().numpy(), want, rtol=0, atol=1e-15)


def test_regularizer_value_is_l1_plus_half_alpha_squared_norm_on_decayed_weights():
    model = _net()
    reg = _regularization(model, wd=0.2, penalty=L1(0.03))
    weights = [p.detach().numpy() for n, p in model.named_parameters() if n.endswith("weight")]
    want = 0.03 * sum(np.abs(w).sum() for w in weights) + 0.1 * sum((w**2).sum() for w in weights)
    assert reg.value() == pytest.approx(want, rel=1e-14)


def test_penalty_is_a_private_copy_and_its_alpha_round_trips_through_state_dict():
    given = L1(0.1)
    reg = _regularization(_net(), penalty=given)
    reg.penalty.alpha = 0.7
    assert given.alpha == 0.1
    other = _regularization(_net(), penalty=L1(0.1))
    other.load_state_dict(reg.state_dict())
    assert other.penalty.alpha == 0.7 and other.weight_decay == 0.1
    with pytest.raises(ValueError, match="penalty"):
        reg.penalty = 0.5


def test_optimizer_without_weight_decay_is_refused_for_coupled_decay():
    """Rprop has no weight_decay: fit used to hand it the groups and lose the decay silently."""
    X = torch.randn(10, 3, dtype=torch.float64)
    y = torch.randn(10, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="weight_decay.*Rprop"):
        fit(_net(), half_mse, (X, y), optimizer=lambda g: torch.optim.Rprop(g), steps=2,
            weight_decay=0.1, progress=False)  # fmt: skip
    # Decoupled, fit applies the decay itself: accepted. Without decay: accepted.
    fit(_net(), half_mse, (X, y), optimizer=lambda g: torch.optim.Rprop(g), steps=2,
        weight_decay=0.1, decoupled=True, progress=False)  # fmt: skip
    fit(_net(), half_mse, (X, y), optimizer=lambda g: torch.optim.Rprop(g), steps=2,
        progress=False)  # fmt: skip


# ----------------------------------------------------------------------------- Batches


def test_batches_are_per_epoch_permutations_from_the_seeded_generator():
    X, y = torch.arange(10.0)[:, None], torch.arange(10.0)
    b = Batches(X, y, batch_size=4, seed=3)
    g = torch.Generator().manual_seed(3)  # the reference: torch's own seeded permutations
    for epoch in range(3):
        perm = torch.randperm(10, generator=g)
        got = torch.cat([b.batch(epoch * 3 + i)[1] for i in range(3)])
        assert torch.equal(got, perm.double())
    full = Batches(X, y, batch_size=None, seed=0)
    assert full.batch(5)[0] is X


def test_batches_resume_from_state_dict():
    X, y = torch.arange(9.0)[:, None], torch.arange(9.0)
    a = Batches(X, y, batch_size=2, seed=1)
    for s in range(7):
        a.batch(s)
    b = Batches(X, y, batch_size=2, seed=99)
    b.load_state_dict(a.state_dict())
    for s in range(7, 20):
        assert torch.equal(a.batch(s)[1], b.batch(s)[1])


# ----------------------------------------------------------------------------- mean loss


def _weighted_ce_problem(n=23, k=3):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    y[::4] = -1  # ignored
    y[5:8] = -1  # a whole chunk of 3 ignored (chunk=3 → samples 6, 7, 8 are chunk 2)
    loss = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 10.0, 3.0], dtype=torch.float64),
                               ignore_index=-1)  # fmt: skip
    torch.manual_seed(1)
    return nn.Linear(4, k).double(), loss, X, y


@pytest.mark.parametrize("chunk", [3, 5, 7, 23])
def test_mean_loss_in_chunks_equals_one_call_for_weighted_ignored_cross_entropy(chunk):
    model, loss, X, y = _weighted_ce_problem()
    with torch.no_grad():
        one_call = float(loss(model(X), y))
        got = mean_loss(model, loss, X, y, chunk, batch_weight)
    assert got == pytest.approx(one_call, rel=1e-13)


def test_mean_loss_weighting_by_sample_count_is_wrong_for_weighted_cross_entropy():
    """The discriminating control: count weighting misses the one-call value by far."""
    model, loss, X, y = _weighted_ce_problem()
    y = y.clamp(min=0)  # no ignored chunk, so the count-weighted version is finite
    with torch.no_grad():
        one_call = float(loss(model(X), y))
        by_count = mean_loss(model, loss, X, y, 5, sample_count)
    assert abs(by_count - one_call) > 1e-3 * abs(one_call)


# ----------------------------------------------------------------------------- step rules


def test_gradient_step_is_decay_then_sgd_then_prox():
    """One decoupled SGD step with L1 prox against the explicit formula via autograd."""
    model = _net()
    X, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    reg = _regularization(model, wd=0.3, decoupled=True, penalty=L1(0.2))
    opt = torch.optim.SGD(reg.groups, lr=0.1)
    reg.attach(opt)
    params = dict(model.named_parameters())
    w0 = {n: p.detach().clone() for n, p in params.items()}
    grads = torch.autograd.grad(half_mse(model(X), y), list(params.values()))
    GradientStep(opt, reg)(lambda: half_mse(model(X), y))
    for (n, p), g in zip(params.items(), grads, strict=True):
        if n.endswith("weight"):
            z = (1 - 0.1 * 0.3) * w0[n] - 0.1 * g
            want = torch.sign(z) * torch.clamp(z.abs() - 0.1 * 0.2, min=0)
        else:
            want = w0[n] - 0.1 * g
        torch.testing.assert_close(p.detach(), want, rtol=0, atol=1e-15)


def test_gradient_step_with_non_finite_loss_moves_nothing():
    model = _net()
    reg = _regularization(model)
    opt = torch.optim.SGD(reg.groups, lr=0.1, momentum=0.9)
    reg.attach(opt)
    before = [p.detach().clone() for p in model.parameters()]
    loss = GradientStep(opt, reg)(lambda: model(torch.ones(1, 3, dtype=torch.float64)).sum() / 0)
    assert not torch.isfinite(loss)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


# ----------------------------------------------------------------------------- flags


class _Drifting:
    """A loss that grows by 1 per training call (as dropout makes a loss random): no
    trial of FISTA's line search can show sufficient decrease, however small the step."""

    def __init__(self):
        self.calls = 0

    def __call__(self, prediction, target):
        if torch.is_grad_enabled():
            self.calls += 1
        return half_mse(prediction, target) + 1.0 * self.calls


def test_fista_line_search_that_gives_up_warns_and_counts():
    w = nn.Parameter(torch.tensor([0.5], dtype=torch.float64))
    opt = FISTA([w], lr="auto")
    drifting = _Drifting()

    def closure():
        opt.zero_grad()
        loss = drifting(w, torch.zeros(1, dtype=torch.float64))
        loss.backward()
        return loss

    with pytest.warns(ConvergenceWarning, match="line search .* in 100 trials"):
        opt.step(closure)
    assert opt.line_search_failures == 1
    assert opt.state_dict()["param_groups"][0]["line_search_failures"] == 1
    assert drifting.calls == 101  # the loss at y, then 100 trials (MAX_BACKTRACKS)
    assert opt.param_groups[0]["lr"] == 2.0**-100  # halved (backtrack = 2) at each trial


def test_fit_records_fista_line_search_failures_in_history():
    X = torch.randn(6, 2, dtype=torch.float64)
    with pytest.warns(ConvergenceWarning, match="line search"):
        hist = fit(nn.Linear(2, 1).double(), _Drifting(), (X, X[:, :1]), optimizer="fista",
                   lr="auto", steps=2, progress=False)  # fmt: skip
    assert hist.line_search_failures == [1, 2]
    assert History.from_dict(hist.to_dict()).line_search_failures == [1, 2]


def test_non_finite_final_weights_are_flagged_without_checkpoint_dir():
    """A weight overflows to -inf while the loss stays finite (clamped): used to pass silently."""

    class Clamped(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 1).requires_grad_(False)
            self.shift = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return self.lin(x).squeeze(-1) + self.shift.clamp(-1.0, 1.0)

    torch.manual_seed(0)
    X, y = torch.randn(8, 2), torch.full((8,), -3.0)
    model = Clamped()
    with pytest.warns(ConvergenceWarning, match="shift"):
        hist = fit(model, half_mse, (X, y), lr=3e38, steps=1, progress=False)
    assert not torch.isfinite(model.shift).all()  # float32: 3e38 * grad overflows
    assert all(np.isfinite(hist.train_loss))  # the loss never showed it
    assert hist.stop_reason == "non-finite"


def test_history_reads_dicts_written_before_line_search_failures_existed():
    old = History(step=[0], train_loss=[1.0], objective=[1.0]).to_dict()
    del old["line_search_failures"]
    assert History.from_dict(old).line_search_failures == []


def test_minibatch_whose_targets_are_all_ignored_takes_a_regularizer_only_step():
    """torch's mean of such a batch is 0/0; fit used to stop the run as "non-finite"."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(8, 3, generator=g, dtype=torch.float64)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))  # fit's seed=0 batches
    y = torch.full((8,), -1)
    y[perm[:4]] = torch.tensor([0, 1, 1, 0])  # the second batch is all ignored
    loss = nn.CrossEntropyLoss(ignore_index=-1)
    torch.manual_seed(0)
    model = nn.Linear(3, 2, bias=False).double()
    w0 = model.weight.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hist = fit(model, loss, (X, y), batch_size=4, steps=2, seed=0, lr=0.5,
                   weight_decay=0.1, progress=False)  # fmt: skip
    assert hist.stop_reason is None and hist.steps_done == 2
    # Reference: the two batches of the seeded permutation, by hand.
    w = w0.clone().requires_grad_(True)
    for idx in (perm[:4], perm[4:]):
        kept = y[idx] != -1
        data = loss(X[idx] @ w.T, y[idx]) if kept.any() else (w * 0).sum()
        (grad,) = torch.autograd.grad(data + 0.05 * (w**2).sum(), w)
        w = (w - 0.5 * grad).detach().requires_grad_(True)
    torch.testing.assert_close(model.weight.detach(), w.detach(), rtol=0, atol=1e-14)


def test_l2_penalty_in_loss_equals_coupled_weight_decay_through_the_parts():
    """Two routes to the same objective: L2(α) in the loss and coupled weight_decay=α."""
    X = torch.randn(12, 3, dtype=torch.float64)
    y = torch.randn(12, 2, dtype=torch.float64)
    a, b = _net(), _net()
    fit(a, half_mse, (X, y), steps=20, penalty=L2(0.2), progress=False)
    fit(b, half_mse, (X, y), steps=20, weight_decay=0.2, progress=False)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("n", "batch_size"), [(5, 2), (7, 7), (9, None), (10, 3), (4, 9)])
def test_batches_size_is_the_length_of_the_batch_drawn(n, batch_size):
    X, y = torch.arange(float(n))[:, None], torch.arange(float(n))
    batches = Batches(X, y, batch_size, seed=0)
    assert [batches.size(s) for s in range(11)] == [len(batches.batch(s)[0]) for s in range(11)]
