"""The in-process executor: runs grid points one after another, caching each result.

>>> ex = LocalExecutor()
>>> ex.map(pow, [{"base": 2, "exp": 3}, {"base": 3, "exp": 2}])
[8, 9]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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

    def _load(self, key: str) -> Any:
        from decaylab.checkpoint import CheckpointError, load_checkpoint

        assert self.cache_dir is not None
        path = self.cache_dir / f"{key}.pt"
        if not path.is_file():
            return None
        try:
            return load_checkpoint(path)["result"]
        except CheckpointError:
            return None

    def _save(self, key: str, result: Any) -> None:
        from decaylab.checkpoint import CHECKPOINT_FORMAT, save_checkpoint

        assert self.cache_dir is not None
        save_checkpoint(
            {"format": CHECKPOINT_FORMAT, "result": result}, self.cache_dir / f"{key}.pt"
        )

    def map(
        self,
        fn: Callable[..., Any],
        calls: Sequence[dict[str, Any]],
        keys: Sequence[str] | None = None,
        label: str = "",
    ) -> list[Any]:
        """``[fn(**c) for c in calls]``, reusing and writing per-key cached results."""
        if keys is not None and len(keys) != len(calls):
            raise ValueError(f"keys has {len(keys)} entries but calls has {len(calls)}")
        use_cache = self.cache_dir is not None and keys is not None
        out = []
        for i, call in enumerate(calls):
            result = self._load(keys[i]) if use_cache and keys is not None else None
            if result is None:
                result = fn(**call)
                if use_cache and keys is not None:
                    self._save(keys[i], result)
            else:
                self.reused += 1
            out.append(result)
            if self.progress is not None:
                self.progress(label, i + 1, len(calls))
        return out
