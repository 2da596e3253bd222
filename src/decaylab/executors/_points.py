"""The per-point result files every executor shares: ``<cache_dir>/<key>.pt``.

One format for all executors, so a study interrupted under one resumes under another. Each
file is a :func:`decaylab.checkpoint.save_checkpoint` (temporary file, fsync, rename).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def point_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"{key}.pt"


def load_point(cache_dir: str | Path, key: str) -> Any:
    """The stored result of ``key``; ``None`` when there is none, or it is torn or foreign."""
    from decaylab.checkpoint import CheckpointError, load_checkpoint

    path = point_path(cache_dir, key)
    if not path.is_file():
        return None
    try:
        return load_checkpoint(path)["result"]
    except CheckpointError:
        return None  # recompute


def save_point(cache_dir: str | Path, key: str, result: Any) -> None:
    from decaylab.checkpoint import CHECKPOINT_FORMAT, save_checkpoint

    save_checkpoint({"format": CHECKPOINT_FORMAT, "result": result}, point_path(cache_dir, key))


def check_keys(calls: Sequence[Any], keys: Sequence[str] | None) -> None:
    """``map``'s ``keys``, when given, must name one cache key per call."""
    if keys is not None and len(keys) != len(calls):
        raise ValueError(f"keys has {len(keys)} entries but calls has {len(calls)}")
