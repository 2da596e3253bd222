"""Phase d: L1, the zero set predicted from the Hessian's diagonal against FISTA's.

The objective is ``J + (α₀/2)‖D w‖² + α ‖D w‖₁`` (the reference's base penalty kept, so
``w₀`` is the minimizer at ``α = 0``). With a diagonal quadratic model at ``w₀`` (``H_ii`` of
the penalized objective: ``∂²J/∂w_i² + α₀`` on decayed entries) the L1 optimum
soft-thresholds ``w₀`` by ``α / H_ii`` (conventions): entry ``i`` is predicted zero when
``|w₀,i| ≤ α / H_ii``. Measured: FISTA from ``w₀`` to a gradient-mapping norm ≤ ``l1.tol``;
exact zeros come from the prox.
"""

from __future__ import annotations

from typing import Any

import torch

from decaylab.study.config import Config
from decaylab.study.objective import Objective
from decaylab.study.solvers import fista
from decaylab.tasks import Task

__all__ = ["l1_point", "predicted_zeros", "run"]


def l1_point(
    task: Task,
    seed: int,
    alpha: float,
    alpha0: float,
    w0: torch.Tensor,
    step: float,
    max_iter: int,
    tol: float,
) -> dict[str, Any]:
    """FISTA at one ``α`` from ``w₀``."""
    obj = Objective(task, seed)
    w, info = fista(
        obj.penalized(alpha0), alpha * obj.mask, w0, step=step, max_iter=max_iter, tol=tol
    )
    return {
        "w": w,
        "converged": info["converged"],
        "iterations": info["iterations"],
        "gradient_mapping": info["gradient_mapping"],
    }


def predicted_zeros(
    w0: torch.Tensor, h_diag: torch.Tensor, mask: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, int]:
    """Penalized entries with ``|w₀,i| ≤ α / H_ii``; also the count with ``H_ii ≤ 0``."""
    pen = mask > 0
    positive = h_diag > 0
    thresh = torch.where(positive, alpha / h_diag.clamp(min=1e-300), torch.zeros_like(h_diag))
    zero = pen & positive & (w0.abs() <= thresh)
    return zero, int((pen & ~positive).sum())


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def run(
    obj: Objective, reference: dict[str, Any], curv: dict[str, Any], config: Config, executor: Any
) -> dict[str, Any]:
    """Predicted vs measured zeros, precision/recall and validation loss for each α."""
    cfg, w0, a0 = config.l1, reference["w0"], reference["alpha0"]
    h_diag = curv["diagonal"] + a0 * obj.mask
    lam_max = float(curv["eigenvalues"][0]) + a0
    step = 1.0 / max(lam_max, 1e-12)
    calls = [
        dict(
            task=obj.task,
            seed=config.seed,
            alpha=a,
            alpha0=a0,
            w0=w0,
            step=step,
            max_iter=cfg["max_iter"],
            tol=cfg["tol"],
        )
        for a in cfg["alphas"]
    ]
    points = executor.map(l1_point, calls, keys=[f"l1-{a!r}" for a in cfg["alphas"]], label="L1")
    rows: dict[str, list[Any]] = {
        k: []
        for k in (
            "zero_precision",
            "zero_recall",
            "n_zero_predicted",
            "n_zero_measured",
            "n_both",
            "val_loss",
            "train_loss",
            "converged",
            "n_nonpositive_diagonal",
        )
    }
    pen = obj.mask > 0
    for a, p in zip(cfg["alphas"], points, strict=True):
        pred, n_bad = predicted_zeros(w0, h_diag, obj.mask, a)
        meas = pen & (p["w"] == 0)
        both = int((pred & meas).sum())
        rows["zero_precision"].append(_ratio(both, int(pred.sum())))
        rows["zero_recall"].append(_ratio(both, int(meas.sum())))
        rows["n_zero_predicted"].append(int(pred.sum()))
        rows["n_zero_measured"].append(int(meas.sum()))
        rows["n_both"].append(both)
        rows["val_loss"].append(obj.value(p["w"], "val"))
        rows["train_loss"].append(obj.value(p["w"], "train"))
        rows["converged"].append(bool(p["converged"]))
        rows["n_nonpositive_diagonal"].append(n_bad)
    return {
        "alphas": list(cfg["alphas"]),
        **rows,
        "n_penalized": int(pen.sum()),
        "diagonal_source": curv["diagonal_source"],
    }
