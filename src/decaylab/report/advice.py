"""The report's Advice section, drawn from ``advice.json`` alone (``docs/advise.md``).

Like the rest of the report it reads JSON only and never imports ``decaylab.advise``: the figure
shows the curve the method saw against α (validation loss on the left axis, the log evidence on
a right axis for the evidence method), the chosen α as a solid line and, when the grid baseline
ran, the grid's validation loss and its best α (dashed) beside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from decaylab.report._format import fmt, seconds
from decaylab.report.plots import Plot

__all__ = ["advice_facts", "advice_plot", "check_advice", "load_advice"]


def load_advice(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``DIR/advice.json`` (or the file itself) as a dict; ``None`` when there is none.

    Raises ``ValueError`` naming the file when it exists but is not a JSON object.
    """
    file = Path(path)
    if file.is_dir():
        file = file / "advice.json"
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"advice file {str(file)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"advice file {str(file)!r} must hold a JSON object")
    return data


def check_advice(advice: Mapping[str, Any]) -> None:
    """``ValueError`` naming the field when ``advice`` cannot be drawn (before anything is)."""
    if not isinstance(advice, Mapping):
        raise ValueError(f"advice must be a mapping (advice.json), got {type(advice).__name__}")
    for key in ("alpha", "method"):
        if key not in advice:
            raise ValueError(f"advice is missing the field {key!r} (docs/advise.md)")


def _floats(values: Any) -> np.ndarray:
    """A JSON list with ``null`` for non-finite numbers, as floats with NaN."""
    return np.array([np.nan if v is None else float(v) for v in values or []], dtype=float)


def _method_curve(advice: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(α, y, what y is) of the curve the method saw, or ``None`` when it has no α axis."""
    curves = advice.get("curves") or {}
    if "alpha" in curves and "val_loss" in curves:
        return _floats(curves["alpha"]), _floats(curves["val_loss"]), "val_loss"
    if "alpha" in curves and "log_evidence" in curves:
        return _floats(curves["alpha"]), _floats(curves["log_evidence"]), "log_evidence"
    if "alpha_trace" in curves and "val_loss_trace" in curves:
        return _floats(curves["alpha_trace"]), _floats(curves["val_loss_trace"]), "val_loss"
    return None


def advice_plot(advice: Mapping[str, Any]) -> Plot:
    """The Advice figure and its caption (numbers as in ``advice``).

    Non-finite points (``null`` in the JSON) are left as gaps in their curve, not bridged.
    """
    check_advice(advice)
    fig = Figure(figsize=(8, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    method = str(advice["method"])
    curve = _method_curve(advice)
    handles: list[Any] = []
    if curve is not None:
        a, y, what = curve
        ok = np.isfinite(a) & (a > 0)
        if what == "log_evidence":
            right = ax.twinx()
            handles += right.plot(a[ok], y[ok], "o-", color="tab:purple", label="log evidence (→)")
            right.set_ylabel("log evidence, as the method saw it", color="tab:purple")
        else:
            handles += ax.plot(a[ok], y[ok], "o-", color="tab:blue", label=f"{method}: val. loss")
    grid = advice.get("grid")
    if grid:
        ga, gl = _floats(grid.get("alphas")), _floats(grid.get("val_loss"))
        ok = np.isfinite(ga) & (ga > 0)
        handles += ax.plot(ga[ok], gl[ok], "s--", color="tab:gray", label="grid: val. loss")
        if grid.get("best_alpha") is not None:
            best = f"grid best α = {fmt(grid['best_alpha'])}"
            handles.append(ax.axvline(grid["best_alpha"], color="tab:gray", ls=":", label=best))
    if advice["alpha"] is not None:
        chosen = f"chosen α = {fmt(advice['alpha'])}"
        handles.append(ax.axvline(advice["alpha"], color="tab:red", lw=2, label=chosen))
        if advice.get("val_loss") is not None:
            handles += ax.plot(
                [advice["alpha"]],
                [advice["val_loss"]],
                "*",
                ms=14,
                color="tab:red",
                label="val. loss at the chosen α",
            )
    ax.set_xscale("log")
    ax.set_xlabel("α (L2 strength, decaylab's scale)")
    ax.set_ylabel("validation loss (mean)")
    ax.set_title(f"Advice: α by the {method} method")
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return Plot(key="advice", title="Advised α", caption=_caption(advice, curve), figure=fig)


def _caption(advice: Mapping[str, Any], curve: Any) -> str:
    method = str(advice["method"])
    text = (
        f"The {method} method chose α = {fmt(advice['alpha'])}: validation loss "
        f"{fmt(advice.get('val_loss'), 4)}, accuracy {fmt(advice.get('val_accuracy'), 4)}, "
        f"in {seconds(advice.get('compute_seconds'))} and {fmt(advice.get('grad_evals'))} "
        "gradient evaluations."
    )
    if curve is None:
        text += " This method has no curve against α (it is not drawn)."
    grid = advice.get("grid")
    if grid:
        text += (
            f" The grid of {len(grid.get('alphas') or [])} points found α = "
            f"{fmt(grid.get('best_alpha'))} (validation loss {fmt(grid.get('best_val_loss'), 4)}, "
            f"accuracy {fmt(grid.get('best_val_accuracy'), 4)}) in "
            f"{seconds(grid.get('compute_seconds'))} and {fmt(grid.get('grad_evals'))} "
            "gradient evaluations."
        )
    warns = [str(w) for w in advice.get("warnings") or []]
    if warns:
        text += f" NOT fully vouched for ({len(warns)} warning(s)): " + " | ".join(warns)
    return text


def advice_facts(advice: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Rows of the Advice section's table."""
    check_advice(advice)
    protocol = advice.get("protocol") or {}
    rows = [
        ("method, chosen α", f"{advice['method']}, {fmt(advice['alpha'])}"),
        (
            "validation loss, accuracy",
            f"{fmt(advice.get('val_loss'), 4)}, {fmt(advice.get('val_accuracy'), 4)}",
        ),
        (
            "γ (effective parameters) / parameters",
            f"{fmt(advice.get('gamma'))} / {fmt(advice.get('n_params'))}",
        ),
        (
            "compute",
            f"{seconds(advice.get('compute_seconds'))}, "
            f"{fmt(advice.get('grad_evals'))} gradient evaluations",
        ),
        ("protocol", ", ".join(f"{k} {v}" for k, v in protocol.items()) or "—"),
    ]
    grid = advice.get("grid")
    if grid:
        rows.append(
            (
                "grid baseline",
                f"best α {fmt(grid.get('best_alpha'))}, validation loss "
                f"{fmt(grid.get('best_val_loss'), 4)}, {seconds(grid.get('compute_seconds'))}",
            )
        )
    return rows
