"""The `decaylab` command line: demo and run write a self-contained report, errors are clear."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest
from typer.testing import CliRunner

from decaylab import __version__
from decaylab.cli import app

FIGURES = (
    "a_weight_decay_picture.png",
    "b_shrink_factors.png",
    "c_early_stopping.png",
    "d_l1_vs_l2_paths.png",
    "e_evidence.png",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

runner = CliRunner()


def _no_nan(token: str):
    raise AssertionError(f"results.json contains {token}, which is not JSON")


def _check_report_dir(out: Path) -> dict:
    html = (out / "report.html").read_text(encoding="utf-8")
    # self-contained: nothing fetched from the network, figures inlined
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "<link" not in html.lower() and "<script" not in html.lower()
    assert html.count("data:image/png;base64,") == len(FIGURES)
    for name in FIGURES:
        data = (out / "figures" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
    results = json.loads((out / "results.json").read_text(encoding="utf-8"),
                         parse_constant=_no_nan)
    # the key numbers the report shows are in the JSON
    ev = results["evidence"]
    for key in ("alpha", "prior_precision", "noise_precision", "gamma", "log_evidence"):
        assert isinstance(ev[key], float), key
    assert 0 < ev["gamma"] < 10 and ev["converged"] is True
    assert len(results["hessian"]["eigenvalues"]) == 10
    assert results["hessian"]["eigenvalues"] == sorted(results["hessian"]["eigenvalues"],
                                                      reverse=True)
    assert set(results["w_star"]) == {"age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4",
                                      "s5", "s6"}
    assert results["weight_decay_picture"]["alpha"] == ev["alpha"]
    assert [f["file"] for f in results["figures"]] == [f"figures/{n}" for n in FIGURES]
    for fig in results["figures"]:
        assert fig["caption"] in unescape(html)  # each figure's caption is on the page
    # numbers shown in the page agree with the JSON
    assert f"{ev['alpha']:.4g}" in html and f"{ev['gamma']:.4g}" in html
    return results


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("cli") / "report"
    result = runner.invoke(app, ["demo", "--out", str(out)])
    return out, result


def test_demo_writes_self_contained_report(demo_dir):
    out, result = demo_dir
    assert result.exit_code == 0, result.output
    results = _check_report_dir(out)
    assert results["warnings"] == []
    assert "No warnings were raised" in (out / "report.html").read_text(encoding="utf-8")
    # the terminal table names the evidence α and where the files went
    text = result.stdout
    assert "evidence-optimal α" in text and "report.html" in text
    assert f"{results['evidence']['alpha']:.4g}" in text


def test_python_m_decaylab_run_overwrites_and_reports_warnings(demo_dir, tmp_path):
    """`python -m decaylab run --task diabetes` into a full report directory, lr·λ_max > 1."""
    out = tmp_path / "report"
    shutil.copytree(demo_dir[0], out)
    before = (out / "results.json").stat().st_mtime_ns
    proc = subprocess.run(
        [sys.executable, "-m", "decaylab", "run", "--task", "diabetes", "--out", str(out),
         "--quiet", "--lr", "0.3"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""  # --quiet: no table
    results = _check_report_dir(out)
    assert (out / "results.json").stat().st_mtime_ns > before
    assert results["gradient_descent"]["lr"] == 0.3
    # the theory's warning reaches the terminal, the JSON and the report's notes
    assert "TheoryWarning" in proc.stderr
    assert any(w["category"] == "TheoryWarning" for w in results["warnings"])
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "TheoryWarning" in html and "overshoots" in html


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"decaylab {__version__}"
    proc = subprocess.run([sys.executable, "-m", "decaylab.cli", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"decaylab {__version__}"


def test_out_is_an_existing_file(tmp_path):
    target = tmp_path / "taken.txt"
    target.write_text("not a directory")
    for out in (target, target / "inside"):
        result = runner.invoke(app, ["demo", "--out", str(out)])
        assert result.exit_code == 2
        assert "--out" in result.output and "is a file" in result.output
    assert target.read_text() == "not a directory"


def test_unknown_task_and_bad_values(tmp_path):
    result = runner.invoke(app, ["run", "--task", "mnist", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "--task must be one of diabetes" in result.output and "'mnist'" in result.output
    result = runner.invoke(app, ["demo", "--alpha", "-1", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--alpha must be > 0" in result.output
    result = runner.invoke(app, ["demo", "--lr", "0", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--lr must be > 0" in result.output
    assert not (tmp_path / "x").exists()


def test_help_names_commands_and_tasks():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "demo" in result.stdout and "run" in result.stdout
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0 and "diabetes" in result.stdout
