"""A tiny study task (21 parameters) for the Ray and torchrun tests, loaded as a task file.

When ``DECAYLAB_TEST_KILL_MARKER`` names a file at import, the model factory, called in any
process other than the one that imported this file (a Ray worker), removes that file and
kills its own process: a worker dying in the middle of a grid point, once.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from decaylab.tasks import Task

DRIVER_PID = os.getpid()
KILL_MARKER = os.environ.get("DECAYLAB_TEST_KILL_MARKER")


def _die_once_on_a_worker() -> None:
    if KILL_MARKER is None or os.getpid() == DRIVER_PID:
        return
    try:
        os.unlink(KILL_MARKER)
    except FileNotFoundError:
        return
    os._exit(1)


def tiny() -> Task:
    g = torch.Generator().manual_seed(3)
    X = torch.randn(60, 3, generator=g, dtype=torch.float64)
    y = torch.tanh(X @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64))
    y = y + 0.1 * torch.randn(60, 1, generator=g, dtype=torch.float64)

    def model() -> nn.Module:
        _die_once_on_a_worker()
        return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()

    return Task(
        name="tiny-mlp",
        model=model,
        loss_fn="half_mse",
        train=(X[:40], y[:40]),
        val=(X[40:], y[40:]),
        description="A 3-4-1 tanh network on 40 samples.",
    )
