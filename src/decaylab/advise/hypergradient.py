"""The ``"hypergradient"`` method: α adapted during one training by implicit differentiation.

Every ``steps/(updates+1)`` steps of one :func:`decaylab.fit` run (through a callback),
taking the weights as the penalized optimum ``w̃(α)``,
``g = dL_val/d log α = −α ∇L_valᵀ (H + αD)⁻¹ D w̃`` (CG on the Hessian operator,
:func:`~decaylab.advise._curv.hypergradient`) and ``log α`` takes a normalized step
``−η_k g/√v`` (``v`` a running mean of ``g²``, ``η_k = η/√(k+1)``), clipped to the range.
Where ``H + αD`` shows negative curvature, the GGN (positive semi-definite) is used for that
update and the advice says so. One full-protocol training at the final α follows.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from decaylab.advise._curv import CGResult, hypergradient
from decaylab.advise._online import run_online
from decaylab.advise._train import Budget, Protocol

__all__ = ["hypergradient_search"]


def hypergradient_search(
    task: Any,
    protocol: Protocol,
    alpha_range: tuple[float, float],
    budget: Budget,
    *,
    alpha0: float | None = None,
    updates: int = 8,
    step: float = 1.0,
    cg_iters: int = 50,
) -> dict[str, Any]:
    """Run the online hypergradient descent on ``log α``; returns the final α, its
    trajectory and how many updates fell back to the GGN."""
    low, high = alpha_range
    alpha = alpha0 if alpha0 is not None else math.sqrt(low * high)
    trace: list[float] = []
    grads: list[float] = []
    vals: list[float] = []
    state = {"v": 0.0, "change": math.inf, "fallbacks": 0}

    def solve(view: Any, current: float, curvature: str) -> tuple[float, CGResult]:
        train, val = (view.X, view.y), (view.Xv, view.yv)
        g, res = hypergradient(
            view.model, view.loss_fn, train, val, current,
            curvature=curvature, max_iter=cg_iters, tol=1e-4,
        )  # fmt: skip
        budget.add_products(res.n_iter)
        return g, res

    def update(view: Any, current: float) -> float:
        k = len(trace)
        g, res = solve(view, current, "hessian")
        if res.negative_curvature:
            state["fallbacks"] += 1
            g, res = solve(view, current, "ggn")
        state["v"] = 0.8 * state["v"] + 0.2 * g * g
        scale = math.sqrt(state["v"] / (1 - 0.8 ** (k + 1))) + 1e-300
        new = min(max(current * math.exp(-step / math.sqrt(k + 1) * g / scale), low), high)
        state["change"] = abs(math.log(new / current))
        trace.append(new)
        grads.append(g)
        with torch.no_grad():
            view.model.eval()
            vals.append(float(view.loss_fn(view.model(view.Xv), view.yv)))
            view.model.train()
        return new

    view = run_online(task, protocol, alpha, budget, updates=updates, update=update)
    fallbacks, change = state["fallbacks"], state["change"]
    return {
        "alpha": view.alpha,
        "step": view.update_steps,
        "alpha_trace": trace,
        "hypergradient": grads,
        "val_loss_trace": vals,
        "ggn_fallbacks": fallbacks,
        "last_change": change,
        "updates": updates,
    }
