"""Hessian / GGN operators against dense matrices computed independently here."""

from __future__ import annotations

import copy
import functools
import time
import weakref

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import eigsh
from sklearn.datasets import load_digits
from torch import nn
from torch.func import functional_call, jacrev
from torch.utils.data import DataLoader, TensorDataset

from decaylab.curvature._params import flatten_params, param_slices, unflatten_like
from decaylab.curvature.dense import dense_ggn, dense_hessian
from decaylab.curvature.lanczos import eigen
from decaylab.curvature.operators import GGNOperator, HalfMSELoss, HessianOperator

BACKENDS = ["linearize", "fwd_rev", "rev_rev"]

# torch registers its forward-AD decompositions through the deprecated torch.jit.script
# the first time torch.func.hessian runs in a process (the independent references below).
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script. is deprecated")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X[:120] / 16.0, dtype=torch.float32)
    return X, torch.tensor(y[:120], dtype=torch.long)


@pytest.fixture(scope="module")
def mlp_hessian(digits) -> torch.Tensor:
    """Dense float64 Hessian (torch.func.hessian) of make_mlp()'s mean cross-entropy on digits;
    read-only, shared by every test on that model."""
    X, y = digits
    return independent_hessian(make_mlp(), nn.CrossEntropyLoss(), X, y)


@pytest.fixture(scope="module")
def cnn_hessian(digits) -> torch.Tensor:
    """Dense float64 Hessian (torch.func.hessian) of make_cnn()'s mean cross-entropy on digits;
    read-only, shared by every test on that model."""
    X, y = digits
    return independent_hessian(make_cnn(), nn.CrossEntropyLoss(), X, y)


def make_mlp(seed: int = 0, hidden: int = 4, out: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, out))


def make_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Unflatten(1, (1, 64)),
        nn.Conv1d(1, 2, 5, stride=3),
        nn.ReLU(),
        nn.Conv1d(2, 3, 3, stride=2),
        nn.Softplus(),
        nn.Flatten(),
        nn.Linear(3 * 9, 10),
    ).eval()


def flat_params64(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().double().reshape(-1) for p in model.parameters()])


def flat_forward(model: nn.Module, X):
    """The model's float64 output on X as a function of the flat float64 parameter vector."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    X64 = X.double()
    m64 = copy.deepcopy(model).double()

    def out(w):
        parts = {n: t.view(s) for n, t, s in zip(names, w.split(sizes), shapes, strict=True)}
        return functional_call(m64, parts, (X64,))

    return out


def flat_loss(model: nn.Module, loss, X, y):
    """Mean loss over (X, y) as a function of the flat float64 parameter vector (test-local)."""
    forward = flat_forward(model, X)
    y64 = y.double() if y.is_floating_point() else y
    return lambda w: loss(forward(w), y64)


def independent_hessian(model: nn.Module, loss, X, y) -> torch.Tensor:
    return torch.func.hessian(flat_loss(model, loss, X, y))(flat_params64(model))


def independent_ggn(model: nn.Module, kind: str, X, y) -> torch.Tensor:
    """Σ_i J_iᵀ H_i J_i / N with the output Hessians written out by hand."""
    w = flat_params64(model)
    out = flat_forward(model, X)
    J = jacrev(out)(w)  # (N, C, P)
    f = out(w).detach()
    N, C = f.shape
    G = torch.zeros(w.numel(), w.numel(), dtype=torch.float64)
    for i in range(N):
        if kind == "cross_entropy":
            p = torch.softmax(f[i], 0)
            Hi = (torch.diag(p) - torch.outer(p, p)) / N
        elif kind == "mse":  # mean over N*C elements of (f - y)^2
            Hi = 2.0 * torch.eye(C, dtype=torch.float64) / (N * C)
        else:  # half squared error, summed over outputs, mean over samples
            Hi = torch.eye(C, dtype=torch.float64) / N
        G += J[i].T @ Hi @ J[i]
    return G


def unequal_batches(X, y, cuts=(37,)):
    edges = [0, *cuts, X.shape[0]]
    return [(X[a:b], y[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]


# ----------------------------------------------------------------------------- params


def test_flatten_and_unflatten_follow_named_parameters_order():
    model = make_mlp()
    w = flatten_params(model)
    expected = torch.cat([p.detach().reshape(-1) for _, p in model.named_parameters()])
    assert torch.equal(w, expected)
    parts = unflatten_like(w, model)
    assert list(parts) == [n for n, _ in model.named_parameters()]
    for name, p in model.named_parameters():
        assert torch.equal(parts[name], p.detach())
    # a selection given in any order is laid out in named_parameters() order
    sub = flatten_params(model, [model[2].bias, "0.weight"])
    assert torch.equal(
        sub, torch.cat([model[0].weight.detach().reshape(-1), model[2].bias.detach()])
    )
    assert param_slices(model, ["2.bias", "0.weight"]) == {
        "0.weight": slice(0, 256),
        "2.bias": slice(256, 266),
    }


def test_params_selection_errors():
    model = make_mlp()
    with pytest.raises(ValueError, match="params"):
        flatten_params(model, ["nope"])
    with pytest.raises(ValueError, match="params"):
        flatten_params(model, ["0.bias", model[0].bias])
    with pytest.raises(ValueError, match="params"):
        flatten_params(model, [torch.zeros(3)])
    with pytest.raises(ValueError, match="vec"):
        unflatten_like(torch.zeros(5), model)


def test_frozen_parameters_are_left_out():
    model = make_mlp()
    model[0].bias.requires_grad_(False)
    assert flatten_params(model).numel() == 256 + 40 + 10


# ----------------------------------------------------------------------------- Hessian


@pytest.mark.parametrize("backend", BACKENDS)
def test_hessian_products_match_independent_dense_float64(digits, mlp_hessian, backend):
    X, y = digits
    model = make_mlp()
    loss = nn.CrossEntropyLoss()
    H_ref = mlp_hessian
    scale = H_ref.abs().max()
    # linearize traces each batch (~3 s of torch tracing): the split data alone for it
    forms = [unequal_batches(X, y)] if backend == "linearize" else [(X, y), unequal_batches(X, y)]
    for data in forms:
        op = HessianOperator(model, loss, data, dtype=torch.float64, backend=backend)
        assert op.backend == backend and op.shape == (H_ref.shape[0],) * 2
        V = torch.randn(op.num_params, 6, dtype=torch.float64)
        assert (op.matmat(V) - H_ref @ V).abs().max() <= 1e-12 * scale * V.abs().sum(0).max()
        v = torch.randn(op.num_params, dtype=torch.float64)
        assert torch.allclose(op @ v, H_ref @ v, rtol=0, atol=1e-12 * scale * v.abs().sum())


def test_dense_hessian_equals_torch_func_hessian(digits, cnn_hessian):
    X, y = digits
    H_ref = cnn_hessian
    H = dense_hessian(make_cnn(), nn.CrossEntropyLoss(), unequal_batches(X, y))
    assert H.dtype == torch.float64
    assert torch.allclose(H, H_ref, rtol=0, atol=1e-12 * H_ref.abs().max())


def test_float32_products_agree_to_rounding(digits, cnn_hessian):
    X, y = digits
    model = make_cnn()
    H_ref = cnn_hessian  # independent of decaylab (torch.func.hessian), float64
    V = torch.randn(H_ref.shape[0], 4)
    for data in [(X, y), DataLoader(TensorDataset(X, y), batch_size=100)]:
        op = HessianOperator(model, nn.CrossEntropyLoss(), data)
        assert op.dtype == torch.float32 and op.n_batches == (1 if isinstance(data, tuple) else 2)
        out = op.matmat(V)
        assert out.dtype == torch.float32
        ref = (H_ref @ V.double()).float()
        err = (out - ref).norm(dim=0) / ref.norm(dim=0)
        assert err.max() < 1e-5


def test_backends_agree_on_a_cnn_and_ggn(digits):
    X, y = digits
    model = make_cnn()
    V = torch.randn(sum(p.numel() for p in model.parameters()), 3, dtype=torch.float64)
    data = (X[:60], y[:60])
    for cls in (HessianOperator, GGNOperator):
        outs = [
            cls(model, "cross_entropy", data, dtype=torch.float64, backend=b).matmat(V)
            for b in BACKENDS
        ]
        for other in outs[1:]:
            assert torch.allclose(outs[0], other, rtol=1e-10, atol=1e-12)


def test_mixed_cached_and_recomputed_batches(digits):
    X, y = digits
    model = make_mlp()
    data = unequal_batches(X, y, (23, 70))
    full = HessianOperator(model, "cross_entropy", data, dtype=torch.float64)
    assert full.n_cached_batches == 3
    some = HessianOperator(model, "cross_entropy", data, dtype=torch.float64, max_cached_batches=1)
    none = HessianOperator(model, "cross_entropy", data, dtype=torch.float64, cache_memory=0)
    assert some.n_cached_batches == 1 and none.n_cached_batches == 0
    V = torch.randn(full.num_params, 2, dtype=torch.float64)
    assert torch.allclose(full.matmat(V), some.matmat(V), atol=1e-13)
    assert torch.allclose(full.matmat(V), none.matmat(V), atol=1e-13)


def test_parameter_subset_is_the_sub_block(digits, mlp_hessian):
    X, y = digits
    model = make_mlp()
    H_ref = mlp_hessian
    op = HessianOperator(
        model, "cross_entropy", (X, y), params=["2.weight", "0.bias"], dtype=torch.float64
    )
    assert op.params_names == ["0.bias", "2.weight"]
    idx = torch.cat([torch.arange(256, 260), torch.arange(260, 300)])
    sub = op.to_dense()
    assert torch.allclose(sub, H_ref[idx][:, idx], atol=1e-12)


def test_regression_half_mse_on_linear_model_is_xtx_over_n():
    torch.manual_seed(1)
    X, y = torch.randn(50, 4, dtype=torch.float64), torch.randn(50, 1, dtype=torch.float64)
    model = nn.Linear(4, 1).double()
    Xb = torch.cat([X, torch.ones(50, 1, dtype=torch.float64)], 1)
    expected = Xb.T @ Xb / 50  # ½ squared error, mean over samples
    for loss in (HalfMSELoss(), "half_mse"):
        H = HessianOperator(model, loss, unequal_batches(X, y, (7, 20))).to_dense()
        assert torch.allclose(H, expected, atol=1e-12)
    # nn.MSELoss has no ½: twice as large
    H = HessianOperator(model, nn.MSELoss(), (X, y)).to_dense()
    assert torch.allclose(H, 2 * expected, atol=1e-12)


# ----------------------------------------------------------------------------- GGN


@pytest.mark.parametrize("backend", BACKENDS)
def test_ggn_cross_entropy_matches_jt_h_j(digits, backend):
    X, y = digits
    X, y = X[:60], y[:60]
    model = make_mlp()
    G_ref = independent_ggn(model, "cross_entropy", X, y)
    op = GGNOperator(
        model,
        nn.CrossEntropyLoss(),
        unequal_batches(X, y, (20, 31)),
        dtype=torch.float64,
        backend=backend,
    )
    V = torch.randn(op.num_params, 5, dtype=torch.float64)
    assert torch.allclose(op.matmat(V), G_ref @ V, rtol=0, atol=1e-12 * G_ref.abs().max())
    assert torch.linalg.eigvalsh(G_ref).min() > -1e-12  # the reference itself is PSD


@pytest.mark.parametrize("kind", ["mse", "half_mse"])
def test_ggn_regression_matches_jt_h_j(kind):
    torch.manual_seed(3)
    X, Y = torch.randn(40, 64), torch.randn(40, 3)
    model = make_mlp(hidden=2, out=3)
    G_ref = independent_ggn(model, kind, X, Y)
    loss = nn.MSELoss() if kind == "mse" else HalfMSELoss()
    G = GGNOperator(model, loss, unequal_batches(X, Y, (9,)), dtype=torch.float64).to_dense()
    assert torch.allclose(G, G_ref, rtol=0, atol=1e-12 * G_ref.abs().max())
    assert torch.allclose(dense_ggn(model, kind, (X, Y)), G_ref, atol=1e-12 * G_ref.abs().max())


def test_ggn_rejects_a_loss_it_cannot_vouch_for(digits):
    X, y = digits
    with pytest.raises(ValueError, match="loss_fn"):
        GGNOperator(make_mlp(), lambda out, t: out.pow(3).mean(), (X, y))


# ----------------------------------------------------------------------------- scipy, counters


def test_to_scipy_with_eigsh_and_counter(digits, mlp_hessian):
    X, y = digits
    model = make_mlp()
    op = HessianOperator(model, "cross_entropy", (X, y), dtype=torch.float64)
    H_ref = mlp_hessian.numpy()
    exact = np.linalg.eigh(H_ref)[0][::-1][:3]
    lin = op.to_scipy()
    assert lin.shape == op.shape and lin.dtype == np.float64
    vals = np.sort(eigsh(lin, k=3, which="LA", tol=1e-10)[0])[::-1]
    assert np.allclose(vals, exact, rtol=1e-8)
    op.reset_counter()
    assert op.n_matvecs == 0
    op @ torch.randn(op.num_params, dtype=torch.float64)
    op.matmat(torch.randn(op.num_params, 5, dtype=torch.float64))
    out = lin.matvec(np.ones(op.num_params))
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    assert op.n_matvecs == 7


def test_result_follows_input_dtype_and_numpy(digits):
    X, y = digits
    op = HessianOperator(make_mlp(), "cross_entropy", (X, y))
    v64 = torch.randn(op.num_params, dtype=torch.float64)
    assert (op @ v64).dtype == torch.float64
    out = op @ v64.numpy()
    assert isinstance(out, np.ndarray) and out.shape == (op.num_params,)


# ----------------------------------------------------------------------------- fallback


class _CubeNoFunctorch(torch.autograd.Function):
    """Old-style autograd.Function (no setup_context): torch.func cannot trace it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3 / 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x * x


class _OldStyleModel(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        return _CubeNoFunctorch.apply(self.lin(x))


def test_model_torch_func_cannot_trace_works_through_autograd():
    torch.manual_seed(0)
    X, y = torch.randn(30, 4, dtype=torch.float64), torch.randint(0, 2, (30,))
    model = _OldStyleModel().double()
    with pytest.raises(RuntimeError):
        HessianOperator(model, "cross_entropy", (X, y), backend="fwd_rev") @ torch.ones(10)
    op = HessianOperator(model, "cross_entropy", unequal_batches(X, y, (11,)))
    assert op.backend == "rev_rev"
    w = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(w):
        W, b = w[:8].view(2, 4), w[8:]
        return nn.functional.cross_entropy(_CubeNoFunctorch.apply(X @ W.T + b), y)

    H_ref = torch.autograd.functional.hessian(f, w)
    assert torch.allclose(op.to_dense(), H_ref, atol=1e-12)
    assert torch.allclose(dense_hessian(model, "cross_entropy", (X, y)), H_ref, atol=1e-12)


# ----------------------------------------------------------------------------- safety


def test_training_mode_with_batchnorm_or_dropout_is_refused(digits):
    X, y = digits
    for layer in (nn.BatchNorm1d(8), nn.Dropout(0.1)):
        model = nn.Sequential(nn.Linear(64, 8), layer, nn.Linear(8, 10)).train()
        with pytest.raises(ValueError, match=r"model.*model\.eval\(\)"):
            HessianOperator(model, "cross_entropy", (X, y))
        model.eval()
        HessianOperator(model, "cross_entropy", (X, y))  # fine once in eval mode


def test_shuffled_loader_is_refused(digits):
    X, y = digits
    loader = DataLoader(TensorDataset(X, y), batch_size=64, shuffle=True)
    with pytest.raises(ValueError, match="data is not deterministic"):
        HessianOperator(make_mlp(), "cross_entropy", loader)


def test_stochastic_forward_is_refused(digits):
    X, y = digits

    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(64, 10)

        def forward(self, x):
            return nn.functional.dropout(self.lin(x), 0.5, training=True)

    with pytest.raises(ValueError, match="model is not deterministic"):
        HessianOperator(Noisy(), "cross_entropy", (X, y))


def test_bad_data_is_refused(digits):
    X, y = digits
    model = make_mlp()
    with pytest.raises(ValueError, match="data is empty"):
        HessianOperator(model, "cross_entropy", [])
    with pytest.raises(ValueError, match="data is empty"):
        HessianOperator(model, "cross_entropy", (X[:0], y[:0]))
    with pytest.raises(ValueError, match="data: batch 0"):
        HessianOperator(model, "cross_entropy", (X, y[:-1]))
    with pytest.raises(ValueError, match="data: batch 1"):
        HessianOperator(model, "cross_entropy", [(X[:5], y[:5]), (X[5:], y[6:])])
    with pytest.raises(ValueError, match="re-iterable"):
        HessianOperator(model, "cross_entropy", iter([(X, y)]))
    with pytest.raises(ValueError, match="data"):
        HessianOperator(model, "cross_entropy", 3)
    # regression output (n, 1) against targets (n,) would broadcast silently
    reg = nn.Linear(64, 1)
    with pytest.raises(ValueError, match="shape"):
        HessianOperator(reg, nn.MSELoss(), (X, torch.randn(X.shape[0])))


def test_bad_vectors_and_loss_are_refused(digits):
    X, y = digits
    model = make_mlp()
    op = HessianOperator(model, "cross_entropy", (X, y))
    with pytest.raises(ValueError, match="v must be 1-D"):
        op @ torch.zeros(op.num_params + 1)
    with pytest.raises(ValueError, match="V must have shape"):
        op.matmat(torch.zeros(op.num_params - 1, 2))
    with pytest.raises(ValueError, match="v must be finite"):
        op @ torch.full((op.num_params,), float("nan"))
    with pytest.raises(ValueError, match="loss_fn"):
        HessianOperator(model, nn.CrossEntropyLoss(reduction="none"), (X, y))
    with pytest.raises(ValueError, match="loss_fn must return a scalar"):
        HessianOperator(
            model, lambda out, t: nn.functional.cross_entropy(out, t, reduction="none"), (X, y)
        )
    with pytest.raises(ValueError, match="backend"):
        HessianOperator(model, "cross_entropy", (X, y), backend="magic")
    with pytest.raises(ValueError, match="max_params"):
        dense_hessian(model, "cross_entropy", (X, y), max_params=100)


def test_non_finite_product_names_the_parameter():
    class SqrtAtZero(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 1)
            self.offset = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return self.lin(x) + torch.sqrt(self.offset)  # finite value, infinite slope

    X, y = torch.randn(10, 3), torch.randn(10, 1)
    for backend in BACKENDS:
        op = HessianOperator(SqrtAtZero(), "half_mse", (X, y), backend=backend)
        with pytest.raises(ValueError, match="'offset'"):
            op @ torch.ones(op.num_params)


# ----------------------------------------------------------------------------- backend="auto"


def _slowed(method, seconds):
    def slow(self, v):
        time.sleep(seconds)
        return method(self, v)

    return slow


def _tracked_terms(monkeypatch, *classes):
    """Weak references to every term of ``classes`` built from now on."""
    refs: list[weakref.ref] = []
    for cls in classes:
        init = cls.__init__

        def tracking(self, *args, _init=init, **kwargs):
            _init(self, *args, **kwargs)
            refs.append(weakref.ref(self))

        monkeypatch.setattr(cls, "__init__", tracking)
    return refs


@pytest.mark.parametrize("slow", ["rev_rev", "fwd_rev"])
def test_auto_keeps_the_faster_backend_and_frees_the_other(digits, mlp_hessian, monkeypatch, slow):
    from decaylab.curvature import operators

    X, y = digits
    model = make_mlp()
    H_ref = mlp_hessian
    classes = {"rev_rev": operators._HessRevRev, "fwd_rev": operators._HessFwdRev}
    # torch's first jvp in a process leaves a reference cycle to that term (freed only by
    # the garbage collector); pay it here so the references checked below are the operator's.
    HessianOperator(model, "cross_entropy", (X, y), backend="fwd_rev") @ torch.ones(310)
    monkeypatch.setattr(classes[slow], "matvec", _slowed(classes[slow].matvec, 0.25))
    refs = _tracked_terms(monkeypatch, *classes.values())
    op = HessianOperator(model, "cross_entropy", (X, y), dtype=torch.float64)
    assert len(refs) == 3  # a two-sample warm-up per candidate, then rev_rev's cached term
    assert op.backend == "rev_rev" and op.backend_timings == {} and op.n_matvecs == 0
    # The first two products decide; they are real products (counted, and right).
    V = torch.randn(op.num_params, 2, dtype=torch.float64)
    scale = H_ref.abs().max() * V.abs().sum(0).max()
    for j in range(2):
        assert (op @ V[:, j] - H_ref @ V[:, j]).abs().max() <= 1e-12 * scale
    assert op.n_matvecs == 2
    fast = "fwd_rev" if slow == "rev_rev" else "rev_rev"
    assert op.backend == fast
    assert set(op.backend_timings) == {"rev_rev", "fwd_rev"}
    assert op.backend_timings[slow] >= 0.25 > op.backend_timings[fast]
    assert f"chose {fast}" in op.backend_notes[-1] and "agree" in op.backend_notes[-1]
    # rev_rev's cached term stays only if rev_rev won; nothing else is held.
    kept = [r() for r in refs if r() is not None]
    assert kept == list(op._terms.values())
    assert len(kept) == (1 if fast == "rev_rev" else 0)
    assert op.n_cached_batches == len(kept)
    W = op.matmat(V)
    assert (W - H_ref @ V).abs().max() <= 1e-12 * scale
    assert op.n_matvecs == 4


def test_auto_decides_on_blocks_too_and_to_dense_is_exact(digits, mlp_hessian):
    X, y = digits
    model = make_mlp()
    H_ref = mlp_hessian
    op = HessianOperator(model, "cross_entropy", (X, y), dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    V = torch.randn(op.num_params, 8, dtype=torch.float64, generator=gen)
    scale = H_ref.abs().max() * V.abs().sum(0).max()
    assert (op.matmat(V[:, :5]) - H_ref @ V[:, :5]).abs().max() <= 1e-12 * scale  # rev_rev
    assert (op.matmat(V[:, 5:]) - H_ref @ V[:, 5:]).abs().max() <= 1e-12 * scale  # fwd_rev
    assert set(op.backend_timings) == {"rev_rev", "fwd_rev"} and op.n_matvecs == 8
    assert "chose" in op.backend_notes[-1]
    fresh = HessianOperator(model, "cross_entropy", (X, y), dtype=torch.float64)
    dense = fresh.to_dense()  # one block of P unit vectors: the first, rev_rev, product
    assert (dense - H_ref).abs().max() <= 1e-12 * H_ref.abs().max() * H_ref.shape[0]
    assert list(fresh.backend_timings) == ["rev_rev"]  # the second candidate waits its turn


def test_auto_times_set_up_and_product_when_the_cache_is_closed(digits, mlp_hessian, monkeypatch):
    from decaylab.curvature import operators

    X, y = digits
    model = make_mlp()
    H_ref = mlp_hessian
    init = operators._HessRevRev.__init__

    def slow_build(self, *args, **kwargs):
        time.sleep(0.25)  # a set-up paid at every product once nothing is cached
        init(self, *args, **kwargs)

    monkeypatch.setattr(operators._HessRevRev, "__init__", slow_build)
    v = torch.randn(H_ref.shape[0], 2, dtype=torch.float64)
    atol = 1e-12 * H_ref.abs().max() * v.abs().sum()
    op = HessianOperator(model, "cross_entropy", (X, y), dtype=torch.float64, cache_memory=0)
    assert op.n_cached_batches == 0
    for j in range(2):
        assert torch.allclose(op @ v[:, j], H_ref @ v[:, j], rtol=0, atol=atol)
    assert op.backend == "fwd_rev"
    assert op.backend_timings["rev_rev"] >= 0.25
    # With the cache open the same slow set-up is paid once, at construction: not charged.
    cached = HessianOperator(model, "cross_entropy", (X, y), dtype=torch.float64)
    cached.matmat(v)  # the first product (two columns) is rev_rev's
    assert cached.backend_timings["rev_rev"] < 0.25


def test_auto_skips_a_failing_backend_with_a_note(digits, mlp_hessian, monkeypatch):
    from decaylab.curvature import operators

    def out_of_memory(self, v):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    def unsupported(*args, **kwargs):
        raise RuntimeError("double backward not supported (simulated)")

    X, y = digits
    model = make_mlp()
    H_ref = mlp_hessian
    v = torch.randn(H_ref.shape[0], dtype=torch.float64)
    atol = 1e-12 * H_ref.abs().max() * v.abs().sum()
    with monkeypatch.context() as patch:
        patch.setattr(operators._HessFwdRev, "matvec", out_of_memory)
        refs = _tracked_terms(patch, operators._HessFwdRev)
        op = HessianOperator(model, "cross_entropy", (X, y), dtype=torch.float64)
        assert op.backend == "rev_rev"
        assert any("fwd_rev failed: OutOfMemoryError" in note for note in op.backend_notes)
        assert "only rev_rev works" in op.backend_notes[-1]
        assert refs and all(r() is None for r in refs)  # the failed attempt holds nothing
        assert torch.allclose(op @ v, H_ref @ v, rtol=0, atol=atol)
        assert torch.allclose(op @ v, H_ref @ v, rtol=0, atol=atol)
        assert op.backend_timings == {}
    with monkeypatch.context() as patch:
        patch.setattr(operators._HessRevRev, "__init__", unsupported)
        op = HessianOperator(model, "cross_entropy", (X, y), dtype=torch.float64)
        assert op.backend == "fwd_rev" and "simulated" in op.backend_notes[0]
        assert torch.allclose(op @ v, H_ref @ v, rtol=0, atol=atol)
    with monkeypatch.context() as patch:
        patch.setattr(operators._HessRevRev, "__init__", unsupported)
        patch.setattr(operators._HessFwdRev, "matvec", out_of_memory)
        with pytest.raises(RuntimeError, match="simulated"):
            HessianOperator(model, "cross_entropy", (X, y), dtype=torch.float64)


def test_auto_drops_a_backend_that_fails_only_on_the_full_batch(digits, mlp_hessian, monkeypatch):
    """Out of memory on a whole batch (not on the two warm-up samples): the product is
    computed by the other candidate, which is kept."""
    from decaylab.curvature import operators

    X, y = digits
    model = make_mlp()
    H_ref = mlp_hessian
    matvec = operators._HessFwdRev.matvec

    def big_batches_fail(self, v):
        out = matvec(self, v)
        if self._samples > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return out

    init = operators._HessFwdRev.__init__

    def remember_batch(self, loss_of_w, w0, vmap_chunk):
        init(self, loss_of_w, w0, vmap_chunk)
        self._samples = loss_of_w.args[1].shape[0]  # partial(_loss_closure, op, X, y)

    monkeypatch.setattr(operators._HessFwdRev, "__init__", remember_batch)
    monkeypatch.setattr(operators._HessFwdRev, "matvec", big_batches_fail)
    op = HessianOperator(model, "cross_entropy", (X, y), dtype=torch.float64)
    V = torch.randn(op.num_params, 3, dtype=torch.float64)
    atol = 1e-12 * H_ref.abs().max() * V.abs().sum(0).max()
    for j in range(3):
        assert torch.allclose(op @ V[:, j], H_ref @ V[:, j], rtol=0, atol=atol)
    assert op.backend == "rev_rev" and list(op.backend_timings) == ["rev_rev"]
    assert any("fwd_rev failed: OutOfMemoryError" in note for note in op.backend_notes)
    assert "chose rev_rev" in op.backend_notes[-1]
    assert op.n_matvecs == 3


@pytest.mark.parametrize(
    ("dtype", "factor", "refused"),
    [
        (torch.float64, 1 + 1e-6, True),
        (torch.float64, 1 + 1e-12, False),
        (torch.float32, 1 + 1e-2, True),
        (torch.float32, 1 + 1e-5, False),
    ],
)
def test_auto_refuses_backends_that_disagree(
    digits, mlp_hessian, monkeypatch, dtype, factor, refused
):
    from decaylab.curvature import operators

    X, y = digits
    model = make_mlp()
    H_ref = mlp_hessian
    # Along a top eigenvector q: the check compares qᵀ(H·Hq) with (H·Hq)ᵀq, so a product
    # off by `factor` shows as a relative gap of (factor − 1)/2.
    q = torch.linalg.eigh(H_ref)[1][:, -1].to(dtype)
    matvec = operators._HessFwdRev.matvec
    monkeypatch.setattr(operators._HessFwdRev, "matvec", lambda self, v: factor * matvec(self, v))
    op = HessianOperator(model, "cross_entropy", (X, y), dtype=dtype)
    first = op @ q  # rev_rev
    if refused:
        with pytest.raises(ValueError, match="not those of one symmetric matrix"):
            op @ first  # fwd_rev
    else:
        op @ first
        assert op.backend in ("rev_rev", "fwd_rev") and "agree" in op.backend_notes[-1]


def test_ggn_auto_keeps_its_order_with_a_one_column_probe(digits, monkeypatch):
    from decaylab.curvature import operators

    widths = []
    matvec = operators._GGNLinearized.matvec

    def recording(self, v):
        widths.append(tuple(v.shape))
        return matvec(self, v)

    monkeypatch.setattr(operators._GGNLinearized, "matvec", recording)
    X, y = digits
    op = GGNOperator(make_mlp(), "cross_entropy", (X[:40], y[:40]), dtype=torch.float64)
    assert op.backend == "linearize" and op.backend_timings == {}
    assert widths == [(op.num_params,)] and op.n_matvecs == 0


# ----------------------------------------------------------------------------- weighted targets


def _weighted_ce_case(ignore: bool):
    """Two-class data just above the default chunk size (2048); class 1 is rare. With
    ``ignore``, the first 700 targets are ignore_index (a whole first loader batch)."""
    gen = torch.Generator().manual_seed(7)
    X = torch.randn(2150, 3, generator=gen, dtype=torch.float64)
    y = (X[:, 0] + 0.5 * torch.randn(2150, generator=gen, dtype=torch.float64) > 1.2).long()
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    if ignore:
        y[:700] = -1
        return model, nn.CrossEntropyLoss(ignore_index=-1), X, y
    return model, nn.CrossEntropyLoss(weight=torch.tensor([1.0, 10.0], dtype=torch.float64)), X, y


def _weighted_ce_ggn(model, loss, X, y):
    """Σ_i w[y_i] J_iᵀ (diag p_i − p_i p_iᵀ) J_i / Σ_i w[y_i] over the targets that count."""
    w = flat_params64(model)
    out = flat_forward(model, X)
    J, f = jacrev(out)(w), out(w).detach()
    keep = y != loss.ignore_index
    class_weight = loss.weight if loss.weight is not None else torch.ones(2, dtype=torch.float64)
    weights = torch.where(keep, class_weight[y.clamp(min=0)], torch.zeros(()).double())
    p = torch.softmax(f, 1)
    H_out = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    G = torch.einsum("n,nap,nab,nbq->pq", weights, J, H_out, J)
    return G / weights.sum()


@pytest.mark.parametrize("ignore", [False, True], ids=["class-weights", "ignore-index"])
def test_weighted_and_ignored_targets_equal_one_call_however_split(ignore):
    model, loss, X, y = _weighted_ce_case(ignore)
    H_ref = independent_hessian(model, loss, X, y)
    G_ref = _weighted_ce_ggn(model, loss, X, y)
    splits = {
        "one batch": (X, y),
        "loader": DataLoader(TensorDataset(X, y), batch_size=700),  # 3 × 700 + 50
        "chunked pair": (X, y),  # above the default chunk size: 2048 + 102
    }
    tol = 1e-10 * H_ref.abs().max()
    for name, data in splits.items():
        chunk = {"chunk_size": None} if name == "one batch" else {}
        op = HessianOperator(model, loss, data, dtype=torch.float64, **chunk)
        assert op.n_batches == {"one batch": 1, "loader": 4, "chunked pair": 2}[name]
        assert (op.to_dense() - H_ref).abs().max() <= tol, name
        ggn = GGNOperator(model, loss, data, dtype=torch.float64, backend="rev_rev", **chunk)
        assert (ggn.to_dense() - G_ref).abs().max() <= tol, name
        assert (dense_hessian(model, loss, data) - H_ref).abs().max() <= tol, name
    # The normalizer is what torch's mean divides by: 1·n₀ + 10·n₁, or the kept targets.
    expected = float((y >= 0).sum()) if ignore else float((y == 0).sum() + 10 * (y == 1).sum())
    assert op.total_weight == expected and op.num_samples == 2150


def test_a_batch_of_ignored_targets_counts_for_nothing_and_all_ignored_is_refused():
    model, loss, X, y = _weighted_ce_case(ignore=True)
    X, y = X[600:800], y[600:800]  # batch 0 (100 samples) all ignored
    H_ref = independent_hessian(model, loss, X, y)
    op = HessianOperator(model, loss, unequal_batches(X, y, (100,)), dtype=torch.float64)
    assert op.total_weight == 100.0 and op.num_samples == 200
    assert (op.to_dense() - H_ref).abs().max() <= 1e-10 * H_ref.abs().max()
    # What is built on the products (here eigen) sees the same matrix.
    top = eigen(op, k=2, tol=1e-8)
    exact = torch.linalg.eigvalsh(H_ref).flip(0)[:2]
    assert torch.allclose(top.eigenvalues.double(), exact, rtol=1e-6)
    with pytest.raises(ValueError, match="no target that counts"):
        HessianOperator(model, loss, (X[:100], y[:100]))


def test_sums_and_hidden_normalizers_are_refused_at_set_up():
    model, _, X, y = _weighted_ce_case(ignore=False)
    X, y = X[:200], y[:200]
    w = torch.tensor([1.0, 10.0], dtype=torch.float64)
    for loss in (
        lambda out, t: nn.functional.cross_entropy(out, t, reduction="sum"),
        functools.partial(nn.functional.cross_entropy, reduction="sum"),
    ):
        with pytest.raises(ValueError, match="returns a sum .*Divide by the number of samples"):
            HessianOperator(model, loss, (X, y))
    hidden = functools.partial(nn.functional.cross_entropy, weight=w)
    with pytest.raises(ValueError, match="not normalized by the number.*CrossEntropyLoss"):
        HessianOperator(model, hidden, unequal_batches(X, y, (50,)))

    # A callable that says its normalizer is combined like the module.
    class Weighted:
        def __call__(self, out, t):
            return nn.functional.cross_entropy(out, t, weight=w)

        def batch_weight(self, t):
            return float(w[t].sum())

    H_ref = independent_hessian(model, nn.CrossEntropyLoss(weight=w), X, y)
    op = HessianOperator(model, Weighted(), unequal_batches(X, y, (50, 51)), dtype=torch.float64)
    assert (op.to_dense() - H_ref).abs().max() <= 1e-10 * H_ref.abs().max()


# ----------------------------------------------------------------------------- linearize safety


def _binary_case(dtype=torch.float64):
    gen = torch.Generator().manual_seed(11)
    X = torch.randn(60, 5, generator=gen, dtype=dtype)
    y = (torch.rand(60, 1, generator=gen) < 0.4).to(dtype)
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 1)).to(dtype)
    return model, X, y


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_linearize_and_auto_with_bce_repeat_double_backward_products(dtype):
    model, X, y = _binary_case(dtype)
    pos_weight = torch.tensor([3.0], dtype=dtype)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    plain, weighted = nn.BCEWithLogitsLoss(), nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    cases = [(HessianOperator, plain), (HessianOperator, weighted), (GGNOperator, weighted)]
    for cls, loss in cases:
        ref = cls(model, loss, (X, y), backend="rev_rev")
        v = torch.randn(ref.num_params, generator=torch.Generator().manual_seed(0)).to(dtype)
        expected = ref @ v
        for backend in ("linearize", "auto"):
            op = cls(model, loss, (X, y), backend=backend)
            for _ in range(5):
                got = op @ v
                assert (got - expected).norm() <= rtol * expected.norm(), (cls, backend)


def test_linearize_is_refused_where_torch_cannot_linearize_the_loss():
    model, X, y = _binary_case()
    two = nn.Sequential(nn.Linear(5, 2)).double()
    signs = 2 * y - 1

    class SubclassedBCE(nn.BCEWithLogitsLoss):  # torch's own kernel: impure under linearize
        pass

    def gaussian_nll(out, t):
        return nn.functional.gaussian_nll_loss(out[:, :1], t, out[:, 1:].exp())

    cases = [
        (model, nn.HuberLoss(), y, "cannot differentiate"),
        (model, nn.SoftMarginLoss(), signs, "cannot differentiate"),
        (two, gaussian_nll, y, "cannot differentiate"),
        (model, SubclassedBCE(), y, "is not reliable"),
    ]
    for net, loss, target, message in cases:
        with pytest.raises(ValueError, match=f"backend='linearize' {message}.*'rev_rev'"):
            HessianOperator(net, loss, (X, target), backend="linearize")
        # auto never uses linearize for the Hessian. torch.func.hessian cannot differentiate
        # these losses either: the reference is double backward by torch.autograd.functional.
        H_ref = torch.autograd.functional.hessian(
            flat_loss(net, loss, X, target), flat_params64(net)
        )
        op = HessianOperator(net, loss, (X, target), dtype=torch.float64)
        assert (op.to_dense() - H_ref).abs().max() <= 1e-10 * H_ref.abs().max()


def test_loss_tensors_follow_the_operator_dtype():
    """float32 class weights / pos_weight with float64 products (and dense_hessian)."""
    model32, X, _ = _binary_case(torch.float32)
    gen = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 2, (60,), generator=gen)
    two = nn.Sequential(nn.Linear(5, 2))
    ce = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 10.0]))
    bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([3.0]))
    cases = [(two, ce, labels), (model32, bce, labels[:, None].float())]
    for net, loss, target in cases:
        ref_loss = copy.deepcopy(loss).double()
        H_ref = independent_hessian(net, ref_loss, X, target)
        tol = 1e-10 * H_ref.abs().max()
        assert (dense_hessian(net, loss, (X, target)) - H_ref).abs().max() <= tol
        for backend in ("auto", "linearize", "fwd_rev"):  # auto: rev_rev first
            op = HessianOperator(net, loss, (X, target), dtype=torch.float64, backend=backend)
            assert (op.to_dense() - H_ref).abs().max() <= tol, backend
        G = dense_ggn(net, loss, (X, target))
        assert G.dtype == torch.float64
        assert (
            next(iter(loss.buffers())).dtype == torch.float32
        )  # the caller's module is left alone
