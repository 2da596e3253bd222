"""One training run's parts, wired together: what :func:`~decaylab.training.fit`'s loop calls.

:class:`Run` builds the parts from a checked :class:`~decaylab.training.config.FitConfig` —
:class:`~decaylab.training.regularization.Regularization`, the optimizer and its step rule
(:mod:`~decaylab.training.steps`), :class:`~decaylab.training.batches.Batches`, the
:class:`~decaylab.training.evaluation.Evaluator`, the
:class:`~decaylab.training.checkpointing.Checkpointer`, the callbacks and the
:class:`~decaylab.training.hooks.TrainState` they share — and offers the loop's verbs: start,
evaluate, take a step's aftermath, finish, end. Each verb is a few lines over those parts.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from decaylab._checks import ConvergenceWarning
from decaylab._inputs import batch_weight
from decaylab.curvature._params import flatten_params
from decaylab.training.batches import Batches
from decaylab.training.checkpointing import Checkpointer
from decaylab.training.config import FitConfig
from decaylab.training.evaluation import Evaluator, WeightFn, checked_loss
from decaylab.training.history import History
from decaylab.training.hooks import CallbackList, TrainState
from decaylab.training.progress import Progress
from decaylab.training.regularization import Regularization
from decaylab.training.steps import build_optimizer, make_step_rule, warn_biased_prox

__all__ = ["Run"]


class Run:
    """The parts of one :func:`fit` call and the verbs its loop is written in."""

    def __init__(self, config: FitConfig, weight: WeightFn = batch_weight) -> None:
        c = self.config = config
        self.regularization = Regularization(
            c.model, c.weight_decay, decoupled_by_fit=c.decoupled_by_fit, penalty=c.penalty,
            proximal=c.proximal, penalty_params=c.penalty_params,
        )  # fmt: skip
        warn_biased_prox(c.opt_name, c.momentum, self.regularization)
        optimizer = build_optimizer(
            c.opt_name, c.factory, self.regularization, lr=c.lr, momentum=c.momentum,
            decoupled=c.decoupled,
        )  # fmt: skip
        self.step_rule = make_step_rule(optimizer, self.regularization)
        self.weight = weight
        self.batches = Batches(*c.train, c.batch_size, c.seed)
        self.evaluator = Evaluator(
            c.model, c.loss_fn, c.train, c.val, self.regularization, batch_size=c.batch_size,
            weight=weight,
        )  # fmt: skip
        self.checkpointer = Checkpointer(
            c.checkpoint_dir, c.checkpoint_every, c.settings, c.early_stopping
        )
        self.hooks = CallbackList(c.callbacks)
        self.state = TrainState(c.model, optimizer, History(), self.regularization)
        self.bar = Progress(False, 0, 0)

    # ------------------------------------------------------------------ start and end

    def start(self) -> bool:
        """Fresh run, or resume from the checkpoint; ``True`` when that run had finished."""
        self.checkpointer.prepare(self.config.resume)
        if self.config.resume:
            return self.checkpointer.restore(self.state, self.batches, self.config.total_steps)
        if self.config.early_stopping is not None:
            # A fresh run starts a fresh early stopping, as Keras' on_train_begin does.
            self.config.early_stopping.reset()
        return False

    @contextmanager
    def session(self) -> Iterator[None]:
        """Training mode and the progress bar for the loop; the model's mode restored after."""
        model = self.config.model
        was_training = model.training
        model.train()
        self.bar = Progress(self.config.progress, self.config.total_steps, self.state.step)
        try:
            yield
        finally:
            self.bar.close()
            model.train(was_training)

    def end(self) -> None:
        """Early stopping restores its best weights; then the callbacks' ``on_train_end``."""
        if self.config.early_stopping is not None:
            # history.best_step was set before the final save (or came with a finished run).
            self.config.early_stopping.on_train_end(self.config.model)
        self.hooks.on_train_end(self.state)

    # ------------------------------------------------------------------ one step

    def objective(self) -> Callable[[], torch.Tensor]:
        """The next step's batch objective: mean data loss plus the regularizer's loss term."""
        xb, yb = self.batches.batch(self.state.step)
        model, loss_fn = self.config.model, self.config.loss_fn
        # Once per batch, not per call: FISTA's line search calls the objective repeatedly.
        all_ignored = self.weight(loss_fn, yb) == 0

        def batch_objective() -> torch.Tensor:
            if all_ignored:
                # Every target ignored: torch's mean is 0/0; the batch adds no data gradient.
                loss = sum((p * 0).sum() for p in self.regularization.trainable)
                loss = torch.as_tensor(loss)
            else:
                loss = checked_loss(loss_fn(model(xb), yb))
            extra = self.regularization.loss_term()
            return loss if extra is None else loss + extra

        return batch_objective

    def record_step(self, loss: torch.Tensor) -> None:
        """Count the step just taken (and any line-search failure it reported)."""
        state = self.state
        failures = getattr(self.step_rule, "line_search_failures", 0)
        state.step += 1
        state.last_loss = float(loss.detach())
        history = state.history
        if failures > len(history.line_search_failures):
            history.line_search_failures.append(state.step)

    def stop_non_finite(self) -> None:
        """A batch loss was NaN/inf: no step was taken; record where it stopped."""
        history = self.state.history
        history.stop_reason = "non-finite"
        if not history.step or history.step[-1] != self.state.step:
            self.evaluate(self.state.step, check=False)

    def after_step(self) -> bool:
        """Evaluation on the grid (or when a callback stops), snapshot, periodic checkpoint.

        Returns ``True`` when the run must stop after this step.
        """
        state, config = self.state, self.config
        step = state.step
        on_grid = step % config.eval_every == 0
        if on_grid or step == config.total_steps or state.stop:
            if self.evaluate(step, check=on_grid):
                return True
        elif self.bar.active:
            self.bar.update(step)
        if config.record_every is not None and step % config.record_every == 0:
            self.snapshot(step)
        if state.stop:
            state.history.stop_reason = "callback"
            return True
        if self.checkpointer.due(step, config.total_steps):
            if not self.regularization.all_finite():
                state.history.stop_reason = "non-finite"
                return True
            self.checkpointer.save(state, self.batches, finished=False)
        return False

    # ------------------------------------------------------------------ measurement

    def evaluate(self, step: int, *, check: bool) -> bool:
        """Measure and record at ``step``; early stopping sees it when ``check``.

        Returns ``True`` when the run must stop (non-finite loss, early stopping, or a callback
        that set ``state.stop`` in ``on_eval``).
        """
        values = self.evaluator.measure()
        history, es = self.state.history, self.config.early_stopping
        history.record(step, values)
        stop = False
        if not _finite(values["train_loss"]):
            history.stop_reason = "non-finite"
            stop = True
        if check and es is not None and not stop:
            if es.update(values[es.monitor], self.config.model, step=step):
                history.stop_reason = str(getattr(es.reason, "value", es.reason))
                stop = True
        if self.bar.active:
            best = getattr(es, "best", None)
            self.bar.update(step, loss=values["train_loss"], val=values.get("val_loss", "-"),
                            best="-" if best is None else best)  # fmt: skip
        self.hooks.on_eval(self.state, values)
        if self.state.stop and not stop:
            history.stop_reason = "callback"
            stop = True
        return stop

    def evaluate_start(self) -> bool:
        """Snapshot and evaluate the initial weights (not again after a resume)."""
        if self.state.step == 0 and not self.state.history.step:
            self.snapshot(0)
            return self.evaluate(0, check=True)
        return False

    def snapshot(self, step: int) -> None:
        """Store the flat weights at ``step`` when ``record_every`` asks for snapshots."""
        snaps = self.state.history.snapshots
        if self.config.record_every is not None and (not snaps or snaps[-1][0] != step):
            snaps.append((step, flatten_params(self.config.model).cpu()))

    def finish(self) -> None:
        """Final snapshot, early-stopping best step, the final-weights check, last checkpoint."""
        state, history = self.state, self.state.history
        self.snapshot(state.step)
        history.steps_done = state.step
        if self.config.early_stopping is not None:
            history.best_step = self.config.early_stopping.best_step
        if history.stop_reason != "non-finite" and not self.regularization.all_finite():
            history.stop_reason = "non-finite"
        if history.stop_reason == "non-finite":
            self._warn_non_finite()
        else:
            self.checkpointer.save(state, self.batches, finished=True)

    def _warn_non_finite(self) -> None:
        names = self.regularization.non_finite_names(self.config.model)
        what = f"the weights {names[:5]} hold NaN/inf" if names else "the loss is NaN/inf"
        warnings.warn(
            f"fit stopped at step {self.state.step}: {what} (History.stop_reason='non-finite'); "
            "lower lr, check the data and the loss",
            ConvergenceWarning,
            stacklevel=4,
        )


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))
