"""Crash-safe checkpoint files: atomic save, safe load.

A checkpoint is a plain dictionary of tensors, numbers, strings, lists and dicts, so it
loads with ``torch.load(weights_only=True)``; nothing in a checkpoint file is ever
executed. Saving is atomic: the bytes go to a temporary file in the same directory,
which is flushed and ``fsync``-ed, then ``os.replace``-d onto the target name, and
finally the directory itself is ``fsync``-ed so the rename survives a power cut. A
process killed at any moment therefore leaves either the previous checkpoint or the
new one on disk, never a torn file.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CheckpointError",
    "UnsafeCheckpointError",
    "load_checkpoint",
    "remove_stale_temporaries",
    "save_checkpoint",
]

#: Value of the ``"format"`` key that marks a file as a decaylab checkpoint.
CHECKPOINT_FORMAT = "decaylab-checkpoint"
#: File name used inside a checkpoint directory.
CHECKPOINT_NAME = "checkpoint.pt"
_TEMP_PREFIX = ".checkpoint-"
_TEMP_SUFFIX = ".tmp"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or not a decaylab checkpoint."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file holds a pickled object that would run code when loaded.

    The file is refused; nothing in it has been executed.
    """


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable. Some platforms (Windows) cannot open a
    # directory; there os.replace is still atomic, only not yet durable.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically.

    Steps: ``torch.save`` into a temporary file in the same directory, ``flush``,
    ``os.fsync``, ``os.replace`` onto ``path``, ``fsync`` of the directory. If anything
    fails (or the process dies) before the rename, ``path`` still holds the previous
    checkpoint and the temporary file is removed (or, after a kill, ignored and cleaned
    up by :func:`remove_stale_temporaries`).

    Parameters
    ----------
    state : dict
        Contents; must consist of tensors, numbers, strings, ``None``, lists, tuples
        and dicts so that :func:`load_checkpoint` can read it with
        ``weights_only=True``.
    path : path-like
        Target file; its directory must exist.

    Returns
    -------
    pathlib.Path
        The path written.

    Examples
    --------
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> p = save_checkpoint({"format": CHECKPOINT_FORMAT, "w": torch.ones(2)}, d / "c.pt")
    >>> load_checkpoint(p)["w"].tolist()
    [1.0, 1.0]
    """
    if not isinstance(state, dict):
        raise ValueError(f"state must be a dict, got {type(state).__name__}")
    path = Path(path)
    directory = path.parent
    if not directory.is_dir():
        raise ValueError(f"path must be inside an existing directory, got {str(path)!r}")
    write_atomic(path, lambda handle: torch.save(state, handle), prefix=_TEMP_PREFIX)
    return path


def write_atomic(path: Path, write: Callable[[BinaryIO], object], *, prefix: str) -> None:
    """Write ``path`` atomically and durably: ``write(handle)`` into a temporary file
    ``<prefix>*.tmp`` beside it, ``flush``, ``os.fsync``, ``os.replace``, ``fsync`` of the
    directory. If anything fails before the rename, the temporary file is removed."""
    fd, temp_name = tempfile.mkstemp(prefix=prefix, suffix=_TEMP_SUFFIX, dir=path.parent)
    try:
        # mkstemp creates 0600; give the file the mode open() would (0666 less the umask),
        # so results and checkpoints in a shared study folder stay readable as usual.
        os.fchmod(fd, _new_file_mode())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    _fsync_directory(path.parent)


def _new_file_mode() -> int:
    """``0o666`` less the process's umask: the mode ``open(path, "w")`` gives a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> int:
    """Delete temporary files left by a save that was killed before its rename.

    Returns the number of files removed.

    Examples
    --------
    >>> import tempfile
    >>> remove_stale_temporaries(tempfile.mkdtemp())
    0
    """
    removed = 0
    for stale in Path(directory).glob(f"{_TEMP_PREFIX}*{_TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            stale.unlink()
            removed += 1
    return removed


def _unpickler_detail(exc: Exception) -> str:
    text = str(exc.args[0]) if exc.args else ""
    # torch's message is mostly boilerplate; the line naming what was refused is the useful one.
    for line in text.splitlines():
        if "nsupported" in line and "weights_only" not in line:
            return " (" + line.strip() + ")"
    return ""


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a decaylab checkpoint with ``torch.load(weights_only=True)`` only.

    Parameters
    ----------
    path : path-like
        A checkpoint file, or a directory containing ``checkpoint.pt``.

    Returns
    -------
    dict
        The checkpoint contents (tensors on the CPU).

    Raises
    ------
    UnsafeCheckpointError
        The file contains a pickled object other than tensors and plain containers
        (it could run code on load); it is refused and nothing in it runs.
    CheckpointError
        The file is missing, unreadable, or lacks the decaylab ``"format"`` marker.

    Examples
    --------
    >>> import tempfile
    >>> try:
    ...     load_checkpoint(tempfile.mkdtemp())
    ... except CheckpointError as err:
    ...     print("no checkpoint" in str(err))
    True
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}")
    try:
        with warnings.catch_warnings():
            # Plain pickle files trigger a protocol notice; the refusal below is what matters.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"{str(path)!r} is not a safe checkpoint: torch.load(weights_only=True) refused "
            "it because it holds pickled content other than tensors and plain containers "
            "(an object whose loading could run code, or corrupt pickle data). It was not "
            f"loaded and nothing in it ran.{_unpickler_detail(exc)}"
        ) from exc
    except Exception as exc:  # torn, truncated or non-torch files raise many types
        raise CheckpointError(
            f"{str(path)!r} could not be read as a checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a decaylab checkpoint")
    return state
