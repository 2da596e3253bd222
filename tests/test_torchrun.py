"""``torchrun --nproc_per_node=2 -m decaylab run`` (gloo, CPU) equals one process to rounding.

Only rank 0 writes the output and prints; the summary lists each rank's shard, time and memory.

The curvature phase runs on the operator path (``dense_max_params`` below the task's 21
parameters), so Lanczos, Hutch++, the diagonal, the spectral density and the L2 predictions'
conjugate gradients all go through products all-reduced over the two shards. ``cg_tol`` and
``l2.tol`` are tight: with the defaults (1e-8) the two runs' solver iterates differ within the
solver tolerance, and the predicted losses, shrink factors and the early-stopping equivalent's
retrain by up to ~1e-5 relative (measured); with them tight, every number agrees to 2e-11.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")

HERE = Path(__file__).resolve().parent
STUDY = {
    "task": str(HERE / "_scale_task.py") + ":tiny",
    "curvature": {"dense_max_params": 10, "k": 4, "tol": 1e-8, "cg_tol": 1e-13},
    "l2": {"alphas": [1e-2, 1e-1], "max_iter": 300, "scratch": False, "tol": 1e-12},
    "l1": {"alphas": [1e-2], "max_iter": 300},
    "early_stopping": {"max_steps": 200},
    "picture": {"grid": 5},
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _toml(value: object) -> str:
    return json.dumps(value)  # strings, numbers and lists of numbers read the same in TOML


def _config(path: Path) -> Path:
    lines = [f"task = {_toml(STUDY['task'])}"]
    for section, fields in STUDY.items():
        if isinstance(fields, dict):
            lines.append(f"[{section}]")
            lines += [f"{key} = {_toml(value)}" for key, value in fields.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def close(a: object, b: object, path: str = "") -> None:
    """Equal structure; numbers equal to rounding (rtol 1e-9)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for key in a:
            close(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def test_torchrun_two_ranks_equal_one_process(tmp_path: Path) -> None:
    from decaylab.study.config import config_from_dict
    from decaylab.study.run import run_study

    env = dict(os.environ, PYTHONPATH=str(HERE.parent / "src"), OMP_NUM_THREADS="1")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        "-m",
        "decaylab",
        "run",
        "--config",
        str(_config(tmp_path / "study.toml")),
        "--out",
        str(tmp_path / "two"),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    threads = torch.get_num_threads()
    run_study(config_from_dict(STUDY), tmp_path / "one")
    torch.set_num_threads(threads)
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    assert two["curvature"]["path"] == "operator"
    drop = {"timings", "created"}
    close(
        {k: v for k, v in two.items() if k not in drop},
        {k: v for k, v in one.items() if k not in drop},
    )

    # The terminal summary (rank 0 only) lists both ranks with half the 40 samples each.
    rows = [
        line.split()
        for line in done.stdout.splitlines()
        if line.strip().startswith(("0 ", "1 ")) and len(line.split()) == 5
    ]
    assert [(r[0], r[1]) for r in rows] == [("0", "20"), ("1", "20")], done.stdout[-2000:]
    assert all(float(r[4]) > 0 for r in rows)  # peak memory, MB
    assert done.stdout.count("numbers:") == 1  # rank 1 printed nothing
    # rank 1 left nothing of its own in the output directory
    assert not any(p.name.startswith(".rank") for p in (tmp_path / "two").iterdir())
