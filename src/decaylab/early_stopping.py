"""Early stopping on a monitored quantity, with restore-best and a resumable state.

Usable inside :func:`decaylab.fit` and on its own: call :meth:`EarlyStopping.update` once per
check (e.g. each validation), stop when it returns ``True``, and call
:meth:`EarlyStopping.on_train_end` whenever training ends, stopped or not, to put the best
weights back. The rules are spelled out in the class docstring and in ``docs/early_stopping.md``
(with a table of every difference from Keras and Lightning).
"""

from __future__ import annotations

import enum
import math
import numbers
import warnings
from typing import Any

import torch
from torch import nn

from decaylab._checks import check_bool, check_scalar

__all__ = ["EarlyStopping", "StopReason"]

_STATE_VERSION = 1


class StopReason(enum.Enum):
    """Why :class:`EarlyStopping` stopped a run (``EarlyStopping.reason``).

    Examples
    --------
    >>> StopReason("non-finite") is StopReason.NON_FINITE
    True
    """

    PATIENCE = "patience"
    NON_FINITE = "non-finite"
    THRESHOLD = "threshold"
    DIVERGENCE = "divergence"

    def __str__(self) -> str:
        return self.value


def _optional_finite(value: Any, name: str) -> float | None:
    return None if value is None else check_scalar(value, name)


def _as_float(value: Any) -> float:
    """The monitored value as a Python float; NaN and inf pass through (they are rules)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"value must be a scalar, got a tensor of shape {tuple(value.shape)}")
        return float(value.detach().reshape(()).item())
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalar / 0-d array
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"value must be a real number, got {value!r}")
    return float(value)


class EarlyStopping:
    """Stop when a monitored quantity has stopped improving; keep and restore the best weights.

    Each :meth:`update` is one *check* at step ``s`` (the number of earlier calls, or the
    ``step=`` passed). In ``mode="min"`` (``"max"`` mirrors every comparison):

    1. ``s < start_from``: warm-up. The check is ignored (no best, no wait, no threshold),
       except that a non-finite value still stops the run when ``check_finite``.
    2. Non-finite value and ``check_finite``: stop at once, reason ``NON_FINITE``; best and wait
       are unchanged. With ``check_finite=False`` a NaN is simply not an improvement.
    3. Improvement test against the reference ``r`` (the best so far; before any best, the
       ``baseline``, or ``+inf`` without one): ``value < r − min_delta``, strict. An improvement
       sets ``best``, ``best_step``, ``wait = 0`` and, when ``restore_best`` and a ``model`` is
       passed, copies ``model.state_dict()`` to the CPU. Otherwise ``wait += 1``. So the
       baseline must be beaten by more than ``min_delta`` before anything counts as a best.
    4. ``stopping_threshold`` set and ``value ≤ stopping_threshold``: stop, ``THRESHOLD``.
    5. ``divergence_threshold`` set and ``value > divergence_threshold``: stop, ``DIVERGENCE``.
    6. The check did not improve and ``wait ≥ patience``: stop, ``PATIENCE``. Thus
       ``patience=p ≥ 1`` stops at the ``p``-th consecutive non-improving check, and
       ``patience=0`` behaves like ``patience=1`` (stop at the first non-improving check).

    The best is recorded *before* the threshold rules (3 before 4–5), so a run stopped because
    it reached ``stopping_threshold`` restores the weights that reached it. Once stopped, further
    calls change nothing and return ``True`` until :meth:`reset`.

    Parameters
    ----------
    monitor : str
        Name of the monitored quantity (``fit`` looks it up among what it records).
    mode : {"min", "max"}
    patience : int
        ``≥ 0``; consecutive non-improving checks tolerated.
    min_delta : float
        ``≥ 0``; an improvement must beat the reference by more than this.
    baseline : float or None
        A value that must be beaten (by more than ``min_delta``) before any check improves.
    restore_best : bool
        Keep a CPU copy of the best weights and put them back in :meth:`on_train_end`.
    start_from : int
        ``≥ 0``; checks with a step below this are warm-up (rule 1).
    check_finite : bool
        Stop at once on NaN or ±inf.
    stopping_threshold, divergence_threshold : float or None
        Stop as soon as the value is at least as good as / strictly worse than this.

    Attributes
    ----------
    best : float or None
        Best value so far (``None`` until something improved on the baseline).
    best_step : int or None
    wait : int
        Consecutive non-improving checks.
    should_stop : bool
    stopped_step : int or None
        Step of the check that stopped the run.
    reason : StopReason or None
        ``None`` while running.
    best_state : dict[str, torch.Tensor] or None
        The CPU copy of the best ``state_dict`` (when ``restore_best`` and a model was passed).

    Examples
    --------
    >>> es = EarlyStopping(patience=2)
    >>> [es.update(v) for v in [3.0, 2.0, 2.5, 2.1, 1.0]]
    [False, False, False, True, True]
    >>> es.best, es.best_step, es.stopped_step, es.reason
    (2.0, 1, 3, <StopReason.PATIENCE: 'patience'>)
    """

    # Progress, set by reset() (types declared here, once, for the type checker).
    best: float | None
    best_step: int | None
    wait: int
    should_stop: bool
    stopped_step: int | None
    reason: StopReason | None
    best_state: dict[str, torch.Tensor] | None
    _best_state_step: int | None
    _n_checks: int

    def __init__(
        self,
        monitor: str = "val_loss",
        mode: str = "min",
        patience: int = 5,
        min_delta: float = 0.0,
        baseline: float | None = None,
        restore_best: bool = True,
        start_from: int = 0,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(f"monitor must be a non-empty string, got {monitor!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.mode = mode
        self.patience = check_scalar(patience, "patience", low=0, integer=True)
        self.min_delta = check_scalar(min_delta, "min_delta", low=0.0)
        self.baseline = _optional_finite(baseline, "baseline")
        self.restore_best = check_bool(restore_best, "restore_best")
        self.start_from = check_scalar(start_from, "start_from", low=0, integer=True)
        self.check_finite = check_bool(check_finite, "check_finite")
        self.stopping_threshold = _optional_finite(stopping_threshold, "stopping_threshold")
        self.divergence_threshold = _optional_finite(divergence_threshold, "divergence_threshold")
        if (
            self.stopping_threshold is not None
            and self.divergence_threshold is not None
            and not self._better(self.stopping_threshold, self.divergence_threshold)
        ):
            raise ValueError(
                f"stopping_threshold={self.stopping_threshold!r} must be better than "
                f"divergence_threshold={self.divergence_threshold!r} in mode {mode!r}"
            )
        self.reset()

    # ------------------------------------------------------------------ rules

    def _better(self, a: float, b: float) -> bool:
        """``a`` strictly better than ``b`` (False when either is NaN)."""
        return a < b if self.mode == "min" else a > b

    def _improves(self, value: float) -> bool:
        if self.best is not None:
            reference = self.best
        elif self.baseline is not None:
            reference = self.baseline
        else:
            reference = math.inf if self.mode == "min" else -math.inf
        if self.mode == "min":
            return value < reference - self.min_delta
        return value > reference + self.min_delta

    def _stop(self, step: int, reason: StopReason) -> bool:
        self.should_stop = True
        self.stopped_step = step
        self.reason = reason
        return True

    def update(
        self, value: Any, model: nn.Module | None = None, *, step: int | None = None
    ) -> bool:
        """Record one check of the monitored value; return ``True`` when training should stop.

        Parameters
        ----------
        value : float or 0-d tensor
            The monitored quantity at this check (NaN/inf allowed: see ``check_finite``).
        model : nn.Module, optional
            When given with ``restore_best``, its ``state_dict()`` is copied to the CPU at each
            improvement.
        step : int, optional
            The step index of this check; default the number of earlier ``update`` calls.

        Examples
        --------
        >>> es = EarlyStopping(patience=1, start_from=2)
        >>> es.update(5.0), es.update(9.0), es.update(1.0), es.update(1.0)
        (False, False, False, True)
        >>> es.best_step, es.stopped_step
        (2, 3)
        """
        current = _as_float(value)
        if step is None:
            s = self._n_checks
        else:
            s = int(check_scalar(step, "step", low=0, integer=True))
        self._n_checks += 1
        if self.should_stop:
            return True

        finite = math.isfinite(current)
        if self.check_finite and not finite:
            return self._stop(s, StopReason.NON_FINITE)
        if s < self.start_from:
            return False

        improved = self._improves(current)
        if improved:
            self.best = current
            self.best_step = s
            self.wait = 0
            if self.restore_best:
                # Without the model the stored copy would be from an older, worse check:
                # drop it so that restoring warns instead of silently loading the wrong weights.
                self.best_state = (
                    None
                    if model is None
                    else {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                )
                self._best_state_step = None if model is None else s
        else:
            self.wait += 1

        if (
            self.stopping_threshold is not None
            and not self._better(self.stopping_threshold, current)
            and not math.isnan(current)
        ):
            return self._stop(s, StopReason.THRESHOLD)
        if self.divergence_threshold is not None and self._better(
            self.divergence_threshold, current
        ):
            return self._stop(s, StopReason.DIVERGENCE)
        if not improved and self.wait >= self.patience:
            return self._stop(s, StopReason.PATIENCE)
        return False

    # ------------------------------------------------------------------ weights

    def restore(self, model: nn.Module) -> None:
        """Load the best weights into ``model`` (each tensor to the device it has there).

        Raises
        ------
        RuntimeError
            No best weights were recorded (nothing improved, or no ``model`` was passed to
            :meth:`update`, or ``restore_best=False``).
        """
        if self.best_state is None:
            raise RuntimeError(
                "EarlyStopping has no best weights to restore: " + self._why_no_best_state()
            )
        current = model.state_dict()
        mapped = {
            k: v.to(current[k].device) if k in current else v for k, v in self.best_state.items()
        }
        model.load_state_dict(mapped)

    def _why_no_best_state(self) -> str:
        if not self.restore_best:
            return "restore_best=False"
        if self.best is None:
            if self.baseline is not None:
                return f"no check beat the baseline {self.baseline!r}"
            return "no check was recorded (all ignored or none made)"
        return f"update() was not given the model at the best check (step {self.best_step})"

    def on_train_end(self, model: nn.Module) -> bool:
        """Call whenever training ends (stopped or not): restore the best weights if asked.

        Returns ``True`` if weights were restored. With ``restore_best`` but nothing to
        restore, warns (``UserWarning``) and leaves the model as it is.

        Examples
        --------
        >>> import torch
        >>> from torch import nn
        >>> net, es = nn.Linear(1, 1), EarlyStopping(patience=3)
        >>> for step, loss in enumerate([3.0, 1.0, 2.0]):
        ...     with torch.no_grad():
        ...         _ = net.weight.fill_(step)
        ...     _ = es.update(loss, net)
        >>> es.on_train_end(net), net.weight.item()
        (True, 1.0)
        """
        if not self.restore_best:
            return False
        if self.best_state is None:
            warnings.warn(
                "EarlyStopping(restore_best=True) could not restore best weights: "
                + self._why_no_best_state()
                + "; the model keeps its last weights.",
                UserWarning,
                stacklevel=2,
            )
            return False
        self.restore(model)
        return True

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget all progress (best, wait, stop, stored weights); keep the configuration."""
        self.best = None
        self.best_step = None
        self.wait = 0
        self.should_stop = False
        self.stopped_step = None
        self.reason = None
        self.best_state = None
        self._best_state_step = None
        self._n_checks = 0

    def state_dict(self) -> dict[str, Any]:
        """Progress and configuration as plain types (loadable with ``weights_only=True``).

        The best-weights tensors are included (by reference, already on the CPU).

        Examples
        --------
        >>> es = EarlyStopping()
        >>> es.update(1.0)
        False
        >>> sorted(es.state_dict())[:4]
        ['baseline', 'best', 'best_state', 'best_state_step']
        """
        return {
            "version": _STATE_VERSION,
            "monitor": self.monitor,
            "mode": self.mode,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "baseline": self.baseline,
            "restore_best": self.restore_best,
            "start_from": self.start_from,
            "check_finite": self.check_finite,
            "stopping_threshold": self.stopping_threshold,
            "divergence_threshold": self.divergence_threshold,
            "best": self.best,
            "best_step": self.best_step,
            "wait": self.wait,
            "should_stop": self.should_stop,
            "stopped_step": self.stopped_step,
            "reason": None if self.reason is None else self.reason.value,
            "n_checks": self._n_checks,
            "best_state": None if self.best_state is None else dict(self.best_state),
            "best_state_step": self._best_state_step,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore progress saved by :meth:`state_dict`.

        ``monitor`` and ``mode`` must match this object's (a best value is meaningless under
        another quantity or direction). The other settings (patience, thresholds, …) stay as
        this object was constructed, so a resumed run may deliberately change them. Best-weight
        tensors are copied to the CPU.

        Raises
        ------
        ValueError
            Missing keys, wrong version, or a different ``monitor``/``mode``.
        """
        if not isinstance(state_dict, dict):
            raise ValueError(f"state_dict must be a dict, got {type(state_dict).__name__}")
        required = {
            "version",
            "monitor",
            "mode",
            "best",
            "best_step",
            "wait",
            "should_stop",
            "stopped_step",
            "reason",
            "n_checks",
            "best_state",
            "best_state_step",
        }
        missing = sorted(required - set(state_dict))
        if missing:
            raise ValueError(f"state_dict is not an EarlyStopping state: missing keys {missing}")
        if state_dict["version"] != _STATE_VERSION:
            raise ValueError(
                f"state_dict has version {state_dict['version']!r}, expected {_STATE_VERSION}"
            )
        for key in ("monitor", "mode"):
            if state_dict[key] != getattr(self, key):
                raise ValueError(
                    f"state_dict was saved with {key}={state_dict[key]!r}, "
                    f"but this EarlyStopping has {key}={getattr(self, key)!r}"
                )
        best_state = state_dict["best_state"]
        if best_state is not None and not (
            isinstance(best_state, dict)
            and all(isinstance(v, torch.Tensor) for v in best_state.values())
        ):
            raise ValueError("state_dict['best_state'] must be None or a dict of tensors")
        reason = state_dict["reason"]
        self.best = None if state_dict["best"] is None else float(state_dict["best"])
        self.best_step = state_dict["best_step"]
        self.wait = int(state_dict["wait"])
        self.should_stop = bool(state_dict["should_stop"])
        self.stopped_step = state_dict["stopped_step"]
        self.reason = None if reason is None else StopReason(reason)
        self._n_checks = int(state_dict["n_checks"])
        self.best_state = (
            None
            if best_state is None
            else {k: v.detach().to("cpu", copy=True) for k, v in best_state.items()}
        )
        self._best_state_step = state_dict["best_state_step"]

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(monitor={self.monitor!r}, mode={self.mode!r}, "
            f"patience={self.patience}, min_delta={self.min_delta!r}, "
            f"best={self.best!r}, best_step={self.best_step!r}, wait={self.wait}, "
            f"reason={None if self.reason is None else self.reason.value!r})"
        )
