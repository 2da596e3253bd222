"""The study on two gloo ranks (CPU) equals one process to rounding; only rank 0 writes.

The curvature phase runs on the operator path (``dense_max_params`` below the task's 21
parameters), so Lanczos, Hutch++, the diagonal, the spectral density and the L2 predictions'
conjugate gradients all go through products all-reduced over the two shards. ``cg_tol`` is
tight: the two runs' CG iterates differ by about the solver tolerance (with the default 1e-8,
the predicted losses and shrink factors differ by up to ~1e-5 relative; measured).
"""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")

HERE = Path(__file__).resolve().parent
STUDY = {
    "task": str(HERE / "_scale_task.py") + ":tiny",
    "curvature": {"dense_max_params": 10, "k": 4, "tol": 1e-8, "cg_tol": 1e-13},
    "l2": {"alphas": [1e-2, 1e-1], "max_iter": 300, "scratch": False},
    "l1": {"alphas": [1e-2], "max_iter": 300},
    "early_stopping": {"max_steps": 200},
    "picture": {"grid": 5},
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, world: int, port: int, out: str) -> None:
    from decaylab.study import distributed
    from decaylab.study.config import config_from_dict
    from decaylab.study.run import run_study

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    assert distributed.init_from_env()
    try:
        results = run_study(config_from_dict(STUDY), Path(out) / "study")
        rows = distributed.rank_summary(results["task"]["n_train"], results["timings"])
        if rank == 0:
            Path(out, "ranks.json").write_text(json.dumps(rows))
    finally:
        distributed.finish()


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


def test_two_ranks_equal_one_process(tmp_path: Path) -> None:
    from decaylab.study.config import config_from_dict
    from decaylab.study.run import run_study

    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    two = json.loads((tmp_path / "study" / "results.json").read_text())
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

    rows = json.loads((tmp_path / "ranks.json").read_text())
    assert [r["rank"] for r in rows] == [0, 1]
    assert [r["shard_samples"] for r in rows] == [20, 20]  # 40 training samples, halved
    assert all(r["peak_rss_mb"] > 0 and r["curvature_seconds"] > 0 for r in rows)
    # rank 1 wrote nothing of its own into the output directory
    assert not any(p.name.startswith(".rank") for p in (tmp_path / "study").iterdir())
