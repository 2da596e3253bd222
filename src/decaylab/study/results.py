"""Assemble ``results.json`` (schema version 1, documented in ``docs/study.md``).

Every value is plain JSON: lists, numbers, strings, ``null`` where a value does not exist
(NaN and infinities become ``null`` and a note says why). ``notes`` say what the reader
should know to read the numbers; ``warnings`` say where the theory or a solver cannot
vouch for a number.
"""

from __future__ import annotations

import math
from typing import Any

import torch

import decaylab
from decaylab.study.config import Config
from decaylab.study.objective import Objective
from decaylab.tasks import Task, loss_name

__all__ = ["SCHEMA_VERSION", "build_results", "clean"]

SCHEMA_VERSION = 1


def clean(value: Any) -> Any:
    """Tensors → lists, non-finite floats → None, recursively; private keys dropped."""
    if isinstance(value, torch.Tensor):
        return clean(value.tolist())
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"


def _curvature_messages(curv: dict[str, Any], notes: list[str], warns: list[str]) -> None:
    notes.extend(curv.get("notes", []))
    if curv["n_negative"] > 0:
        warns.append(
            f"H = ∇²J(w₀) has {curv['n_negative']} negative eigenvalue(s) (smallest seen "
            f"{float(curv['eigenvalues'].min()):.3g}): w₀ is not a minimum of J alone, shrink "
            "factors λ/(λ+α) leave [0, 1] there and γ counts those directions as 0."
        )
    if not curv.get("eigen_converged", True):
        warns.append("some top-k eigenpairs did not meet their residual tolerance (curvature.tol)")


def _l2_messages(l2: dict[str, Any], threshold: float, notes: list[str], warns: list[str]) -> str:
    for a, ok, valid, rel, err in zip(
        l2["alphas"],
        l2["retrain_converged"],
        l2["prediction_valid"],
        l2["relative_error"],
        l2["retrain_error"],
        strict=True,
    ):
        if not ok:
            warns.append(f"L2 retraining at α = {a:g} did not reach l2.tol (max |∇| > tol)")
        if not valid:
            warns.append(
                f"L2 prediction at α = {a:g}: H + αD is not positive definite (or CG "
                "did not converge), so the quadratic model has no minimizer there"
            )
        # not negligible: over 1 % of the displacement and over a tenth of the relative error
        if err is not None and rel is not None and err > max(0.01, 0.1 * rel):
            warns.append(
                f"L2 at α = {a:g}: the estimated retraining error ({err:.2g} of the "
                f"displacement) is not negligible next to the relative error {rel:.2g}"
            )
    tr = l2["trust_region_alpha_max"]
    if tr is None:
        trust = (
            f"The quadratic prediction is more than {threshold:.0%} off the retrained "
            f"optimum already at the smallest grid α = {l2['alphas'][0]:g}: the theory "
            "does not describe weight decay on this model at these strengths."
        )
    else:
        trust = (
            f"The quadratic prediction is within {threshold:.0%} of the retrained optimum "
            f"for every grid α ≤ {tr:g}; beyond it, measure instead of predicting."
        )
    notes.append(trust)
    notes.append(
        "γ = Σ λ⁺/(λ⁺+α) over the eigenvalues of H (negative ones count 0); on the "
        "operator path it is a stochastic Lanczos quadrature estimate."
    )
    return trust


def _l1_messages(l1: dict[str, Any], notes: list[str], warns: list[str]) -> None:
    for a, ok in zip(l1["alphas"], l1["converged"], strict=True):
        if not ok:
            warns.append(f"L1 (FISTA) at α = {a:g} did not reach l1.tol")
    if any(l1["n_nonpositive_diagonal"]):
        notes.append(
            "L1: entries with H_ii ≤ 0 cannot be predicted by soft-thresholding and "
            "are never predicted zero."
        )


def _best_l2(l2: dict[str, Any]) -> dict[str, float | None]:
    """The grid's lowest measured validation loss and its α (for the early-stopping section)."""
    measured = [v for v in l2["val_loss_measured"] if v is not None]
    if not measured:
        return {"val_loss_l2_best": None, "alpha_l2_best": None}
    best = min(measured)
    return {
        "val_loss_l2_best": best,
        "alpha_l2_best": l2["alphas"][l2["val_loss_measured"].index(best)],
    }


def _es_messages(es: dict[str, Any], notes: list[str], warns: list[str]) -> None:
    notes.append(f"early stopping: learning rate ε = {es['lr']:.4g} ({es['lr_reason']}).")
    if es["lr_lambda_max"] >= 2:
        warns.append(
            f"ε·λ_max = {es['lr_lambda_max']:.3g} ≥ 2: gradient descent on the "
            "quadratic model diverges along the top direction"
        )
    if es["stop_reason"] is None:
        warns.append(
            f"early stopping never triggered within early_stopping.max_steps = "
            f"{es['steps_done']}: τ* is the best step seen, not a validated minimum"
        )
    per_dir = [a for a in es["equivalent_alpha_per_direction"] if a is not None]
    if es["equivalent_alpha"] is not None and per_dir:
        notes.append(
            f"the scalar equivalent α = 1/(ετ*) = {es['equivalent_alpha']:.3g}; the exact "
            f"per-direction α_i of the top directions range over {min(per_dir):.3g} … "
            f"{max(per_dir):.3g} (they agree only where ελ_i ≪ 1 and λ_i ≪ α)."
        )


def build_results(
    task: Task,
    obj: Objective,
    config: Config,
    ref: dict[str, Any],
    curv: dict[str, Any],
    l2: dict[str, Any],
    l1: dict[str, Any],
    es: dict[str, Any],
    pic: dict[str, Any],
    timings: dict[str, float],
) -> dict:
    """The results.json dict (schema version 1)."""
    notes: list[str] = [f"reference: {ref['alpha0_reason']}."]
    warns: list[str] = []
    if not ref["converged"]:
        warns.append(
            f"the reference did not converge: ‖∇‖ = {ref['grad_norm']:.3g} after "
            f"{ref['iterations']} L-BFGS iterations (reference.tol, reference.max_iter)"
        )
    _curvature_messages(curv, notes, warns)
    trust = _l2_messages(l2, config.l2["trust_threshold"], notes, warns)
    _l1_messages(l1, notes, warns)
    _es_messages(es, notes, warns)
    for phase in (ref, curv, l2, l1, es, pic):
        warns.extend(phase.get("_warnings", []))
    k = min(config.curvature["k"], curv["eigenvalues"].numel())
    results = {
        "schema_version": SCHEMA_VERSION,
        "decaylab_version": decaylab.__version__,
        "created": ref["created"],
        "task": {
            "name": task.name,
            "description": task.description,
            "n_params": obj.n_params,
            "n_train": task.n_train,
            "n_val": task.n_val,
            "loss": loss_name(task),
        },
        "config": config.to_dict(),
        "reference": {
            "train_loss": ref["train_loss"],
            "val_loss": ref["val_loss"],
            "grad_norm": ref["grad_norm"],
            "alpha0": ref["alpha0"],
            "decayed_parameters": obj.decayed_names,
            "n_decayed": int(obj.mask.sum()),
            "hessian_top_eigenvalues": curv["eigenvalues"][:k],
            "weights_file": "reference.pt",
            "converged": ref["converged"],
            "iterations": ref["iterations"],
        },
        "curvature": {
            "path": curv["path"],
            "eigenvalues": curv["eigenvalues"],
            "n_negative": curv["n_negative"],
            "trace": curv["trace"],
            "trace_std_error": curv["trace_std_error"],
            "density": curv["density"],
            "diagonal_source": curv["diagonal_source"],
            "n_matvecs": curv["n_matvecs"],
        },
        "l2": {
            **{key: v for key, v in l2.items() if not key.endswith("_w")},
            "trust_note": trust,
            "trust_tolerance": config.l2["trust_threshold"],
        },
        "l1": l1,
        "early_stopping": {
            **{key: v for key, v in es.items() if not key.startswith("snapshots")},
            **_best_l2(l2),
        },
        "picture": pic,
        "timings": timings,
        "notes": notes,
        "warnings": sorted(set(warns), key=warns.index),
    }
    return clean(results)
