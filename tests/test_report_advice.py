"""The report's Advice section, from a synthetic advice.json (schema in docs/advise.md)."""

from __future__ import annotations

import ast
import base64
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest

from _report_results import make_results
from decaylab.report import render
from decaylab.report._format import fmt, seconds
from decaylab.report.advice import advice_plot, load_advice
from decaylab.report.page import ADVICE_FIGURE, render_advice

SRC = Path(__file__).resolve().parents[1] / "src" / "decaylab" / "report"


def _advice(method: str = "evidence", grid: bool = True) -> dict:
    alphas = list(np.geomspace(1e-4, 1.0, 6))
    curves: dict = {"alpha": alphas}
    if method == "evidence":
        curves.update(step=[0, 1, 2], alpha_trace=[1e-2, 3e-3, 2e-3])
        curves["log_evidence"] = [-50.0, -42.0, -40.5, -41.0, None, -60.0]
    else:
        curves["val_loss"] = [0.40, 0.31, 0.27, 0.29, 0.35, 0.62]
    return {
        "schema_version": 1,
        "alpha": 0.00213,
        "method": method,
        "val_loss": 0.2734,
        "val_accuracy": 0.9123,
        "train_loss": 0.11,
        "gamma": 123.4,
        "n_params": 2410,
        "curves": curves,
        "compute_seconds": 1.87,
        "grad_evals": 4321,
        "warnings": ["TheoryWarning: gamma is near n_params"] if method == "evidence" else [],
        "grid": {
            "alphas": alphas,
            "val_loss": [0.41, 0.30, 0.262, 0.28, 0.36, 0.63],
            "train_loss": [0.05, 0.06, 0.08, 0.12, 0.2, 0.5],
            "val_accuracy": [0.9, 0.91, 0.925, 0.92, 0.9, 0.8],
            "best_alpha": float(alphas[2]),
            "best_val_loss": 0.262,
            "best_val_accuracy": 0.925,
            "compute_seconds": 9.5,
            "grad_evals": 66000,
        }
        if grid
        else None,
        "protocol": {"optimizer": "adam", "lr": 0.01, "steps": 300, "batch_size": 64, "seed": 0},
        "details": {},
    }


def _text(page: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")))


def test_caption_states_the_advice_numbers():
    advice = _advice()
    caption = advice_plot(advice).caption
    grid = advice["grid"]
    for number in (
        fmt(advice["alpha"]),
        fmt(advice["val_loss"], 4),
        fmt(advice["val_accuracy"], 4),
        seconds(advice["compute_seconds"]),
        fmt(advice["grad_evals"]),
        fmt(grid["best_alpha"]),
        fmt(grid["best_val_loss"], 4),
        seconds(grid["compute_seconds"]),
        fmt(grid["grad_evals"]),
    ):
        assert number in caption, number
    assert "6 points" in caption
    assert "NOT fully vouched for (1 warning(s))" in caption and "gamma is near" in caption
    clean = advice_plot(_advice("path", grid=False)).caption
    assert "grid" not in clean and "vouched" not in clean


def test_figure_draws_the_curves_and_marks_both_alphas():
    advice = _advice()
    fig = advice_plot(advice).figure
    ax, evidence = fig.axes
    # the vertical lines are at the chosen and the grid's α (x data of an axvline: [a, a])
    vlines = sorted(
        line.get_xdata()[0]
        for line in ax.lines
        if len(line.get_xdata()) == 2 and len(set(line.get_xdata())) == 1
    )
    assert vlines == pytest.approx(sorted([advice["alpha"], advice["grid"]["best_alpha"]]))
    # the evidence is drawn on its own axis without the null point
    (curve,) = evidence.lines
    drawn = [None if np.isnan(v) else v for v in curve.get_ydata()]
    assert drawn == advice["curves"]["log_evidence"]  # the null stays a gap
    grid_line = next(line for line in ax.lines if line.get_label() == "grid: val. loss")
    assert list(grid_line.get_ydata()) == advice["grid"]["val_loss"]
    (star,) = [line for line in ax.lines if line.get_marker() == "*"]
    assert (star.get_xdata()[0], star.get_ydata()[0]) == (advice["alpha"], advice["val_loss"])


def test_render_picks_up_advice_json_in_the_directory(tmp_path):
    results = make_results()
    page = render(results, tmp_path)
    assert "Advice" not in _text(page) and not (tmp_path / "figures" / ADVICE_FIGURE).exists()
    (tmp_path / "advice.json").write_text(json.dumps(_advice()))
    page = render(results, tmp_path)
    text = _text(page)
    assert "Advice" in text and fmt(0.00213) in text and "gamma is near n_params" in text
    png = (tmp_path / "figures" / ADVICE_FIGURE).read_bytes()
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page.read_text())
    assert png in {base64.b64decode(e) for e in embedded}
    (tmp_path / "advice.json").unlink()
    render(results, tmp_path)
    assert not (tmp_path / "figures" / ADVICE_FIGURE).exists()  # a stale figure goes


def test_advice_only_page_and_bad_advice(tmp_path):
    page = render_advice(_advice("path"), tmp_path)
    text = _text(page)
    assert "No study ran" in text and fmt(0.2734, 4) in text
    assert (tmp_path / "figures" / ADVICE_FIGURE).is_file()
    bad = _advice()
    del bad["alpha"]
    with pytest.raises(ValueError, match="'alpha'"):
        render_advice(bad, tmp_path / "other")
    assert not (tmp_path / "other").exists()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "advice.json").write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_advice(tmp_path / "broken")
    assert load_advice(tmp_path / "nothing") is None


def test_report_never_imports_the_study_or_the_advisor():
    for file in SRC.glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert not name.startswith(("decaylab.study", "decaylab.advise")), (file, name)


def test_advise_command_renders_beside_a_study_or_alone(tmp_path):
    from decaylab.cli import _render_advice

    alone, study = tmp_path / "alone", tmp_path / "study"
    for directory in (alone, study):
        directory.mkdir()
        (directory / "advice.json").write_text(json.dumps(_advice()))
    (study / "results.json").write_text(json.dumps(make_results()))
    assert "No study ran" in _text(_render_advice(alone))
    text = _text(_render_advice(study))
    assert "No study ran" not in text and "Advice" in text and "Early stopping" in text
