"""Tests for decaylab.early_stopping.EarlyStopping.

Expected stop steps are worked out by hand in comments (an explicit reading of the rules), and a
property test compares against a differently formulated reference (running minimum).
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from decaylab.early_stopping import EarlyStopping, StopReason

LOSSES = [10, 9, 8, 9, 8.9, 8.8, 8.7]


def run(es: EarlyStopping, values, model=None, steps=None):
    """Feed values until the first True; return the index of that check (or None)."""
    for i, v in enumerate(values):
        kwargs = {} if steps is None else {"step": steps[i]}
        if es.update(v, model, **kwargs):
            return i
    return None


# --------------------------------------------------------------------------- patience


# Hand reading of [10, 9, 8, 9, 8.9, 8.8, 8.7], min mode, min_delta=0:
#   i=0: 10 < inf  -> improve, best=10, wait=0
#   i=1: 9  < 10   -> improve, best=9,  wait=0
#   i=2: 8  < 9    -> improve, best=8,  wait=0
#   i=3: 9  < 8 ?  no -> wait=1
#   i=4: 8.9 < 8 ? no -> wait=2
#   i=5: 8.8 < 8 ? no -> wait=3
#   i=6: 8.7 < 8 ? no -> wait=4
# Stop at the first non-improving check with wait >= patience:
#   patience 0 -> i=3 (wait 1 >= 0), patience 1 -> i=3 (wait 1 >= 1),
#   patience 2 -> i=4, patience 3 -> i=5, patience 4 -> i=6, patience 5 -> never.
@pytest.mark.parametrize(
    ("patience", "expected_stop"),
    [(0, 3), (1, 3), (2, 4), (3, 5), (4, 6), (5, None)],
)
def test_patience_on_reference_sequence(patience, expected_stop):
    es = EarlyStopping(patience=patience)
    stop = run(es, LOSSES)
    assert stop == expected_stop
    assert es.best == 8 and es.best_step == 2
    if expected_stop is None:
        assert not es.should_stop and es.reason is None and es.stopped_step is None
        assert es.wait == 4
    else:
        assert es.should_stop and es.reason is StopReason.PATIENCE
        assert es.stopped_step == expected_stop
        assert es.wait == max(patience, 1)


def test_patience_zero_does_not_stop_on_improving_checks():
    es = EarlyStopping(patience=0)
    assert run(es, [5, 4, 3, 2, 1]) is None
    assert es.best == 1 and es.wait == 0


def _reference_stop(values, patience):
    """Independent formulation (min mode, min_delta 0): a check improves iff it is strictly
    below the minimum of all earlier values; stop where the run of consecutive non-improving
    checks first reaches max(patience, 1)."""
    need = max(patience, 1)
    run_length = 0
    for i, v in enumerate(values):
        improved = i == 0 or v < min(values[:i])
        run_length = 0 if improved else run_length + 1
        if run_length >= need:
            return i
    return None


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=25),
    patience=st.integers(min_value=0, max_value=5),
)
def test_patience_matches_running_minimum_reference(values, patience):
    es = EarlyStopping(patience=patience)
    assert run(es, values) == _reference_stop(values, patience)
    stop = len(values) if es.stopped_step is None else es.stopped_step + 1
    seen = values[:stop]
    assert es.best == min(seen)
    assert es.best_step == seen.index(min(seen))  # first occurrence: ties do not improve


def test_calls_after_stop_change_nothing():
    es = EarlyStopping(patience=1)
    assert run(es, [3, 4]) == 1
    before = es.state_dict()
    assert es.update(0.0) is True  # far better, but the run is over
    after = es.state_dict()
    for key in ("best", "best_step", "wait", "stopped_step", "reason"):
        assert after[key] == before[key]


def test_reset_forgets_progress():
    es = EarlyStopping(patience=1)
    run(es, [3, 4])
    es.reset()
    assert (es.best, es.best_step, es.wait, es.stopped_step, es.reason, es.should_stop) == (
        None,
        None,
        0,
        None,
        None,
        False,
    )
    assert run(es, [3, 2, 1]) is None and es.best_step == 2


# --------------------------------------------------------------------------- min_delta, max mode


def test_min_delta_is_strict_and_measured_from_best():
    es = EarlyStopping(patience=5, min_delta=0.5)
    # 10 best; 9.5 < 10-0.5=9.5? no (equal) -> wait 1; 9.75 -> wait 2;
    # 9.25 < 9.5 -> improve (best 9.25, step 3); 9.0 < 9.25-0.5=8.75? no -> wait 1
    for v in [10.0, 9.5, 9.75, 9.25, 9.0]:
        es.update(v)
    assert es.best == 9.25 and es.best_step == 3 and es.wait == 1


def test_max_mode_mirrors_min_mode():
    es = EarlyStopping(mode="max", patience=2)
    # 0.5 best; 0.625 > 0.5 improve; 0.625 tie -> wait 1; 0.5 -> wait 2 >= 2 -> stop at 3
    assert run(es, [0.5, 0.625, 0.625, 0.5, 0.875]) == 3
    assert es.best == 0.625 and es.best_step == 1 and es.reason is StopReason.PATIENCE

    es = EarlyStopping(mode="max", patience=5, min_delta=0.5)
    # 1 best; 1.5 > 1+0.5? no (equal) -> wait 1; 1.75 > 1.5 -> best (step 2);
    # 2.0 > 1.75+0.5? no -> wait 1
    for v in [1.0, 1.5, 1.75, 2.0]:
        es.update(v)
    assert es.best == 1.75 and es.best_step == 2 and es.wait == 1


def test_max_mode_matches_min_mode_on_negated_values():
    rng = np.random.default_rng(0)
    for _ in range(50):
        values = rng.integers(0, 5, size=15).astype(float).tolist()
        a = EarlyStopping(mode="min", patience=2, min_delta=0.5)
        b = EarlyStopping(mode="max", patience=2, min_delta=0.5)
        assert run(a, values) == run(b, [-v for v in values])
        assert a.best_step == b.best_step and a.wait == b.wait


# --------------------------------------------------------------------------- baseline


def test_baseline_never_beaten_stops_without_best_and_restore_warns():
    model = nn.Linear(2, 1)
    es = EarlyStopping(patience=3, baseline=4.0)
    # every check is 5.0 (never < 4.0): wait 1, 2, 3 -> stop at index 2
    assert run(es, [5.0] * 6, model) == 2
    assert es.best is None and es.best_step is None and es.reason is StopReason.PATIENCE
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="baseline"):
        assert es.on_train_end(model) is False
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    with pytest.raises(RuntimeError, match="baseline"):
        es.restore(model)


def test_baseline_uses_min_delta_and_then_counts_as_best():
    es = EarlyStopping(patience=5, baseline=4.0, min_delta=0.5)
    # 3.5 < 4-0.5=3.5? no -> wait 1; 3.25 < 3.5 -> first best (step 1);
    # 3.0 < 2.75? no -> wait 1; 2.5 < 2.75 -> best (step 3)
    for v in [3.5, 3.25, 3.0, 2.5]:
        es.update(v)
    assert es.best == 2.5 and es.best_step == 3 and es.wait == 0


# --------------------------------------------------------------------------- start_from, step=


def test_start_from_ignores_early_checks():
    values = [1, 2, 3, 4, 3.5, 3.6, 3.7]
    # without warm-up: best 1 at 0; 2 -> wait 1; 3 -> wait 2 -> stop at 2
    assert run(EarlyStopping(patience=2), values) == 2
    es = EarlyStopping(patience=2, start_from=3)
    # checks 0..2 ignored; 4 best (3); 3.5 best (4); 3.6 wait 1; 3.7 wait 2 -> stop at 6
    assert run(es, values) == 6
    assert es.best == 3.5 and es.best_step == 4


def test_explicit_step_numbers():
    es = EarlyStopping(patience=1, start_from=25)
    # steps 0, 10, 20 are warm-up; step 30 first best; step 40 worse -> stop at step 40
    assert run(es, [0.0, 0.0, 0.0, 2.0, 3.0], steps=[0, 10, 20, 30, 40]) == 4
    assert es.best_step == 30 and es.stopped_step == 40


def test_non_finite_stops_even_during_warm_up():
    es = EarlyStopping(patience=1, start_from=10)
    assert es.update(1.0) is False
    assert es.update(math.nan) is True
    assert es.reason is StopReason.NON_FINITE and es.stopped_step == 1 and es.best is None


def test_thresholds_are_ignored_during_warm_up():
    es = EarlyStopping(start_from=2, stopping_threshold=1.0, divergence_threshold=100.0)
    assert es.update(0.5) is False and es.update(500.0) is False
    assert es.update(0.5) is True and es.reason is StopReason.THRESHOLD


# --------------------------------------------------------------------------- non-finite


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_stops_at_once(bad):
    es = EarlyStopping(patience=10)
    assert run(es, [3.0, 2.0, bad, 1.0]) == 2
    assert es.reason is StopReason.NON_FINITE and es.stopped_step == 2
    assert es.best == 2.0 and es.best_step == 1 and es.wait == 0


def test_nan_is_a_non_improvement_when_check_finite_false():
    es = EarlyStopping(patience=2, check_finite=False)
    # 3 best; nan -> wait 1; 1.5 best (step 2); nan -> wait 1; nan -> wait 2 -> stop at 4
    assert run(es, [3.0, math.nan, 1.5, math.nan, math.nan]) == 4
    assert es.reason is StopReason.PATIENCE and es.best == 1.5 and es.best_step == 2


def test_nan_is_not_a_threshold_when_check_finite_false():
    es = EarlyStopping(
        patience=5, check_finite=False, stopping_threshold=1.0, divergence_threshold=10.0
    )
    assert es.update(math.nan) is False and es.wait == 1


def test_tensor_and_numpy_values_accepted():
    es = EarlyStopping(patience=1)
    assert es.update(torch.tensor(2.0)) is False
    assert es.update(np.float32(1.5)) is False
    assert es.update(torch.tensor([3.0])) is True
    assert es.best == 1.5


# --------------------------------------------------------------------------- thresholds


def test_stopping_threshold_reached_or_equalled():
    model = nn.Linear(1, 1, bias=False)
    es = EarlyStopping(patience=10, stopping_threshold=2.0)
    values = [3.0, 2.5, 2.0, 1.0]
    stop = None
    for i, v in enumerate(values):
        with torch.no_grad():
            model.weight.fill_(float(i))
        if es.update(v, model):
            stop = i
            break
    # 3.0, 2.5 above the threshold; 2.0 <= 2.0 -> stop at 2, recorded as best first
    assert stop == 2 and es.reason is StopReason.THRESHOLD
    assert es.best == 2.0 and es.best_step == 2
    with torch.no_grad():
        model.weight.fill_(99.0)
    assert es.on_train_end(model) and model.weight.item() == 2.0


def test_divergence_threshold_strictly_worse():
    es = EarlyStopping(patience=10, divergence_threshold=10.0)
    # 3 best; 10 is not worse than 10 (wait 1); 10.5 > 10 -> stop at 2
    assert run(es, [3.0, 10.0, 10.5]) == 2
    assert es.reason is StopReason.DIVERGENCE and es.best == 3.0 and es.wait == 2


def test_thresholds_in_max_mode():
    es = EarlyStopping(mode="max", stopping_threshold=0.9)
    assert run(es, [0.5, 0.8, 0.9]) == 2 and es.reason is StopReason.THRESHOLD
    es = EarlyStopping(mode="max", divergence_threshold=0.1)
    assert run(es, [0.5, 0.1, 0.05]) == 2 and es.reason is StopReason.DIVERGENCE


def test_threshold_takes_priority_over_patience():
    es = EarlyStopping(patience=0, divergence_threshold=5.0)
    # 1 best; 6 is non-improving (patience rule) and worse than 5 (divergence): divergence wins
    assert run(es, [1.0, 6.0]) == 1 and es.reason is StopReason.DIVERGENCE


# --------------------------------------------------------------------------- restore best


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)


def _set_weights(model: nn.Module, step: int) -> None:
    gen = torch.Generator().manual_seed(1000 + step)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=gen))
            else:
                t.fill_(step)  # BatchNorm's num_batches_tracked


def test_restore_best_after_a_run_without_stop():
    model = _Tiny()
    val = [5.0, 4.0, 3.0, 3.5, 3.25, 3.125, 3.0625]
    es = EarlyStopping(patience=10)
    snapshots = []
    for step, v in enumerate(val):
        _set_weights(model, step)
        snapshots.append({k: t.clone() for k, t in model.state_dict().items()})
        assert es.update(v, model) is False
    best_step = int(np.argmin(val))  # independent: 2
    assert es.best_step == best_step == 2
    assert es.on_train_end(model) is True
    restored = model.state_dict()
    for k, t in snapshots[best_step].items():
        assert torch.equal(restored[k], t), k
    assert not torch.equal(restored["fc.weight"], snapshots[-1]["fc.weight"])


def test_best_copy_is_on_cpu_and_detached_from_the_model():
    model = _Tiny()
    es = EarlyStopping()
    es.update(1.0, model)
    assert es.best_state is not None
    model_sd = model.state_dict()
    assert set(es.best_state) == set(model_sd)
    for k, t in es.best_state.items():
        assert t.device.type == "cpu"
        assert not t.requires_grad
        assert t.data_ptr() != model_sd[k].data_ptr()
    kept = es.best_state["fc.weight"].clone()
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    assert torch.equal(es.best_state["fc.weight"], kept)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_best_copy_on_cpu_and_restored_to_cuda():
    model = _Tiny().cuda()
    es = EarlyStopping()
    es.update(1.0, model)
    assert all(t.device.type == "cpu" for t in es.best_state.values())
    expected = {k: t.detach().cpu().clone() for k, t in model.state_dict().items()}
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    es.on_train_end(model)
    for k, t in model.state_dict().items():
        assert t.device.type == "cuda"
        assert torch.equal(t.cpu(), expected[k])


def test_improvement_without_model_drops_stale_copy_and_warns():
    model = nn.Linear(1, 1)
    es = EarlyStopping(patience=5)
    es.update(2.0, model)
    es.update(1.0)  # new best, but no weights given for it
    assert es.best_step == 1 and es.best_state is None
    with pytest.warns(UserWarning, match="not given the model"):
        assert es.on_train_end(model) is False


def test_restore_best_false_keeps_nothing_and_does_not_warn():
    model = nn.Linear(1, 1)
    es = EarlyStopping(restore_best=False)
    es.update(1.0, model)
    assert es.best_state is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert es.on_train_end(model) is False


# --------------------------------------------------------------------------- state dict


def test_state_dict_round_trip_through_torch_save_weights_only():
    model = _Tiny()
    values = [5.0, 4.0, 4.5, 3.0, 3.5, 3.6, 3.7, 2.0]
    a = EarlyStopping(patience=3, min_delta=0.1)
    for step, v in enumerate(values[:5]):
        _set_weights(model, step)
        a.update(v, model)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    b = EarlyStopping(patience=3, min_delta=0.1)
    b.load_state_dict(loaded)
    for key in ("best", "best_step", "wait", "should_stop", "stopped_step", "reason"):
        assert getattr(b, key) == getattr(a, key), key
    for k, t in a.best_state.items():
        assert torch.equal(b.best_state[k], t)
    for step, v in enumerate(values[5:], start=5):
        _set_weights(model, step)
        assert a.update(v, model) == b.update(v, model)
    # 3.0 best at 3; 3.5 wait 1; 3.6 wait 2; 3.7 wait 3 -> stop at 6 in both
    assert a.stopped_step == b.stopped_step == 6
    assert a.reason is b.reason is StopReason.PATIENCE


def test_state_dict_with_reason_is_plain_data():
    es = EarlyStopping(patience=0)
    run(es, [1.0, 2.0])
    sd = es.state_dict()
    assert sd["reason"] == "patience" and type(sd["reason"]) is str
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    fresh = EarlyStopping(patience=0)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.reason is StopReason.PATIENCE and fresh.should_stop
    assert fresh.update(0.0) is True


def test_load_state_dict_rejects_other_monitor_or_mode_or_garbage():
    sd = EarlyStopping(monitor="val_loss").state_dict()
    with pytest.raises(ValueError, match="monitor"):
        EarlyStopping(monitor="train_loss").load_state_dict(sd)
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="max").load_state_dict(sd)
    with pytest.raises(ValueError, match="missing keys"):
        EarlyStopping().load_state_dict({"best": 1.0})


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"patience": -1}, "patience"),
        ({"patience": 1.5}, "patience"),
        ({"mode": "auto"}, "mode"),
        ({"min_delta": -0.1}, "min_delta"),
        ({"start_from": -1}, "start_from"),
        ({"baseline": math.nan}, "baseline"),
        ({"stopping_threshold": math.inf}, "stopping_threshold"),
        ({"stopping_threshold": 5.0, "divergence_threshold": 1.0}, "divergence_threshold"),
        ({"monitor": ""}, "monitor"),
        ({"restore_best": "yes"}, "restore_best"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        EarlyStopping(**kwargs)


def test_bad_values_and_steps():
    es = EarlyStopping()
    with pytest.raises(ValueError, match="value"):
        es.update(torch.ones(2))
    with pytest.raises(ValueError, match="value"):
        es.update("0.5")
    with pytest.raises(ValueError, match="step"):
        es.update(1.0, step=-1)
