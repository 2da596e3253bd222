"""RayExecutor on a local Ray instance (2 CPUs, started once for this module).

Checked against an explicit loop in this process; a worker is killed mid-task (the point
function ``os._exit``s once) and the map still completes; an interrupted driver's rerun
reuses what was written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from decaylab import TheoryWarning
from decaylab.checkpoint import CHECKPOINT_FORMAT, load_checkpoint

ray = pytest.importorskip("ray")
pytestmark = [
    pytest.mark.filterwarnings("ignore:x is two:decaylab.TheoryWarning"),
    pytest.mark.usefixtures("local_ray"),  # one local Ray instance for the module (conftest)
]
from decaylab.executors.ray import RayExecutor, import_ray  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _ray_points as points  # noqa: E402


def logged_runs(log_dir: Path) -> int:
    return len(list(log_dir.iterdir()))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )


def test_equals_loop_writes_cache_and_forwards_warnings(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.mkdir()
    shift = torch.randn(3)  # one tensor shared by every call: put in the object store once
    calls = [{"x": float(x), "log_dir": str(log), "shift": shift} for x in range(1, 6)]
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


_INTERRUPTED_DRIVER = """
import sys
import ray
sys.path[:0] = sys.argv[3:]
import _ray_points as points
from decaylab.executors.ray import RayExecutor

def interrupt(label, done, total):
    if done == 2:
        raise KeyboardInterrupt

ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
calls = [{"x": float(x), "log_dir": sys.argv[2], "sleep": 0.3} for x in range(6)]
try:
    RayExecutor(sys.argv[1], progress=interrupt).map(
        points.square, calls, keys=[f"s{i}" for i in range(6)]
    )
except KeyboardInterrupt:
    print("interrupted")
"""


def test_interrupted_driver_rerun_reuses_written_points(tmp_path: Path) -> None:
    # The interrupted driver is its own process, as a killed or Ctrl-C'd driver would be:
    # Ray may end a driver process that keeps using it after cancelling its tasks.
    first, second, cache = tmp_path / "log1", tmp_path / "log2", tmp_path / "cache"
    first.mkdir()
    second.mkdir()
    paths = [str(HERE.parent / "src"), str(HERE)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    args = [sys.executable, "-c", _INTERRUPTED_DRIVER, str(cache), str(first), *paths]
    subprocess.run(args, env=env, timeout=240, check=False, capture_output=True)
    written = {p.stem for p in cache.glob("*.pt")}
    calls = [{"x": float(x), "log_dir": str(second), "sleep": 0.3} for x in range(6)]
    ex = RayExecutor(cache)
    got = ex.map(points.square, calls, keys=[f"s{i}" for i in range(6)])
    assert len(written) >= 2 and ex.reused >= len(written)
    # A point the interrupted run was still finishing may land after the rerun looked and is
    # then reused inside its worker, unlogged: so at most, not exactly, the points missing at
    # the rerun's start are computed again, and never one that was already written.
    recomputed = {float(p.name.split("-")[0]) for p in second.iterdir()}
    assert logged_runs(second) <= 6 - ex.reused
    assert not recomputed & {float(k[1:]) for k in written}
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


STUDY = {
    "task": str(HERE / "_scale_task.py") + ":tiny",
    "l2": {"alphas": [1e-3, 1e-2, 1e-1], "max_iter": 300},
    "l1": {"alphas": [1e-3, 1e-2], "max_iter": 300},
    "early_stopping": {"max_steps": 300},
    "picture": {"grid": 5},
}


def without_timings(results: dict) -> dict:
    return {k: v for k, v in results.items() if k not in {"timings", "created"}}


def test_study_on_ray_equals_local_with_a_killed_worker(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from decaylab.study.config import config_from_dict
    from decaylab.study.run import run_study
    from decaylab.tasks import get_task

    marker = tmp_path / "kill-a-worker"
    marker.touch()
    monkeypatch.setenv("DECAYLAB_TEST_KILL_MARKER", str(marker))
    config = config_from_dict(STUDY)
    task = get_task(config.task)  # reads the marker's name; kills only off the driver
    run_study(config, tmp_path / "local", task=task)
    assert marker.exists()  # the local run never left this process
    run_study(config, tmp_path / "ray", task=task, executor="ray")
    assert not marker.exists()  # a worker died in a grid point, and the point was retried
    local = json.loads((tmp_path / "local" / "results.json").read_text())
    remote = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert without_timings(remote) == without_timings(local)
    points = sorted(p.name for p in (tmp_path / "ray" / "cache" / "points").iterdir())
    assert points == sorted(p.name for p in (tmp_path / "local" / "cache" / "points").iterdir())
    assert len(points) == 5


def test_study_rejects_unknown_executor(tmp_path) -> None:  # noqa: ANN001
    from decaylab.study.config import config_from_dict
    from decaylab.study.run import run_study

    with pytest.raises(ValueError, match="executor"):
        run_study(config_from_dict(STUDY), tmp_path, executor="dask")
    with pytest.raises(ValueError, match="ray_address"):
        run_study(config_from_dict(STUDY), tmp_path, ray_address="auto")


def test_cli_executor_ray_without_ray_names_the_extra(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from decaylab.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)
    result = CliRunner().invoke(
        app, ["run", "--task", STUDY["task"], "--out", str(tmp_path / "s"), "--executor", "ray"]
    )
    assert result.exit_code == 2
    assert "decaylab[ray]" in result.output
    assert not (tmp_path / "s").exists()  # refused before any compute
    result = CliRunner().invoke(app, ["run", "--out", str(tmp_path), "--executor", "dask"])
    assert result.exit_code == 2 and "--executor" in result.output


def test_cli_run_on_ray_resumes_from_written_points(tmp_path) -> None:  # noqa: ANN001
    from typer.testing import CliRunner

    from decaylab.cli import app

    config = tmp_path / "study.toml"
    config.write_text(
        f'task = "{STUDY["task"]}"\n[l2]\nalphas = [1e-2, 1e-1]\nmax_iter = 300\n'
        "[l1]\nalphas = [1e-2]\nmax_iter = 300\n[early_stopping]\nmax_steps = 200\n"
        "[picture]\ngrid = 5\n"
    )
    argv = ["run", "--config", str(config), "--out", str(tmp_path / "s"), "--executor", "ray"]
    first = CliRunner().invoke(app, argv)
    assert first.exit_code == 0, first.output
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    # An interrupted run loses its phase caches but keeps the grid points written so far.
    for phase in ("l2", "l1", "early_stopping", "picture"):
        (tmp_path / "s" / "cache" / f"{phase}.pt").unlink()
    points = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "s" / "cache" / "points").iterdir()}
    second = CliRunner().invoke(app, argv)
    assert second.exit_code == 0, second.output
    again = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "s" / "cache" / "points").iterdir()}
    assert again == points and len(points) == 3  # every point reused, none rewritten
    rerun = json.loads((tmp_path / "s" / "results.json").read_text())
    assert without_timings(rerun) == without_timings(results)


def test_readme_cluster_commands_use_existing_options() -> None:
    """Each option of README's "Running on a cluster" commands is one `decaylab run` has."""
    from typer.testing import CliRunner

    from decaylab.cli import app

    readme = (HERE.parent / "README.md").read_text()
    block = readme.split("## Running on a cluster", 1)[1].split("```console\n", 1)[1]
    block = block.split("```", 1)[0]
    commands = [line.split("#")[0].split() for line in block.splitlines() if "decaylab run" in line]
    assert len(commands) == 3
    help_text = CliRunner().invoke(app, ["run", "--help"], terminal_width=200).output
    for words in commands:
        for word in words:
            if word.startswith("--") and not word.startswith("--nproc"):
                assert word in help_text, word
