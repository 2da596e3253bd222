"""The in-process executor: runs grid points one after another, caching each result.

>>> ex = LocalExecutor()
>>> ex.map(pow, [{"base": 2, "exp": 3}, {"base": 3, "exp": 2}])
[8, 9]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from decaylab.executors._points import check_keys, load_point, save_point

__all__ = ["LocalExecutor"]


class LocalExecutor:
    """Run ``fn(**call)`` for each call in this process, in order.

    Parameters
    ----------
    cache_dir : path or None
        Where each point's result is stored as ``<key>.pt`` (atomically, with
        :func:`decaylab.checkpoint.save_checkpoint`); results must be tensors, numbers,
        strings, ``None`` and containers of them. ``None``: no per-point cache.
    progress : callable or None
        ``progress(label, done, total)`` after each point (the CLI draws a bar with it).
    """

    def __init__(
        self,
        cache_dir: str | Path | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.reused = 0

    def map(
        self,
        fn: Callable[..., Any],
        calls: Sequence[dict[str, Any]],
        keys: Sequence[str] | None = None,
        label: str = "",
    ) -> list[Any]:
        """``[fn(**c) for c in calls]``, reusing and writing per-key cached results."""
        check_keys(calls, keys)
        cache = self.cache_dir if keys is not None else None
        out = []
        for i, call in enumerate(calls):
            result = load_point(cache, keys[i]) if cache is not None and keys is not None else None
            if result is None:
                result = fn(**call)
                if cache is not None and keys is not None:
                    save_point(cache, keys[i], result)
            else:
                self.reused += 1
            out.append(result)
            if self.progress is not None:
                self.progress(label, i + 1, len(calls))
        return out
