"""The study end to end on the exact linear task, checked against independent computations;
interrupted runs resume to the same numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import Lasso, Ridge

from decaylab.checkpoint import load_checkpoint
from decaylab.study.config import ConfigError, config_from_dict
from decaylab.study.run import run_study
from decaylab.tasks import get_task

SMALL = {
    "task": "diabetes",
    "reference": {"tol": 1e-12},
    "curvature": {"k": 10},
    "l2": {"alphas": [0.01, 0.1, 1.0, 10.0], "tol": 1e-12, "max_iter": 500},
    "l1": {"alphas": [0.01, 0.1], "tol": 1e-10, "max_iter": 3000},
    "early_stopping": {"max_steps": 60, "patience": 100, "record_every": 1},
    "picture": {"grid": 5},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("diabetes")
    return run_study(config_from_dict(SMALL), out), out


@pytest.fixture(scope="module")
def data():
    task = get_task("diabetes")
    X, y = (t.numpy() for t in task.train)
    return X, y[:, 0], task


def test_reference_is_least_squares(study, data):
    res, out = study
    X, y, _ = data
    w_ls = np.linalg.lstsq(X, y, rcond=None)[0]
    ref = res["reference"]
    assert ref["converged"] and ref["alpha0"] == 0.0 and ref["grad_norm"] < 1e-10
    assert abs(ref["train_loss"] - 0.5 * np.mean((y - X @ w_ls) ** 2)) < 1e-12
    import torch

    state = torch.load(out / "reference.pt", weights_only=True)
    np.testing.assert_allclose(state["weight"].numpy()[0], w_ls, rtol=1e-8, atol=1e-10)
    eig = np.linalg.eigvalsh(X.T @ X / len(y))[::-1]
    np.testing.assert_allclose(res["curvature"]["eigenvalues"], eig, rtol=1e-10)
    assert res["curvature"]["path"] == "dense" and res["curvature"]["n_negative"] == 0


def test_l2_prediction_equals_retraining_and_ridge(study, data):
    res, _ = study
    X, y, _ = data
    l2 = res["l2"]
    assert max(l2["relative_error"]) < 1e-6  # the quadratic model is exact here
    assert l2["trust_region_alpha_max"] == 10.0
    for a, train_pred in zip(l2["alphas"], l2["train_loss_predicted"], strict=True):
        # scikit-learn's Ridge minimizes ‖y − Xw‖² + a‖w‖²: a = N α (conventions)
        w = Ridge(alpha=a * len(y), fit_intercept=False).fit(X, y).coef_
        assert abs(train_pred - 0.5 * np.mean((y - X @ w) ** 2)) < 1e-10
    lam = np.linalg.eigvalsh(X.T @ X / len(y))
    np.testing.assert_allclose(l2["gamma"], [np.sum(lam / (lam + a)) for a in l2["alphas"]])


def test_l1_against_lasso(study, data):
    res, _ = study
    X, y, _ = data
    for a, n_meas in zip(res["l1"]["alphas"], res["l1"]["n_zero_measured"], strict=True):
        # Lasso minimizes (1/2N)‖y − Xw‖² + a‖w‖₁ = J + a‖w‖₁
        w = Lasso(alpha=a, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(X, y).coef_
        assert n_meas == int(np.sum(w == 0))


def test_early_stopping_trajectory_is_explicit_gradient_descent(study, data):
    res, out = study
    X, y, _ = data
    es = res["early_stopping"]
    cached = load_checkpoint(out / "cache" / "early_stopping.pt")["result"]
    steps = cached["snapshots_steps"].numpy()
    # Reference: full-batch gradient descent on ½ mean (y − Xw)² from zero, step by step.
    w, expected = np.zeros(X.shape[1]), {}
    for step in range(int(steps.max()) + 1):
        expected[step] = w
        w = w - es["lr"] * X.T @ (X @ w - y) / len(y)
    expected = np.array([expected[int(s)] for s in steps])
    np.testing.assert_allclose(cached["snapshots"].numpy(), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        es["trajectory"]["predicted"], es["trajectory"]["measured"], rtol=1e-8, atol=1e-12
    )
    assert es["equivalent_alpha"] == pytest.approx(1 / (es["lr"] * es["best_step"]))
    assert es["val_loss_early_stopping"] == min(es["val_curve"]["val_loss"])


def test_results_json_schema(study):
    res, out = study
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["schema_version"] == 1
    for section, keys in {
        "task": ["name", "n_params", "n_train", "n_val"],
        "reference": [
            "train_loss",
            "grad_norm",
            "alpha0",
            "decayed_parameters",
            "hessian_top_eigenvalues",
            "weights_file",
        ],
        "l2": [
            "alphas",
            "relative_error",
            "val_loss_predicted",
            "val_loss_measured",
            "gamma",
            "trust_region_alpha_max",
            "shrink_predicted",
            "shrink_measured",
        ],
        "l1": ["alphas", "zero_precision", "zero_recall", "n_zero_predicted", "n_zero_measured"],
        "early_stopping": [
            "lr",
            "best_step",
            "equivalent_alpha",
            "val_loss_early_stopping",
            "val_loss_l2_equivalent",
            "val_loss_l2_best",
        ],
        "picture": ["a", "b", "J", "predicted", "measured"],
    }.items():
        assert set(keys) <= set(on_disk[section]), section
    assert set(on_disk["timings"]) >= {"reference", "curvature", "l2", "l1", "early_stopping"}
    assert np.array(on_disk["picture"]["J"]).shape == (5, 5)


def test_l2_alphas_below_alpha0_refused():
    cfg = config_from_dict({"task": "breast-cancer-logistic", "l2": {"alphas": [1e-5, 1.0]}})
    with pytest.raises(ConfigError, match="l2.alphas.*α₀"):
        run_study(cfg, "/nonexistent-never-created")


def _cli(out: Path, config: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    return subprocess.Popen(
        [sys.executable, "-m", "decaylab.cli", "run", "--config", str(config), "--out", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _strip(results: dict) -> dict:
    return {k: v for k, v in results.items() if k not in ("timings", "created")}


def test_sigkill_then_rerun_gives_identical_results(tmp_path):
    config = tmp_path / "s.toml"
    config.write_text(
        'task = "diabetes"\n[early_stopping]\nmax_steps = 40\n'
        "[l1]\nalphas = [0.1]\nmax_iter = 300\n[picture]\ngrid = 4\n"
    )
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = _cli(killed, config)
    deadline = time.time() + 120
    while not (killed / "cache" / "curvature.pt").exists() and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "results.json").exists() or proc.returncode == 0
    rerun = _cli(killed, config)
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, output
    assert "reference: reused" in output
    done = _cli(clean, config)
    assert done.wait(timeout=300) == 0
    first = json.loads((killed / "results.json").read_text())
    second = json.loads((clean / "results.json").read_text())
    assert _strip(first) == _strip(second)


def test_operator_path_matches_the_exact_answers(tmp_path, data):
    X, y, _ = data
    cfg = config_from_dict(
        {
            **SMALL,
            "curvature": {
                "dense_max_params": 5,
                "k": 4,
                "trace_matvecs": 12,
                "diagonal_matvecs": 12,
                "density_steps": 8,
            },
            "l1": {"alphas": [0.1], "max_iter": 200},
            "early_stopping": {"max_steps": 20},
        }
    )
    res = run_study(cfg, tmp_path)
    curv = res["curvature"]
    H = X.T @ X / len(y)
    assert curv["path"] == "operator" and curv["diagonal_source"] == "estimated"
    np.testing.assert_allclose(curv["eigenvalues"], np.linalg.eigvalsh(H)[::-1][:4], rtol=1e-6)
    assert abs(curv["trace"] - np.trace(H)) <= 4 * curv["trace_std_error"] + 1e-8
    # CG on the operator gives the exact ridge solution of the quadratic
    assert max(res["l2"]["relative_error"]) < 1e-5
    assert res["reference"]["hessian_top_eigenvalues"] == curv["eigenvalues"]
