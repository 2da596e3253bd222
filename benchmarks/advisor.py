"""The weight-decay advisor against a grid, laplace-torch, Optuna and a timescale rule.

On digits-mlp, breast-cancer-logistic and mnist1d-cnn, side by side in one run (one thread,
so wall times compare): every decaylab method, the 11-point grid (1e-6 … 1e-1), laplace-torch's
online ``marglik_training`` (Kronecker GGN, or diagonal where curvlinops' KFAC lacks a layer;
scalar prior) and post-hoc ``optimize_prior_precision(method="marglik")`` on a weakly
regularized model, Optuna TPE with a Hyperband pruner given the default method's
gradient-evaluation budget, and the Wang & Aitchison (2024) timescale rule
``1/(lr·α) = steps`` (τ_iter equal to the training length).
Every α is then trained with the task's protocol, whose validation loss is what is compared.

    python benchmarks/advisor.py [--quick] [--tasks digits-mlp ...] [--out benchmarks/results]

Writes ``advisor.json`` and ``advisor.md`` (``advisor_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from decaylab.advise import Protocol, advise
from decaylab.advise._train import Budget, train_at
from decaylab.advise.grid import grid_search, log_grid

RANGE = (1e-6, 1e-1)
METHODS = ("path", "evidence", "hypergradient", "early_stopping")
DEFAULT = "path"
# Per task: the training protocol, and how to shrink the data for the time budget.
PROTOCOLS = {
    "digits-mlp": Protocol(optimizer="adam", lr=1e-2, steps=3000),
    "breast-cancer-logistic": Protocol(optimizer="adam", lr=1e-2, steps=1000),
    "mnist1d-cnn": Protocol(optimizer="adam", lr=1e-3, steps=600, batch_size=250),
}
SUBSETS = {"mnist1d-cnn": 1000}


def load_task(name: str, quick: bool) -> Any:
    """The built-in task in float32 (twice as fast on CPU), optionally subsampled."""
    from decaylab.tasks import get_task

    task = get_task(name)
    n = 120 if quick else SUBSETS.get(name)

    def cut(pair: tuple) -> tuple:
        X, y = pair
        X = X.float()
        y = y.float() if y.is_floating_point() else y
        return (X[:n], y[:n]) if n else (X, y)

    return types.SimpleNamespace(
        name=name,
        model=lambda: task.model().float(),
        loss_fn=task.loss_fn,
        train=cut(task.train),
        val=cut(task.val),
    )


def evaluate(task: Any, proto: Protocol, alpha: float, budget: Budget) -> dict[str, Any]:
    trainer = train_at(task, proto, alpha, budget)
    return {"alpha": alpha, "val_loss": trainer.val_loss(), "accuracy": trainer.val_accuracy()}


def row(
    name: str, alpha: float, val: float, acc: Any, seconds: float, grads: float, **extra: Any
) -> dict[str, Any]:
    return {
        "method": name,
        "alpha": alpha,
        "val_loss": val,
        "accuracy": acc,
        "seconds": seconds,
        "grad_evals": grads,
        **extra,
    }


def run_decaylab(task: Any, proto: Protocol, method: str) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adv = advise(task, method=method, protocol=proto, alpha_range=RANGE)
    return row(
        f"decaylab {method}",
        adv.alpha,
        adv.val_loss,
        adv.val_accuracy,
        adv.compute_seconds,
        adv.grad_evals,
        warnings=adv.warnings,
        curves=adv.curves,
    )


def run_grid(task: Any, proto: Protocol, n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    g = grid_search(task, proto, log_grid(*RANGE, n))
    return row(
        "grid",
        g["best_alpha"],
        g["best_val_loss"],
        g["best_val_accuracy"],
        g["compute_seconds"],
        g["grad_evals"],
    ), g


def run_wang_aitchison(task: Any, proto: Protocol) -> dict[str, Any]:
    budget = Budget()
    alpha = 1.0 / (proto.lr * proto.steps)
    r = evaluate(task, proto, alpha, budget)
    return row(
        "timescale rule (W&A 2024)",
        alpha,
        r["val_loss"],
        r["accuracy"],
        budget.seconds,
        budget.grad_evals,
    )


def _loader(task: Any, proto: Protocol) -> Any:
    X, y = task.train
    if not y.is_floating_point():
        pass
    elif y.ndim == 2 and y.shape[1] == 1:  # laplace-torch classifies with softmax: 2 logits
        y = y[:, 0].long()
    bs = proto.batch_size or len(X)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=bs)


def _two_logit_task(task: Any) -> Any:
    """laplace-torch needs softmax logits: a one-logit BCE model becomes two logits
    ``[0, f]`` (the same likelihood), so its prior applies to the same weights."""
    X, y = task.train
    if not (y.is_floating_point() and y.ndim == 2):
        return task

    class TwoLogit(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = task.model()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.inner(x)
            return torch.cat([torch.zeros_like(f), f], dim=1)

    def ce(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(out, target.reshape(-1).long())

    return types.SimpleNamespace(
        name=task.name, model=TwoLogit, loss_fn=ce, train=task.train, val=task.val
    )


def _laplace_structure(model: torch.nn.Module, full_up_to: int = 0) -> str:
    """laplace-torch's Hessian structure for ``model``: ``"full"`` up to ``full_up_to``
    parameters, else ``"kron"`` where curvlinops' KFAC supports every layer with parameters
    (Linear, Conv2d), else ``"diag"`` (mnist1d-cnn's Conv1d layers)."""
    if sum(p.numel() for p in model.parameters()) <= full_up_to:
        return "full"
    kfac_layers = (torch.nn.Linear, torch.nn.Conv2d)
    for module in model.modules():
        has_own = any(True for _ in module.parameters(recurse=False))
        if has_own and not isinstance(module, kfac_layers):
            return "diag"
    return "kron"


def run_marglik_training(task: Any, proto: Protocol) -> dict[str, Any]:
    from laplace import marglik_training
    from laplace.curvature import CurvlinopsGGN

    budget = Budget()
    lt = _two_logit_task(task)
    torch.manual_seed(proto.seed)
    model = lt.model()
    loader = _loader(task, proto)
    epochs = max(proto.steps // len(loader), 1)
    structure = _laplace_structure(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        la, *_ = marglik_training(
            model,
            loader,
            likelihood="classification",
            hessian_structure=structure,
            backend=CurvlinopsGGN,
            optimizer_kwargs={"lr": proto.lr},
            n_epochs=epochs,
            prior_structure="scalar",
            marglik_frequency=max(epochs // 10, 1),
            n_epochs_burnin=max(epochs // 10, 1),
        )
    budget.add_steps(epochs * len(loader))
    alpha = float(la.prior_precision.mean()) / len(task.train[0])
    r = evaluate(task, proto, alpha, budget)
    return row(
        "laplace-torch marglik_training",
        alpha,
        r["val_loss"],
        r["accuracy"],
        budget.seconds,
        budget.grad_evals,
        note=f"{structure} GGN, scalar prior, all params",
    )


def run_posthoc(task: Any, proto: Protocol) -> dict[str, Any]:
    from laplace import Laplace

    budget = Budget()
    lt = _two_logit_task(task)
    trainer = train_at(lt, proto, 1e-5, budget)
    structure = _laplace_structure(trainer.model, full_up_to=3000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        la = Laplace(
            trainer.model, "classification", subset_of_weights="all", hessian_structure=structure
        )
        la.fit(_loader(task, proto))
        la.optimize_prior_precision(method="marglik")
    alpha = float(la.prior_precision.mean()) / len(task.train[0])
    r = evaluate(task, proto, alpha, budget)
    return row(
        "laplace-torch post hoc marglik",
        alpha,
        r["val_loss"],
        r["accuracy"],
        budget.seconds,
        budget.grad_evals,
        note=f"{structure} GGN at alpha=1e-5",
    )


def run_optuna(task: Any, proto: Protocol, grad_budget: float) -> dict[str, Any]:
    import optuna

    from decaylab.advise._train import Trainer

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget = Budget()
    rungs = 10
    chunk = max(proto.steps // rungs, 1)
    best: dict[str, Any] = {"val_loss": math.inf}

    def objective(trial: Any) -> float:
        alpha = trial.suggest_float("alpha", *RANGE, log=True)
        trainer = Trainer(task, proto, alpha, budget)
        for rung in range(rungs):
            trainer.run(min(chunk, proto.steps - trainer.steps_done))
            val = trainer.val_loss()
            trial.report(val, rung)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trainer.run(proto.steps - trainer.steps_done)
        val = trainer.val_loss()
        if val < best["val_loss"]:
            best.update(val_loss=val, alpha=alpha, accuracy=trainer.val_accuracy())
        return val

    study = optuna.create_study(
        sampler=optuna.samplers.TPESampler(seed=0),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=rungs),
    )
    while budget.grad_evals + proto.steps <= grad_budget or not study.trials:
        study.optimize(objective, n_trials=1)
    if not math.isfinite(best["val_loss"]):
        return row(
            "optuna TPE+Hyperband",
            math.nan,
            math.nan,
            None,
            budget.seconds,
            budget.grad_evals,
            note="no trial completed within the budget",
        )
    return row(
        "optuna TPE+Hyperband",
        best["alpha"],
        best["val_loss"],
        best["accuracy"],
        budget.seconds,
        budget.grad_evals,
        trials=len(study.trials),
    )


def bench_task(name: str, quick: bool, save: Any = None) -> dict[str, Any]:
    """Rows in order of importance; ``save(result)`` after each, so a cut run keeps its rows."""
    task = load_task(name, quick)
    proto = PROTOCOLS[name]
    if quick:
        proto = Protocol(optimizer=proto.optimizer, lr=proto.lr, steps=40)
    grid_row, grid = run_grid(task, proto, 4 if quick else 11)
    grid_row.update(val_loss_vs_grid=0.0, seconds_vs_grid=1.0, grad_evals_vs_grid=1.0)
    res = {
        "task": name,
        "protocol": proto.to_dict(),
        "n_train": len(task.train[0]),
        "n_val": len(task.val[0]),
        "grid": grid,
        "rows": [grid_row],
    }

    def add(r: dict[str, Any]) -> None:
        r["val_loss_vs_grid"] = r["val_loss"] / grid_row["val_loss"] - 1.0
        r["seconds_vs_grid"] = r["seconds"] / grid_row["seconds"]
        r["grad_evals_vs_grid"] = r["grad_evals"] / grid_row["grad_evals"]
        res["rows"].append(r)
        if save is not None:
            save(res)

    add(run_decaylab(task, proto, DEFAULT))
    default = res["rows"][1]
    add(run_wang_aitchison(task, proto))
    add(run_optuna(task, proto, default["grad_evals"]))
    if quick:
        return res
    add(run_posthoc(task, proto))
    for method in METHODS:
        if method != DEFAULT:
            add(run_decaylab(task, proto, method))
    add(run_marglik_training(task, proto))
    return res


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "# Weight-decay advisor benchmark",
        "",
        f"Default method: `{DEFAULT}`. Ratios are against the 11-point grid of the same run "
        "(val loss: relative excess; compute: wall seconds and gradient evaluations).",
        "",
    ]
    for res in results:
        p = res["protocol"]
        lines += [
            f"## {res['task']} ({res['n_train']} train / {res['n_val']} val; "
            f"{p['optimizer']} lr={p['lr']:g}, {p['steps']} steps, batch "
            f"{p['batch_size'] or 'full'})",
            "",
            "| method | α | val loss | vs grid | accuracy | seconds | × grid time | "
            "grad evals | × grid evals |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in res["rows"]:
            acc = "–" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
            lines.append(
                f"| {r['method']} | {r['alpha']:.3g} | {r['val_loss']:.4f} | "
                f"{r['val_loss_vs_grid']:+.1%} | {acc} | {r['seconds']:.1f} | "
                f"{r['seconds_vs_grid']:.2f} | {r['grad_evals']:.0f} | "
                f"{r['grad_evals_vs_grid']:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(
    out_dir: str | Path = "benchmarks/results",
    *,
    quick: bool = False,
    tasks: tuple[str, ...] = tuple(PROTOCOLS),
    suffix: str = "",
) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = ("advisor_quick" if quick else "advisor") + suffix
    results: list[dict[str, Any]] = []

    def save(current: dict[str, Any]) -> None:
        done = [r for r in results if r is not current] + [current]
        payload = {
            "range": RANGE,
            "default": DEFAULT,
            "seconds": time.perf_counter() - start,
            "threads": 1,
            "tasks": done,
        }
        (out / f"{stem}.json").write_text(json.dumps(payload, indent=2, default=_plain) + "\n")
        (out / f"{stem}.md").write_text(markdown(done) + "\n")

    for name in tasks:
        results.append(bench_task(name, quick, save))
        save(results[-1])
    return results


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (seconds)")
    parser.add_argument("--tasks", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--suffix", default="", help="appended to the output file names")
    args = parser.parse_args()
    print(markdown(main(args.out, quick=args.quick, tasks=tuple(args.tasks), suffix=args.suffix)))
