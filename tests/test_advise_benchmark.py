"""Smoke test of benchmarks/advisor.py --quick on the logistic task (seconds)."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def advisor_module():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import advisor

        yield advisor
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_advisor_benchmark_quick(advisor_module, tmp_path):
    pytest.importorskip("optuna")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        advisor_module.main(tmp_path, quick=True, tasks=("breast-cancer-logistic",))
    data = json.loads((tmp_path / "advisor_quick.json").read_text())
    rows = {r["method"]: r for r in data["tasks"][0]["rows"]}
    assert {"grid", "decaylab path", "optuna TPE+Hyperband"} <= set(rows)
    grid = data["tasks"][0]["grid"]
    assert rows["grid"]["val_loss"] == min(grid["val_loss"])
    # Optuna was given the default method's gradient budget (at least one trial).
    assert rows["optuna TPE+Hyperband"]["grad_evals"] <= max(
        rows["decaylab path"]["grad_evals"], data["tasks"][0]["protocol"]["steps"]
    )
    assert "| decaylab path |" in (tmp_path / "advisor_quick.md").read_text()
