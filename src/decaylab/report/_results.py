"""Read a study's ``results.json`` (schema version 1) for the report, checking what it draws.

The report never imports the study: everything comes from the plain dict. A section that is
missing or ``null`` (a phase that did not run) becomes a note, not a crash; a section whose
arrays contradict each other (wrong lengths, text where a number belongs) is a ``ValueError``
naming the field, raised before anything is drawn. ``null`` entries inside arrays become NaN
(gaps in the figures) and are listed in the notes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from decaylab.report._format import fmt

__all__ = ["SCHEMA_VERSION", "TRUST_TOLERANCE", "Study", "read_results", "trust_region"]

SCHEMA_VERSION = 1
TRUST_TOLERANCE = 0.10
"""Relative error up to which the quadratic prediction counts as holding (issue 9, 3c)."""

PHASES = {
    "reference": "the reference training",
    "curvature": "the curvature phase",
    "l2": "the L2 (weight decay) phase",
    "l1": "the L1 phase",
    "early_stopping": "the early-stopping phase",
    "picture": "the weight-decay picture",
}
# Per phase: keys without which its figures cannot be drawn.
_REQUIRED = {
    "curvature": ("eigenvalues",),
    "l2": ("alphas", "relative_error"),
    "l1": ("alphas",),
    "early_stopping": ("lr", "best_step"),
    "picture": ("a", "b", "J"),
}
# Arrays with one entry per grid α of the phase.
_PER_ALPHA = {
    "l2": (
        "relative_error",
        "relative_error_scratch",
        "retrain_error",
        "displacement_norm",
        "val_loss_predicted",
        "val_loss_measured",
        "val_loss_scratch",
        "train_loss_predicted",
        "train_loss_measured",
        "gamma",
    ),
    "l1": ("zero_precision", "zero_recall", "n_zero_predicted", "n_zero_measured", "val_loss"),
}


@dataclass
class Study:
    """The parts of ``results.json`` the report uses; arrays as float ``numpy`` arrays."""

    raw: Mapping[str, Any]
    task: dict[str, Any]
    sections: dict[str, dict[str, Any] | None]
    notes: list[str] = field(default_factory=list)

    def get(self, name: str) -> dict[str, Any] | None:
        return self.sections.get(name)


def trust_region(
    alphas: Sequence[float], relative_error: Sequence[float], tolerance: float = TRUST_TOLERANCE
) -> float | None:
    """Largest grid α with relative error ≤ ``tolerance`` there and at every smaller grid α.

    ``None`` when the smallest α already fails; a missing (NaN) error counts as failing.

    >>> trust_region([1e-4, 1e-3, 1e-2, 1e-1], [0.01, 0.05, 0.3, 0.02])
    0.001
    >>> trust_region([1e-3, 1e-2], [0.2, 0.01]) is None
    True
    """
    best = None
    for alpha, err in sorted(zip(alphas, relative_error, strict=True)):
        if not (err <= tolerance):  # NaN fails too
            break
        best = float(alpha)
    return best


def read_results(results: Any) -> Study:
    """Check ``results`` against schema version 1 and convert the arrays the figures use.

    Raises
    ------
    ValueError
        naming the field, when ``results`` is not a dict, has another ``schema_version``, or
        holds arrays of the wrong length or type.
    """
    if not isinstance(results, Mapping):
        raise ValueError(
            f"results must be a dict (the parsed results.json), got {type(results).__name__}"
        )
    version = results.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"results.schema_version must be {SCHEMA_VERSION}, got {version!r}: this report "
            "reads schema version 1 (docs/study.md)"
        )
    notes: list[str] = []
    task = dict(_object(results, "task") or {})
    if not task:
        notes.append("results.task is missing: the task is unnamed in this report.")
    sections: dict[str, dict[str, Any] | None] = {}
    for name, what in PHASES.items():
        raw = _object(results, name)
        if raw is None:
            notes.append(
                f"No {name} section in results.json: {what} did not run or was not "
                "saved, so its figures and tables are left out."
            )
            sections[name] = None
            continue
        missing = [k for k in _REQUIRED.get(name, ()) if raw.get(k) is None]
        if missing:
            notes.append(f"results.{name} lacks {', '.join(missing)}: {what} is not drawn.")
            sections[name] = None
            continue
        sections[name] = _READERS[name](raw, notes)
    l2 = sections.get("l2")
    if l2 is not None:
        l2["trust_tolerance"] = _trust_threshold(results)
    _check_consistency(sections, notes)
    return Study(raw=results, task=task, sections=sections, notes=notes)


# --------------------------------------------------------------------------- low-level readers


def _object(parent: Mapping[str, Any], key: str, where: str = "results") -> Mapping | None:
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}.{key} must be an object or null, got {type(value).__name__}")
    return value


def _number(value: Any, where: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} must be a number or null, got {value!r}")
    return float(value)


def vector(
    sec: Mapping[str, Any],
    key: str,
    where: str,
    n: int | None = None,
    notes: list[str] | None = None,
) -> np.ndarray | None:
    """``sec[key]`` as a float array (``null`` → NaN), checked to have ``n`` entries."""
    value = sec.get(key)
    if value is None:
        return None
    name = f"{where}.{key}"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a list of numbers, got {type(value).__name__}")
    arr = np.array([_number(v, f"{name}[{i}]") for i, v in enumerate(value)], dtype=float)
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} entries but {where}.alphas has {n}")
    n_null = int(np.isnan(arr).sum())
    if n_null and notes is not None:
        notes.append(
            f"{name} has {n_null} null {'entry' if n_null == 1 else 'entries'} "
            "(no value at that point): shown as gaps."
        )
    return arr


def matrix(
    sec: Mapping[str, Any], key: str, where: str, shape: tuple[int | None, int | None]
) -> np.ndarray | None:
    """``sec[key]`` as a 2-d float array of the given shape (``None`` = any length)."""
    value = sec.get(key)
    if value is None:
        return None
    name = f"{where}.{key}"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{name} must be a list of lists of numbers")
    rows = [vector({"r": row}, "r", f"{name}[{i}]") for i, row in enumerate(value)]
    if any(r is None for r in rows):
        raise ValueError(f"{name} must not contain null rows")
    widths = {r.size for r in rows if r is not None}
    if len(widths) > 1:
        raise ValueError(f"{name} has rows of different lengths {sorted(widths)}")
    arr = np.array(rows, dtype=float).reshape(len(rows), widths.pop() if widths else 0)
    for axis, (want, got) in enumerate(zip(shape, arr.shape, strict=True)):
        if want is not None and want != got:
            raise ValueError(
                f"{name} has {got} {'rows' if axis == 0 else 'columns'}, expected {want}"
            )
    return arr


def _scalar(sec: Mapping[str, Any], key: str, where: str) -> float | None:
    value = sec.get(key)
    if value is None:
        return None
    return _number(value, f"{where}.{key}")


# --------------------------------------------------------------------------- phase readers


def _read_reference(raw: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    out = dict(raw)
    for key in ("train_loss", "val_loss", "grad_norm", "alpha0"):
        out[key] = _scalar(raw, key, "results.reference")
    out["hessian_top_eigenvalues"] = vector(raw, "hessian_top_eigenvalues", "results.reference")
    return out


def _read_curvature(raw: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    where = "results.curvature"
    out = dict(raw)
    eig = vector(raw, "eigenvalues", where, notes=notes)
    assert eig is not None
    out["eigenvalues"] = eig[np.isfinite(eig)]
    for key in ("trace", "trace_std_error"):
        out[key] = _scalar(raw, key, where)
    density = _object(raw, "density", where)
    out["density"] = None
    if density is not None and density.get("grid") is not None:
        grid = vector(density, "grid", f"{where}.density")
        assert grid is not None
        values = vector(density, "values", f"{where}.density", n=grid.size)
        out["density"] = {"grid": grid, "values": values}
    return out


def _read_grid(raw: Mapping[str, Any], name: str, notes: list[str]) -> dict[str, Any]:
    """A phase with one entry per grid α: its ``alphas``, and the arrays ``_PER_ALPHA[name]``
    checked to have as many entries."""
    where = f"results.{name}"
    out = dict(raw)
    alphas = vector(raw, "alphas", where)
    assert alphas is not None
    _check_grid(alphas, where)
    out["alphas"] = alphas
    for key in _PER_ALPHA[name]:
        out[key] = vector(raw, key, where, n=alphas.size, notes=notes)
    return out


def _read_l2(raw: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    where = "results.l2"
    out = _read_grid(raw, "l2", notes)
    n = out["alphas"].size
    pred = matrix(raw, "shrink_predicted", where, (n, None))
    meas = matrix(raw, "shrink_measured", where, (n, None if pred is None else pred.shape[1]))
    out["shrink_predicted"], out["shrink_measured"] = pred, meas
    out["trust_region_alpha_max"] = _scalar(raw, "trust_region_alpha_max", where)
    out["trust_tolerance"] = TRUST_TOLERANCE
    return out


def _read_l1(raw: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    out = _read_grid(raw, "l1", notes)
    out["n_penalized"] = _scalar(raw, "n_penalized", "results.l1")
    return out


def _read_early_stopping(raw: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    where = "results.early_stopping"
    out = dict(raw)
    for key in (
        "lr",
        "best_step",
        "equivalent_alpha",
        "patience",
        "val_loss_early_stopping",
        "val_loss_l2_equivalent",
        "val_loss_l2_equivalent_zero",
        "val_loss_l2_best",
    ):
        out[key] = _scalar(raw, key, where)
    out["equivalent_alpha_per_direction"] = vector(raw, "equivalent_alpha_per_direction", where)
    for name, keys in (
        ("val_curve", ("val_loss", "train_loss")),
        ("trajectory", ("predicted", "measured")),
    ):
        block = _object(raw, name, where)
        if block is None or block.get("steps") is None:
            out[name] = None
            continue
        steps = vector(block, "steps", f"{where}.{name}")
        assert steps is not None
        out[name] = {"steps": steps} | {
            k: vector(block, k, f"{where}.{name}", n=steps.size, notes=notes) for k in keys
        }
    return out


def _read_picture(raw: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    where = "results.picture"
    out = dict(raw)
    a, b = vector(raw, "a", where), vector(raw, "b", where)
    assert a is not None and b is not None
    out["a"], out["b"] = a, b
    out["J"] = matrix(raw, "J", where, (b.size, a.size))
    alphas = vector(raw, "alphas", where)
    n = None if alphas is None else alphas.size
    out["alphas"] = alphas
    out["w0"] = vector(raw, "w0", where)
    if out["w0"] is not None and out["w0"].size != 2:
        raise ValueError(f"{where}.w0 must have 2 coordinates, got {out['w0'].size}")
    for key in ("predicted", "measured"):
        out[key] = matrix(raw, key, where, (n, 2))
    return out


_READERS = {
    "reference": _read_reference,
    "curvature": _read_curvature,
    "l2": _read_l2,
    "l1": _read_l1,
    "early_stopping": _read_early_stopping,
    "picture": _read_picture,
}


def _trust_threshold(results: Mapping[str, Any]) -> float:
    """The study's trust rule: ``config.l2.trust_threshold`` (default 10 %)."""
    config = _object(results, "config") or {}
    l2 = _object(config, "l2", "results.config") or {}
    value = _scalar(l2, "trust_threshold", "results.config.l2")
    if value is None:
        return TRUST_TOLERANCE
    if not 0 < value:
        raise ValueError(f"results.config.l2.trust_threshold must be positive, got {value}")
    return value


def _check_grid(alphas: np.ndarray, where: str) -> None:
    if alphas.size == 0:
        raise ValueError(f"{where}.alphas is empty")
    if not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
        raise ValueError(f"{where}.alphas must be positive numbers, got {alphas.tolist()}")


def _check_consistency(sections: Mapping[str, dict[str, Any] | None], notes: list[str]) -> None:
    """Recompute what results.json states twice; a disagreement is a note, never hidden."""
    l2 = sections.get("l2")
    if l2 is not None:
        ours = trust_region(l2["alphas"], l2["relative_error"], l2["trust_tolerance"])
        theirs = l2["trust_region_alpha_max"]
        if (ours is None) != (theirs is None) or (
            ours is not None and theirs is not None and not math.isclose(ours, theirs)
        ):
            notes.append(
                f"results.l2.trust_region_alpha_max is {fmt(theirs)}, but the relative errors "
                f"give {fmt(ours)} (largest α with error ≤ {fmt(l2['trust_tolerance'])} there and "
                "below): the report shades what results.json states."
            )
    es = sections.get("early_stopping")
    if es is not None and es["equivalent_alpha"] is not None and es["best_step"]:
        scalar = 1.0 / (es["lr"] * es["best_step"])
        if not math.isclose(scalar, es["equivalent_alpha"], rel_tol=1e-6):
            notes.append(
                f"results.early_stopping.equivalent_alpha is {fmt(es['equivalent_alpha'])}, "
                f"but 1/(ε·τ*) = {fmt(scalar)}."
            )
