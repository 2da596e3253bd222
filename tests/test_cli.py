"""The `decaylab` command line: config errors exit 2 with the field's name, no traceback;
the study runs, reuses its cache, and `decaylab report` re-renders from results.json."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from decaylab import __version__
from decaylab.cli import app

runner = CliRunner()

FAST = (
    'task = "diabetes"\n[early_stopping]\nmax_steps = 30\n[l1]\nalphas = [0.1]\n'
    "max_iter = 200\n[picture]\ngrid = 4\n"
)


def test_version_and_help():
    assert runner.invoke(app, ["--version"]).output.strip() == f"decaylab {__version__}"
    out = runner.invoke(app, ["--help"]).output
    for command in ("run", "demo", "report"):
        assert command in out


@pytest.mark.parametrize(
    "toml, field",
    [
        ("colour = 1\n", "colour"),
        ("[l2]\nalphas = [1.0, -1.0]\n", "l2.alphas"),
        ("[l1]\nalphas = []\n", "l1.alphas"),
        ("[early_stopping]\nlr = -1\n", "early_stopping.lr"),
        ("[early_stopping]\npatience = 0\n", "early_stopping.patience"),
        ("[early_stopping]\nmax_steps = 1.5\n", "early_stopping.max_steps"),
        ("[curvature]\ndense_max_params = 0\n", "curvature.dense_max_params"),
        ('[curvature]\nk = "ten"\n', "curvature.k"),
        ("seed = -3\n", "seed"),
        ('task = "breast-cancer-logistic"\n[l2]\nalphas = [1e-6]\n', "l2.alphas"),
        ("l2 = [\n", "--config"),
    ],
)
def test_config_errors_exit_2_naming_the_field(tmp_path, toml, field):
    cfg = tmp_path / "s.toml"
    cfg.write_text(toml)
    result = runner.invoke(app, ["run", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert f"Error: {field}:" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()  # nothing computed, nothing written


def test_bad_task_exit_2(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("raise ImportError('no torchvision here')\n")
    result = runner.invoke(app, ["run", "--task", f"{bad}:make", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "broken.py" in result.output
    assert "no torchvision here" in result.output
    result = runner.invoke(app, ["run", "--task", "nope", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "digits-mlp" in result.output


def test_run_reuses_cache_and_flags_override(tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text(FAST)
    out = tmp_path / "o"
    first = runner.invoke(app, ["run", "--config", str(cfg), "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "total time" in first.output
    results = json.loads((out / "results.json").read_text())
    assert results["task"]["name"] == "diabetes" and results["config"]["seed"] == 0
    again = runner.invoke(app, ["run", "--config", str(cfg), "--out", str(out)])
    assert "picture: reused" in again.output and "reference: reused" in again.output
    fresh = runner.invoke(app, ["run", "--config", str(cfg), "--out", str(out), "--fresh"])
    assert "reused" not in fresh.output.split("phases reused")[0]
    seeded = runner.invoke(app, ["run", "--config", str(cfg), "--out", str(out), "--seed", "2"])
    assert seeded.exit_code == 0
    assert json.loads((out / "results.json").read_text())["config"]["seed"] == 2


def test_report_rerenders_from_results_json(tmp_path):
    missing = runner.invoke(app, ["report", str(tmp_path)])
    assert missing.exit_code == 2 and "results.json" in missing.output
    cfg = tmp_path / "s.toml"
    cfg.write_text(FAST)
    assert runner.invoke(app, ["run", "--config", str(cfg), "--out", str(tmp_path)]).exit_code == 0
    (tmp_path / "report.html").unlink(missing_ok=True)
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report.html").is_file()
