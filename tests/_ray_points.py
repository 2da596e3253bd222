"""Grid-point functions for tests/test_ray.py, importable by Ray workers (tests/ is on their path).

Each call leaves one file in ``log_dir`` (so a test counts how often a point really ran).
"""

from __future__ import annotations

import os
import time
import uuid
import warnings
from pathlib import Path

import torch

from decaylab import TheoryWarning


def square(
    x: float,
    log_dir: str,
    marker: str | None = None,
    sleep: float = 0.0,
    shift: torch.Tensor | None = None,
) -> dict:
    """``x²`` (+ ``shift``) as a tensor; dies (``os._exit``) once if ``marker`` exists."""
    Path(log_dir, f"{x}-{uuid.uuid4().hex}").write_text(str(os.getpid()))
    if marker is not None:
        try:
            os.unlink(marker)  # only one attempt wins the marker
        except FileNotFoundError:
            pass
        else:
            os._exit(1)
    time.sleep(sleep)
    if x == 2.0:
        warnings.warn("x is two", TheoryWarning, stacklevel=2)
    g = torch.Generator().manual_seed(int(x))
    return {
        "x": x,
        "y": torch.tensor(x, dtype=torch.float64) ** 2,
        "noise": torch.randn(3, generator=g),
    }


def fails(x: float, log_dir: str) -> None:
    Path(log_dir, f"{x}-{uuid.uuid4().hex}").write_text(str(os.getpid()))
    raise ValueError(f"bad point {x}")


def threads() -> int:
    return torch.get_num_threads()
