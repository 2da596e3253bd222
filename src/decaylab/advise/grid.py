"""The ``"grid"`` baseline: one full-protocol training per ``α``, best validation loss.

Each grid point is an independent pure function of ``(task, protocol, α)``
(:func:`grid_point`), so an executor can schedule them anywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from decaylab.advise._train import Budget, Protocol, train_at

__all__ = ["grid_point", "grid_search", "log_grid"]


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


def grid_search(
    task: Any, protocol: Protocol, alphas: Any, budget: Budget | None = None
) -> dict[str, Any]:
    """Every grid point, then the best: ``{alphas, val_loss, train_loss, val_accuracy,
    best_alpha, best_val_loss, best_val_accuracy, compute_seconds, grad_evals}``."""
    budget = budget if budget is not None else Budget()
    rows = [grid_point(task, protocol, float(a), budget) for a in alphas]
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
        "compute_seconds": budget.seconds,
        "grad_evals": budget.grad_evals,
    }
