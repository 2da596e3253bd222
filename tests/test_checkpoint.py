"""Crash-safe checkpoints: atomic writes, safe loading, bit-identical resume, SIGKILL."""

from __future__ import annotations

import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import decaylab.checkpoint as ckpt_module
from decaylab._checks import ConvergenceWarning
from decaylab.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from decaylab.early_stopping import EarlyStopping
from decaylab.regularize import L1, ElasticNet
from decaylab.training import fit, half_mse

WORKER = Path(__file__).with_name("_train_worker.py")


# ----------------------------------------------------------------------------- atomic save


def test_save_is_fsynced_then_renamed_then_directory_fsynced(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src, dst):
        assert Path(src).parent == Path(dst).parent  # the temporary is in the same directory
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt_module.os, "fsync", fsync)
    monkeypatch.setattr(ckpt_module.os, "replace", replace)
    save_checkpoint({"format": CHECKPOINT_FORMAT, "w": torch.arange(3.0)}, tmp_path / "c.pt")
    assert events == ["fsync-file", "replace", "fsync-dir"]
    assert load_checkpoint(tmp_path / "c.pt")["w"].tolist() == [0.0, 1.0, 2.0]


def test_crash_during_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.pt"
    save_checkpoint({"format": CHECKPOINT_FORMAT, "step": 1}, target)

    def torn_save(obj, handle):
        handle.write(b"PK\x03\x04 half a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_module.torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"format": CHECKPOINT_FORMAT, "step": 2}, target)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # temp removed


def test_torn_file_and_foreign_files_are_rejected(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"format": CHECKPOINT_FORMAT, "w": torch.zeros(1000)}, path)
    path.write_bytes(path.read_bytes()[:2000])  # torn: what a non-atomic writer leaves
    with pytest.raises(CheckpointError, match="could not be read"):
        load_checkpoint(tmp_path)
    path.write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path)
    torch.save({"weights": torch.ones(2)}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="not a decaylab checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- malicious files


class _SystemPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _OpenPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("payload_cls", [_SystemPayload, _OpenPayload])
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path, payload_cls, writer):
    marker = tmp_path / "pwned"
    ck_dir = tmp_path / "ck"
    ck_dir.mkdir()
    # It looks like a decaylab checkpoint on the outside.
    state = {"format": CHECKPOINT_FORMAT, "version": 1, "evil": payload_cls(marker)}
    path = ck_dir / "checkpoint.pt"
    if writer == "torch.save":
        torch.save(state, path)
    else:
        with open(path, "wb") as handle:
            pickle.dump(state, handle)
    assert not marker.exists()

    with pytest.raises(UnsafeCheckpointError, match="not a safe checkpoint"):
        load_checkpoint(path)
    model = nn.Linear(2, 1)
    with pytest.raises(ValueError, match="checkpoint_dir.*not a safe checkpoint"):
        fit(
            model,
            half_mse,
            (torch.zeros(4, 2), torch.zeros(4)),
            steps=3,
            checkpoint_dir=ck_dir,
            resume=True,
            progress=False,
        )
    assert not marker.exists()

    if writer == "pickle.dump" and payload_cls is _OpenPayload:
        # Positive control: an unsafe loader would have run the payload.
        with open(path, "rb") as handle:
            pickle.load(handle)["evil"].close()
        assert marker.exists()


# ----------------------------------------------------------------------------- resume


def _regression(n=48, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.tanh(X @ torch.linspace(-1, 1, d, dtype=torch.float64)) + 0.1 * torch.randn(
        n, generator=g, dtype=torch.float64
    )
    return X, y


def _mlp(d=5):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Dropout(0.25), nn.Linear(8, 1)).double()


CONFIGS = {
    "sgd-momentum-minibatch-dropout-es": dict(
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        batch_size=10,
        weight_decay=1e-2,
        early_stopping="val",
        eval_every=4,
    ),
    "adam-minibatch-elasticnet": dict(
        optimizer="adam",
        lr=0.01,
        batch_size=7,
        penalty=ElasticNet(1e-2, 0.5),
        eval_every=3,
    ),
    "adamw-l1-prox": dict(optimizer="adamw", lr=0.01, weight_decay=0.1, penalty=L1(1e-2)),
    "fista-auto-l1": dict(optimizer="fista", lr="auto", penalty=L1(1e-2), eval_every=5),
    "sgd-decoupled-epochs": dict(
        optimizer="sgd", lr=0.05, batch_size=20, weight_decay=0.1, decoupled=True, epochs=15
    ),
}


def _run(config, checkpoint_dir, *, resume=False, crash_after=None):
    X, y = _regression()
    model = _mlp()
    kwargs = dict(config)
    calls = {"n": 0}

    def loss_fn(prediction, target):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if crash_after is not None and calls["n"] > crash_after:
                raise RuntimeError("simulated crash")
        return half_mse(prediction, target)

    if kwargs.pop("early_stopping", None):
        kwargs["early_stopping"] = EarlyStopping(patience=1000)
    if "epochs" not in kwargs:
        kwargs["steps"] = 40
    history = fit(
        model,
        loss_fn,
        (X[:40], y[:40]),
        val_data=(X[40:], y[40:]),
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=6,
        resume=resume,
        seed=7,
        record_every=5,
        progress=False,
        **kwargs,
    )
    return model, history


def _assert_same_run(a, b):
    (model_a, hist_a), (model_b, hist_b) = a, b
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert list(state_a) == list(state_b)
    for name in state_a:
        ta, tb = state_a[name], state_b[name]
        assert torch.equal(ta, tb), name
    assert hist_a == hist_b


@pytest.mark.filterwarnings("ignore::decaylab._checks.TheoryWarning")
# Dropout makes FISTA's line-search objective random, so fista-auto-l1 warns that the search
# gave up (the flag is tested in test_training_parts.py); only the resume is under test here.
@pytest.mark.filterwarnings("ignore::decaylab._checks.ConvergenceWarning")
@pytest.mark.parametrize("name", list(CONFIGS))
def test_resume_after_crash_is_bit_identical(tmp_path, name):
    config = CONFIGS[name]
    reference = _run(config, tmp_path / "ref")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(config, tmp_path / "crashed", crash_after=23)
    saved = load_checkpoint(tmp_path / "crashed")
    assert not saved["finished"] and 0 < saved["step"] < reference[1].steps_done
    resumed = _run(config, tmp_path / "crashed", resume=True)
    _assert_same_run(resumed, reference)
    # The reference run did not just stand still.
    assert reference[1].train_loss[-1] < reference[1].train_loss[0]


def test_resume_finished_run_and_extend_it(tmp_path):
    X, y = _regression()
    config = dict(
        optimizer="sgd",
        lr=0.05,
        momentum=0.5,
        batch_size=8,
        eval_every=5,
        seed=1,
        record_every=5,
        progress=False,
        early_stopping=None,
    )

    def run(steps, directory, resume=False):
        model = _mlp()
        hist = fit(
            model, half_mse, (X, y), steps=steps, checkpoint_dir=directory, resume=resume, **config
        )
        return model, hist

    long = run(40, tmp_path / "long")
    short = run(20, tmp_path / "short")
    again = run(20, tmp_path / "short", resume=True)  # finished: nothing more to do
    _assert_same_run(again, short)
    extended = run(40, tmp_path / "short", resume=True)
    _assert_same_run(extended, long)
    with pytest.raises(ValueError, match="steps"):
        run(10, tmp_path / "long", resume=True)


def test_resume_with_changed_settings_warns(tmp_path):
    X, y = _regression()
    fit(_mlp(), half_mse, (X, y), steps=5, lr=0.05, checkpoint_dir=tmp_path, progress=False)
    with pytest.warns(UserWarning, match="lr"):
        fit(
            _mlp(),
            half_mse,
            (X, y),
            steps=10,
            lr=0.01,
            checkpoint_dir=tmp_path,
            resume=True,
            progress=False,
        )


def test_resume_refuses_empty_missing_and_foreign_directories(tmp_path):
    X, y = _regression()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="checkpoint_dir.*no checkpoint"):
        fit(_mlp(), half_mse, (X, y), steps=5, checkpoint_dir=empty, resume=True, progress=False)
    with pytest.raises(ValueError, match="checkpoint_dir.*does not exist"):
        fit(
            _mlp(),
            half_mse,
            (X, y),
            steps=5,
            checkpoint_dir=tmp_path / "nope",
            resume=True,
            progress=False,
        )
    other = tmp_path / "other"
    fit(nn.Linear(5, 1).double(), half_mse, (X, y), steps=3, checkpoint_dir=other, progress=False)
    with pytest.raises(CheckpointError, match="checkpoint_dir.*another model"):
        fit(_mlp(), half_mse, (X, y), steps=5, checkpoint_dir=other, resume=True, progress=False)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    torch.save(_mlp().state_dict(), foreign / "checkpoint.pt")  # a bare state dict
    with pytest.raises(ValueError, match="checkpoint_dir.*not a decaylab checkpoint"):
        fit(_mlp(), half_mse, (X, y), steps=5, checkpoint_dir=foreign, resume=True, progress=False)


def test_stale_temporary_from_killed_save_is_cleaned_up(tmp_path):
    X, y = _regression()
    fit(_mlp(), half_mse, (X, y), steps=5, checkpoint_dir=tmp_path, progress=False)
    (tmp_path / ".checkpoint-abc123.tmp").write_bytes(b"half written")
    fit(_mlp(), half_mse, (X, y), steps=8, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


# ----------------------------------------------------------------------------- non-finite


def test_non_finite_loss_keeps_last_good_checkpoint(tmp_path):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 3, generator=g)
    y = X @ torch.tensor([1.0, 2.0, -1.0])
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    es = EarlyStopping(monitor="train_loss", patience=10_000)
    with pytest.warns(ConvergenceWarning, match="non-finite"):
        hist = fit(
            model,
            half_mse,
            (X, y),
            lr=5.0,
            steps=10_000,
            eval_every=1,
            early_stopping=es,
            checkpoint_dir=tmp_path,
            checkpoint_every=5,
            progress=False,
        )
    assert hist.stop_reason == "non-finite"
    assert not math.isfinite(hist.train_loss[-1])
    saved = load_checkpoint(tmp_path)
    assert not saved["finished"]
    assert hist.steps_done - 5 <= saved["step"] <= hist.steps_done  # the last good one
    assert all(torch.isfinite(t).all() for t in saved["model"].values())
    # Restore-best put the best finite weights back (best train loss was at step 0: lr diverges).
    assert hist.best_step == 0 and all(torch.isfinite(p).all() for p in model.parameters())


# ----------------------------------------------------------------------------- SIGKILL


def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path):
    import _train_worker as worker

    ck_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(ck_dir), "--sleep", "0.02"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not (ck_dir / "checkpoint.pt").exists():
            if proc.poll() is not None:
                pytest.fail(f"worker exited early: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("worker wrote no checkpoint within 60 s")
            time.sleep(0.005)
        time.sleep(0.05)  # let it run on, possibly into the next save
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    saved = load_checkpoint(ck_dir)
    assert not saved["finished"] and 0 < saved["step"] < worker.STEPS
    assert saved["step"] % worker.CHECKPOINT_EVERY == 0

    resumed = worker.train(ck_dir, resume=True)
    reference = worker.train(tmp_path / "reference")
    _assert_same_run(resumed, reference)
    assert reference[1].steps_done == worker.STEPS
    # Compare the raw final weights too (the models hold the restored best weights).
    assert torch.equal(resumed[1].snapshots[-1][1], reference[1].snapshots[-1][1])
