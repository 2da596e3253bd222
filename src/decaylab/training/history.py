"""What :func:`~decaylab.training.fit` measured: the :class:`History` record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["History"]


@dataclass
class History:
    """What :func:`fit` measured.

    The lists ``step``, ``train_loss``, ``objective`` (and ``val_loss`` when validation data was
    given; otherwise it stays empty) are aligned: entry ``i`` was measured after ``step[i]``
    optimizer steps, on the full training (validation) set at the model's weights then. Step 0
    (the initial weights) is always recorded, then every ``eval_every`` steps, and the final
    step. A non-finite value that stopped the run is recorded as measured.

    Attributes
    ----------
    step : list of int
    train_loss : list of float
        Mean data loss ``J(w)`` (without any regularizer), normalized as ``loss_fn`` normalizes
        it on the whole set in one call (per sample, or by the total target weight for a
        weighted / ``ignore_index`` cross-entropy).
    val_loss : list of float
        Mean data loss on ``val_data`` (empty without validation data).
    objective : list of float
        ``J(w)`` plus the regularizer in force at that step: the full ``penalty`` term and
        ``(weight_decay/2)‖w_d‖²`` on the decayed parameters (the L2 reading of
        ``weight_decay``; for decoupled adaptive optimizers it is reported, not minimized).
    stop_reason : str or None
        ``"patience"``, ``"non-finite"`` (a loss, or the final weights, not finite),
        ``"threshold"``, ``"divergence"``, ``"callback"`` (a callback set ``state.stop``) or
        ``None`` when the run used up its steps.
    best_step : int or None
        The early-stopping best step (``None`` without early stopping).
    steps_done : int
        Optimizer steps taken.
    snapshots : list of (int, torch.Tensor)
        ``(step, flat parameter vector on the CPU)`` every ``record_every`` steps, step 0 and the
        final step included (flat order per the conventions).
    line_search_failures : list of int
        Steps at which FISTA's ``lr="auto"`` backtracking gave up after its 100 trials without
        meeting the sufficient-decrease condition (each also raised a ``ConvergenceWarning``);
        the step was taken with the last, smallest trial step.

    Examples
    --------
    >>> h = History(step=[0, 1], train_loss=[1.0, 0.5], objective=[1.0, 0.5])
    >>> h.to_dict()["train_loss"]
    [1.0, 0.5]
    >>> History.from_dict(h.to_dict()) == h
    True
    """

    step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    objective: list[float] = field(default_factory=list)
    stop_reason: str | None = None
    best_step: int | None = None
    steps_done: int = 0
    snapshots: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    line_search_failures: list[int] = field(default_factory=list)

    def record(self, step: int, values: dict[str, float]) -> None:
        """Append one evaluation (``values`` from the evaluator) measured after ``step`` steps."""
        self.step.append(step)
        self.train_loss.append(values["train_loss"])
        self.objective.append(values["objective"])
        if "val_loss" in values:
            self.val_loss.append(values["val_loss"])

    def to_dict(self, *, plain: bool = False) -> dict[str, Any]:
        """Contents as plain containers.

        Parameters
        ----------
        plain : bool
            Convert snapshot tensors to lists of floats (JSON-ready). The default keeps
            tensors, which is what checkpoints store.
        """
        snaps = [
            [int(s), v.tolist() if plain else v.detach().cpu().clone()] for s, v in self.snapshots
        ]
        return {
            "step": list(self.step),
            "train_loss": list(self.train_loss),
            "val_loss": list(self.val_loss),
            "objective": list(self.objective),
            "stop_reason": self.stop_reason,
            "best_step": self.best_step,
            "steps_done": self.steps_done,
            "snapshots": snaps,
            "line_search_failures": list(self.line_search_failures),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        """Inverse of :meth:`to_dict` (also reads dicts written before a field existed)."""
        return cls(
            step=[int(s) for s in data["step"]],
            train_loss=[float(v) for v in data["train_loss"]],
            val_loss=[float(v) for v in data["val_loss"]],
            objective=[float(v) for v in data["objective"]],
            stop_reason=data["stop_reason"],
            best_step=data["best_step"],
            steps_done=int(data["steps_done"]),
            snapshots=[(int(s), torch.as_tensor(v)) for s, v in data["snapshots"]],
            line_search_failures=[int(s) for s in data.get("line_search_failures", [])],
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, History):
            return NotImplemented
        mine, theirs = self.to_dict(plain=True), other.to_dict(plain=True)
        return mine == theirs
