"""Phase c: L2 / weight decay, predicted by the quadratic model and measured by retraining.

For each grid ``α`` (total strength, ``α ≥ α₀``) the quadratic model of
``J + (α/2)‖D w‖²`` at ``w₀`` (where ``∇J(w₀) = −α₀ D w₀``) has its minimum at
``w̃ = w₀ + δ`` with ``(H + α D) δ = −(α − α₀) D w₀``, ``H = ∇²J(w₀)``: solved exactly on the
dense path, by conjugate gradients on the operator path. With ``D = I`` and ``α₀ = 0`` this is
``(H + αI)⁻¹ H w₀``. The measurement retrains ``J + (α/2)‖D w‖²`` by L-BFGS from ``w₀``
(warm start) and, as a user would, from the task's initialization (from scratch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from decaylab.study.config import Config
from decaylab.study.objective import Objective
from decaylab.study.phases.curvature import cg, hessian_operator
from decaylab.study.solvers import lbfgs
from decaylab.tasks import Task

__all__ = ["l2_point", "predict", "shrink", "trust_region", "gamma"]


def l2_point(
    task: Task, seed: int, alpha: float, w0: torch.Tensor, max_iter: int, tol: float, scratch: bool
) -> dict[str, Any]:
    """Retrain at one ``α``: warm from ``w₀`` and (if ``scratch``) from the initialization."""
    obj = Objective(task, seed)
    fn = obj.penalized(alpha)
    w, info = lbfgs(fn, w0, max_iter=max_iter, tol=tol)
    out: dict[str, Any] = {
        "w": w,
        "converged": info["converged"],
        "grad": info["grad"],
        "iterations": info["iterations"],
    }
    if scratch:
        ws, info_s = lbfgs(fn, obj.w_init, max_iter=max_iter, tol=tol)
        out.update(w_scratch=ws, scratch_converged=info_s["converged"])
    return out


Factor = tuple[Callable[[torch.Tensor], torch.Tensor], bool]
"""A solver ``b ↦ A⁻¹ b`` of one factored matrix, and whether that matrix is indefinite."""


def predict(
    obj: Objective,
    reference: dict[str, Any],
    curv: dict[str, Any],
    alpha: float,
    config: Config,
    factor: Factor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """``w̃(α)`` of the quadratic model; info says whether ``H + αD`` was positive definite.

    ``factor``: :func:`penalized_factor` of this ``α``, when the caller solves with it too.
    """
    w0, a0, D = reference["w0"], reference["alpha0"], obj.mask
    rhs = -(alpha - a0) * D * w0
    factor = factor or penalized_factor(obj, curv, alpha)
    if factor is not None:
        solve, negative = factor
        return w0 + solve(rhs), {"converged": True, "negative_curvature": negative}
    op = hessian_operator(obj, w0)
    delta, info = cg(
        lambda v: op.matvec(v) + alpha * D * v,
        rhs,
        tol=config.curvature["cg_tol"],
        max_iter=config.curvature["cg_max_iter"],
    )
    return w0 + delta, info


def penalized_factor(obj: Objective, curv: dict[str, Any], alpha: float) -> Factor | None:
    """:func:`psd_factor` of ``H + αD`` on the dense path (``None`` on the operator path)."""
    if curv["hessian"] is None:
        return None
    return psd_factor(curv["hessian"] + alpha * torch.diag(obj.mask))


def psd_factor(A: torch.Tensor) -> Factor:
    """Factor a positive semi-definite ``A`` once for solving ``A x = b``; also whether
    ``A`` is indefinite.

    A network's Hessian can be exactly singular along an undecayed symmetry (softmax is
    invariant to a shift of all output biases, and ``b`` has no component there), so the
    Cholesky factor is of ``A + τI`` with ``τ = 1e-10·max|A_ii|``: exact for the positive
    part, zero along the null direction. An ``A`` with an eigenvalue below ``−τ`` is
    reported as indefinite (the quadratic model has no minimizer) and solved as it is.
    """
    tau = 1e-10 * float(A.diagonal().abs().max())
    L, info = torch.linalg.cholesky_ex(A + tau * torch.eye(A.shape[0], dtype=A.dtype))
    if int(info) == 0:
        return (lambda b: torch.cholesky_solve(b[:, None], L)[:, 0]), False
    return (lambda b: torch.linalg.solve(A, b)), True


def shrink(w: torch.Tensor, w0: torch.Tensor, Q: torch.Tensor) -> list[float | None]:
    """``q_iᵀ w / q_iᵀ w₀`` per top eigenvector; ``None`` where ``q_iᵀ w₀ ≈ 0``."""
    num, den = Q.T @ w, Q.T @ w0
    floor = 1e-8 * float(w0.norm())
    return [float(n / d) if abs(float(d)) > floor else None for n, d in zip(num, den, strict=True)]


def gamma(curv: dict[str, Any], alpha: float, n_params: int) -> float:
    """Effective parameters ``γ = Σ λ⁺/(λ⁺ + α)`` (negative λ count 0; SLQ on operators)."""
    if curv["path"] == "dense":
        lam = curv["eigenvalues"].clamp(min=0)
        return float((lam / (lam + alpha)).sum())
    nodes, weights = curv["density_nodes"].clamp(min=0), curv["density_weights"]
    return float(n_params * (weights * nodes / (nodes + alpha)).sum())


def trust_region(alphas: list[float], errors: list[float | None], threshold: float) -> float | None:
    """Largest grid α with relative error ≤ threshold there and at every smaller α."""
    best = None
    for a, e in zip(alphas, errors, strict=True):
        if e is None or not math.isfinite(e) or e > threshold:
            break
        best = a
    return best


def _retrain_error(factor: Factor | None, alpha: float, grad: torch.Tensor) -> float:
    """Estimated ‖w_meas − w_opt‖: one Newton step (dense) or ‖∇‖/α (operator)."""
    if factor is not None:
        return float(factor[0](grad).norm())
    return float(grad.norm()) / alpha


def _metrics(
    obj: Objective,
    curv: dict[str, Any],
    w0: torch.Tensor,
    Q: torch.Tensor,
    alpha: float,
    point: dict[str, Any],
    predicted: tuple[torch.Tensor, dict[str, Any]],
    factor: Factor | None,
) -> dict[str, Any]:
    """The row of one grid α: the prediction ``w̃`` against the retrained ``point``."""
    (w_pred, info), w_meas, scratch = predicted, point["w"], point.get("w_scratch")
    disp = float((w_meas - w0).norm())
    err = _retrain_error(factor, alpha, point["grad"])
    return {
        "relative_error": float((w_pred - w_meas).norm()) / disp if disp > 0 else None,
        "relative_error_scratch": (
            None
            if scratch is None
            else float((w_pred - scratch).norm()) / float((scratch - w0).norm())
        ),
        "retrain_error": err / disp if disp > 0 else None,
        "displacement_norm": disp,
        "val_loss_predicted": obj.value(w_pred, "val"),
        "val_loss_measured": obj.value(w_meas, "val"),
        "val_loss_scratch": None if scratch is None else obj.value(scratch, "val"),
        "train_loss_predicted": obj.value(w_pred, "train"),
        "train_loss_measured": obj.value(w_meas, "train"),
        "gamma": gamma(curv, alpha, obj.n_params),
        "shrink_predicted": shrink(w_pred, w0, Q),
        "shrink_measured": shrink(w_meas, w0, Q),
        "retrain_converged": bool(point["converged"]),
        "prediction_valid": (
            not info.get("negative_curvature", False) and bool(info.get("converged", True))
        ),
    }


def run(
    obj: Objective, reference: dict[str, Any], curv: dict[str, Any], config: Config, executor: Any
) -> dict[str, Any]:
    """Predict and measure every grid α; per-α metrics and the trust region."""
    cfg, w0 = config.l2, reference["w0"]
    alphas = cfg["alphas"]
    calls = [
        dict(
            task=obj.task,
            seed=config.seed,
            alpha=a,
            w0=w0,
            max_iter=cfg["max_iter"],
            tol=cfg["tol"],
            scratch=cfg["scratch"],
        )
        for a in alphas
    ]
    measured = executor.map(l2_point, calls, keys=[f"l2-{a!r}" for a in alphas], label="L2")
    k = min(config.curvature["k"], curv["eigenvectors"].shape[1])
    Q = curv["eigenvectors"][:, :k]
    per_alpha, predicted_w = [], []
    for a, m in zip(alphas, measured, strict=True):
        factor = penalized_factor(obj, curv, a)  # one factorization for both solves at this α
        predicted = predict(obj, reference, curv, a, config, factor)
        per_alpha.append(_metrics(obj, curv, w0, Q, a, m, predicted, factor))
        predicted_w.append(predicted[0])
    rows = {key: [row[key] for row in per_alpha] for key in per_alpha[0]}
    tr = trust_region(alphas, rows["relative_error"], cfg["trust_threshold"])
    return {
        "alphas": list(alphas),
        **rows,
        "trust_region_alpha_max": tr,
        "predicted_w": torch.stack(predicted_w),
        "measured_w": torch.stack([m["w"] for m in measured]),
    }
