"""The GGN spectrum of the decayed parameters at a trainer's weights, counted in the budget."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from decaylab.bayes import GGNSpectrum, ggn_spectrum

__all__ = ["spectrum_of", "evidence_fixed_point"]

DENSE_LIMIT = 1500


def spectrum_of(
    trainer: Any, budget: Any, *, structure: str = "auto", k: int = 64, n_matvecs: int = 120
) -> GGNSpectrum:
    """``ggn_spectrum`` of the decayed group on the training data; ``"auto"`` is the exact
    dense GGN up to :data:`DENSE_LIMIT` parameters, the labelled top-k approximation above."""
    n_decayed = sum(p.numel() for p in trainer.decayed)
    if structure == "auto":
        structure = "full" if n_decayed <= DENSE_LIMIT else "topk"
    was = trainer.model.training
    trainer.model.eval()
    try:
        spec = ggn_spectrum(
            trainer.model,
            trainer.loss_fn,
            (trainer.X, trainer.y),
            params="decayed",
            structure=structure,
            k=min(k, n_decayed),
            n_matvecs=n_matvecs,
        )
    finally:
        trainer.model.train(was)
    budget.add_products(n_decayed if structure == "full" else 3 * k + n_matvecs)
    return spec


def evidence_fixed_point(
    spec: GGNSpectrum,
    alpha: float,
    *,
    low: float,
    high: float,
    max_iter: int = 200,
    tol: float = 1e-8,
) -> tuple[float, bool]:
    """MacKay's fixed point ``α = γ(α) / (N ‖w_d‖²)`` on a fixed spectrum, clipped to
    ``[low, high]``; returns ``(α, converged)``.

    It is the stationarity condition ``d log Z/dα = 0`` of the classification evidence
    ``−N J − (Nα/2)‖w‖² − ½ Σ log(1 + λ_i/α)`` at fixed weights.
    """
    denom = spec.n_samples * spec.sq_norm
    if denom <= 0:
        return high, False
    a = alpha
    for _ in range(max_iter):
        new = float(np.clip(spec.gamma(np.array([a]))[0] / denom, low, high))
        if abs(math.log(new / a)) < tol:
            return new, True
        a = new
    return a, False
