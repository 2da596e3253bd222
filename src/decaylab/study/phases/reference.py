"""Phase a: the reference weights ``w₀``, a converged full-batch minimizer.

``w₀`` minimizes ``J(w) + (α₀/2) ‖w_d‖²`` by L-BFGS from the task's (seeded)
initialization. ``α₀ = 0`` for regression. For classification the data term alone has no
finite minimizer when the training set is separable (the weights grow without bound), so
``reference.alpha0 = "auto"`` takes ``α₀ = 1e-4``, a stated, small base penalty; every L2
prediction then uses ``α − α₀`` and the Hessian of the penalized objective (conventions).
"""

from __future__ import annotations

from typing import Any

from decaylab.study.config import Config
from decaylab.study.objective import Objective
from decaylab.study.solvers import lbfgs

__all__ = ["AUTO_ALPHA0_CLASSIFICATION", "resolve_alpha0", "run"]

AUTO_ALPHA0_CLASSIFICATION = 1e-4


def is_classification(obj_or_task: Any) -> bool:
    """Integer targets (cross-entropy) or a logistic loss: no finite minimizer when separable."""
    task = getattr(obj_or_task, "task", obj_or_task)
    y = task.train[1]
    return (not y.is_floating_point()) or "BCE" in type(task.loss_fn).__name__


def resolve_alpha0(task: Any, config: Config) -> tuple[float, str]:
    """``(α₀, why)`` from ``reference.alpha0`` (a number, or ``"auto"``)."""
    value = config.reference["alpha0"]
    if value != "auto":
        return float(value), "reference.alpha0 set in the config"
    if is_classification(task):
        return AUTO_ALPHA0_CLASSIFICATION, (
            f"classification: the data term has no finite minimizer when the training set is "
            f"separable, so the reference minimizes J + (α₀/2)‖w_d‖² with α₀ = "
            f'{AUTO_ALPHA0_CLASSIFICATION:g} (reference.alpha0 = "auto")'
        )
    return 0.0, "regression: the reference minimizes J alone (α₀ = 0)"


def run(obj: Objective, config: Config) -> dict[str, Any]:
    """Train ``w₀``; return it with its losses, gradient norm and convergence."""
    alpha0, why = resolve_alpha0(obj.task, config)
    w0, info = lbfgs(
        obj.penalized(alpha0),
        obj.w_init,
        max_iter=config.reference["max_iter"],
        tol=config.reference["tol"],
    )
    return {
        "w0": w0,
        "alpha0": alpha0,
        "alpha0_reason": why,
        "train_loss": obj.value(w0, "train"),
        "val_loss": obj.value(w0, "val"),
        "grad_norm": info["grad_norm"],
        "grad_max": info["grad_max"],
        "iterations": info["iterations"],
        "converged": info["converged"],
    }
