"""LocalExecutor: order kept, each point cached by key, reused on rerun; the phase cache
ignores a result stored under another fingerprint."""

from __future__ import annotations

import pytest
import torch

from decaylab.executors import LocalExecutor
from decaylab.study.cache import PhaseCache, fingerprint

CALLS: list[int] = []


def square(x: int) -> dict:
    CALLS.append(x)
    return {"y": torch.tensor(float(x * x))}


def test_points_cached_and_reused(tmp_path):
    CALLS.clear()
    seen = []
    ex = LocalExecutor(tmp_path, progress=lambda label, done, total: seen.append((done, total)))
    out = ex.map(square, [{"x": 3}, {"x": 1}], keys=["a", "b"], label="sq")
    assert [float(r["y"]) for r in out] == [9.0, 1.0] and CALLS == [3, 1]
    assert seen == [(1, 2), (2, 2)]
    again = LocalExecutor(tmp_path).map(square, [{"x": 3}, {"x": 2}], keys=["a", "c"])
    assert [float(r["y"]) for r in again] == [9.0, 4.0] and CALLS == [3, 1, 2]
    with pytest.raises(ValueError, match="keys has 1 entries but calls has 2"):
        ex.map(square, [{"x": 1}, {"x": 2}], keys=["a"])


def test_phase_cache_fingerprint(tmp_path):
    cache = PhaseCache(tmp_path)
    fp = fingerprint({"l2": [0.1]}, "task")
    assert fp != fingerprint({"l2": [0.2]}, "task")
    cache.save("l2", fp, {"w": torch.ones(2)})
    assert torch.equal(cache.load("l2", fp)["w"], torch.ones(2))
    assert cache.load("l2", fingerprint({"l2": [0.2]}, "task")) is None
    assert PhaseCache(tmp_path, fresh=True).load("l2", fp) is None
    (tmp_path / "l1.pt").write_bytes(b"torn file")
    assert cache.load("l1", fp) is None
