"""The GGN spectrum of the decayed parameters at a trainer's weights, counted in the budget."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from decaylab._checks import ConvergenceWarning
from decaylab.bayes import GGNSpectrum, ggn_spectrum
from decaylab.bayes_groups import MAX_GROUP_PARAMS, evidence_groups_fixed_point, grouped_ggn

__all__ = ["spectrum_of", "evidence_fixed_point", "per_group_alpha"]

DENSE_LIMIT = 1500


def spectrum_of(
    trainer: Any, budget: Any, *, structure: str = "auto", k: int = 64, n_matvecs: int = 120
) -> GGNSpectrum:
    """``ggn_spectrum`` of the decayed group on the training data; ``"auto"`` is the exact
    dense GGN up to :data:`DENSE_LIMIT` parameters, the labelled top-k approximation above."""
    n_decayed = sum(p.numel() for p in trainer.decayed)
    if structure == "auto":
        structure = "full" if n_decayed <= DENSE_LIMIT else "topk"
    with _evaluating(trainer.model):
        spec = ggn_spectrum(
            trainer.model,
            trainer.loss_fn,
            (trainer.X, trainer.y),
            params="decayed",
            structure=structure,
            k=min(k, n_decayed),
            n_matvecs=n_matvecs,
        )
    budget.add_products(n_decayed if structure == "full" else 3 * k + n_matvecs)
    return spec


@contextlib.contextmanager
def _evaluating(model: Any) -> Iterator[None]:
    """The model in eval mode (curvature of the deterministic network), restored after."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def per_group_alpha(trainer: Any, budget: Any, *, low: float, high: float) -> dict[str, Any]:
    """Report only: the evidence-optimal α of each decayed tensor at the trainer's weights
    (:mod:`decaylab.bayes_groups`, dense GGN, clipped to ``[low, high]``), from the trainer's α.

    Returns ``alpha_per_group`` (name → α, None above
    :data:`~decaylab.bayes_groups.MAX_GROUP_PARAMS` decayed parameters),
    ``per_group_converged`` and ``per_group_note`` (why it is missing or unconverged, else None).
    """
    n_decayed = sum(p.numel() for p in trainer.decayed)
    if n_decayed > MAX_GROUP_PARAMS:
        return {
            "alpha_per_group": None,
            "per_group_converged": False,
            "per_group_note": (
                f"the per-group evidence needs the dense GGN; {n_decayed} decayed parameters is "
                f"above its limit of {MAX_GROUP_PARAMS}, so no α per group was computed"
            ),
        }
    with _evaluating(trainer.model):
        ggn = grouped_ggn(trainer.model, trainer.loss_fn, (trainer.X, trainer.y))
    budget.add_products(n_decayed)
    # β maximized out for half_mse (the default), as evidence_fixed_point does: tied groups
    # give the scalar α.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported as a note instead
        res = evidence_groups_fixed_point(ggn, trainer.alpha, alpha_range=(low, high), tol=1e-6)
    return {
        "alpha_per_group": res.alpha,
        "per_group_converged": res.converged,
        "per_group_note": None
        if res.converged
        else f"the per-group evidence fixed point did not converge in {res.n_iter} iterations",
    }


def evidence_fixed_point(
    spec: GGNSpectrum,
    alpha: float,
    *,
    low: float,
    high: float,
    max_iter: int = 200,
    tol: float = 1e-8,
) -> tuple[float, bool]:
    """MacKay's fixed point ``α = γ(α) / (β N ‖w_d‖²)`` on a fixed spectrum, clipped to
    ``[low, high]``; returns ``(α, converged)``.

    It is the stationarity condition ``d log Z/dα = 0`` of
    :func:`~decaylab.bayes.log_evidence_from_spectrum` at fixed weights: for a classifier
    (``β = 1``) ``−N J − (Nα/2)‖w‖² − ½ Σ log(1 + λ_i/α)``; for ½ squared error the noise
    precision is maximized out at each α, ``β(α) = n_out / (2J + α‖w‖²)``, as the evidence
    curve the method records does (``d/dβ`` vanishes there, so ``d/dα`` is the same form).
    """
    denom = spec.n_samples * spec.sq_norm
    if denom <= 0:
        return high, False
    a = alpha
    for _ in range(max_iter):
        new = float(np.clip(spec.gamma(np.array([a]))[0] / (_beta(spec, a) * denom), low, high))
        if abs(math.log(new / a)) < tol:
            return new, True
        a = new
    return a, False


def _beta(spec: GGNSpectrum, alpha: float) -> float:
    """The noise precision maximizing the evidence at ``alpha``: 1 for a classifier."""
    if spec.likelihood == "classification":
        return 1.0
    return spec.n_outputs / (2.0 * spec.mean_loss + alpha * spec.sq_norm)
