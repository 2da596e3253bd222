"""The ``"hypergradient"`` method: α adapted during one training by implicit differentiation.

Every ``steps/(updates+1)`` steps, taking the weights as the penalized optimum ``w̃(α)``,
``g = dL_val/d log α = −α ∇L_valᵀ (H + αD)⁻¹ D w̃`` (CG on the Hessian operator,
:func:`~decaylab.advise._curv.hypergradient`) and ``log α`` takes a normalized step
``−η_k g/√v`` (``v`` a running mean of ``g²``, ``η_k = η/√(k+1)``), clipped to the range.
Where ``H + αD`` shows negative curvature, the GGN (positive semi-definite) is used for that
update and the advice says so. One full-protocol training at the final α follows.
"""

from __future__ import annotations

import math
from typing import Any

from decaylab.advise._curv import hypergradient
from decaylab.advise._train import Budget, Protocol, Trainer

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
    trainer = Trainer(task, protocol, alpha, budget)
    interval = max(protocol.steps // (updates + 1), 1)
    train, val = (trainer.X, trainer.y), (trainer.Xv, trainer.yv)
    steps, trace, grads, vals = [], [], [], []
    fallbacks, v, change = 0, 0.0, math.inf
    for k in range(updates):
        trainer.run(interval)
        g, res = hypergradient(
            trainer.model,
            trainer.loss_fn,
            train,
            val,
            trainer.alpha,
            curvature="hessian",
            max_iter=cg_iters,
            tol=1e-4,
        )
        budget.add_products(res.n_iter)
        if res.negative_curvature:
            fallbacks += 1
            g, res = hypergradient(
                trainer.model,
                trainer.loss_fn,
                train,
                val,
                trainer.alpha,
                curvature="ggn",
                max_iter=cg_iters,
                tol=1e-4,
            )
            budget.add_products(res.n_iter)
        v = 0.8 * v + 0.2 * g * g
        delta = -step / math.sqrt(k + 1) * g / (math.sqrt(v / (1 - 0.8 ** (k + 1))) + 1e-300)
        new = min(max(trainer.alpha * math.exp(delta), low), high)
        change = abs(math.log(new / trainer.alpha))
        trainer.set_alpha(new)
        steps.append(trainer.steps_done)
        trace.append(new)
        grads.append(g)
        vals.append(trainer.val_loss())
    trainer.run(max(protocol.steps - trainer.steps_done, 0))
    return {
        "alpha": trainer.alpha,
        "step": steps,
        "alpha_trace": trace,
        "hypergradient": grads,
        "val_loss_trace": vals,
        "ggn_fallbacks": fallbacks,
        "last_change": change,
        "updates": updates,
    }
