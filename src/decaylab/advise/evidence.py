"""The ``"evidence"`` method: α re-estimated during one training by MacKay's fixed point.

Every ``steps/(updates+1)`` steps of one :func:`decaylab.fit` run (through a callback)
the GGN spectrum of the decayed weights is computed and
``α ← γ(α)/(N‖w_d‖²)`` (the maximizer of :func:`~decaylab.bayes.laplace_log_evidence` at
those weights, iterated on the fixed spectrum) takes effect for the next steps. At the end
the log evidence over the whole range is recorded from the final weights' spectrum, and
one full-protocol training at the final α gives the advised model.

With ``per_group=True`` the evidence-optimal α of each decayed weight tensor at the final
weights is reported as well (:func:`~decaylab.advise._spectrum.per_group_alpha`); it is not
applied: the training and the advised α stay those of the single α.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from decaylab._checks import check_bool
from decaylab.advise._online import run_online
from decaylab.advise._spectrum import evidence_fixed_point, per_group_alpha, spectrum_of
from decaylab.advise._train import Budget, Protocol
from decaylab.advise.grid import log_grid
from decaylab.bayes import log_evidence_from_spectrum

__all__ = ["evidence_search"]


def evidence_search(
    task: Any,
    protocol: Protocol,
    alpha_range: tuple[float, float],
    budget: Budget,
    *,
    alpha0: float | None = None,
    updates: int = 6,
    structure: str = "auto",
    per_group: bool = False,
) -> dict[str, Any]:
    """Run the online evidence maximization; ``alpha0`` defaults to the range's geometric
    middle. Returns the final α, its trajectory, the evidence curve and ``γ``; with
    ``per_group`` also ``alpha_per_group`` (report only, see the module docstring)."""
    per_group = check_bool(per_group, "per_group")
    low, high = alpha_range
    alpha = alpha0 if alpha0 is not None else math.sqrt(low * high)
    trace: list[float] = []
    gammas: list[float] = []
    state = {"change": math.inf, "fp_ok": True}

    def update(view: Any, current: float) -> float:
        spec = spectrum_of(view, budget, structure=structure)
        new, ok = evidence_fixed_point(spec, current, low=low, high=high)
        state["fp_ok"] = state["fp_ok"] and ok
        state["change"] = abs(math.log(new / current))
        trace.append(new)
        gammas.append(float(spec.gamma(np.array([new]))[0]))
        return new

    view = run_online(task, protocol, alpha, budget, updates=updates, update=update)
    spec = spectrum_of(view, budget, structure=structure)
    change, fp_ok = state["change"], state["fp_ok"]
    curve_alpha = log_grid(low, high, 41)
    log_ev = log_evidence_from_spectrum(spec, curve_alpha)
    result = {
        "alpha": view.alpha,
        "step": view.update_steps,
        "alpha_trace": trace,
        "gamma_trace": gammas,
        "curve_alpha": curve_alpha.tolist(),
        "curve_log_evidence": np.asarray(log_ev).tolist(),
        "gamma": float(spec.gamma(np.array([view.alpha]))[0]),
        "n_params": spec.n_params,
        "exact_spectrum": spec.exact,
        "last_change": change,
        "fixed_point_converged": fp_ok,
    }
    if per_group:
        result.update(per_group_alpha(view, budget, low=low, high=high))
    return result
