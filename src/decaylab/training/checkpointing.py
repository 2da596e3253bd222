"""Checkpoint glue for :func:`~decaylab.training.fit`: what a checkpoint holds, and resuming.

A fit checkpoint (``checkpoint_dir/checkpoint.pt``, written atomically by
:func:`decaylab.checkpoint.save_checkpoint`) is a plain dict: the model, optimizer and early
stopping state dicts, the :class:`History`, the step, the batch permutation, the RNG states
(batch generator, torch's global one, CUDA's when in use), the run's settings, and the current
regularizer strengths (``"regularization"``: ``weight_decay`` and the penalty's ``alpha`` /
``l1_ratio``, which a callback may have changed), so a resumed run is the uninterrupted one.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from decaylab.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from decaylab.training.batches import Batches
from decaylab.training.history import History
from decaylab.training.hooks import TrainState

__all__ = ["CHECKPOINT_VERSION", "Checkpointer", "param_signature"]

CHECKPOINT_VERSION = 1


def param_signature(model: nn.Module) -> list[list[Any]]:
    """``[[name, shape], ...]`` of the trainable parameters: what identifies "the same model"."""
    return [[n, list(p.shape)] for n, p in model.named_parameters() if p.requires_grad]


def _rng_state(batches: Batches) -> dict[str, Any]:
    rng: dict[str, Any] = {"batch": batches.generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def _set_rng_state(batches: Batches, rng: dict[str, Any]) -> None:
    batches.generator.set_state(rng["batch"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


class Checkpointer:
    """Saves and restores one run. ``directory=None`` makes :meth:`save` a no-op."""

    def __init__(
        self, directory: Path | None, every: int, config: dict[str, Any], early_stopping: Any
    ) -> None:
        self.directory = directory
        self.every = every
        self.config = config
        self.early_stopping = early_stopping

    def prepare(self, resume: bool) -> None:
        """Create the directory (fresh run) or require it (resume); drop torn temporaries."""
        if self.directory is None:
            return
        if not resume:
            self.directory.mkdir(parents=True, exist_ok=True)
        elif not self.directory.is_dir():
            raise ValueError(
                f"resume=True but checkpoint_dir {str(self.directory)!r} does not exist"
            )
        remove_stale_temporaries(self.directory)

    def due(self, step: int, total_steps: int) -> bool:
        """A periodic checkpoint is written after this step."""
        return self.directory is not None and step % self.every == 0 and step < total_steps

    def save(self, state: TrainState, batches: Batches, *, finished: bool) -> None:
        if self.directory is None:
            return
        state.history.steps_done = state.step
        es = self.early_stopping
        contents = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "parameters": param_signature(state.model),
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "early_stopping": None if es is None else es.state_dict(),
            "history": state.history.to_dict(),
            "step": state.step,
            "finished": finished,
            "perm": batches.perm,
            "rng": _rng_state(batches),
            "config": self.config,
            "regularization": state.regularization.state_dict(),
        }
        save_checkpoint(contents, self.directory / CHECKPOINT_NAME)

    def _load_checked(self, model: nn.Module, total_steps: int) -> dict[str, Any]:
        where = f"checkpoint_dir {str(self.directory)!r}"
        try:
            saved = load_checkpoint(self.directory)  # type: ignore[arg-type]
        except CheckpointError as exc:
            raise type(exc)(f"resume=True with {where}: {exc}") from exc
        if saved.get("version") != CHECKPOINT_VERSION or "parameters" not in saved:
            raise CheckpointError(
                f"{where}: unsupported checkpoint version {saved.get('version')!r}"
            )
        mine = param_signature(model)
        if saved["parameters"] != mine:
            raise CheckpointError(
                f"{where} holds a checkpoint of another model: its parameters "
                f"{saved['parameters'][:4]}... do not match this model's {mine[:4]}..."
            )
        self._warn_changed_settings(saved["config"])
        if saved["step"] > total_steps:
            raise ValueError(
                f"checkpoint is at step {saved['step']} but the run asks for steps={total_steps}"
            )
        if (self.early_stopping is None) != (saved["early_stopping"] is None):
            raise ValueError(
                "early_stopping must match the checkpoint: it was saved "
                f"{'without' if saved['early_stopping'] is None else 'with'} early stopping"
            )
        return saved

    def _warn_changed_settings(self, saved_config: dict[str, Any]) -> None:
        changed = {
            k: (saved_config.get(k), v) for k, v in self.config.items() if saved_config.get(k) != v
        }
        if changed:
            warnings.warn(
                "resuming with settings that differ from the checkpoint's (saved, now): "
                f"{changed}; the optimizer's saved hyperparameters are used and the result "
                "is not the uninterrupted run's",
                UserWarning,
                stacklevel=4,
            )

    def restore(self, state: TrainState, batches: Batches, total_steps: int) -> bool:
        """Load the checkpoint into the run; return whether that run had finished."""
        saved = self._load_checked(state.model, total_steps)
        try:
            state.model.load_state_dict(saved["model"])
            state.optimizer.load_state_dict(saved["optimizer"])
            if self.early_stopping is not None:
                self.early_stopping.load_state_dict(saved["early_stopping"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint_dir {str(self.directory)!r}: the checkpoint does not fit this "
                f"model/optimizer/early stopping ({exc})"
            ) from exc
        if "regularization" in saved:  # checkpoints written before callbacks could change α
            state.regularization.load_state_dict(saved["regularization"])
        state.history = History.from_dict(saved["history"])
        state.step = int(saved["step"])
        batches.perm = saved["perm"]
        _set_rng_state(batches, saved["rng"])
        stopped = state.history.stop_reason is not None
        return bool(saved["finished"]) and (stopped or state.step >= total_steps)
