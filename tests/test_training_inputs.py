"""fit's inputs (issue 13): refusals before any step, and recorded losses that equal one call.

Each refusal test checks the model is untouched (refused before any step). The recorded-loss
tests compare fit's History with the loss computed in one call on the whole data, outside fit.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from decaylab.early_stopping import EarlyStopping
from decaylab.training import Callback, fit, half_mse


def _regression(n=12):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return X, X @ torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)


def _linear(d_out=1):
    torch.manual_seed(0)
    return nn.Linear(3, d_out).double()


def _refused(match, *args, **kwargs):
    model = args[0]
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=match):
        fit(*args, progress=False, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


# ----------------------------------------------------------------------------- data


@pytest.mark.parametrize(("where", "bad"), [("X", float("nan")), ("y", float("inf"))])
def test_non_finite_training_data_is_refused_naming_train_data(where, bad):
    X, y = _regression()
    (X if where == "X" else y)[3] = bad
    _refused(r"train_data.*(NaN|inf)", _linear(), half_mse, (X, y), steps=3)


def test_non_finite_validation_data_is_refused_naming_val_data():
    X, y = _regression()
    Xv, yv = _regression(5)
    Xv[1, 2] = float("nan")
    es = EarlyStopping(patience=3)
    _refused(r"val_data.*NaN", _linear(), half_mse, (X, y), val_data=(Xv, yv), steps=3,
             early_stopping=es)  # fmt: skip


def test_numpy_arrays_train_like_tensors():
    X, y = _regression()
    a, b = _linear(), _linear()
    ha = fit(a, half_mse, (X, y), steps=5, progress=False)
    hb = fit(b, half_mse, (X.numpy(), y.numpy()), steps=5, progress=False)
    assert ha == hb and torch.equal(a.weight, b.weight)


@pytest.mark.parametrize(
    "loss_fn",
    [nn.MSELoss(), lambda p, t: ((p - t) ** 2).mean(), "mse"],
    ids=["MSELoss", "lambda", "name"],
)
def test_targets_that_would_broadcast_are_refused(loss_fn):
    """Predictions (N, 1) against targets (N,) compared pairwise: learned zero weights."""
    X, y = _regression()
    _refused(r"train_data.*shape", _linear(), loss_fn, (X, y), steps=3)
    _refused(r"val_data.*shape", _linear(), loss_fn, (X, y[:, None]), val_data=(X, y), steps=3)


def test_half_mse_reshapes_as_documented_and_learns_the_same():
    X, y = _regression()
    a, b = _linear(), _linear()
    fit(a, half_mse, (X, y), steps=20, progress=False)
    fit(b, half_mse, (X, y[:, None]), steps=20, progress=False)
    assert torch.equal(a.weight, b.weight)
    assert a.weight.abs().sum() > 0.5  # it learned something


# ----------------------------------------------------------------------------- loss and optimizer


@pytest.mark.parametrize(
    "loss_fn",
    [
        nn.BCEWithLogitsLoss(reduction="sum"),
        lambda p, t: F.binary_cross_entropy_with_logits(p, t, reduction="sum"),
        functools.partial(F.binary_cross_entropy_with_logits, reduction="sum"),
    ],
    ids=["module", "lambda", "partial"],
)
def test_sum_reduced_losses_are_refused(loss_fn):
    X, _ = _regression()
    y = (X[:, :1] > 0).double()
    _refused(r"loss_fn.*(reduction|sum)", _linear(), loss_fn, (X, y), steps=3)


def test_an_optimizer_class_is_refused_with_the_factory_spelled_out():
    X, y = _regression()
    _refused(r"optimizer.*lambda groups: SGD\(groups, lr=", _linear(), half_mse, (X, y),
             optimizer=torch.optim.SGD, lr=0.5, steps=3)  # fmt: skip


def test_loss_names_are_accepted():
    X, _ = _regression()
    y = (X[:, 0] > 0).long()
    a, b = _linear(2), _linear(2)
    fit(a, "cross_entropy", (X, y), steps=5, progress=False)
    fit(b, nn.CrossEntropyLoss(), (X, y), steps=5, progress=False)
    assert torch.equal(a.weight, b.weight)


# ----------------------------------------------------------------------------- recorded losses


def _classification(n, seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=g)
    y[::5] = -100  # ignored (CrossEntropyLoss's default ignore_index)
    return X, y


class OneCall(Callback):
    """At every evaluation: the loss of the whole set in one call, computed here."""

    def __init__(self, loss_fn, train, val):
        self.loss_fn, self.train, self.val, self.rows = loss_fn, train, val, []

    def on_eval(self, state, metrics):
        model = state.model
        was = model.training
        model.eval()
        with torch.no_grad():
            train = float(self.loss_fn(model(self.train[0]), self.train[1]))
            val = float(self.loss_fn(model(self.val[0]), self.val[1]))
        model.train(was)
        self.rows.append((metrics["train_loss"], train, metrics["val_loss"], val))


@pytest.mark.parametrize("batch_size", [4, 7, 10])
def test_recorded_losses_equal_one_call_for_weighted_ignored_cross_entropy(batch_size):
    """Class weights [1, 10, 3] and ignored targets; N=23 and 11 not multiples of the batch."""
    train, val = _classification(23, 0), _classification(11, 1)
    loss = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 10.0, 3.0], dtype=torch.float64))
    check = OneCall(loss, train, val)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    hist = fit(model, loss, train, val_data=val, batch_size=batch_size, epochs=2, lr=0.2,
               callbacks=[check], progress=False)  # fmt: skip
    assert len(check.rows) == len(hist.step) > 2
    for train_loss, want_train, val_loss, want_val in check.rows:
        assert train_loss == pytest.approx(want_train, rel=1e-13)
        assert val_loss == pytest.approx(want_val, rel=1e-13)
    assert hist.train_loss == [r[0] for r in check.rows]


def test_recorded_losses_equal_one_call_for_half_mse_minibatches():
    X, y = _regression(23)
    Xv, yv = _regression(11)
    check = OneCall(half_mse, (X, y), (Xv, yv))
    hist = fit(_linear(), half_mse, (X, y), val_data=(Xv, yv), batch_size=5, epochs=2, lr=0.1,
               callbacks=[check], progress=False)  # fmt: skip
    assert len(check.rows) == len(hist.step)
    for train_loss, want_train, val_loss, want_val in check.rows:
        assert train_loss == pytest.approx(want_train, rel=1e-13)
        assert val_loss == pytest.approx(want_val, rel=1e-13)


def test_data_whose_targets_are_all_ignored_is_refused():
    X, y = _classification(6, 0)
    y[:] = -100
    _refused(r"train_data.*ignored", _linear(3), nn.CrossEntropyLoss(), (X, y), steps=2)


def test_integer_class_labels_as_numpy_keep_their_dtype():
    X, y = _classification(10, 0)
    a, b = _linear(3), _linear(3)
    ha = fit(a, nn.CrossEntropyLoss(), (X.numpy(), y.numpy().astype(np.int64)),
             steps=2, progress=False)  # fmt: skip
    hb = fit(b, nn.CrossEntropyLoss(), (X, y), steps=2, progress=False)
    # Labels turned into floats would be read as class probabilities (or refused): the same
    # run as with the integer tensor shows they stayed class indices, -100 still ignored.
    assert ha.steps_done == 2 and ha == hb and torch.equal(a.weight, b.weight)
