"""Training run for the SIGKILL test in ``test_checkpoint.py``.

Run as a script (``python tests/_train_worker.py CHECKPOINT_DIR [--resume] [--sleep S]``) it
trains a small network with checkpoints every few steps, sleeping ``S`` seconds per training
batch so that the test can kill it mid-run. The test also imports :func:`train` to resume and
to make the uninterrupted reference run in its own process. Not collected by pytest (the name
does not start with ``test_``).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from decaylab._checks import TheoryWarning
from decaylab.early_stopping import EarlyStopping
from decaylab.regularize import L1
from decaylab.training import History, fit, half_mse

STEPS = 120
CHECKPOINT_EVERY = 5


def make_problem() -> tuple[nn.Module, tuple, tuple]:
    # The global seed fixes the initialisation; dropout then draws from the global RNG, whose
    # state the checkpoint must carry for the resumed run to match.
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    X = torch.randn(64, 4, generator=g)
    y = torch.sin(X @ torch.tensor([1.0, -1.0, 0.5, 2.0]))
    Xv = torch.randn(32, 4, generator=g)
    yv = torch.sin(Xv @ torch.tensor([1.0, -1.0, 0.5, 2.0]))
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 1))
    return model, (X, y), (Xv, yv)


def train(
    checkpoint_dir: str | Path, *, resume: bool = False, sleep: float = 0.0
) -> tuple[nn.Module, History]:
    torch.set_num_threads(1)  # same arithmetic in the killed worker and in the test process
    model, train_data, val_data = make_problem()

    def loss_fn(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if sleep and torch.is_grad_enabled():
            time.sleep(sleep)
        return half_mse(prediction, target)

    with warnings.catch_warnings():
        # L1 prox with momentum is biased (fit says so); here only the resume is under test.
        warnings.simplefilter("ignore", TheoryWarning)
        history = _fit(model, loss_fn, train_data, val_data, checkpoint_dir, resume)
    return model, history


def _fit(model, loss_fn, train_data, val_data, checkpoint_dir, resume) -> History:
    return fit(
        model,
        loss_fn,
        train_data,
        val_data=val_data,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        batch_size=12,
        steps=STEPS,
        weight_decay=1e-3,
        decoupled=True,
        penalty=L1(1e-3),
        early_stopping=EarlyStopping(patience=10_000),
        eval_every=5,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=CHECKPOINT_EVERY,
        resume=resume,
        seed=3,
        progress=False,
        record_every=10,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    train(args.checkpoint_dir, resume=args.resume, sleep=args.sleep)


if __name__ == "__main__":
    main()
