"""A synthetic but internally consistent results.json (schema version 1) for the report tests.

The numbers follow the quadratic theory where it holds (shrink λ/(λ+α), γ, the gradient-descent
trajectory, the per-direction early-stopping α) and depart from it by a relative error that
grows with α, like a network trained near interpolation. The dict is passed through JSON, so
it holds only what a real results.json can hold.
"""

from __future__ import annotations

import atexit
import copy
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

TOLERANCE = 0.10


def _spectrum(rng: np.random.Generator, p: int, n_negative: int) -> np.ndarray:
    top = np.geomspace(3.2, 0.4, 9)
    n_zero = min(200, p // 10)
    bulk = 10.0 ** rng.uniform(-8, -1.5, p - top.size - n_zero - n_negative)
    zero = rng.normal(0, 1e-11, n_zero)
    negative = -(10.0 ** rng.uniform(-6, -3.5, n_negative))
    return np.sort(np.concatenate([top, bulk, zero, negative]))[::-1]


def _trust(alphas, errors) -> float | None:
    best = None
    for a, e in zip(alphas, errors, strict=True):
        if e is None or e > TOLERANCE:
            break
        best = a
    return best


def _l2(rng, eig: np.ndarray, k: int, trust: str) -> dict[str, Any]:
    alphas = np.logspace(-5, -1, 9)
    scale = {"partial": 1.0, "none": 10.0, "all": 0.01}[trust]
    rel = scale * 0.02 * (alphas / 1e-5) ** 0.45
    lam = eig[:k]
    pred = lam / (lam + alphas[:, None])
    meas = pred + 0.5 * rel[:, None] * rng.normal(size=pred.shape)
    x = np.log10(alphas)
    val_meas = 0.095 + 0.012 * (x + 2.5) ** 2
    train_meas = 0.002 + 0.5 * alphas / (alphas + 0.02)
    disp = 4.0 * alphas / (alphas + 3e-3)
    positive = eig[eig > 0]
    return {
        "alphas": alphas,
        "relative_error": rel,
        "relative_error_scratch": 8 * rel + 0.3,
        "retrain_error": np.geomspace(1e-5, 1e-3, alphas.size),  # relative to disp
        "displacement_norm": disp,
        "val_loss_predicted": val_meas + 0.3 * rel**2,
        "val_loss_measured": val_meas,
        "val_loss_scratch": val_meas + 0.012 + 0.004 * rng.random(alphas.size),
        "train_loss_predicted": train_meas * (1 - 0.5 * np.minimum(rel, 1)),
        "train_loss_measured": train_meas,
        "gamma": [float(np.sum(positive / (positive + a))) for a in alphas],
        "shrink_predicted": pred,
        "shrink_measured": meas,
        "trust_region_alpha_max": _trust(alphas.tolist(), rel.tolist()),
        "trust_note": "largest grid α with relative error ≤ 10 % there and at every smaller α",
        "retrain_converged": [True] * alphas.size,  # extra keys the study writes too
        "prediction_valid": [True] * alphas.size,
    }


def _l1(rng) -> dict[str, Any]:
    alphas = np.logspace(-5, -2, 7)
    n_pen = 2368
    frac = 1 - np.exp(-alphas / 4e-4)
    n_meas = np.round(n_pen * 0.9 * frac).astype(int)
    n_pred = np.round(n_meas * (1 + 0.4 * np.sqrt(alphas / 1e-2))).astype(int)
    n_pred[0] = n_meas[0] = 0
    tp = np.minimum(n_pred, n_meas) - np.round(0.05 * n_meas * alphas / 1e-2).astype(int)
    precision = [None if p == 0 else float(t / p) for t, p in zip(tp, n_pred, strict=True)]
    recall = [float(t / m) if m else None for t, m in zip(tp, n_meas, strict=True)]
    return {
        "alphas": alphas,
        "zero_precision": precision,
        "zero_recall": recall,
        "n_zero_predicted": n_pred,
        "n_zero_measured": n_meas,
        "n_penalized": n_pen,
        "val_loss": 0.1 + 0.02 * (np.log10(alphas) + 3.5) ** 2,
    }


def _early_stopping(eig: np.ndarray, k: int) -> dict[str, Any]:
    lr = 0.02
    steps = np.arange(0, 3001, 20)
    val = 0.5 * np.exp(-steps / 200) + 0.1 + 0.05 * (steps / 3000) ** 2
    best = int(steps[np.argmin(val)])
    lam = eig[:k]
    decay = (1 - lr * lam) ** best
    coords = np.linspace(1.0, 0.2, k)
    traj_steps = np.arange(0, 2 * best + 1, 10)
    predicted = [float(np.linalg.norm(coords * (1 - (1 - lr * lam) ** t))) for t in traj_steps]
    measured = [
        p * (1 + 0.15 * t / traj_steps[-1]) for p, t in zip(predicted, traj_steps, strict=True)
    ]
    return {
        "lr": lr,
        "patience": 100,
        "best_step": best,
        "equivalent_alpha": 1 / (lr * best),
        "equivalent_alpha_per_direction": lam * decay / (1 - decay),
        "val_curve": {"steps": steps, "val_loss": val, "train_loss": 0.45 * np.exp(-steps / 300)},
        "trajectory": {"steps": traj_steps, "predicted": predicted, "measured": measured},
        "val_loss_early_stopping": float(val.min()),
        "val_loss_l2_equivalent": float(val.min()) + 0.004,
        "val_loss_l2_equivalent_zero": float(val.min()) + 0.009,
        "val_loss_l2_best": 0.095,
    }


def _picture(l2: dict[str, Any], eig: np.ndarray) -> dict[str, Any]:
    lam = eig[:2]
    c = np.array([1.0, 1.4])  # coordinates of w0 along q1, q2: decay pulls toward −c
    alphas = l2["alphas"]
    pred = -(alphas[:, None] / (lam + alphas[:, None])) * c
    meas = pred * (1 + np.asarray(l2["relative_error"])[:, None] * np.array([[1.0, -0.6]]))
    a = np.linspace(-0.09, 0.03, 49)
    b = np.linspace(-0.09, 0.03, 41)
    A, B = np.meshgrid(a, b)
    J = 0.012 + 0.5 * lam[0] * A**2 + 0.5 * lam[1] * B**2 + 3.0 * A**4 + 0.8 * A * B**2
    return {
        "a": a,
        "b": b,
        "J": J,
        "w0": [0.0, 0.0],
        "predicted": pred,
        "measured": meas,
        "alphas": alphas,
    }


def make_results(
    *,
    seed: int = 0,
    path: str = "dense",
    n_negative: int = 6,
    trust: str = "partial",
    drop: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A results dict like the digits-mlp study's; ``drop`` names sections to leave out."""
    rng = np.random.default_rng(seed)
    p = 2410 if path == "dense" else 86_000
    eig = _spectrum(rng, 2410, n_negative)
    k = 10
    grid = np.geomspace(1e-8, 4.0, 120)
    curvature = {
        "path": path,
        "eigenvalues": eig if path == "dense" else eig[:20],
        "n_negative": n_negative,
        "trace": float(eig.sum()),
        "trace_std_error": 0.0 if path == "dense" else 0.02,
        "density": None if path == "dense" else {"grid": grid, "values": 1 / grid / 18.4},
        "diagonal_source": "exact" if path == "dense" else "estimated",
    }
    l2 = _l2(rng, eig, k, trust)
    results: dict[str, Any] = {
        "schema_version": 1,
        "decaylab_version": "0.1.0",
        "created": "2026-12-02T02:00:00+00:00",
        "task": {
            "name": "digits-mlp",
            "description": "scikit-learn digits, a 64-32-10 MLP",
            "n_params": p,
            "n_train": 1257,
            "n_val": 540,
            "loss": "cross_entropy",
        },
        "config": {
            "task": "digits-mlp",
            "seed": 0,
            "l2": {"alphas": l2["alphas"], "trust_threshold": TOLERANCE},
        },
        "reference": {
            "train_loss": 0.0123,
            "val_loss": 0.1021,
            "grad_norm": 3.1e-7,
            "alpha0": 1e-5,
            "decayed_parameters": ["0.weight", "2.weight"],
            "n_decayed": 2368,
            "hessian_top_eigenvalues": eig[:k],
            "weights_file": "reference.pt",
            "converged": True,
        },
        "curvature": curvature,
        "l2": l2,
        "l1": _l1(rng),
        "early_stopping": _early_stopping(eig, k),
        "picture": _picture(l2, eig),
        "timings": {
            "reference": 4.1,
            "curvature": 12.3,
            "l2": 30.2,
            "l1": 20.1,
            "early_stopping": 8.0,
        },
        "notes": ["The reference minimizes J + (α₀/2)‖w_d‖² with α₀ = 1e-5."],
        "warnings": [f"TheoryWarning: H has {n_negative} negative eigenvalues at w0"]
        if n_negative
        else [],
    }
    for name in drop:
        results[name] = None
    return json.loads(json.dumps(results, default=_plain))


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(type(obj))


def modified(results: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy with ``"section.key"`` paths replaced (``section__key=value``)."""
    out = copy.deepcopy(results)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        out[section][key] = value
    return out


@functools.cache
def rendered_report() -> Path:
    """The report of :func:`make_results`, rendered once per test session (drawing is slow)."""
    from decaylab.report import render

    root = Path(tempfile.mkdtemp(prefix="decaylab-report-test-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return render(make_results(), root / "study")
