"""The study under ``torchrun``: the curvature is computed on data sharded over the ranks.

``torchrun --nproc_per_node=N -m decaylab run …`` starts ``N`` copies of the command. Each
calls :func:`init_from_env` (a ``gloo`` process group over the ranks; the study's
arithmetic is float64 on the CPU, which NCCL does not reduce) and runs the same study in
lockstep. The curvature operators all-reduce over the default group, so each rank gives them
only its contiguous shard of the training set (:func:`shard`): rank ``r`` of ``W`` holds
samples ``[r N / W, (r + 1) N / W)``, and every rank sees the curvature of the mean loss over
all ``N`` samples (``H v = Σ_r n_r H_r v / Σ_r n_r``). The other phases are cheap or per
grid point; they run on every rank alike (for grids across machines use ``--executor ray``).

Only rank 0 writes ``DIR``: the other ranks read the caches there as they were when the run
started (a hard-linked private copy in ``DIR/.rank<r>``, removed at the end) and write into
their copy, so every rank reuses exactly the same phases and the collectives stay matched.
:func:`rank_summary` gathers each rank's time and peak memory for the terminal.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "init_from_env",
    "is_distributed",
    "rank",
    "world_size",
    "shard",
    "rank_output",
    "rank_summary",
    "finish",
]


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` default group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment).

    Returns whether this process is one of several ranks. On ranks other than 0 the standard
    output is silenced (rank 0 prints the one terminal summary); errors still reach stderr.
    ``backend`` defaults to ``DECAYLAB_DIST_BACKEND`` or ``"gloo"``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend or os.environ.get("DECAYLAB_DIST_BACKEND", "gloo"))
    if dist.get_rank() != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    return dist.get_world_size() > 1


def shard(data: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's contiguous part of ``(X, y)`` (all of it in a single process).

    Examples
    --------
    >>> import torch
    >>> X, y = torch.arange(5.0).reshape(5, 1), torch.arange(5)
    >>> shard((X, y))[1].tolist()  # not distributed: everything
    [0, 1, 2, 3, 4]
    """
    if not is_distributed():
        return data
    X, y = data
    n, w, r = X.shape[0], world_size(), rank()
    if n < w:
        raise ValueError(f"train_data has {n} samples, fewer than the {w} ranks to shard it over")
    lo, hi = r * n // w, (r + 1) * n // w
    return X[lo:hi], y[lo:hi]


@contextlib.contextmanager
def rank_output(out: str | Path) -> Iterator[Path]:
    """``out`` on rank 0; on other ranks a private copy of its caches, removed on exit.

    Every rank waits for the others before the copy (so all see the same caches) and
    before leaving (so rank 0's files are complete when any rank returns).
    """
    out = Path(out)
    if not is_distributed():
        yield out
        return
    out.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    private = out / f".rank{rank()}"
    if rank() != 0:
        shutil.rmtree(private, ignore_errors=True)
        if (out / "cache").is_dir():
            # Hard links: the caches are replaced by rename, never written in place.
            shutil.copytree(out / "cache", private / "cache", copy_function=os.link)
        private.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    try:
        yield out if rank() == 0 else private
    finally:
        dist.barrier()
        if rank() != 0:
            shutil.rmtree(private, ignore_errors=True)


def _peak_rss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale


def rank_summary(n_samples: int, timings: dict[str, float]) -> list[dict[str, Any]]:
    """Every rank's shard size, phase seconds and peak memory (same list on every rank)."""
    mine = {
        "rank": rank(),
        "shard_samples": shard((torch.empty(n_samples, 0), torch.empty(n_samples)))[0].shape[0],
        "curvature_seconds": float(timings.get("curvature", 0.0)),
        "total_seconds": float(timings.get("total_this_run", sum(timings.values()))),
        "peak_rss_mb": _peak_rss_bytes() / 2**20,
    }
    if not is_distributed():
        return [mine]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, mine)
    return gathered


def format_rank_summary(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`rank_summary`'s rows."""
    lines = ["rank  samples  curvature s  total s  peak memory MB"]
    for r in rows:
        lines.append(
            f"{r['rank']:>4}  {r['shard_samples']:>7}  {r['curvature_seconds']:>11.2f}  "
            f"{r['total_seconds']:>7.2f}  {r['peak_rss_mb']:>14.0f}"
        )
    return "\n".join(lines)


def finish() -> None:
    """Leave the process group (after every rank got here)."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()
