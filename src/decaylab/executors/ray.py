"""The Ray executor: every grid point is a Ray task, retried when its worker dies.

Same interface as :class:`decaylab.executors.LocalExecutor`:
``executor.map(fn, calls, keys=None, label="") -> list``, results in the order of ``calls``.

* **Idempotent and atomic.** A point whose key already has a result in ``cache_dir``
  (``<key>.pt``, the local executor's format, written with
  :func:`decaylab.checkpoint.save_checkpoint`: temporary file, fsync, rename) is not
  submitted. A task first looks for its own result there, and writes it there as soon as it
  is done (when ``cache_dir`` exists on the worker's machine: a shared file system); the
  driver writes every result it receives too. So an interrupted driver, rerun, recomputes
  only the points that were never finished, and two copies of a task (a retry racing a
  slow original) write the same bytes.
* **Retried.** A task whose worker process dies (killed, out of memory, node lost) is
  rerun up to ``max_retries`` times (Ray's ``max_retries``); an exception raised by the
  grid-point function itself is not retried (it is deterministic and would fail again)
  and is raised in the driver with its own type.
* **Deterministic.** Each task sets torch's intra-op threads to the driver's count (the
  study uses 1), so its floating-point results equal the local executor's bit for bit;
  warnings the function raises in a worker are re-raised in the driver, in call order.

Ray is an optional extra: ``pip install 'decaylab[ray]'``.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from decaylab.executors._points import check_keys, load_point, point_path, save_point

__all__ = ["RayExecutor", "import_ray", "check_executor_option", "RAY_MISSING"]

RAY_MISSING = "--executor ray needs Ray, which is not installed: pip install 'decaylab[ray]'"

#: Prefix of the module names under which :func:`decaylab.tasks.get_task` imports task files;
#: such modules cannot be imported by name on a worker, so they are pickled by value.
_USER_MODULE_PREFIX = "decaylab_user_task_"


def import_ray() -> Any:
    """The ``ray`` module, or ``ImportError`` naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(RAY_MISSING) from exc
    return ray


def check_executor_option(executor: str, ray_address: str | None) -> None:
    """``ValueError`` (the command line's message) for a bad ``--executor``/``--ray-address``.

    Run before any compute: ``--executor ray`` without Ray installed names the extra.
    """
    if executor not in ("local", "ray"):
        raise ValueError(f"--executor must be local or ray, got {executor!r}")
    if ray_address is not None and executor != "ray":
        raise ValueError("--ray-address is only used with --executor ray")
    if executor == "ray":
        try:
            import_ray()
        except ImportError as exc:
            raise ValueError(str(exc)) from exc


def _load(cache_dir: str | None, key: str | None) -> Any:
    return None if cache_dir is None or key is None else load_point(cache_dir, key)


def _save(cache_dir: str | None, key: str | None, result: Any) -> None:
    # A worker writes only where the driver's cache_dir exists: a shared file system.
    if cache_dir is None or key is None or not Path(cache_dir).is_dir():
        return
    save_point(cache_dir, key, result)


def run_point(
    fn: Callable[..., Any],
    cache_dir: str | None,
    key: str | None,
    threads: int | None,
    names: Sequence[str],
    *values: Any,
) -> tuple[Any, list[tuple[type[Warning], str]]]:
    """One grid point on a worker: reuse its stored result or compute, store and return it.

    The call is ``fn(**dict(zip(names, values)))``; the values travel as positional
    arguments so that Ray resolves the shared ones, put once in the object store.
    Returns the result and the warnings ``fn`` raised, as ``(category, message)`` pairs.
    """
    call = dict(zip(names, values, strict=True))
    cached = _load(cache_dir, key)
    if cached is not None:
        return cached, []
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(**call)
    _save(cache_dir, key, result)
    return result, [(w.category, str(w.message)) for w in caught]


class RayExecutor:
    """Run ``fn(**call)`` for each call as a Ray task; cache each result under its key.

    Parameters
    ----------
    cache_dir : path or None
        Per-point results ``<key>.pt`` (shared with :class:`LocalExecutor`). ``None``: none.
    progress : callable or None
        ``progress(label, done, total)`` after each point, in completion order.
    address : str or None
        Ray cluster to join (``"auto"``, ``"HOST:6379"``, ``"ray://HOST:10001"``). ``None``:
        join the Ray instance already initialized in this process, else start a local one.
    max_retries : int
        Times a task is rerun after its worker process died.
    cpus_per_task : float
        Ray ``num_cpus`` of each task (a study point uses one thread).
    threads : int or None
        torch threads in each task; default the driver's ``torch.get_num_threads()`` at
        ``map`` time, which makes results equal the local executor's.
    num_cpus : int or None
        CPUs of a local Ray instance this executor starts (ignored when joining a cluster).
    """

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        *,
        address: str | None = None,
        max_retries: int = 3,
        cpus_per_task: float = 1.0,
        threads: int | None = None,
        num_cpus: int | None = None,
    ) -> None:
        from decaylab._checks import check_scalar

        self.max_retries = int(check_scalar(max_retries, "max_retries", low=0, integer=True))
        self.cpus_per_task = float(check_scalar(cpus_per_task, "cpus_per_task", low=0.0))
        if threads is not None:
            threads = int(check_scalar(threads, "threads", low=1, integer=True))
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValueError(f"address must be a non-empty string, got {address!r}")
        self.threads = threads
        self.ray = import_ray()
        # Absolute: a worker's working directory is not the driver's.
        self.cache_dir = Path(cache_dir).resolve() if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.reused = 0
        self.started = False
        if not self.ray.is_initialized():
            self._start(address, num_cpus)
        self._remote = self.ray.remote(run_point)

    def _start(self, address: str | None, num_cpus: int | None) -> None:
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "logging_level": logging.ERROR,  # Ray's start-up chatter would break the progress bars
        }
        if address is None:
            # A local instance's workers see what this driver sees (e.g. a task file's folder).
            paths = [p for p in sys.path if p and os.path.isdir(p)]
            kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}
            kwargs["num_cpus"] = num_cpus
        self.ray.init(address=address, **kwargs)
        self.started = True

    def close(self) -> None:
        """Shut down the Ray instance if this executor started it."""
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
        self.started = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(
        self,
        fn: Callable[..., Any],
        calls: Sequence[dict[str, Any]],
        keys: Sequence[str] | None = None,
        label: str = "",
    ) -> list[Any]:
        """``[fn(**c) for c in calls]`` as Ray tasks, reusing and writing cached results."""
        check_keys(calls, keys)
        cache = str(self.cache_dir) if self.cache_dir is not None else None
        key_of: list[str | None] = list(keys) if keys is not None else [None] * len(calls)
        results: list[Any] = [_load(cache, k) for k in key_of]
        todo = [i for i, r in enumerate(results) if r is None]
        self.reused += len(calls) - len(todo)
        done = len(calls) - len(todo)
        if self.progress is not None and done:
            self.progress(label, done, len(calls))
        self._register_user_modules()
        import torch

        threads = self.threads if self.threads is not None else torch.get_num_threads()
        options = {"max_retries": self.max_retries, "num_cpus": self.cpus_per_task}
        shared = self._shared_values([calls[i] for i in todo])
        refs = {}
        for i in todo:
            names = list(calls[i])
            values = [shared.get(id(v), v) for v in calls[i].values()]
            ref = self._remote.options(**options).remote(
                fn, cache, key_of[i], threads, names, *values
            )
            refs[ref] = i
        caught: dict[int, list[tuple[type[Warning], str]]] = {}
        try:
            done = self._collect(refs, results, caught, cache, key_of, label, done, len(calls))
        except BaseException:
            for ref in refs:  # an interrupted driver leaves nothing running on the cluster
                self.ray.cancel(ref)
            raise
        for i in sorted(caught):
            for category, message in caught[i]:
                warnings.warn(message, category, stacklevel=2)
        return results

    def _collect(
        self,
        refs: dict[Any, int],
        results: list[Any],
        caught: dict[int, list[tuple[type[Warning], str]]],
        cache: str | None,
        key_of: list[str | None],
        label: str,
        done: int,
        total: int,
    ) -> int:
        pending = list(refs)
        while pending:
            ready, pending = self.ray.wait(pending, num_returns=1)
            i = refs[ready[0]]
            try:
                results[i], caught[i] = self.ray.get(ready[0])
            except self.ray.exceptions.RayTaskError as exc:
                raise exc.as_instanceof_cause() from None
            key = key_of[i]
            if cache is not None and key is not None and not point_path(cache, key).is_file():
                _save(cache, key, results[i])  # the worker's disk was not this one
            done += 1
            if self.progress is not None:
                self.progress(label, done, total)
        return done

    def _shared_values(self, calls: Sequence[dict[str, Any]]) -> dict[int, Any]:
        """Object-store references for values several calls share (the task, ``w0``)."""
        seen: dict[int, int] = {}
        objects: dict[int, Any] = {}
        for call in calls:
            for value in call.values():
                if not isinstance(value, (bool, int, float, str, type(None))):
                    seen[id(value)] = seen.get(id(value), 0) + 1
                    objects[id(value)] = value
        return {i: self.ray.put(objects[i]) for i, n in seen.items() if n > 1}

    def _register_user_modules(self) -> None:
        """Task files are imported under names a worker cannot import: send them by value."""
        for name, module in list(sys.modules.items()):
            if name.startswith(_USER_MODULE_PREFIX) and module is not None:
                self.ray.cloudpickle.register_pickle_by_value(module)
