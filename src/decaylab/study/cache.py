"""Atomic, fingerprinted caches of the study's phases in ``DIR/cache/``.

A phase's result is stored as ``DIR/cache/<phase>.pt`` together with the fingerprint of
everything it depends on (the task, the relevant config fields, upstream fingerprints).
A file whose fingerprint differs is ignored (and overwritten), so a changed setting
recomputes what depends on it. Files are written with
:func:`decaylab.checkpoint.save_checkpoint` (temporary file, fsync, rename), so a kill
at any moment leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from decaylab.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)

__all__ = ["PhaseCache", "fingerprint"]


def fingerprint(*parts: Any) -> str:
    """SHA-256 (16 hex digits) of JSON-serializable parts (keys sorted)."""
    text = json.dumps(parts, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class PhaseCache:
    """``load(name, fp)`` → the stored result or ``None``; ``save(name, fp, result)``."""

    def __init__(self, directory: str | Path, *, fresh: bool = False) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.directory)
        self.fresh = fresh

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.pt"

    def load(self, name: str, fp: str) -> dict[str, Any] | None:
        if self.fresh or not self.path(name).is_file():
            return None
        try:
            state = load_checkpoint(self.path(name))
        except CheckpointError:
            return None  # unreadable or foreign: recompute
        if state.get("fingerprint") != fp:
            return None
        return dict(state["result"])

    def save(self, name: str, fp: str, result: dict[str, Any]) -> None:
        save_checkpoint(
            {"format": CHECKPOINT_FORMAT, "fingerprint": fp, "result": result}, self.path(name)
        )
