"""Phase e: early stopping of full-batch gradient descent, and its equivalent L2 strength.

Gradient descent ``w ← w − ε ∇J(w)`` from the task's initialization ``w_init``
(:func:`decaylab.fit`, optimizer ``"sgd"``, full batch) with :class:`decaylab.EarlyStopping`
on the validation loss; ``τ*`` is its best step. On the quadratic model of ``J`` at ``w₀``
(gradient ``g = ∇J(w₀)``, ``H q_i = λ_i q_i``) the coordinate ``c_i = q_iᵀ(w − w₀)`` follows
``c_i(t) = r_i^t c_i(0) − g_i (1 − r_i^t)/λ_i``, ``r_i = 1 − ελ_i`` (``−g_i ε t`` when
``λ_i = 0``): the predicted trajectory. Stopping at ``τ*`` equals L2 toward ``w_init``
direction by direction with ``α_i = λ_i r_i^τ / (1 − r_i^τ)``
(:func:`decaylab.theory.early_stopping_alpha`), and approximately with the scalar
``α = 1/(ετ*)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from decaylab.study.config import Config
from decaylab.study.objective import Objective
from decaylab.study.phases.curvature import hessian_operator
from decaylab.study.solvers import lbfgs

__all__ = ["predicted_coordinates", "resolve_lr", "run"]


def resolve_lr(obj: Objective, config: Config) -> tuple[float, str]:
    """``early_stopping.lr``, or ``1/λ_max`` of ``H`` at the initialization for ``"auto"``.

    The curvature where gradient descent starts, not at ``w₀``: a network near
    interpolation is much flatter at ``w₀`` (cross-entropy), and ``1/λ_max(w₀)`` would be
    far beyond the stable step at the start.
    """
    from decaylab.curvature import eigen

    lr = config.early_stopping["lr"]
    if lr != "auto":
        return float(lr), "early_stopping.lr set in the config"
    op = hessian_operator(obj, obj.w_init)
    lam = float(eigen(op, k=2, tol=1e-3, seed=config.seed).eigenvalues[0])
    return 1.0 / lam, (
        f'1/λ_max of H at the initialization = 1/{lam:.4g} (early_stopping.lr = "auto")'
    )


def predicted_coordinates(
    lam: torch.Tensor, g: torch.Tensor, c0: torch.Tensor, lr: float, steps: torch.Tensor
) -> torch.Tensor:
    """``c_i(t)`` of gradient descent on the quadratic, shape ``(len(steps), len(lam))``."""
    t = steps.double()[:, None]
    r = 1.0 - lr * lam[None, :]
    pw = torch.sign(r) ** t * torch.abs(r) ** t
    small = lam.abs() < 1e-12
    coef = torch.where(small[None, :], lr * t, (1 - pw) / torch.where(small, 1.0, lam)[None, :])
    return pw * c0[None, :] - g[None, :] * coef


def _train(obj: Objective, config: Config, lr: float) -> tuple[Any, list[tuple[int, Any]]]:
    from decaylab import EarlyStopping, fit

    cfg = config.early_stopping
    model = obj.model_at(obj.w_init)
    stopper = EarlyStopping(monitor="val_loss", patience=cfg["patience"], restore_best=True)
    history = fit(
        model,
        obj.task.loss_fn,
        obj.train,
        val_data=obj.val,
        optimizer="sgd",
        lr=lr,
        steps=cfg["max_steps"],
        early_stopping=stopper,
        eval_every=1,
        record_every=cfg["record_every"],
        progress=False,
        seed=config.seed,
    )
    return history, history.snapshots


def run(
    obj: Objective, reference: dict[str, Any], curv: dict[str, Any], config: Config
) -> dict[str, Any]:
    """Train with early stopping; τ*, equivalent α, trajectories and validation losses."""
    from decaylab.theory import early_stopping_alpha

    w0, w_init = reference["w0"], obj.w_init
    lam_all = curv["eigenvalues"]
    lr, lr_reason = resolve_lr(obj, config)
    history, snaps = _train(obj, config, lr)
    best = history.best_step if history.best_step is not None else history.step[-1]
    k = min(config.curvature["k"], curv["eigenvectors"].shape[1])
    Q, lam = curv["eigenvectors"][:, :k], lam_all[:k]
    g = obj.grad(obj.penalized(0.0), w0)
    steps = torch.tensor([s for s, _ in snaps])
    W = torch.stack([w for _, w in snaps]).to(w0.dtype)
    c0 = Q.T @ (w_init - w0)
    pred = predicted_coordinates(lam, Q.T @ g, c0, lr, steps)
    measured_traj = ((W - w_init) @ Q).norm(dim=1)
    predicted_traj = (pred - c0[None, :]).norm(dim=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_dir = early_stopping_alpha(np.clip(lam.numpy(), 0, None), lr, best)
    alpha_eq = 1.0 / (lr * best) if best > 0 else None
    w_best = W[steps.tolist().index(best)] if best in steps.tolist() else None
    out = {
        "lr": lr,
        "lr_reason": lr_reason,
        "patience": config.early_stopping["patience"],
        "best_step": int(best),
        "stop_reason": history.stop_reason,
        "steps_done": int(history.steps_done),
        "equivalent_alpha": alpha_eq,
        "equivalent_alpha_per_direction": [float(a) if math.isfinite(a) else None for a in per_dir],
        "val_curve": {
            "steps": list(history.step),
            "val_loss": list(history.val_loss),
            "train_loss": list(history.train_loss),
        },
        "trajectory": {
            "steps": steps.tolist(),
            "predicted": predicted_traj.tolist(),
            "measured": measured_traj.tolist(),
        },
        "snapshots_steps": steps,
        "snapshots": W,
        "lr_lambda_max": lr * float(lam_all[0]),
    }
    out["val_loss_early_stopping"] = history.val_loss[history.step.index(best)]
    out.update(_l2_equivalents(obj, config, alpha_eq, w_best if w_best is not None else w0))
    return out


def _l2_equivalents(
    obj: Objective, config: Config, alpha_eq: float | None, start: torch.Tensor
) -> dict[str, Any]:
    """Validation loss of L2 at ``α = 1/(ετ*)`` toward ``w_init`` and toward zero."""
    if alpha_eq is None:
        return {
            "val_loss_l2_equivalent": None,
            "val_loss_l2_equivalent_zero": None,
            "l2_equivalent_converged": None,
        }
    cfg = config.l2
    w_i, info_i = lbfgs(
        obj.penalized(alpha_eq, center=obj.w_init), start, max_iter=cfg["max_iter"], tol=cfg["tol"]
    )
    w_z, info_z = lbfgs(obj.penalized(alpha_eq), start, max_iter=cfg["max_iter"], tol=cfg["tol"])
    return {
        "val_loss_l2_equivalent": obj.value(w_i, "val"),
        "val_loss_l2_equivalent_zero": obj.value(w_z, "val"),
        "l2_equivalent_converged": bool(info_i["converged"] and info_z["converged"]),
    }
