"""fit's callbacks: hook order, stopping, and changing α during training.

The α-change references are independent of fit: plain ``torch.optim`` loops written here,
and two separate fit calls where the optimizer has no state to carry over.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import decaylab
from decaylab.checkpoint import load_checkpoint
from decaylab.regularize import L1, param_groups
from decaylab.training import Callback, TrainState, fit, half_mse


def _problem(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.tanh(X @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64))
    return X, y


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_start(self, state):
        self.events.append(("start", state.step))

    def on_step_end(self, state):
        self.events.append(("step", state.step))

    def on_eval(self, state, metrics):
        self.events.append(("eval", state.step))

    def on_train_end(self, state):
        self.events.append(("end", state.step))


class SwitchAt(Callback):
    """Set weight decay (or the penalty's alpha) to ``value`` at the end of step ``k``."""

    def __init__(self, k, value, what="weight_decay"):
        self.k, self.value, self.what = k, value, what

    def on_step_end(self, state):
        if state.step == self.k:
            if self.what == "weight_decay":
                state.weight_decay = self.value
            else:
                state.penalty.alpha = self.value


def test_callback_and_train_state_are_exported():
    assert decaylab.Callback is Callback and decaylab.TrainState is TrainState


def test_hooks_are_called_in_loop_order():
    rec = Recorder()
    X, y = _problem()
    fit(_net(), half_mse, (X, y), steps=5, eval_every=2, callbacks=[rec], progress=False)
    expected = [("start", 0), ("eval", 0)]
    for s in range(1, 6):
        expected.append(("step", s))
        if s % 2 == 0 or s == 5:
            expected.append(("eval", s))
    assert rec.events == expected + [("end", 5)]


def test_on_eval_sees_the_recorded_metrics_and_the_model_at_that_step():
    X, y = _problem()
    Xv, yv = _problem(9, seed=1)
    seen = []

    class Check(Callback):
        def on_eval(self, state, metrics):
            with torch.no_grad():  # an independent one-call evaluation
                train, val = half_mse(state.model(X), y), half_mse(state.model(Xv), yv)
            seen.append((metrics["train_loss"], float(train), metrics["val_loss"], float(val)))

    hist = fit(_net(), half_mse, (X, y), val_data=(Xv, yv), steps=6, eval_every=3,
               callbacks=[Check()], progress=False)  # fmt: skip
    assert len(seen) == len(hist.step) == 3
    for train, want_train, val, want_val in seen:
        assert train == pytest.approx(want_train, rel=1e-14)
        assert val == pytest.approx(want_val, rel=1e-14)


def test_stop_from_a_callback_stops_after_that_step_and_records_it():
    class StopAt3(Callback):
        def on_step_end(self, state):
            state.stop = state.step == 3

    X, y = _problem()
    hist = fit(_net(), half_mse, (X, y), steps=10, eval_every=5, callbacks=[StopAt3()],
               progress=False)  # fmt: skip
    assert hist.steps_done == 3 and hist.step == [0, 3]
    assert hist.stop_reason == "callback"


def test_lr_set_by_a_callback_applies_to_every_group():
    class Halve(Callback):
        def on_step_end(self, state):
            state.lr = state.lr / 2

    X, y = _problem()
    rec = []

    class Read(Callback):
        def on_step_end(self, state):
            rec.append([g["lr"] for g in state.optimizer.param_groups])

    fit(_net(), half_mse, (X, y), steps=3, lr=0.4, callbacks=[Halve(), Read()], progress=False)
    assert rec == [[0.2, 0.2], [0.1, 0.1], [0.05, 0.05]]


@pytest.mark.parametrize("callbacks", [Callback(), [object()], "x"])
def test_bad_callbacks_are_refused_before_training(callbacks):
    X, y = _problem()
    model = _net()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="callbacks"):
        fit(model, half_mse, (X, y), steps=2, callbacks=callbacks, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


# ----------------------------------------------------------------------------- α changes


def _torch_reference(kind, steps, k, a1, a2, lr):
    """The same training written directly with torch.optim, α switched at step k."""
    model = _net()
    X, y = _problem()
    groups = param_groups(model, a1)
    decoupled_sgd = kind == "sgd-decoupled"
    if kind.startswith("sgd"):
        opt = torch.optim.SGD(groups, lr=lr, momentum=0.9)
    elif kind == "adam":
        opt = torch.optim.Adam(groups, lr=lr)
    else:
        opt = torch.optim.AdamW(groups, lr=lr)
    decayed = opt.param_groups[0]  # param_groups puts the decayed group first
    wd = a1
    if decoupled_sgd:
        decayed["weight_decay"] = 0.0
    for s in range(steps):
        opt.zero_grad()
        loss = half_mse(model(X), y)
        loss.backward()
        if decoupled_sgd:
            with torch.no_grad():
                for p in decayed["params"]:
                    p.mul_(1.0 - lr * wd)
        opt.step()
        if s + 1 == k:
            wd = a2
            if not decoupled_sgd:
                decayed["weight_decay"] = a2
    return model


@pytest.mark.parametrize("kind", ["sgd-coupled", "sgd-decoupled", "adam", "adamw"])
def test_weight_decay_changed_by_a_callback_equals_a_torch_optim_loop(kind):
    X, y = _problem()
    model = _net()
    lr = 0.05 if kind.startswith("sgd") else 0.02
    optimizer = {"sgd-coupled": "sgd", "sgd-decoupled": "sgd"}.get(kind, kind)
    kwargs = dict(momentum=0.9) if kind.startswith("sgd") else {}
    fit(model, half_mse, (X, y), optimizer=optimizer, lr=lr, steps=12, weight_decay=0.3,
        decoupled=kind in ("sgd-decoupled", "adamw"), callbacks=[SwitchAt(5, 0.01)],
        progress=False, **kwargs)  # fmt: skip
    reference = _torch_reference(kind, 12, 5, 0.3, 0.01, lr)
    unchanged = _torch_reference(kind, 12, 5, 0.3, 0.3, lr)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-15)
    assert not torch.allclose(model[0].weight, unchanged[0].weight)  # the switch mattered


@pytest.mark.parametrize("what", ["weight_decay", "penalty"])
def test_alpha_changed_by_a_callback_equals_two_fit_calls(what):
    """Plain full-batch SGD (prox for L1) carries no state between steps: step k onwards is a
    second fit call with the new α on the weights the first call left."""
    X, y = _problem()
    kw = {"weight_decay": 0.2} if what == "weight_decay" else {"penalty": L1(0.05)}
    later = {"weight_decay": 0.02} if what == "weight_decay" else {"penalty": L1(0.005)}
    one = _net()
    hist = fit(one, half_mse, (X, y), lr=0.1, steps=10, callbacks=[SwitchAt(4, 0.02 if
               what == "weight_decay" else 0.005, what)], progress=False, **kw)  # fmt: skip
    two = _net()
    fit(two, half_mse, (X, y), lr=0.1, steps=4, progress=False, **kw)
    second = fit(two, half_mse, (X, y), lr=0.1, steps=6, progress=False, **later)
    for p, q in zip(one.parameters(), two.parameters(), strict=True):
        assert torch.equal(p, q)
    # The objective recorded after the switch uses the new α, as the second call's does.
    assert hist.objective[-1] == second.objective[-1]
    if what == "penalty":
        assert kw["penalty"].alpha == 0.05  # the caller's penalty object is not changed


def test_resume_after_a_callback_changed_alpha_is_the_uninterrupted_run(tmp_path):
    """The checkpoint carries the α in force, so a resumed run (without the callback, which
    already fired) continues with it: same weights and same recorded objective."""
    X, y = _problem()
    common = dict(lr=0.05, momentum=0.9, steps=12, weight_decay=0.3, eval_every=1,
                  checkpoint_every=3, progress=False)  # fmt: skip
    full = _net()
    ref = fit(full, half_mse, (X, y), checkpoint_dir=tmp_path / "a",
              callbacks=[SwitchAt(2, 0.01)], **common)  # fmt: skip

    class Crash(Callback):
        def on_step_end(self, state):
            if state.step == 8:
                raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated"):
        fit(_net(), half_mse, (X, y), checkpoint_dir=tmp_path / "b",
            callbacks=[SwitchAt(2, 0.01), Crash()], **common)  # fmt: skip
    saved = load_checkpoint(tmp_path / "b")
    assert saved["step"] == 6 and saved["regularization"]["weight_decay"] == 0.01
    resumed_model = _net()
    resumed = fit(resumed_model, half_mse, (X, y), checkpoint_dir=tmp_path / "b", resume=True,
                  **common)  # fmt: skip
    assert resumed == ref
    for p, q in zip(full.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(p, q)
