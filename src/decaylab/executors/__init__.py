"""Executors schedule the study's independent grid points.

Interface (every executor): ``executor.map(fn, calls, keys=None, label="") -> list``, where
``fn`` is a module-level pure function, ``calls`` a list of keyword-argument dicts and
``keys`` (optional) one cache key per call: a point whose key already has a result in the
executor's ``cache_dir`` is not recomputed, and each new result is written there atomically
as soon as it is done. Results come back in the order of ``calls``.
"""

from decaylab.executors.local import LocalExecutor

__all__ = ["LocalExecutor"]
