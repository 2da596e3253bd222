"""Render a study's ``report.html`` and ``figures/*.png`` from its results dict alone.

The page is self-contained: the figures are ``data:image/png;base64`` URIs and the style sheet
(``templates/style.css``, with a print stylesheet) is inlined, so it opens offline, makes no
network request and can be mailed as one file. ``decaylab report DIR`` re-renders it from
``DIR/results.json`` without recomputing anything.
"""

from __future__ import annotations

import base64
import io
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from decaylab.report._format import fmt, num, seconds
from decaylab.report._results import PHASES, Study, read_results
from decaylab.report.advice import advice_facts, advice_plot, check_advice, load_advice
from decaylab.report.plots import Plot, make_plots, trust_words

__all__ = ["ADVICE_FIGURE", "FIGURE_FILES", "load_results", "render", "render_advice"]

FIGURE_FILES = {
    "spectrum": "1_spectrum.png",
    "shrink": "2_shrink.png",
    "relative_error": "3_relative_error.png",
    "validation_loss": "4_validation_loss.png",
    "l1_zeros": "5_l1_zeros.png",
    "early_stopping": "6_early_stopping.png",
    "picture": "7_weight_decay_picture.png",
}
"""Figure key → file name under ``figures/`` (stable, so a re-render overwrites)."""
ADVICE_FIGURE = "8_advice.png"
"""The Advice section's figure under ``figures/``, present only when advice.json is."""

_SECTION_OF = {
    "spectrum": "curvature",
    "shrink": "l2",
    "relative_error": "l2",
    "validation_loss": "l2",
    "l1_zeros": "l1",
    "early_stopping": "early_stopping",
    "picture": "picture",
}
_DPI = 110


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``results.json`` (or ``DIR/results.json``), with a clear error if it is unusable."""
    file = Path(path)
    if file.is_dir():
        file = file / "results.json"
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"results file {str(file)!r} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"results file {str(file)!r} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"results file {str(file)!r} must hold a JSON object")
    return data


def render(
    results: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    advice: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``out_dir/report.html`` and ``out_dir/figures/*.png`` from a study's results.

    ``results`` is the parsed ``results.json`` (schema version 1, ``docs/study.md``). Phases
    missing or ``null`` there are left out with a note on the page. ``advice`` is a parsed
    ``advice.json`` (``docs/advise.md``); when it is ``None`` and ``out_dir/advice.json``
    exists, that file is read, and the page gains an Advice section. Warnings raised while
    drawing are listed in the page's notes, never hidden. Returns the path of the page.

    Raises
    ------
    ValueError
        naming the field, if ``results`` does not follow the schema, or naming ``out_dir`` if it
        is a file; raised before anything is drawn or written.
    """
    study = read_results(results)
    out = _check_out_dir(out_dir)
    if advice is None and out.is_dir():
        advice = load_advice(out)
    if advice is not None:
        check_advice(advice)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plots = make_plots(study)
        images = {p.key: _png(p) for p in plots}
        advice_section = _advice_section(advice, fig_dir)
    drawing = time.perf_counter() - start
    for stale in set(FIGURE_FILES) - set(images):
        (fig_dir / FIGURE_FILES[stale]).unlink(missing_ok=True)
    for key, data in images.items():
        _write_atomic(fig_dir / FIGURE_FILES[key], data)
    context = _context(study, plots, images, _warning_notes(caught), drawing)
    context["advice"] = advice_section
    page = out / "report.html"
    _write_atomic(page, _template().render(**context).encode("utf-8"))
    return page


def render_advice(advice: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """An advice-only ``out_dir/report.html`` (no study ran there) and ``figures/8_advice.png``."""
    check_advice(advice)
    out = _check_out_dir(out_dir)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        section = _advice_section(advice, fig_dir)
    context = {
        "title": "decaylab advice",
        "style": _style(),
        "advice": section,
        "report_notes": _warning_notes(caught),
    }
    page = out / "report.html"
    _write_atomic(page, _template("advice.html").render(**context).encode("utf-8"))
    return page


def _advice_section(advice: Mapping[str, Any] | None, fig_dir: Path) -> dict[str, Any] | None:
    """The Advice section's figure and table; writes ``figures/8_advice.png`` (or removes it)."""
    file = fig_dir / ADVICE_FIGURE
    if advice is None:
        file.unlink(missing_ok=True)
        return None
    plot = advice_plot(advice)
    image = _png(plot)
    _write_atomic(file, image)
    return {
        "facts": advice_facts(advice),
        "warnings": [str(w) for w in advice.get("warnings") or []],
        "figure": {
            "number": "A",
            "key": plot.key,
            "title": plot.title,
            "caption": plot.caption,
            "holds": None,
            "file": f"figures/{ADVICE_FIGURE}",
            "src": "data:image/png;base64," + base64.b64encode(image).decode("ascii"),
        },
    }


def _check_out_dir(out_dir: str | os.PathLike[str]) -> Path:
    path = Path(out_dir).expanduser()
    for candidate in (path, *path.parents):
        if candidate.exists() and not candidate.is_dir():
            raise ValueError(
                f"out_dir must be a directory, but {str(candidate)!r} exists and is a file"
            )
    return path


def _png(plot: Plot) -> bytes:
    buffer = io.BytesIO()
    plot.figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same directory, so a reader never sees half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the report from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _warning_notes(caught: list[warnings.WarningMessage]) -> list[str]:
    counts: dict[str, int] = {}
    for record in caught:
        text = (
            f"{record.category.__name__} while drawing the figures: {record.message} "
            f"({Path(record.filename).name}:{record.lineno})"
        )
        counts[text] = counts.get(text, 0) + 1
    return [t if n == 1 else f"{t} (×{n})" for t, n in counts.items()]


def _template(name: str = "report.html") -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("decaylab.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = num
    env.filters["seconds"] = seconds
    return env.get_template(name)


def _style() -> str:
    return (resources.files("decaylab.report") / "templates" / "style.css").read_text("utf-8")


# --------------------------------------------------------------------------- page content


def _context(
    study: Study,
    plots: list[Plot],
    images: dict[str, bytes],
    drawing_notes: list[str],
    drawing: float,
) -> dict[str, Any]:
    raw = study.raw
    figures: dict[str, list[dict[str, Any]]] = {name: [] for name in PHASES}
    for number, plot in enumerate(plots, start=1):
        figures[_SECTION_OF[plot.key]].append(
            {
                "number": number,
                "key": plot.key,
                "title": plot.title,
                "caption": plot.caption,
                "holds": plot.holds,
                "file": f"figures/{FIGURE_FILES[plot.key]}",
                "src": "data:image/png;base64,"
                + base64.b64encode(images[plot.key]).decode("ascii"),
            }
        )
    task = study.task
    return {
        "title": f"decaylab study: {task.get('name', 'unnamed task')}",
        "style": _style(),
        "description": task.get("description") or "",
        "created": raw.get("created"),
        "version": raw.get("decaylab_version"),
        "present": {name: study.get(name) is not None for name in PHASES},
        "missing_text": {
            name: f"No {name} section in results.json: {what} did not run or was not saved."
            for name, what in PHASES.items()
        },
        "summary": _summary(study, plots),
        "figures": figures,
        "tables": {
            "reference": _reference_rows(study),
            "curvature": _curvature_rows(study),
            "l2": _l2_table(study),
            "l1": _l1_table(study),
            "early_stopping": _early_stopping_rows(study),
        },
        "trust": trust_words(study.get("l2") or {}) if study.get("l2") else None,
        "warnings": [str(w) for w in raw.get("warnings") or []],
        "notes": [str(n) for n in raw.get("notes") or []],
        "report_notes": study.notes + drawing_notes,
        "timings": _timings(raw.get("timings"), drawing),
    }


def _summary(study: Study, plots: list[Plot]) -> dict[str, Any]:
    task = study.task
    facts = [
        ("task", f"{task.get('name', '—')}: {task.get('description') or 'no description'}"),
        (
            "parameters, training / validation examples",
            f"{fmt(task.get('n_params'))}, {fmt(task.get('n_train'))} / {fmt(task.get('n_val'))}",
        ),
        ("loss", str(task.get("loss", "—"))),
    ]
    ref = study.get("reference")
    if ref is not None:
        converged = ref.get("converged")
        state = "" if converged is None else f", converged: {'yes' if converged else 'NO'}"
        losses = f"training loss {fmt(ref['train_loss'])}, validation loss {fmt(ref['val_loss'])}"
        facts.append(("reference w₀", f"{losses}, gradient norm {fmt(ref['grad_norm'])}{state}"))
    verdicts = {
        True: ("held", "good"),
        False: ("did NOT hold, at least in part", "bad"),
        None: ("—", "na"),
    }
    checks = [
        {
            "number": i,
            "title": p.title,
            "key": p.key,
            "verdict": verdicts[p.holds][0],
            "css": verdicts[p.holds][1],
        }
        for i, p in enumerate(plots, start=1)
    ]
    return {
        "facts": facts,
        "checks": checks,
        "reference_converged": None if ref is None else ref.get("converged"),
    }


def _reference_rows(study: Study) -> list[tuple[str, str]]:
    ref = study.get("reference")
    if ref is None:
        return []
    names = ref.get("decayed_parameters") or []
    return [
        ("training loss J(w₀)", fmt(ref["train_loss"], 4)),
        ("validation loss", fmt(ref["val_loss"], 4)),
        ("gradient norm ‖∇J(w₀)‖", fmt(ref["grad_norm"])),
        ("base penalty α₀", fmt(ref["alpha0"])),
        (
            "decayed parameters",
            f"{fmt(ref.get('n_decayed'))} weights in {', '.join(map(str, names)) or '—'}",
        ),
        ("weights file", str(ref.get("weights_file") or "—")),
    ]


_PATHS = {"dense": "dense eigendecomposition", "operator": "operators (Lanczos, Hutch++, SLQ)"}


def _curvature_rows(study: Study) -> list[tuple[str, str]]:
    curv = study.get("curvature")
    if curv is None:
        return []
    eig = curv["eigenvalues"]
    trace = fmt(curv["trace"])
    if curv.get("trace_std_error"):
        trace += f" ± {fmt(curv['trace_std_error'])}"
    return [
        ("path", _PATHS.get(str(curv.get("path")), str(curv.get("path")))),
        ("eigenvalues computed", fmt(int(eig.size))),
        (
            "largest, smallest listed",
            f"{fmt(eig.max() if eig.size else None)}, {fmt(eig.min() if eig.size else None)}",
        ),
        ("negative eigenvalues", fmt(curv.get("n_negative"))),
        ("trace", trace),
        ("Hessian diagonal (for L1)", str(curv.get("diagonal_source") or "—")),
    ]


def _l2_table(study: Study) -> dict[str, Any] | None:
    l2 = study.get("l2")
    if l2 is None:
        return None
    top = l2["trust_region_alpha_max"]
    return _grid_table(
        l2,
        [
            ("relative_error", "rel. error (from w₀)"),
            ("relative_error_scratch", "rel. error (scratch)"),
            ("gamma", "γ (effective parameters)"),
            ("val_loss_predicted", "val. loss predicted"),
            ("val_loss_measured", "val. loss measured"),
            ("val_loss_scratch", "val. loss scratch"),
            ("displacement_norm", "‖w_meas − w₀‖"),
            ("retrain_error", "retraining error / displacement"),
        ],
        cell=lambda value, key: fmt(value, 3),
        trusted=lambda alpha: top is not None and alpha <= top,
    )


def _l1_table(study: Study) -> dict[str, Any] | None:
    l1 = study.get("l1")
    if l1 is None:
        return None
    return _grid_table(
        l1,
        [
            ("n_zero_predicted", "zeros predicted"),
            ("n_zero_measured", "zeros measured"),
            ("zero_precision", "precision"),
            ("zero_recall", "recall"),
            ("val_loss", "val. loss"),
        ],
        cell=_cell,
        trusted=lambda alpha: False,
    )


def _grid_table(
    section: dict[str, Any],
    columns: list[tuple[str, str]],
    *,
    cell: Callable[[float, str], str],
    trusted: Callable[[float], bool],
) -> dict[str, Any]:
    """One row per grid α, one column per ``(key, header)`` the section has."""
    columns = [(k, label) for k, label in columns if section.get(k) is not None]
    rows = [
        {
            "alpha": fmt(a, 3),
            "cells": [cell(section[k][i], k) for k, _ in columns],
            "trusted": trusted(a),
        }
        for i, a in enumerate(section["alphas"])
    ]
    return {"headers": [label for _, label in columns], "rows": rows}


def _cell(value: float, key: str) -> str:
    if key.startswith("n_") and np.isfinite(value):
        return fmt(int(value))
    return fmt(value, 3)


def _early_stopping_rows(study: Study) -> list[tuple[str, str]]:
    es = study.get("early_stopping")
    if es is None:
        return []
    rows = [
        ("learning rate ε, patience", f"{fmt(es['lr'])}, {fmt(es.get('patience'))} steps"),
        ("best step τ*", fmt(None if es["best_step"] is None else int(es["best_step"]))),
        ("equivalent α = 1/(ετ*)", fmt(es["equivalent_alpha"])),
    ]
    for key, label in (
        ("val_loss_early_stopping", "validation loss, early stopping"),
        ("val_loss_l2_equivalent", "… L2 at 1/(ετ*) toward the initialization"),
        ("val_loss_l2_equivalent_zero", "… L2 at 1/(ετ*) toward zero"),
        ("val_loss_l2_best", "… best L2 of the grid"),
    ):
        rows.append((label, fmt(es[key], 4)))
    return rows


def _timings(timings: Any, drawing: float) -> list[tuple[str, str]]:
    rows = []
    if isinstance(timings, Mapping):
        for phase, value in timings.items():
            number = (
                value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            )
            rows.append((str(phase), seconds(number)))
    rows.append(("report figures (this rendering)", seconds(drawing)))
    return rows
