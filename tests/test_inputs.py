"""The shared input layer against torch's own losses and explicit loops."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from decaylab._inputs import (
    as_float,
    as_int,
    as_loss,
    as_tensor_pair,
    batch_weight,
    check_additive,
    check_finite,
    check_target_shape,
    probe_mean_loss,
)
from decaylab._losses import BCEWithLogitsForwardAD, HalfMSELoss, MSELossForwardAD


def _split_mean(loss_fn, prediction, target, cuts):
    """Σ_b W_b L_b / Σ_b W_b over the pieces between ``cuts``, skipping weight-0 pieces."""
    edges = [0, *cuts, prediction.shape[0]]
    num = den = 0.0
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        w = batch_weight(loss_fn, target[a:b])
        if w:
            num += w * float(loss_fn(prediction[a:b], target[a:b]))
            den += w
    return num / den


@pytest.mark.parametrize(
    "loss_fn",
    [
        nn.CrossEntropyLoss(weight=torch.tensor([1.0, 10.0, 3.0], dtype=torch.float64)),
        nn.CrossEntropyLoss(ignore_index=2),
        nn.CrossEntropyLoss(weight=torch.tensor([1.0, 10.0, 3.0]).double(), ignore_index=0),
        nn.CrossEntropyLoss(
            weight=torch.tensor([1.0, 10.0, 3.0]).double(), ignore_index=1, label_smoothing=0.2
        ),
        nn.NLLLoss(weight=torch.tensor([2.0, 1.0, 5.0]).double(), ignore_index=1),
        nn.CrossEntropyLoss(),
    ],
)
def test_batch_weight_recombines_splits_into_torchs_one_call_mean(loss_fn):
    gen = torch.Generator().manual_seed(0)
    prediction = torch.randn(23, 3, generator=gen, dtype=torch.float64)
    if isinstance(loss_fn, nn.NLLLoss):
        prediction = prediction.log_softmax(1)
    target = torch.randint(0, 3, (23,), generator=gen)
    target[:4] = loss_fn.ignore_index if loss_fn.ignore_index >= 0 else target[:4]
    whole = float(loss_fn(prediction, target))
    # The first piece holds only ignored targets when there are any: weight 0, skipped.
    for cuts in ([], [4], [4, 9, 17], [1, 2, 3, 4, 5, 6, 7, 8, 20]):
        assert _split_mean(loss_fn, prediction, target, cuts) == pytest.approx(whole, rel=1e-12)


def test_batch_weight_counts_and_edge_cases():
    w = torch.tensor([1.0, 10.0])
    ce = nn.CrossEntropyLoss(weight=w, ignore_index=-1)
    assert batch_weight(ce, torch.tensor([-1, -1])) == 0.0
    assert batch_weight(ce, torch.tensor([1, 1, 0])) == 21.0
    # Probability targets: torch divides by N whatever the weights.
    probs = torch.softmax(torch.randn(5, 2), 1)
    assert batch_weight(ce, probs) == 5.0
    logits = torch.randn(5, 2)
    summed = nn.CrossEntropyLoss(weight=w, reduction="sum")(logits, probs)
    assert float(summed / ce(logits, probs)) == pytest.approx(5.0, rel=1e-6)
    assert batch_weight(nn.MSELoss(), torch.zeros(7, 3)) == 7.0
    assert batch_weight(lambda p, t: (p - t).pow(2).mean(), torch.zeros(4)) == 4.0

    class Custom:
        def __call__(self, p, t):
            return p.sum() / self.batch_weight(t)

        def batch_weight(self, t):
            return float((t > 0).sum())

    assert batch_weight(Custom(), torch.tensor([0.0, 1.0, 2.0])) == 2.0


def test_probe_refuses_sums_written_as_lambda_or_partial():
    gen = torch.Generator().manual_seed(1)
    prediction, target = (
        torch.randn(10, 3, generator=gen),
        torch.randint(0, 3, (10,), generator=gen),
    )
    summed = [
        lambda p, t: F.cross_entropy(p, t, reduction="sum"),
        functools.partial(F.cross_entropy, reduction="sum"),
        lambda p, t: 0.5 * (p - F.one_hot(t, 3)).pow(2).sum(),
    ]
    for loss in summed:
        with pytest.raises(ValueError, match="loss_fn returns a sum .*Divide by the number"):
            probe_mean_loss(loss, prediction, target)
    # Means pass: torch's, a lambda and a partial.
    for loss in (
        nn.CrossEntropyLoss(),
        lambda p, t: F.cross_entropy(p, t),
        functools.partial(F.cross_entropy, label_smoothing=0.1),
        nn.CrossEntropyLoss(weight=torch.tensor([1.0, 10.0, 2.0]), ignore_index=1),
    ):
        probe_mean_loss(loss, prediction, target)


def test_probe_refuses_callables_whose_normalizer_is_hidden():
    gen = torch.Generator().manual_seed(2)
    prediction = torch.randn(12, 2, generator=gen, dtype=torch.float64)
    target = torch.tensor([0, 1, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0])
    w = torch.tensor([1.0, 10.0], dtype=torch.float64)
    hidden = [
        functools.partial(F.cross_entropy, weight=w),
        lambda p, t: F.cross_entropy(p, t, ignore_index=0),
    ]
    for loss in hidden:
        with pytest.raises(ValueError, match="not normalized by the number of samples"):
            probe_mean_loss(loss, prediction, target, name="loss_fn")
    # The same, told its normalizer, passes.
    module = nn.CrossEntropyLoss(weight=w)
    check_additive(module, prediction, target)


def test_as_loss_names_modules_and_refusals():
    assert isinstance(as_loss("half_mse"), HalfMSELoss)
    assert isinstance(as_loss("MSE"), MSELossForwardAD)
    assert isinstance(as_loss(nn.MSELoss()), MSELossForwardAD)
    assert isinstance(as_loss("cross_entropy"), nn.CrossEntropyLoss)
    assert isinstance(as_loss("bce_with_logits"), nn.BCEWithLogitsLoss)
    ce = nn.CrossEntropyLoss(weight=torch.ones(3))
    assert as_loss(ce) is ce
    with pytest.raises(ValueError, match="criterion must be one of"):
        as_loss("hinge", name="criterion")
    with pytest.raises(ValueError, match="loss_fn must be a callable"):
        as_loss(3.0)
    for reduction in ("sum", "none"):
        with pytest.raises(ValueError, match=f"reduction='{reduction}'.*reduction='mean'"):
            as_loss(nn.BCEWithLogitsLoss(reduction=reduction))


def test_forward_ad_rewrites_equal_torchs_losses():
    gen = torch.Generator().manual_seed(3)
    out, t = torch.randn(9, 2, generator=gen).double(), torch.rand(9, 2, generator=gen).double()
    assert float(MSELossForwardAD()(out, t)) == pytest.approx(float(nn.MSELoss()(out, t)), 1e-14)
    pw, w = torch.tensor([3.0, 0.5]).double(), torch.tensor([2.0, 1.0]).double()
    for kwargs in ({}, {"pos_weight": pw}, {"weight": w, "pos_weight": pw}):
        torch_loss = nn.BCEWithLogitsLoss(**kwargs)
        mine = BCEWithLogitsForwardAD.like(torch_loss)
        assert float(mine(20 * out, t)) == pytest.approx(float(torch_loss(20 * out, t)), 1e-13)


def test_as_tensor_pair_converts_and_refuses():
    X, y = as_tensor_pair((np.ones((4, 2)), np.ones(4)), "train_data", dtype=torch.float32)
    assert X.dtype == y.dtype == torch.float32 and X.shape == (4, 2)
    X, y = as_tensor_pair([torch.ones(3, 1), torch.tensor([0, 1, 2])], "val_data")
    assert y.dtype == torch.int64
    bad = np.ones((4, 2))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"train_data \(X\) contains NaN \(1 of 8"):
        as_tensor_pair((bad, np.ones(4)), "train_data")
    with pytest.raises(ValueError, match=r"val_data \(y\) contains inf"):
        as_tensor_pair((np.ones((2, 1)), np.array([1.0, np.inf])), "val_data")
    with pytest.raises(ValueError, match="train_data: X of shape .* first"):
        as_tensor_pair((np.ones((4, 2)), np.ones(3)), "train_data")
    with pytest.raises(ValueError, match="train_data is empty"):
        as_tensor_pair((np.ones((0, 2)), np.ones(0)), "train_data")
    with pytest.raises(ValueError, match="train_data must be an \\(X, y\\) pair"):
        as_tensor_pair(np.ones((4, 2)), "train_data")
    with pytest.raises(ValueError, match="train_data: X must be a torch.Tensor or numpy"):
        as_tensor_pair(([[1.0]], [1.0]), "train_data")
    with pytest.raises(ValueError, match="must hold numbers"):
        as_tensor_pair((np.array(["a"]), np.ones(1)), "train_data")


def test_check_finite_and_target_shape():
    check_finite(torch.tensor([1, 2]), "y")
    with pytest.raises(ValueError, match="v contains NaN and inf"):
        check_finite(torch.tensor([float("nan"), float("inf")]), "v")
    # (N, 1) predictions against (N,) targets: MSE would broadcast to (N, N).
    with pytest.raises(ValueError, match=r"train_data: .*\(5, 1\).*\(5,\).*\(5, 5\)"):
        check_target_shape(torch.zeros(5, 1), torch.zeros(5))
    with pytest.raises(ValueError, match="targets y have shape"):
        check_target_shape(torch.zeros(5, 3), torch.zeros(5, 1), loss_fn=nn.MSELoss())
    check_target_shape(torch.zeros(5, 3), torch.zeros(5, 1))  # custom loss: its business
    check_target_shape(
        torch.zeros(5, 3), torch.tensor([0, 1, 2, 0, 1]), loss_fn=nn.CrossEntropyLoss()
    )
    check_target_shape(torch.zeros(5, 1), torch.zeros(5, 1), loss_fn=nn.MSELoss())


def test_as_float_and_as_int():
    assert as_float(3, "x") == 3.0 and isinstance(as_float(np.float32(2.5), "x"), float)
    assert as_float(torch.tensor(0.25), "x") == 0.25
    for bad in ("0.1", True, np.bool_(False), float("nan"), float("inf"), None, [1.0]):
        with pytest.raises(ValueError, match="alpha must be"):
            as_float(bad, "alpha")
    with pytest.raises(ValueError, match="lr must be > 0"):
        as_float(0.0, "lr", low=0, low_open=True)
    assert as_float(0.0, "lr", low=0) == 0.0
    with pytest.raises(ValueError, match="p must be <= 1"):
        as_float(1.5, "p", high=1)
    assert as_int(4.0, "k") == 4 and as_int(np.int32(7), "k", low=7) == 7
    for bad in (2.5, True, "3", float("nan")):
        with pytest.raises(ValueError, match="k must be"):
            as_int(bad, "k")
    with pytest.raises(ValueError, match="k must be >= 1"):
        as_int(0, "k", low=1)
