"""The ``"grid"`` baseline: one full-protocol training per ``α``, best validation loss.

Each grid point is an independent pure function of ``(task, protocol, α)``
(:func:`grid_point`), so an executor can schedule them anywhere.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from decaylab.advise._train import Budget, Protocol, train_at
from decaylab.executors import LocalExecutor

__all__ = ["grid_point", "grid_search", "log_grid", "measured_grid_point"]


def log_grid(low: float, high: float, n: int) -> np.ndarray:
    """``n`` log-spaced α from ``low`` to ``high``.

    >>> log_grid(1e-6, 1e-1, 11)[[0, 4, -1]].tolist()
    [1e-06, 0.0001, 0.1]
    """
    return np.logspace(np.log10(low), np.log10(high), n)


def grid_point(task: Any, protocol: Protocol, alpha: float, budget: Budget) -> dict[str, Any]:
    """Train at ``α`` with the protocol from the seeded initialization; the losses."""
    trainer = train_at(task, protocol, alpha, budget)
    return {
        "alpha": float(alpha),
        "val_loss": trainer.val_loss(),
        "train_loss": trainer.train_loss(),
        "val_accuracy": trainer.val_accuracy(),
    }


def measured_grid_point(task: Any, protocol: Protocol, alpha: float) -> dict[str, Any]:
    """:func:`grid_point` with its own compute: adds ``seconds`` and ``grad_evals``.

    A pure function of its arguments (what an executor ships to a worker); the compute is
    measured where the point runs, so a remote grid's compute is the sum over its points.
    """
    budget = Budget()
    row = grid_point(task, protocol, alpha, budget)
    return {**row, "seconds": budget.seconds, "grad_evals": budget.grad_evals}


def grid_search(
    task: Any,
    protocol: Protocol,
    alphas: Any,
    budget: Budget | None = None,
    executor: Any = None,
) -> dict[str, Any]:
    """Every grid point, then the best: ``{alphas, val_loss, train_loss, val_accuracy,
    best_alpha, best_val_loss, best_val_accuracy, compute_seconds, grad_evals}``.

    ``executor``: what runs the points (``executor.map(fn, calls, keys=, label=)``, e.g.
    :class:`decaylab.executors.LocalExecutor` or :class:`decaylab.executors.ray.RayExecutor`);
    default in this process, in order. ``compute_seconds`` and ``grad_evals`` are the sums
    over the points of what each measured where it ran (not the driver's wall time). With a
    ``budget``, the points' gradient evaluations are added to it, and so is the seconds the
    points spent beyond the driver's own wall time (a remote grid's compute is counted).
    """
    if executor is None:
        executor = LocalExecutor()
    start = time.perf_counter()
    calls = [{"task": task, "protocol": protocol, "alpha": float(a)} for a in alphas]
    rows = executor.map(measured_grid_point, calls, label="advise grid")
    seconds = float(sum(r["seconds"] for r in rows))
    grad_evals = float(sum(r["grad_evals"] for r in rows))
    if budget is not None:
        budget.grad_evals += grad_evals
        budget.offloaded += max(0.0, seconds - (time.perf_counter() - start))
    vals = np.array([r["val_loss"] for r in rows])
    vals_for_min = np.where(np.isfinite(vals), vals, np.inf)
    best = int(np.argmin(vals_for_min))
    return {
        "alphas": [r["alpha"] for r in rows],
        "val_loss": vals.tolist(),
        "train_loss": [r["train_loss"] for r in rows],
        "val_accuracy": [r["val_accuracy"] for r in rows],
        "best_alpha": rows[best]["alpha"],
        "best_val_loss": rows[best]["val_loss"],
        "best_val_accuracy": rows[best]["val_accuracy"],
        "compute_seconds": seconds,
        "grad_evals": grad_evals,
    }
