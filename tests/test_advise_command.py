"""``decaylab advise`` as a command: a user task file, a TOML config, advice.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from decaylab.advise.command import advise_command, read_config

TASK_FILE = Path(__file__).with_name("_advise_task.py")

CONFIG = """
seed = 0
[advise]
method = "grid"
alpha_min = 1e-4
alpha_max = 1e-1
n_grid = 3
lr = 0.05
steps = 30
"""


@pytest.fixture
def files(tmp_path):
    config = tmp_path / "advise.toml"
    config.write_text(CONFIG)
    return f"{TASK_FILE}:tiny", config


@pytest.mark.filterwarnings("ignore::decaylab.TheoryWarning")
@pytest.mark.filterwarnings("ignore::decaylab.ConvergenceWarning")
def test_cli_writes_advice_json(files, tmp_path):
    task, config = files
    from decaylab.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["advise", "--task", task, "--config", str(config), "--out", str(out), "--compare-grid"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "advice.json").read_text())
    assert data["schema_version"] == 1 and data["method"] == "grid"
    assert data["protocol"]["steps"] == 30 and data["protocol"]["lr"] == 0.05
    assert data["alpha"] == data["grid"]["best_alpha"]
    assert len(data["curves"]["alpha"]) == 3 == len(data["grid"]["val_loss"])
    # no study in out/: an advice-only page, drawn from the real advice.json
    page = (out / "report.html").read_text()
    assert "No study ran" in page and (out / "figures" / "8_advice.png").is_file()


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[advise]\nlearning_rate = 0.1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        read_config(bad)
    with pytest.raises(ValueError, match="does not exist"):
        read_config(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="method must be one of"):
        advise_command("digits-mlp", method="bayes", out=tmp_path)
