"""Tests for decaylab.regularize: penalties, the L1 prox, optimizer parameter groups."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from sklearn.linear_model import ElasticNet as SkElasticNet
from sklearn.linear_model import Lasso
from torch import nn

from decaylab.regularize import (
    L1,
    L2,
    DecayEntry,
    ElasticNet,
    Penalty,
    decay_report,
    param_groups,
    soft_threshold,
)


def _tensors(seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(3, 4, generator=gen, dtype=dtype),
        torch.randn(5, generator=gen, dtype=dtype),
        torch.randn(2, 1, 3, generator=gen, dtype=dtype),
    ]


# --------------------------------------------------------------------------- penalty values


@pytest.mark.parametrize(("alpha", "rho"), [(0.3, 0.0), (0.3, 1.0), (0.7, 0.25), (0.0, 0.5)])
def test_penalty_matches_numpy_sums(alpha, rho):
    ts = _tensors()
    flat = np.concatenate([t.numpy().ravel() for t in ts])
    l1 = float(np.sum(np.abs(flat)))
    sq = float(np.sum(flat * flat))
    expected_full = alpha * (rho * l1 + (1 - rho) / 2 * sq)
    expected_smooth = alpha * (1 - rho) / 2 * sq
    pen = ElasticNet(alpha, rho)
    assert pen.penalty(ts).item() == pytest.approx(expected_full, rel=1e-12, abs=1e-15)
    assert pen.smooth_penalty(ts).item() == pytest.approx(expected_smooth, rel=1e-12, abs=1e-15)


def test_l2_l1_match_their_formulas_and_elastic_net_endpoints():
    ts = _tensors(1)
    flat = np.concatenate([t.numpy().ravel() for t in ts])
    assert L2(0.4).penalty(ts).item() == pytest.approx(0.2 * np.sum(flat**2), rel=1e-12)
    assert L1(0.4).penalty(ts).item() == pytest.approx(0.4 * np.sum(np.abs(flat)), rel=1e-12)
    for method in ("penalty", "smooth_penalty"):
        assert (
            getattr(ElasticNet(0.4, 0.0), method)(ts).item() == getattr(L2(0.4), method)(ts).item()
        )
        assert (
            getattr(ElasticNet(0.4, 1.0), method)(ts).item() == getattr(L1(0.4), method)(ts).item()
        )
    assert L1(0.4).smooth_penalty(ts).item() == 0.0
    a, b = _tensors(2), _tensors(2)
    ElasticNet(0.4, 1.0).prox(a, step=0.5)
    L1(0.4).prox(b, step=0.5)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    a, b = _tensors(2), _tensors(2)
    ElasticNet(0.4, 0.0).prox(a, step=0.5)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # L2 prox is a no-op


def test_attributes_and_repr():
    assert (L2(0.1).alpha, L2(0.1).l1_ratio) == (0.1, 0.0)
    assert (L1(0.1).alpha, L1(0.1).l1_ratio) == (0.1, 1.0)
    assert ElasticNet(0.1, 0.3).l1_ratio == 0.3
    assert all(isinstance(p, Penalty) for p in (L2(1), L1(1), ElasticNet(1, 0.5)))
    assert repr(L2(0.1)) == "L2(alpha=0.1)"
    assert repr(L1(0.1)) == "L1(alpha=0.1)"
    assert repr(ElasticNet(0.1, 0.3)) == "ElasticNet(alpha=0.1, l1_ratio=0.3)"


def test_penalty_gradient_is_the_elastic_net_subgradient():
    w = torch.tensor([1.5, -0.25, 2.0, -3.0], dtype=torch.float64, requires_grad=True)
    alpha, rho = 0.6, 0.3
    ElasticNet(alpha, rho).penalty([w]).backward()
    expected = alpha * (rho * np.sign(w.detach().numpy()) + (1 - rho) * w.detach().numpy())
    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-14)


def test_params_forms_module_groups_named_and_tied():
    lin = nn.Linear(3, 2)
    frozen = nn.Linear(3, 3)
    frozen.requires_grad_(False)
    model = nn.Sequential(lin, frozen)
    expected = 0.5 * 0.2 * (lin.weight.pow(2).sum() + lin.bias.pow(2).sum()).item()
    pen = L2(0.2)
    assert pen.penalty(model).item() == pytest.approx(expected)  # frozen layer left out
    assert pen.penalty([lin.weight, lin.bias]).item() == pytest.approx(expected)
    assert pen.penalty(lin.named_parameters()).item() == pytest.approx(expected)
    groups = [{"params": [lin.weight]}, {"params": [lin.bias], "weight_decay": 0.0}]
    assert pen.penalty(groups).item() == pytest.approx(expected)
    # a tied tensor counts once
    assert pen.penalty([lin.weight, lin.weight, lin.bias]).item() == pytest.approx(expected)
    assert pen.penalty([]).item() == 0.0


# --------------------------------------------------------------------------- prox


def _soft_threshold_loop(values, t):
    out = []
    for v in values:
        if abs(v) <= t:
            out.append(0.0)
        elif v > 0:
            out.append(v - t)
        else:
            out.append(v + t)
    return out


def test_soft_threshold_equals_elementwise_loop_float64():
    x = torch.tensor([-2.0, -0.5, -0.49, 0.0, 0.1, 0.5, 0.51, 3.0], dtype=torch.float64)
    got = soft_threshold(x, 0.5)
    assert got.tolist() == _soft_threshold_loop(x.tolist(), 0.5)
    assert not torch.signbit(got[got == 0]).any()  # +0.0, never -0.0
    assert x[0].item() == -2.0  # input untouched


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_prox_equals_elementwise_loop_and_gives_exact_zeros(dtype):
    ts = _tensors(3, dtype=dtype)
    originals = [t.clone() for t in ts]
    alpha, rho, step = 0.8, 0.75, 1.25
    t_ = step * alpha * rho  # 0.75
    ElasticNet(alpha, rho).prox(ts, step=step)
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    thr = np_dtype(t_)
    n_small = 0
    for before, after in zip(originals, ts, strict=True):
        vals = before.numpy().ravel()
        expected = []
        for v in vals:  # explicit loop in the tensor's own precision
            if abs(v) <= thr:
                expected.append(np_dtype(0.0))
                n_small += 1
            elif v > 0:
                expected.append(np_dtype(v - thr))
            else:
                expected.append(np_dtype(v + thr))
        np.testing.assert_array_equal(after.numpy().ravel(), np.array(expected, dtype=np_dtype))
    n_zero = sum(int((t == 0).sum()) for t in ts)
    assert n_small > 0 and n_zero == n_small


def test_prox_on_module_skips_frozen_and_thresholds_tied_once():
    emb = nn.Embedding(4, 3)
    head = nn.Linear(3, 4, bias=False)
    head.weight = emb.weight  # tied
    frozen = nn.Linear(3, 3)
    frozen.requires_grad_(False)
    model = nn.ModuleDict({"emb": emb, "head": head, "frozen": frozen})
    w0 = emb.weight.detach().clone()
    f0 = frozen.weight.detach().clone()
    L1(0.1).prox(model, step=1.0)
    once = torch.sign(w0) * torch.clamp(w0.abs() - 0.1, min=0.0)  # thresholded once, by hand
    torch.testing.assert_close(emb.weight.detach(), once, rtol=0, atol=0)
    assert torch.equal(frozen.weight, f0)
    assert emb.weight.grad is None  # under no_grad: no graph, no grad


def test_prox_noops_and_step_validation():
    ts = _tensors(4)
    copies = [t.clone() for t in ts]
    L1(0.5).prox(ts, step=0.0)
    L2(0.5).prox(ts, step=1.0)
    L1(0.0).prox(ts, step=1.0)
    assert all(torch.equal(a, b) for a, b in zip(ts, copies, strict=True))
    with pytest.raises(ValueError, match="step"):
        L1(0.5).prox(ts, step=-0.1)
    with pytest.raises(ValueError, match="threshold"):
        soft_threshold(ts[0], -1.0)


def _ista(X, y, penalty, n_iter):
    """Proximal gradient on J(w) = (1/2N)||y - Xw||^2 + penalty, from w = 0."""
    Xt = torch.tensor(X)
    yt = torch.tensor(y)
    n = X.shape[0]
    lip = np.linalg.eigvalsh(X.T @ X / n).max() + penalty.alpha * (1 - penalty.l1_ratio)
    step = 1.0 / lip
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    for _ in range(n_iter):
        loss = 0.5 * ((yt - Xt @ w) ** 2).mean() + penalty.smooth_penalty([w])
        (grad,) = torch.autograd.grad(loss, w)
        with torch.no_grad():
            w -= step * grad
        penalty.prox([w], step=step)
    return w.detach().numpy()


def test_proximal_gradient_reaches_sklearn_lasso_and_elastic_net_with_exact_zeros():
    rng = np.random.default_rng(0)
    n, d = 60, 8
    X = rng.standard_normal((n, d))
    w_true = np.array([2.0, -1.5, 0, 0, 0.8, 0, 0, 0])
    y = X @ w_true + 0.3 * rng.standard_normal(n)
    a = 0.2
    lasso = Lasso(alpha=a, fit_intercept=False, tol=1e-14, max_iter=100_000).fit(X, y)
    w = _ista(X, y, L1(a), 3000)
    np.testing.assert_allclose(w, lasso.coef_, atol=1e-8)
    assert np.array_equal(w == 0, lasso.coef_ == 0) and (w == 0).sum() >= 2

    enet = SkElasticNet(
        alpha=a, l1_ratio=0.6, fit_intercept=False, tol=1e-14, max_iter=100_000
    ).fit(X, y)
    w = _ista(X, y, ElasticNet(a, 0.6), 3000)
    np.testing.assert_allclose(w, enet.coef_, atol=1e-8)
    assert np.array_equal(w == 0, enet.coef_ == 0) and (w == 0).sum() >= 1


@pytest.mark.parametrize(
    ("ctor", "name"),
    [
        (lambda: L2(-0.1), "alpha"),
        (lambda: L1(float("nan")), "alpha"),
        (lambda: ElasticNet(-1.0, 0.5), "alpha"),
        (lambda: ElasticNet(0.1, 1.5), "l1_ratio"),
        (lambda: ElasticNet(0.1, -0.1), "l1_ratio"),
    ],
)
def test_penalty_bad_arguments(ctor, name):
    with pytest.raises(ValueError, match=rf"^{name} must"):
        ctor()


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: L2("0.1"), "alpha"),
        (lambda: L1(True), "alpha"),
        (lambda: ElasticNet(0.1, "0.5"), "l1_ratio"),
        (lambda: ElasticNet(0.1, float("nan")), "l1_ratio"),
        (lambda: soft_threshold(torch.ones(2), "0.1"), "threshold"),
        (lambda: soft_threshold(torch.ones(2), float("nan")), "threshold"),
        (lambda: L1(0.1).prox([torch.ones(2)], step="0.1"), "step"),
        (lambda: L1(0.1).prox([torch.ones(2)], step=True), "step"),
        (lambda: param_groups(nn.Linear(2, 2), "0.1"), "weight_decay"),
        (lambda: param_groups(nn.Linear(2, 2), float("nan")), "weight_decay"),
        (lambda: param_groups(nn.Linear(2, 2), 0.1, exclude_bias="no"), "exclude_bias"),
        (lambda: param_groups(nn.Linear(2, 2), 0.1, exclude_norm=0), "exclude_norm"),
        (lambda: param_groups(nn.Linear(2, 2), 0.1, exclude_1d=None), "exclude_1d"),
        (
            lambda: decay_report([{"params": [torch.ones(2)], "weight_decay": "0.1"}]),
            r"groups\[0\]\['weight_decay'\]",
        ),
    ],
)
def test_strings_bools_and_nan_are_refused_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must"):
        call()


def test_penalty_bad_params():
    with pytest.raises(ValueError, match="params"):
        L2(0.1).penalty(3.0)
    with pytest.raises(ValueError, match="params"):
        L2(0.1).penalty([torch.ones(2), "w"])


# --------------------------------------------------------------------------- param_groups


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.temperature = nn.Parameter(torch.ones(1))  # 1-D: not decayed
        self.emb = nn.Embedding(10, 4)
        self.conv1 = nn.Conv1d(4, 6, 3)
        self.bn1 = nn.BatchNorm1d(6)
        self.gn = nn.GroupNorm(2, 6)
        self.conv2 = nn.Conv2d(1, 3, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(3)
        self.inorm = nn.InstanceNorm2d(3, affine=True)
        self.ln = nn.LayerNorm((2, 4))  # 2-D weight: excluded by type, not by shape
        self.norm_proj = nn.Linear(8, 8)  # "norm" in the name, but a Linear: decayed
        self.rms = nn.RMSNorm(8)
        self.lrn = nn.LocalResponseNorm(2)
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(8, 2)


DECAYED = ["emb.weight", "conv1.weight", "conv2.weight", "norm_proj.weight", "head.weight"]
NOT_DECAYED = [
    "temperature",
    "conv1.bias",
    "bn1.weight",
    "bn1.bias",
    "gn.weight",
    "gn.bias",
    "bn2.weight",
    "bn2.bias",
    "inorm.weight",
    "inorm.bias",
    "ln.weight",
    "ln.bias",
    "norm_proj.bias",
    "rms.weight",
    "head.bias",
]


def test_param_groups_on_small_cnn_decays_exactly_conv_linear_embedding_weights():
    model = SmallCNN()
    groups = param_groups(model, 5e-4)
    assert len(groups) == 2
    decay, keep = groups
    assert set(decay) == {"params", "weight_decay", "names"}
    assert decay["weight_decay"] == 5e-4 and keep["weight_decay"] == 0.0
    assert decay["names"] == DECAYED
    assert keep["names"] == NOT_DECAYED
    named = dict(model.named_parameters())
    for g in groups:
        assert [id(p) for p in g["params"]] == [id(named[n]) for n in g["names"]]
    # every trainable parameter exactly once, frozen ones nowhere
    listed = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(listed) == sorted(trainable) and len(set(listed)) == len(listed)


def test_param_groups_switches_and_patterns():
    model = SmallCNN()
    decay, keep = param_groups(model, 0.1, exclude_bias=False, exclude_1d=False)
    # biases of conv/linear and the 1-D temperature are now decayed; norm layers still not
    assert decay["names"] == [
        "temperature",
        "emb.weight",
        "conv1.weight",
        "conv1.bias",
        "conv2.weight",
        "norm_proj.weight",
        "norm_proj.bias",
        "head.weight",
        "head.bias",
    ]
    assert "ln.weight" in keep["names"] and "bn1.bias" in keep["names"]

    (everything,) = param_groups(
        model, 0.1, exclude_bias=False, exclude_1d=False, exclude_norm=False
    )
    assert everything["names"] == [n for n, p in model.named_parameters() if p.requires_grad]

    decay, keep = param_groups(model, 0.1, exclude=("emb.*", "head.weight"))
    assert decay["names"] == ["conv1.weight", "conv2.weight", "norm_proj.weight"]
    assert "emb.weight" in keep["names"] and "head.weight" in keep["names"]
    decay, _ = param_groups(model, 0.1, exclude="conv*")  # a single pattern as a str
    assert decay["names"] == ["emb.weight", "norm_proj.weight", "head.weight"]


def test_param_groups_tied_weights_appear_once_and_empty_groups_are_omitted():
    emb = nn.Embedding(5, 3)
    out = nn.Linear(3, 5, bias=False)
    out.weight = emb.weight
    model = nn.Sequential(emb, out)
    groups = param_groups(model, 0.1)
    assert len(groups) == 1  # nothing to exclude: the empty group is omitted
    assert groups[0]["names"] == ["0.weight"] and groups[0]["weight_decay"] == 0.1

    (only_keep,) = param_groups(nn.LayerNorm(4), 0.1)
    assert only_keep["weight_decay"] == 0.0 and only_keep["names"] == ["weight", "bias"]


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW])
def test_torch_optimizers_accept_groups_and_round_trip_state(opt_cls):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    opt = opt_cls(param_groups(model, 0.1), lr=0.01)
    model(torch.randn(5, 3)).pow(2).mean().backward()
    opt.step()
    assert [g["names"] for g in opt.param_groups] == [
        ["0.weight", "2.weight"],
        ["0.bias", "1.weight", "1.bias", "2.bias"],
    ]
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    opt2 = opt_cls(param_groups(model, 0.1), lr=0.01)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    assert [g["weight_decay"] for g in opt2.param_groups] == [0.1, 0.0]
    assert [g["names"] for g in opt2.param_groups] == [g["names"] for g in opt.param_groups]


def test_sgd_step_decays_only_the_decayed_group():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(param_groups(model, 0.5), lr=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # zero data gradient: only the decay moves weights
    opt.step()
    for name, p in model.named_parameters():
        factor = 1 - 0.1 * 0.5 if name in ("0.weight", "2.weight") else 1.0
        torch.testing.assert_close(p.detach(), before[name] * factor, rtol=0, atol=1e-7)


def test_param_groups_bad_arguments():
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups(nn.Linear(2, 2), -0.1)
    with pytest.raises(ValueError, match="model"):
        param_groups([torch.ones(2)], 0.1)
    with pytest.raises(ValueError, match="exclude"):
        param_groups(nn.Linear(2, 2), 0.1, exclude=[1])
    frozen = nn.Linear(2, 2)
    frozen.requires_grad_(False)
    with pytest.raises(ValueError, match="model"):
        param_groups(frozen, 0.1)


def test_decay_report():
    model = SmallCNN()
    rows = decay_report(param_groups(model, 0.1))
    assert all(isinstance(r, DecayEntry) for r in rows)
    named = dict(model.named_parameters())
    assert [r.name for r in rows] == DECAYED + NOT_DECAYED
    assert [r.decayed for r in rows] == [True] * len(DECAYED) + [False] * len(NOT_DECAYED)
    assert [r.numel for r in rows] == [named[n].numel() for n in DECAYED + NOT_DECAYED]
    name, decayed, numel = rows[0]
    assert (name, decayed, numel) == ("emb.weight", True, 40)

    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3)
    assert decay_report(opt.param_groups) == rows
    # weight_decay=0: split kept, but nothing is decayed
    assert not any(r.decayed for r in decay_report(param_groups(model, 0.0)))
    # groups without names get positional names; optimizer defaults fill weight_decay
    plain = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1, weight_decay=0.01)
    assert decay_report(plain.param_groups) == [
        DecayEntry("group0.param0", True, 2),
        DecayEntry("group0.param1", True, 1),
    ]
    with pytest.raises(ValueError, match="weight_decay"):
        decay_report([{"params": [torch.ones(2)]}])
