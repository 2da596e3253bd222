"""Phase b: the curvature of the mean training loss ``J`` (without penalty) at ``w₀``.

Dense path (``P ≤ curvature.dense_max_params``): the exact Hessian by
:func:`decaylab.curvature.dense_hessian`, all eigenvalues, exact diagonal and trace.
Operator path: :class:`~decaylab.curvature.HessianOperator` (no dense matrix), certified
top-k eigenpairs (:func:`~decaylab.curvature.eigen`), Hutch++ trace, diagonal estimate and
stochastic-Lanczos spectral density; the L2 predictions then solve by conjugate gradients
on the operator (:func:`cg`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from decaylab.study.config import Config
from decaylab.study.distributed import shard
from decaylab.study.objective import Objective

__all__ = ["cg", "density_from_eigenvalues", "hessian_operator", "run"]


def hessian_operator(obj: Objective, w0: torch.Tensor) -> Any:
    from decaylab.curvature import HessianOperator

    # Under torchrun each rank holds a shard; the operator all-reduces over the ranks.
    return HessianOperator(obj.model_at(w0), obj.task.loss_fn, shard(obj.train), dtype=obj.dtype)


def density_from_eigenvalues(eigs: torch.Tensor, n_grid: int = 200) -> dict[str, Any]:
    """``(1/P) Σ_i N(t; λ_i, σ²)`` on a grid, σ = 1 % of the spectrum's range (as SLQ's)."""
    lo, hi = float(eigs.min()), float(eigs.max())
    span = max(hi - lo, 1e-12)
    sigma = 0.01 * span
    grid = torch.linspace(lo - 0.05 * span, hi + 0.05 * span, n_grid, dtype=torch.float64)
    dens = torch.exp(-0.5 * ((grid[:, None] - eigs[None, :]) / sigma) ** 2).mean(1)
    dens /= sigma * math.sqrt(2 * math.pi)
    return {"grid": grid.tolist(), "values": dens.tolist(), "sigma": sigma}


def _negative_count(eigs: torch.Tensor) -> int:
    # Eigenvalues within rounding of zero are zero, not negative (flat directions).
    tol = 1e-8 * float(eigs.abs().max()) if eigs.numel() else 0.0
    return int((eigs < -tol).sum())


def _dense(obj: Objective, w0: torch.Tensor) -> dict[str, Any]:
    from decaylab.curvature import dense_hessian

    H = dense_hessian(
        obj.model_at(w0),
        obj.task.loss_fn,
        shard(obj.train),
        dtype=obj.dtype,
        max_params=max(obj.n_params, 1),
    )
    eigs, vecs = torch.linalg.eigh(H)
    eigs, vecs = eigs.flip(0), vecs.flip(1)
    return {
        "path": "dense",
        "hessian": H,
        "eigenvalues": eigs,
        "eigenvectors": vecs,
        "n_negative": _negative_count(eigs),
        "trace": float(torch.trace(H)),
        "trace_std_error": 0.0,
        "diagonal": torch.diagonal(H).clone(),
        "diagonal_source": "exact",
        "density": density_from_eigenvalues(eigs),
        "eigen_converged": True,
        "n_matvecs": 0,
        "notes": [],
    }


def _operator(obj: Objective, w0: torch.Tensor, config: Config) -> dict[str, Any]:
    from decaylab.curvature import diagonal, eigen, spectral_density, trace

    cfg = config.curvature
    op = hessian_operator(obj, w0)
    k = min(cfg["k"], obj.n_params)
    res = eigen(op, k=k, tol=cfg["tol"], seed=config.seed)
    tr = trace(op, n_matvecs=cfg["trace_matvecs"], seed=config.seed)
    dg = diagonal(op, n_matvecs=cfg["diagonal_matvecs"], seed=config.seed)
    sd = spectral_density(
        op, n_probes=cfg["density_probes"], n_steps=cfg["density_steps"], seed=config.seed
    )
    # Negative eigenvalues outside the top-k: estimated from the SLQ quadrature weights.
    neg_weight = float(sd.weights[sd.nodes < -1e-8 * float(sd.nodes.abs().max())].sum())
    notes = [
        f"operator path ({obj.n_params} parameters > curvature.dense_max_params = "
        f"{cfg['dense_max_params']}): top-{k} eigenpairs by Lanczos, trace by Hutch++ "
        f"({tr.n_matvecs} products), diagonal by diag++ estimate, density by stochastic "
        "Lanczos quadrature; n_negative is estimated from the density's quadrature weights."
    ]
    return {
        "path": "operator",
        "hessian": None,
        "eigenvalues": res.eigenvalues.double(),
        "eigenvectors": res.eigenvectors.double().cpu(),
        "eigen_converged": bool(res.converged.all()),
        "n_negative": int(round(neg_weight * obj.n_params)),
        "trace": tr.estimate,
        "trace_std_error": tr.std_error,
        "diagonal": dg.estimate.double().cpu(),
        "diagonal_source": "estimated",
        "density": {
            "grid": sd.grid.tolist(),
            "values": sd.density.tolist(),
            "sigma": float(sd.sigma),
        },
        "density_nodes": sd.nodes.double().cpu(),
        "density_weights": sd.weights.double().cpu(),
        "n_matvecs": int(res.n_matvecs + tr.n_matvecs + dg.n_matvecs + sd.n_matvecs),
        "notes": notes,
    }


def run(obj: Objective, reference: dict[str, Any], config: Config) -> dict[str, Any]:
    """Curvature of ``J`` at ``w₀`` (dense or operator path, by parameter count)."""
    w0 = reference["w0"]
    if obj.n_params <= config.curvature["dense_max_params"]:
        return _dense(obj, w0)
    return _operator(obj, w0, config)


def cg(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, *, tol: float, max_iter: int
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Solve ``A x = b`` by conjugate gradients; stops (flagged) on negative curvature.

    ``converged`` is ``‖b − A x‖ ≤ tol ‖b‖``; ``negative_curvature`` is set when a search
    direction has ``pᵀ A p ≤ 0`` (``A`` not positive definite: the quadratic model has no
    minimizer and the prediction is not defined).
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = float(r @ r)
    bnorm = math.sqrt(float(b @ b)) or 1.0
    it = 0
    negative = False
    while it < max_iter:
        if math.sqrt(rr) <= tol * bnorm:
            break
        it += 1
        Ap = matvec(p)
        pAp = float(p @ Ap)
        if pAp <= 0:
            negative = True
            break
        step = rr / pAp
        x += step * p
        r -= step * Ap
        rr_new = float(r @ r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    rel = math.sqrt(rr) / bnorm
    return x, {
        "converged": bool(rel <= tol and not negative),
        "iterations": it,
        "relative_residual": rel,
        "negative_curvature": negative,
    }
