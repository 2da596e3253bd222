"""Files decaylab writes atomically get the permissions an ordinary ``open(path, "w")`` gives
(mkstemp's 0600 would hide a shared study's results and checkpoints from other users)."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from decaylab.checkpoint import write_atomic
from decaylab.training import fit, half_mse


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_follow_the_umask_like_open(tmp_path, umask):
    old = os.umask(umask)
    try:
        plain = tmp_path / "plain.txt"
        with open(plain, "w") as handle:
            handle.write("x")
        atomic = tmp_path / "atomic.json"
        write_atomic(atomic, lambda h: h.write(b"{}"), prefix=".atomic-")
        X = torch.randn(8, 2, dtype=torch.float64)
        fit(
            torch.nn.Linear(2, 1).double(), half_mse, (X, X.sum(1)), lr=0.1, steps=2,
            checkpoint_dir=tmp_path / "ckpt", progress=False,
        )  # fmt: skip
        checkpoints = list((tmp_path / "ckpt").iterdir())
    finally:
        os.umask(old)
    assert _mode(plain) == 0o666 & ~umask
    assert _mode(atomic) == _mode(plain)
    assert checkpoints and all(_mode(p) == _mode(plain) for p in checkpoints if p.is_file())
