"""The ``"early_stopping"`` method: one unregularized run with validation, then the α that
the early-stopping ≡ L2 equivalence assigns to its best step ``τ*``.

Two readings (``docs/conventions.md``): the scalar ``α ≈ 1/(ε τ*)``, and the per-direction
equivalence summarized by matching the effective number of parameters,
``Σ_i λ_i/(λ_i + α) = Σ_i [1 − (1 − ελ_i)^τ*]`` with ``λ_i`` the GGN eigenvalues at the
best weights. Both are gradient-descent theory: with an adaptive optimizer (Adam) ``ε`` is
not the step size the directions see, and the advice says so. The per-direction α is
advised when it exists; one full-protocol training at it follows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import brentq

from decaylab.advise._spectrum import spectrum_of
from decaylab.advise._train import Budget, Protocol, Trainer

__all__ = ["early_stopping_search", "gamma_matched_alpha"]


def gamma_matched_alpha(
    eigvals: np.ndarray, lr: float, steps: int, *, low: float, high: float
) -> float | None:
    """The α with ``γ(α) = Σ_i [1 − (1 − ε λ_i)^τ]``, or ``None`` outside ``[low, high]``.

    >>> lam = np.array([1.0, 0.1, 0.01])
    >>> a = gamma_matched_alpha(lam, 0.1, 100, low=1e-6, high=10.0)
    >>> target = np.sum(1 - (1 - 0.1 * lam) ** 100)
    >>> bool(np.isclose(np.sum(lam / (lam + a)), target))
    True
    """
    lam = np.clip(eigvals, 0.0, None)
    factor = np.clip(1 - lr * lam, -1.0, 1.0)
    target = float(np.sum(1 - factor**steps))

    def excess(log_a: float) -> float:
        return float(np.sum(lam / (lam + math.exp(log_a)))) - target

    lo, hi = math.log(low), math.log(high)
    if excess(lo) < 0 or excess(hi) > 0:
        return None
    return math.exp(brentq(excess, lo, hi, xtol=1e-10))


def early_stopping_search(
    task: Any,
    protocol: Protocol,
    alpha_range: tuple[float, float],
    budget: Budget,
    *,
    n_evals: int = 60,
    structure: str = "auto",
) -> dict[str, Any]:
    """Train without decay, evaluating ``n_evals`` times; return both α's and the curve."""
    low, high = alpha_range
    trainer = Trainer(task, protocol, 0.0, budget)
    every = max(protocol.steps // n_evals, 1)
    steps, vals = [0], [trainer.val_loss()]
    best_state = trainer.state()
    while trainer.steps_done < protocol.steps:
        trainer.run(min(every, protocol.steps - trainer.steps_done))
        steps.append(trainer.steps_done)
        vals.append(trainer.val_loss())
        if vals[-1] <= min(vals[:-1]):
            best_state = trainer.state()
    best = int(np.argmin(vals))
    tau = max(steps[best], 1)
    trainer.load(best_state)
    spec = spectrum_of(trainer, budget, structure=structure)
    alpha_scalar = 1.0 / (protocol.lr * tau)
    alpha_dirs = gamma_matched_alpha(spec.eigenvalues, protocol.lr, tau, low=low, high=high)
    return {
        # The scalar reading can fall outside the range searched; the advice stays inside it.
        "alpha": alpha_dirs if alpha_dirs is not None else min(max(alpha_scalar, low), high),
        "alpha_timescale": alpha_scalar,
        "alpha_per_direction": alpha_dirs,
        "best_step": tau,
        "stopped_at_end": best == len(vals) - 1,
        "curve_step": steps,
        "curve_val_loss": vals,
        "n_params": spec.n_params,
        "gamma": float(spec.gamma(np.array([alpha_dirs or alpha_scalar]))[0]),
    }
