"""Golden runs of :func:`decaylab.training.fit`, frozen before the loop was redesigned.

``python tests/_golden_training.py`` (with ``PYTHONPATH=src``) runs every configuration in
:data:`CONFIGS` on tiny float64 data and writes ``tests/data/training_golden.json``: the final
weights as raw float bytes (hex) and the :class:`~decaylab.training.History` with every float as
``float.hex``, so equality below means bit-identical. ``test_training_golden.py`` re-runs the
configurations and compares. Regenerate the file only for an intended change of behaviour, and
say so in the commit. Not collected by pytest (the name does not start with ``test_``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from decaylab._checks import ConvergenceWarning, TheoryWarning
from decaylab.early_stopping import EarlyStopping
from decaylab.regularize import L1, ElasticNet
from decaylab.training import fit, half_mse

GOLDEN = Path(__file__).with_name("data") / "training_golden.json"


def _regression(n: int = 23, d: int = 4) -> tuple[tuple, tuple]:
    g = torch.Generator().manual_seed(3)
    w = torch.tensor([1.0, -2.0, 0.5, 0.25], dtype=torch.float64)[:d]
    X = torch.randn(n + 9, d, generator=g, dtype=torch.float64)
    y = torch.tanh(X @ w) + 0.3 * torch.randn(n + 9, generator=g, dtype=torch.float64)
    return (X[:n], y[:n]), (X[n:], y[n:])


def _classification(n: int = 23, d: int = 4, k: int = 3) -> tuple[tuple, tuple]:
    g = torch.Generator().manual_seed(4)
    X = torch.randn(n + 9, d, generator=g, dtype=torch.float64)
    y = (X[:, 0] + 0.5 * torch.randn(n + 9, generator=g, dtype=torch.float64) > 0).long()
    y = y + (X[:, 1] > 1).long()
    return (X[:n], y[:n].clamp(max=k - 1)), (X[n:], y[n:].clamp(max=k - 1))


def _mlp(d_out: int = 1, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(4, 5), nn.Tanh()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(5, d_out))
    return nn.Sequential(*layers).double()


def _sgd_factory(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=0.05, momentum=0.5)


#: name -> fit keyword arguments (``"classify"``, ``"dropout"``, ``"resume_at"`` are ours).
CONFIGS: dict[str, dict[str, Any]] = {
    "sgd-coupled-momentum": dict(lr=0.05, momentum=0.9, weight_decay=1e-2, steps=15),
    "sgd-decoupled-momentum-minibatch": dict(
        lr=0.05,
        momentum=0.9,
        weight_decay=0.05,
        decoupled=True,
        batch_size=7,
        epochs=3,
        eval_every=2,
        record_every=3,
    ),
    "adam-coupled-minibatch": dict(
        optimizer="adam", lr=0.02, weight_decay=0.01, batch_size=10, steps=12
    ),
    "adam-decoupled": dict(optimizer="adam", lr=0.02, weight_decay=0.1, decoupled=True, steps=10),
    "adamw": dict(optimizer="adamw", lr=0.02, weight_decay=0.1, steps=12),
    "fista-auto-l1": dict(optimizer="fista", lr="auto", penalty=L1(0.01), steps=15, record_every=5),
    "fista-fixed-wd": dict(optimizer="fista", lr=0.1, weight_decay=0.05, steps=10),
    "sgd-l1-prox-all": dict(lr=0.1, penalty=L1(0.02), penalty_params="all", steps=15),
    "sgd-elasticnet-subgradient": dict(
        lr=0.1, penalty=ElasticNet(0.02, 0.5), proximal=False, steps=15
    ),
    "adam-l1-prox-minibatch": dict(
        optimizer="adam", lr=0.02, penalty=L1(0.01), batch_size=8, steps=9
    ),
    "early-stopping-restore": dict(
        lr=0.3,
        steps=80,
        early_stopping=dict(patience=2, min_delta=1e-3, restore_best=True),
    ),
    "early-stopping-train-threshold": dict(
        lr=0.2,
        steps=80,
        eval_every=3,
        early_stopping=dict(monitor="train_loss", stopping_threshold=0.12, patience=100),
    ),
    "checkpoint-resume-dropout": dict(
        lr=0.05,
        momentum=0.5,
        batch_size=6,
        steps=20,
        dropout=0.3,
        resume_at=9,
        weight_decay=0.01,
        record_every=4,
        early_stopping=dict(patience=1000, restore_best=True),
    ),
    "factory-decoupled": dict(optimizer=_sgd_factory, weight_decay=0.1, decoupled=True, steps=10),
    "cross-entropy-minibatch": dict(
        classify=True, optimizer="adam", lr=0.05, batch_size=6, epochs=3, weight_decay=0.01
    ),
    "non-finite": dict(lr=1e6, steps=200),
}


def run_config(name: str, workdir: Path) -> tuple[nn.Module, Any]:
    """Run configuration ``name`` (checkpoints, if any, go under ``workdir``)."""
    kwargs = dict(CONFIGS[name])
    classify = kwargs.pop("classify", False)
    model = _mlp(3 if classify else 1, kwargs.pop("dropout", 0.0))
    train, val = _classification() if classify else _regression()
    loss_fn = nn.CrossEntropyLoss() if classify else half_mse
    es_kwargs = kwargs.pop("early_stopping", None)
    resume_at = kwargs.pop("resume_at", None)
    common = dict(val_data=val, progress=False, seed=5)

    def make_es() -> EarlyStopping | None:
        return None if es_kwargs is None else EarlyStopping(**es_kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TheoryWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)  # the non-finite run warns
        if resume_at is not None:
            first = dict(kwargs, steps=resume_at)
            fit(
                model,
                loss_fn,
                train,
                checkpoint_dir=workdir,
                checkpoint_every=4,
                early_stopping=make_es(),
                **common,
                **first,
            )
            model = _mlp(1, CONFIGS[name]["dropout"])  # resume must restore everything
            torch.manual_seed(123)  # and the global RNG state too
            history = fit(
                model,
                loss_fn,
                train,
                checkpoint_dir=workdir,
                checkpoint_every=4,
                resume=True,
                early_stopping=make_es(),
                **common,
                **kwargs,
            )
        else:
            history = fit(model, loss_fn, train, early_stopping=make_es(), **common, **kwargs)
    return model, history


def _hex_floats(values: list[float]) -> list[str]:
    return [float(v).hex() for v in values]


def _hex_tensor(t: torch.Tensor) -> dict[str, Any]:
    t = t.detach().cpu().contiguous()
    return {"dtype": str(t.dtype), "shape": list(t.shape), "hex": t.numpy().tobytes().hex()}


def encode(model: nn.Module, history: Any) -> dict[str, Any]:
    """Bit-exact, JSON-ready encoding of a run's final weights and its history."""
    return {
        "weights": {k: _hex_tensor(v) for k, v in model.state_dict().items()},
        "history": {
            "step": list(history.step),
            "train_loss": _hex_floats(history.train_loss),
            "val_loss": _hex_floats(history.val_loss),
            "objective": _hex_floats(history.objective),
            "stop_reason": history.stop_reason,
            "best_step": history.best_step,
            "steps_done": history.steps_done,
            "snapshots": [[s, _hex_tensor(v)] for s, v in history.snapshots],
        },
    }


def run_encoded(name: str) -> dict[str, Any]:
    """Run ``name`` in a fresh temporary directory, on one thread, and encode the result."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return encode(*run_config(name, Path(tmp) / "ckpt"))
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    results = {name: run_encoded(name) for name in CONFIGS}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    for name, result in results.items():
        h = result["history"]
        print(
            f"{name:36s} steps={h['steps_done']:3d} stop={h['stop_reason']} best={h['best_step']}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
