"""Curvature pieces shared by the methods: CG solves, the Newton predictor, the hypergradient.

All vectors are flat over the model's trainable parameters (``named_parameters()`` order);
``D`` is the 0/1 diagonal that marks the decayed ones, so the penalized objective is
``J̃(w) = J(w) + (α/2) wᵀ D w``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from decaylab.curvature import GGNOperator, HessianOperator, flatten_params
from decaylab.regularize import param_groups

__all__ = [
    "CGResult",
    "conjugate_gradient",
    "decay_mask",
    "flat_grad",
    "solve_shifted",
    "hypergradient",
    "newton_predictor",
]


@dataclass
class CGResult:
    """Solution of ``A x = b`` by conjugate gradients.

    ``negative_curvature`` is set when a search direction had ``pᵀAp ≤ 0`` (``A`` is not
    positive definite); ``x`` is then the last iterate before it.
    """

    x: torch.Tensor
    n_iter: int
    converged: bool
    negative_curvature: bool
    relative_residual: float


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    *,
    tol: float = 1e-6,
    max_iter: int = 100,
) -> CGResult:
    """Conjugate gradients (Hestenes & Stiefel 1952) from ``x = 0``, stopping at
    ``‖b − A x‖ ≤ tol ‖b‖`` or ``max_iter`` products, or on non-positive curvature.

    >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    >>> res = conjugate_gradient(lambda v: A @ v, torch.tensor([1.0, 2.0], dtype=torch.float64))
    >>> [round(v, 6) for v in res.x.tolist()], res.converged
    ([0.090909, 0.636364], True)
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = float(r @ r)
    b_norm = math.sqrt(float(b @ b)) or 1.0
    for it in range(1, max_iter + 1):
        Ap = matvec(p)
        pAp = float(p @ Ap)
        if pAp <= 0:
            return CGResult(x, it, False, True, math.sqrt(rr) / b_norm)
        step = rr / pAp
        x = x + step * p
        r = r - step * Ap
        rr_new = float(r @ r)
        if math.sqrt(rr_new) <= tol * b_norm:
            return CGResult(x, it, True, False, math.sqrt(rr_new) / b_norm)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return CGResult(x, max_iter, False, False, math.sqrt(rr) / b_norm)


def decay_mask(model: nn.Module) -> torch.Tensor:
    """``diag(D)``: 1 on the parameters weight decay acts on (``param_groups``' decayed
    group), 0 on the others (biases, norm layers), in flat-vector order."""
    decayed = {
        id(p) for g in param_groups(model, 1.0) if g["weight_decay"] > 0 for p in g["params"]
    }
    parts = [
        torch.full((p.numel(),), 1.0 if id(p) in decayed else 0.0, dtype=torch.float64)
        for p in model.parameters()
        if p.requires_grad
    ]
    return torch.cat(parts)


def flat_grad(model: nn.Module, loss_fn: Any, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``∇_w`` of the mean loss on ``(X, y)``, flat, float64."""
    params = [p for p in model.parameters() if p.requires_grad]
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            loss = loss_fn(model(X), y)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        model.train(was)
    return torch.cat(
        [
            torch.zeros(p.numel()) if g is None else g.reshape(-1)
            for g, p in zip(grads, params, strict=True)
        ]
    ).double()


def make_operator(model: nn.Module, loss_fn: Any, data: tuple, kind: str) -> Any:
    """The float64 curvature operator of the mean training loss (``"ggn"`` or ``"hessian"``)."""
    cls = GGNOperator if kind == "ggn" else HessianOperator
    was = model.training
    model.eval()
    try:
        return cls(model, loss_fn, data, dtype=torch.float64, backend="rev_rev")
    finally:
        model.train(was)


def solve_shifted(
    op: Any,
    mask: torch.Tensor,
    alpha: float,
    b: torch.Tensor,
    *,
    damping: float,
    max_iter: int,
    tol: float = 1e-4,
) -> CGResult:
    """``(C + α D + μ I)⁻¹ b`` by CG, ``C`` the operator, ``μ`` = ``damping``."""

    def matvec(v: torch.Tensor) -> torch.Tensor:
        return op.matvec(v) + alpha * mask * v + damping * v

    return conjugate_gradient(matvec, b, tol=tol, max_iter=max_iter)


def hypergradient(
    model: nn.Module,
    loss_fn: Any,
    train: tuple,
    val: tuple,
    alpha: float,
    *,
    curvature: str = "hessian",
    damping: float = 0.0,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> tuple[float, CGResult]:
    """``d L_val(w̃(α)) / d log α`` at weights ``w`` taken to be the penalized optimum.

    Implicit differentiation of ``∇J(w̃) + α D w̃ = 0`` gives
    ``dw̃/dα = −(H + αD)⁻¹ D w̃``, so
    ``dL_val/d log α = −α ∇L_val(w̃)ᵀ (H + αD)⁻¹ D w̃`` (one CG solve; ``H`` the Hessian of
    the mean training loss, or its GGN with ``curvature="ggn"``). Returns the value and the
    CG record, whose ``negative_curvature`` flags an ``H + αD`` that is not positive
    definite (the weights are then not a minimum and the value is not vouched for).
    """
    op = make_operator(model, loss_fn, train, curvature)
    mask = decay_mask(model)
    w = flatten_params(model).double()
    res = solve_shifted(op, mask, alpha, mask * w, damping=damping, max_iter=max_iter, tol=tol)
    g_val = flat_grad(model, loss_fn, *val)
    return -alpha * float(g_val @ res.x), res


def newton_predictor(
    trainer: Any,
    alpha_new: float,
    *,
    max_iter: int = 30,
    damping_rel: float = 1e-4,
    max_relative_step: float | None = None,
) -> dict[str, Any]:
    """Move the trainer's weights to the quadratic prediction of ``w̃(α_new)``.

    One damped Newton step on the new objective with the GGN ``G`` at the current weights:
    ``Δ = −(G + α_new D + μ I)⁻¹ (∇J(w) + α_new D w)``, ``μ = damping_rel · tr-scale``;
    for ``w`` at the old optimum this is ``w̃(α_new) − w`` to first order. Halved up to
    three times until the new objective falls; not taken at all otherwise. Returns how many
    GGN products it used and whether it was taken.
    """
    model = trainer.model
    op = make_operator(model, trainer.loss_fn, (trainer.X, trainer.y), "ggn")
    mask = decay_mask(model)
    w = flatten_params(model).double()
    rhs = -(flat_grad(model, trainer.loss_fn, trainer.X, trainer.y) + alpha_new * mask * w)
    scale = float(op.matvec(torch.ones_like(w) / math.sqrt(w.numel())).norm())
    res = solve_shifted(
        op, mask, alpha_new, rhs, damping=damping_rel * scale + 1e-12, max_iter=max_iter
    )
    n_products = op.n_matvecs
    trainer.set_alpha(alpha_new)
    before = trainer.objective()
    params = [p for p in model.parameters() if p.requires_grad]
    taken = 0.0
    step = res.x
    if max_relative_step is not None:
        # Trust region: the quadratic model is not trusted beyond this fraction of ‖w‖.
        limit = max_relative_step * float(w.norm())
        if float(step.norm()) > limit:
            step = step * (limit / float(step.norm()))
    for _ in range(4):
        _add_flat(params, step)
        if trainer.objective() < before:
            taken = float(step.norm() / (res.x.norm() + 1e-300))
            break
        _add_flat(params, -step)
        step = step / 2
    return {"products": n_products, "taken": taken, "cg_iter": res.n_iter}


@torch.no_grad()
def _add_flat(params: list[torch.Tensor], vec: torch.Tensor) -> None:
    start = 0
    for p in params:
        n = p.numel()
        p.add_(vec[start : start + n].reshape(p.shape).to(p.dtype))
        start += n
