"""Run the study: phases in order, each cached in ``DIR/cache`` under its fingerprint.

>>> # decaylab run --task diabetes --out /tmp/study   (the command-line form)
>>> # results = run_study(load_config(None, {"task": "diabetes"}), "/tmp/study")

A rerun with the same config and task reuses every finished phase (and every finished
grid point of a half-done phase); ``fresh=True`` recomputes everything. The
``results.json`` of a resumed run equals that of an uninterrupted one except ``timings``.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from decaylab.checkpoint import write_atomic
from decaylab.executors import LocalExecutor
from decaylab.study import distributed
from decaylab.study.cache import PhaseCache, fingerprint
from decaylab.study.config import Config, ConfigError
from decaylab.study.objective import Objective
from decaylab.study.phases import curvature, early_stopping, l1, l2, picture, reference
from decaylab.study.results import build_results
from decaylab.tasks import Task, get_task

__all__ = ["PHASES", "check_against_task", "run_study", "write_json_atomic"]

PHASES = ("reference", "curvature", "l2", "l1", "early_stopping", "picture")

Log = Callable[[str], None]


def check_against_task(config: Config, task: Task) -> None:
    """Checks of the config that need the task (still before any compute)."""
    alpha0, _ = reference.resolve_alpha0(task, config)
    smallest = config.l2["alphas"][0]  # the grid is increasing (config checks it)
    if smallest <= alpha0:
        raise ConfigError(
            "l2.alphas",
            f"every α must be > the reference's α₀ = {alpha0:g} (the total strength "
            f"includes α₀), got {smallest!r}",
        )


def write_json_atomic(data: Any, path: Path) -> None:
    """JSON (NaN refused) to ``path`` via a temporary file and a rename."""
    text = json.dumps(data, indent=1, allow_nan=False)
    write_atomic(path, lambda fh: fh.write(text.encode("utf-8")), prefix=".results-")


def _save_reference(obj: Objective, w0: torch.Tensor, path: Path) -> None:
    state = {k: v.detach().clone() for k, v in obj.model_at(w0).state_dict().items()}
    write_atomic(path, lambda fh: torch.save(state, fh), prefix=".reference-")


class _Runner:
    """Runs one phase through the cache; records timings, reuse and caught warnings."""

    def __init__(self, cache: PhaseCache, log: Log) -> None:
        self.cache, self.log = cache, log
        self.timings: dict[str, float] = {}
        self.reused: list[str] = []

    def __call__(self, name: str, fp: str, compute: Callable[[], dict[str, Any]]) -> dict:
        cached = self.cache.load(name, fp)
        if cached is not None:
            self.reused.append(name)
            self.timings[name] = float(cached["_seconds"])
            self.log(f"{name}: reused from cache ({cached['_seconds']:.1f} s when computed)")
            return cached
        self.log(f"{name}: computing…")
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = compute()
        result["_warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
        result["_seconds"] = time.perf_counter() - start
        self.cache.save(name, fp, result)
        self.timings[name] = result["_seconds"]
        self.log(f"{name}: done in {result['_seconds']:.1f} s")
        return result


def run_study(
    config: Config,
    out: str | Path,
    *,
    fresh: bool = False,
    task: Task | None = None,
    log: Log | None = None,
    threads: int | None = 1,
    executor: Any = None,
    progress: Callable[[str, int, int], None] | None = None,
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) the study of ``config`` into ``out``; return the results dict.

    Writes ``out/results.json``, ``out/reference.pt`` (a ``state_dict``, loadable with
    ``torch.load(..., weights_only=True)``) and ``out/cache/``. ``threads``: torch's
    intra-op threads during the study (default 1: the study's many small full-batch
    operations run ~100x slower with 2 threads on a busy 2-core machine, and a fixed count
    keeps reruns bit-identical); ``None`` leaves torch's setting. ``executor``: what runs
    the L2/L1 grid points (default a :class:`~decaylab.executors.LocalExecutor` caching in
    ``out/cache/points``); any object with the same ``map`` works, e.g. the Ray executor, or
    a name: ``"local"`` or ``"ray"`` (a :class:`~decaylab.executors.ray.RayExecutor` on
    ``ray_address``, or on a local Ray instance; docs/scale.md). Under ``torchrun`` only
    rank 0 writes ``out`` (:mod:`decaylab.study.distributed`).
    """
    if isinstance(executor, str) and executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS} or an executor, got {executor!r}")
    if ray_address is not None and executor != "ray":
        raise ValueError("ray_address is only used with executor='ray'")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with distributed.rank_output(out) as rank_out:
            points = _make_executor(executor, Path(rank_out), progress, ray_address)
            try:
                return _run_study(
                    config, rank_out, fresh=fresh, task=task, log=log, executor=points
                )
            finally:
                if points is not executor:
                    getattr(points, "close", lambda: None)()
    finally:
        torch.set_num_threads(previous)


EXECUTORS = ("local", "ray")


def _make_executor(
    executor: Any,
    out: Path,
    progress: Callable[[str, int, int], None] | None,
    ray_address: str | None,
) -> Any:
    """The executor named by ``executor`` (caching in ``out/cache/points``), or ``executor``."""
    if executor is None or executor == "local":
        return LocalExecutor(out / "cache" / "points", progress=progress)
    if executor == "ray":
        from decaylab.executors.ray import RayExecutor

        return RayExecutor(out / "cache" / "points", progress=progress, address=ray_address)
    return executor


def _run_study(
    config: Config,
    out: str | Path,
    *,
    fresh: bool,
    task: Task | None,
    log: Log | None,
    executor: Any,
) -> dict[str, Any]:
    log = log or (lambda message: None)
    start = time.perf_counter()
    task = task if task is not None else get_task(config.task)
    check_against_task(config, task)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    obj = Objective(task, config.seed)
    cache = PhaseCache(out / "cache", fresh=fresh)
    run = _Runner(cache, log)
    base = fingerprint(task.fingerprint(config.seed), config.seed, str(obj.dtype), _code_hash())
    fp = {"reference": fingerprint(base, config.reference)}
    ref = run(
        "reference", fp["reference"], lambda: {**reference.run(obj, config), "created": _now()}
    )
    _save_reference(obj, ref["w0"], out / "reference.pt")
    fp["curvature"] = fingerprint(fp["reference"], config.curvature)
    curv = run("curvature", fp["curvature"], lambda: curvature.run(obj, ref, config))
    fp["l2"] = fingerprint(fp["curvature"], config.l2)
    res_l2 = run(
        "l2", fp["l2"], lambda: l2.run(obj, ref, curv, config, _Prefixed(executor, fp["l2"]))
    )
    fp["l1"] = fingerprint(fp["curvature"], config.l1)
    res_l1 = run(
        "l1", fp["l1"], lambda: l1.run(obj, ref, curv, config, _Prefixed(executor, fp["l1"]))
    )
    fp["early_stopping"] = fingerprint(fp["curvature"], config.early_stopping, config.l2)
    res_es = run(
        "early_stopping", fp["early_stopping"], lambda: early_stopping.run(obj, ref, curv, config)
    )
    fp["picture"] = fingerprint(fp["l2"], config.picture)
    pic = run("picture", fp["picture"], lambda: picture.run(obj, ref, curv, res_l2, config))
    timings = {**run.timings, "total_this_run": time.perf_counter() - start}
    results = build_results(task, obj, config, ref, curv, res_l2, res_l1, res_es, pic, timings)
    write_json_atomic(results, out / "results.json")
    results["_reused_phases"] = list(run.reused)  # for the terminal only, not in the file
    return results


class _Prefixed:
    """An executor view whose cache keys carry the phase fingerprint."""

    def __init__(self, executor: Any, prefix: str) -> None:
        self.executor, self.prefix = executor, prefix

    def map(
        self,
        fn: Callable[..., Any],
        calls: list[dict[str, Any]],
        keys: list[str] | None = None,
        label: str = "",
    ) -> list[Any]:
        keys = None if keys is None else [f"{self.prefix}-{k}" for k in keys]
        return self.executor.map(fn, calls, keys=keys, label=label)


def _code_hash() -> str:
    """Hash of the study's own source, so a changed decaylab recomputes its cached phases."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
