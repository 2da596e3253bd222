"""The advisor's grid baseline through the study's executors (local, Ray)."""

from __future__ import annotations

import pytest

from _advise_task import tiny as _task
from decaylab.advise import Protocol
from decaylab.advise._train import Budget
from decaylab.advise.grid import grid_point, grid_search, log_grid
from decaylab.executors import LocalExecutor

PROTO = Protocol(optimizer="adam", lr=0.05, steps=40)
ALPHAS = log_grid(1e-3, 1e-1, 3)


def test_local_executor_equals_the_in_process_loop():
    task = _task()
    loop_budget = Budget()
    loop = [grid_point(task, PROTO, float(a), loop_budget) for a in ALPHAS]
    budget = Budget()
    res = grid_search(task, PROTO, ALPHAS, budget, executor=LocalExecutor())
    assert res["val_loss"] == [r["val_loss"] for r in loop]
    assert res["train_loss"] == [r["train_loss"] for r in loop]
    assert res["grad_evals"] == loop_budget.grad_evals == budget.grad_evals == 3 * 40
    assert 0 < res["compute_seconds"] <= budget.seconds + 1e-9


def test_ray_grid_equals_the_local_grid(local_ray):
    from decaylab.executors.ray import RayExecutor

    task = _task()
    local = grid_search(task, PROTO, ALPHAS, executor=LocalExecutor())
    remote = grid_search(task, PROTO, ALPHAS, executor=RayExecutor())
    for key in ("alphas", "val_loss", "train_loss", "val_accuracy", "best_alpha", "grad_evals"):
        assert remote[key] == local[key], key
    assert remote["compute_seconds"] > 0


def test_bad_executor_options_are_refused_before_compute():
    from decaylab.advise import advise

    with pytest.raises(ValueError, match="--executor"):
        advise(_task(), method="grid", executor="dask")
    with pytest.raises(ValueError, match="--ray-address"):
        advise(_task(), method="grid", ray_address="auto")
