"""RayExecutor on a local Ray instance (2 CPUs, started once for this module).

Checked against an explicit loop in this process; a worker is killed mid-task (the point
function ``os._exit``s once) and the map still completes; an interrupted driver's rerun
reuses what was written.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from decaylab import TheoryWarning
from decaylab.checkpoint import CHECKPOINT_FORMAT, load_checkpoint

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.filterwarnings("ignore:x is two:decaylab.TheoryWarning")
from decaylab.executors.ray import RayExecutor, import_ray  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _ray_points as points  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ray_instance():  # noqa: ANN201
    if ray.is_initialized():
        ray.shutdown()
    paths = os.pathsep.join([str(HERE.parent / "src"), str(HERE)])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": paths}},
    )
    yield
    ray.shutdown()


def logged_runs(log_dir: Path) -> int:
    return len(list(log_dir.iterdir()))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )


def test_equals_loop_writes_cache_and_forwards_warnings(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()
    calls = [{"x": float(x), "log_dir": str(log)} for x in range(1, 6)]
    expected = [points.square(**c) for c in calls]
    seen: list[int] = []
    ex = RayExecutor(tmp_path / "cache", progress=lambda label, done, total: seen.append(done))
    with pytest.warns(TheoryWarning, match="x is two"):
        got = ex.map(points.square, calls, keys=[f"p{i}" for i in range(5)], label="L2")
    assert all(same(a, b) for a, b in zip(got, expected, strict=True))
    assert seen == [1, 2, 3, 4, 5] and ex.reused == 0 and not ex.started
    for i, exp in enumerate(expected):  # the local executor's format
        state = load_checkpoint(tmp_path / "cache" / f"p{i}.pt")
        assert state["format"] == CHECKPOINT_FORMAT and same(state["result"], exp)
    again = ex.map(points.square, calls, keys=[f"p{i}" for i in range(5)])
    assert ex.reused == 5 and logged_runs(log) == 10  # 5 in the loop + 5 on Ray, none again
    assert all(same(a, b) for a, b in zip(again, expected, strict=True))


def test_killed_worker_is_retried_and_map_completes(tmp_path: Path) -> None:
    log, marker = tmp_path / "log", tmp_path / "kill-me"
    log.mkdir()
    marker.touch()
    calls = [{"x": float(x), "log_dir": str(log), "marker": str(marker)} for x in range(4)]
    got = RayExecutor(tmp_path / "cache", max_retries=2).map(
        points.square, calls, keys=[f"k{i}" for i in range(4)]
    )
    assert not marker.exists()  # one attempt consumed it and died
    assert logged_runs(log) == 5  # 4 points + the killed attempt
    assert [float(r["y"]) for r in got] == [0.0, 1.0, 4.0, 9.0]


def test_interrupted_driver_rerun_reuses_written_points(tmp_path: Path) -> None:
    first, second = tmp_path / "log1", tmp_path / "log2"
    first.mkdir()
    second.mkdir()
    keys = [f"s{i}" for i in range(6)]

    def interrupt(label: str, done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    calls = [{"x": float(x), "log_dir": str(first), "sleep": 0.3} for x in range(6)]
    with pytest.raises(KeyboardInterrupt):
        RayExecutor(tmp_path / "cache", progress=interrupt).map(points.square, calls, keys=keys)
    calls = [{**c, "log_dir": str(second)} for c in calls]
    ex = RayExecutor(tmp_path / "cache")
    got = ex.map(points.square, calls, keys=keys)
    assert ex.reused >= 2
    assert logged_runs(second) == 6 - ex.reused
    assert [float(r["y"]) for r in got] == [float(x * x) for x in range(6)]


def test_function_error_is_raised_not_retried(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()
    with pytest.raises(ValueError, match="bad point 3"):
        RayExecutor(max_retries=3).map(points.fails, [{"x": 3.0, "log_dir": str(log)}])
    assert logged_runs(log) == 1


def test_tasks_use_the_drivers_thread_count() -> None:
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert RayExecutor().map(points.threads, [{}]) == [1]
        assert RayExecutor(threads=2).map(points.threads, [{}]) == [2]
    finally:
        torch.set_num_threads(previous)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        RayExecutor(max_retries=-1)
    with pytest.raises(ValueError, match="address"):
        RayExecutor(address="")
    with pytest.raises(ValueError, match="keys"):
        RayExecutor().map(points.threads, [{}], keys=["a", "b"])


def test_without_ray_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"decaylab\[ray\]"):
        import_ray()
    with pytest.raises(ImportError, match=r"decaylab\[ray\]"):
        RayExecutor()
