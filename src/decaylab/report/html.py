"""Write the demo's output directory: ``report.html``, ``results.json``, ``figures/*.png``.

The HTML page is self-contained: figures are embedded as ``data:image/png;base64`` URIs
and the style sheet is inline, so the file opens offline and can be mailed as is.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from decaylab.demo import to_jsonable

if TYPE_CHECKING:
    from decaylab.demo import DemoResults
    from decaylab.report.figures import FigureInfo

__all__ = ["ReportFiles", "check_out_dir", "write_report"]


@dataclass(frozen=True)
class ReportFiles:
    """Paths of everything :func:`write_report` wrote."""

    out_dir: Path
    html: Path
    json: Path
    figures: list[Path]
    notes: list[dict[str, Any]] = field(default_factory=list)


def check_out_dir(out_dir: str | Path) -> Path:
    """Validate an output directory: it may exist (files are overwritten) but not as a file.

    Raises
    ------
    ValueError
        If ``out_dir`` or one of its parents is an existing non-directory.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> check_out_dir(tmp / "report") == tmp / "report"
    True
    """
    path = Path(out_dir).expanduser()
    for candidate in (path, *path.parents):
        if candidate.exists() and not candidate.is_dir():
            raise ValueError(
                f"out_dir must be a directory, but {str(candidate)!r} exists and is a file"
            )
    return path


def write_report(res: DemoResults, out_dir: str | Path) -> ReportFiles:
    """Draw the figures and write ``report.html`` and ``results.json`` into ``out_dir``.

    Warnings raised while drawing (e.g. by matplotlib) are recorded with the demo's own
    warnings and listed in the report's notes; none are hidden.
    """
    from decaylab.report.figures import make_figures

    out = check_out_dir(out_dir)
    fig_dir = out / "figures"
    try:
        fig_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"out_dir {str(out)!r} cannot be created: {exc}") from exc

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figures = make_figures(res, fig_dir)
    figure_seconds = time.perf_counter() - start
    notes = [dict(w) for w in res.warnings]
    drawing: dict[tuple[str, str, str], dict[str, Any]] = {}
    for record in caught:
        source = f"{record.filename}:{record.lineno} (while drawing figures)"
        key = (record.category.__name__, str(record.message), source)
        if key in drawing:
            drawing[key]["count"] += 1
        else:
            drawing[key] = {"category": key[0], "message": key[1], "source": source, "count": 1}
    notes.extend(drawing.values())

    nulls: dict[str, str] = {}
    payload = res.to_dict()
    payload["warnings"] = notes
    payload["timings"]["figure_seconds"] = figure_seconds
    payload["figures"] = [
        {"key": f.key, "file": f"figures/{f.path.name}", "title": f.title, "caption": f.caption}
        for f in figures
    ]
    payload["report"] = {
        "html": "report.html",
        "decaylab_version": _version(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    data = to_jsonable(payload, nulls=nulls)
    data["null_values"] = nulls or {}
    data["null_values_note"] = (
        "JSON has no NaN or infinity; such values are written as null and listed here "
        "with the reason."
    )
    json_path = out / "results.json"
    json_path.write_text(json.dumps(data, indent=1, allow_nan=False, ensure_ascii=False) + "\n",
                         encoding="utf-8")

    html_path = out / "report.html"
    html_path.write_text(_render(res, figures, notes, nulls, figure_seconds), encoding="utf-8")
    return ReportFiles(out, html_path, json_path, [f.path for f in figures], notes)


def _version() -> str:
    from decaylab import __version__

    return __version__


# --------------------------------------------------------------------------- HTML


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _num(value: Any, digits: int = 4) -> str:
    """Format a number for the page; non-finite values are spelled out, not hidden."""
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    x = float(value)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e5:
        return f"{x:.{digits}g}"
    mantissa, exponent = f"{x:.{max(digits - 1, 1)}e}".split("e")
    return f"{mantissa}×10{str(int(exponent)).translate(_SUPERSCRIPT)}"


def _embed(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _render(
    res: DemoResults,
    figures: list[FigureInfo],
    notes: list[dict],
    nulls: dict[str, str],
    figure_seconds: float,
) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("decaylab.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    template = env.get_template("demo.html")

    ev = res.evidence
    d = res.n_features
    tau_row = next((r for r in res.early_stopping if r["matches"]), res.early_stopping[-1])
    directions = []
    for i in range(d):
        directions.append(
            {
                "index": i + 1,
                "eigval": res.eigvals[i],
                "v_star": res.v_star[i],
                "shrink_ev": res.shrink_at_evidence[i],
                "l1_zero": res.l1_zero_alpha[i],
                "alpha_es": tau_row["alpha_per_direction"][i],
                "ratio": tau_row["ratio_per_direction_to_scalar"][i],
                "shrink_gd": tau_row["shrink_gd"][i],
            }
        )
    ridge_at_ev = ev["coef"]
    weights = [
        {"name": name, "w_star": res.w_star[i], "w_map": ridge_at_ev[i], "w_tilde": res.w_tilde[i]}
        for i, name in enumerate(res.task["feature_names"])
    ]
    key_numbers = [
        ("Examples N, weights d", f"{res.n_samples:,}, {d}", "data"),
        ("J(0) = mean ½y²", _num(res.loss_at_zero), "loss at the zero weight vector"),
        ("J(w*)", _num(res.loss_at_w_star), "unregularized least squares"),
        ("R² of w*", _num(res.r_squared), "1 − J(w*)/J(0)"),
        ("λ_max, λ_min of H", f"{_num(res.eigvals[0])}, {_num(res.eigvals[-1])}",
         "H = XᵀX/N, the correlation matrix of the features"),
        ("condition number λ_max/λ_min", _num(res.eigvals[0] / res.eigvals[-1])
         if res.eigvals[-1] > 0 else "∞", "how unequal the curvatures are"),
        ("evidence-optimal α", _num(ev["alpha"]), "α = δ/(βN), MacKay's fixed point"),
        ("prior precision δ (prior std)", f"{_num(ev['prior_precision'])} "
         f"({_num(ev['prior_std'])})", "Gaussian prior N(0, δ⁻¹I) on the weights"),
        ("noise precision β (noise std)", f"{_num(ev['noise_precision'])} "
         f"({_num(ev['noise_std'])})", "in standardized target units"),
        ("effective parameters γ at the optimum", _num(ev["gamma"]), f"of {d}"),
        ("log evidence at the optimum", _num(ev["log_evidence"]),
         f"{ev['n_iter']} fixed-point iterations, converged: {'yes' if ev['converged'] else 'NO'}"),
        ("α of the weight-decay picture", _num(res.alpha_picture), res.alpha_picture_source),
        ("learning rate ε (ε·λ_max)", f"{_num(res.lr)} ({_num(res.lr * res.eigvals[0])})",
         res.lr_source),
        ("GD steps τ ≈ 1/(ε·α_evidence)", _num(ev["equivalent_steps"]),
         "steps of early stopping that roughly match the evidence α"),
        ("GD steps drawn", f"{int(res.gd_steps[-1]):,}",
         "until the flattest direction is 99% converged"),
        ("max |w_MAP − w̃(α_evidence)|", _num(res.consistency[
            "max_abs_map_minus_ridge_at_evidence_alpha"]), "MAP equals L2 (should be ~1e-15)"),
    ]
    return template.render(
        title=f"decaylab demo: weight decay on {res.task['name']}",
        task=res.task,
        res=res,
        ev=ev,
        figures=[
            {"title": f.title, "caption": f.caption, "src": _embed(f.path),
             "file": f"figures/{f.path.name}"}
            for f in figures
        ],
        key_numbers=key_numbers,
        directions=directions,
        tau=tau_row,
        weights=weights,
        notes=notes,
        nulls=nulls,
        version=_version(),
        seconds=res.seconds,
        figure_seconds=figure_seconds,
        show_tilde=res.alpha_picture != ev["alpha"],
    )
