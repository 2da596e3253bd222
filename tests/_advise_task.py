"""A tiny two-class task (4 features, 30 + 30 samples) for the advisor's command and executor
tests: loaded as a task file by the command test, imported by the executor test (and by Ray
workers, which find tests/ on their path)."""

from __future__ import annotations

import torch
from torch import nn

from decaylab.tasks import Task


def tiny() -> Task:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 4, generator=g, dtype=torch.float64)
    y = (X[:, 0] + torch.randn(60, generator=g, dtype=torch.float64) > 0).long()
    return Task(
        name="tiny",
        model=lambda: nn.Linear(4, 2).double(),
        loss_fn=nn.CrossEntropyLoss(),
        train=(X[:30], y[:30]),
        val=(X[30:], y[30:]),
    )
