"""The study's L2 grid on Ray against the local executor, in one run, on this machine's CPUs.

Workload: the L2 grid points of the digits-MLP study (``decaylab.study.phases.l2.l2_point``,
2,410 parameters, 1,257 training samples), ``--max-iter`` L-BFGS iterations per point (default
200, ≈2 s on one thread), warm-started from the task's initialization, one torch thread per
point (as the study). Measured:

* local: ``LocalExecutor.map`` over ``n`` grid points, for each ``n`` in ``--points``, after
  one untimed point (first-call costs, as Ray's warm-up below);
* Ray with ``w`` workers (``ray.init(num_cpus=w)``) for each ``w`` in ``--workers``: the start
  of Ray (``ray.init``), one warm-up task per worker (starts the worker process and imports
  torch and the study), then the same grids. Every Ray result is checked equal, bit for bit,
  to the local one.

The speed-up is local seconds / Ray seconds for the largest grid and the most workers, same run.
Writes ``ray_grid.json`` and ``ray_grid.md`` into the output folder.

    python benchmarks/ray_grid.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _warm_up() -> int:
    """Start a worker and import what a grid point needs (torch, the study)."""
    import decaylab.study.phases.l2  # noqa: F401

    return os.getpid()


def _calls(n: int, max_iter: int) -> tuple[Any, list[dict[str, Any]]]:
    from decaylab.study.objective import Objective
    from decaylab.tasks import get_task

    task = get_task("digits-mlp")
    w0 = Objective(task, 0).w_init
    alphas = np.logspace(-4, -1, n).tolist()
    calls = [
        dict(task=task, seed=0, alpha=a, w0=w0, max_iter=max_iter, tol=1e-8, scratch=False)
        for a in alphas
    ]
    return task, calls


def _timed_map(executor: Any, calls: list[dict[str, Any]]) -> tuple[float, list[Any]]:
    from decaylab.study.phases.l2 import l2_point

    start = time.perf_counter()
    results = executor.map(l2_point, calls)
    return time.perf_counter() - start, results


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    return all(torch.equal(x["w"], y["w"]) for x, y in zip(a, b, strict=True))


def _ray_runs(
    workers: int, grids: dict[int, list[dict[str, Any]]], local: dict[int, list[Any]]
) -> dict[str, Any]:
    import ray

    from decaylab.executors.ray import RayExecutor

    start = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    out: dict[str, Any] = {"workers": workers, "init_seconds": time.perf_counter() - start}
    try:
        executor = RayExecutor()
        start = time.perf_counter()
        executor.map(_warm_up, [{} for _ in range(workers)])
        out["worker_start_seconds"] = time.perf_counter() - start
        out["grids"] = {}
        for n, calls in grids.items():
            seconds, results = _timed_map(executor, calls)
            out["grids"][n] = {"seconds": seconds, "identical_to_local": _same(results, local[n])}
            print(f"ray   workers={workers} points={n}: {seconds:.1f} s", flush=True)
    finally:
        ray.shutdown()
    return out


def run(points: list[int], workers: list[int], max_iter: int) -> dict[str, Any]:
    from decaylab.executors import LocalExecutor

    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    grids = {n: _calls(n, max_iter)[1] for n in points}
    _timed_map(LocalExecutor(), grids[min(points)][:1])  # one-time costs, as Ray's warm-up
    local_seconds, local_results = {}, {}
    for n, calls in grids.items():
        local_seconds[n], local_results[n] = _timed_map(LocalExecutor(), calls)
        print(f"local points={n}: {local_seconds[n]:.1f} s", flush=True)
    ray_runs = [_ray_runs(w, grids, local_results) for w in workers]
    n, w = max(points), max(workers)
    best = next(r for r in ray_runs if r["workers"] == w)
    return {
        "benchmark": "ray_grid",
        "workload": f"digits-mlp L2 grid points, {max_iter} L-BFGS iterations each, 1 thread",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "torch": torch.__version__,
        "ray_version": __import__("ray").__version__,
        "local_seconds": local_seconds,
        "ray": ray_runs,
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "speedup": local_seconds[n] / best["grids"][n]["seconds"],
        "speedup_points": n,
        "speedup_workers": w,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Ray executor against local: the L2 grid",
        "",
        f"{report['workload']}; {report['machine']}; torch {report['torch']}; 1-minute load "
        "average {:.1f} before, {:.1f} after (other jobs shared the CPUs).".format(
            *report["load_average_1min"]
        ),
        "`python benchmarks/ray_grid.py`. Seconds of `executor.map` (Ray start and worker",
        "start-up listed apart). Every Ray result equal to the local one bit for bit: "
        + str(all(g["identical_to_local"] for r in report["ray"] for g in r["grids"].values())),
        "",
        "| grid points | local s | "
        + " | ".join(
            f"Ray, {r['workers']} worker{'s' if r['workers'] > 1 else ''} s" for r in report["ray"]
        )
        + " |",
        "| ---: | ---: |" + " ---: |" * len(report["ray"]),
    ]
    for n, seconds in report["local_seconds"].items():
        cells = [f"{r['grids'][n]['seconds']:.1f}" for r in report["ray"]]
        lines.append(f"| {n} | {seconds:.1f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| workers | `ray.init` s | worker start-up and imports s |",
        "| ---: | ---: | ---: |",
    ]
    for r in report["ray"]:
        lines.append(
            f"| {r['workers']} | {r['init_seconds']:.1f} | {r['worker_start_seconds']:.1f} |"
        )
    lines += [
        "",
        f"Speed-up of Ray over local, {report['speedup_points']} points, "
        f"{report['speedup_workers']} workers: **{report['speedup']:.2f}x** (same run).",
        "",
    ]
    return "\n".join(lines)


def main(out_dir: str | Path, argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-iter", type=int, default=200)
    args = parser.parse_args(argv)
    report = run(sorted(args.points), sorted(args.workers), args.max_iter)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ray_grid.json").write_text(json.dumps(report, indent=2))
    (out / "ray_grid.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    cli = argparse.ArgumentParser(add_help=False)
    cli.add_argument("--out", default=str(HERE / "results"))
    known, rest = cli.parse_known_args()
    main(known.out, rest)
