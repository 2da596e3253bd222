"""Training with exact regularization: :func:`fit`, :class:`History`, :class:`FISTA`, callbacks.

The package is one loop over small parts (see ``docs/training.md``):

========================  ==================================================================
:mod:`.loop`              :func:`fit` itself: the loop, one screen
:mod:`.config`            argument checks → :class:`~.config.FitConfig`
:mod:`.run`               the parts of one run, wired, and the verbs the loop calls
:mod:`.steps`             step rules: torch optimizers (SGD / heavy ball, Adam, AdamW), FISTA
:mod:`.fista`             the :class:`FISTA` optimizer (prox inside, line search)
:mod:`.regularization`    coupled / decoupled decay, penalty in the loss, prox; α changes
:mod:`.evaluation`        :func:`half_mse`, the whole-set mean loss, the evaluator
:mod:`.batches`           full batch or per-epoch permutations, resumable
:mod:`.hooks`             :class:`Callback`, :class:`TrainState`
:mod:`.history`           :class:`History`
:mod:`.checkpointing`     what a checkpoint holds; resume
========================  ==================================================================
"""

from typing import Any

import torch

from decaylab.training.evaluation import half_mse
from decaylab.training.fista import FISTA
from decaylab.training.history import History
from decaylab.training.hooks import Callback, TrainState
from decaylab.training.loop import fit

__all__ = ["FISTA", "Callback", "History", "TrainState", "fit", "half_mse"]


def _as_data(data: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The pre-``_inputs`` pair check, kept unchanged for ``decaylab.bayes`` (which imports it
    and reports NaN itself); new code calls :func:`decaylab._inputs.as_tensor_pair`."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(f"{name} must be a pair (X, y) of tensors, got {type(data).__name__}")
    X, y = (d if isinstance(d, torch.Tensor) else torch.as_tensor(d) for d in data)
    if X.ndim == 0 or y.ndim == 0:
        raise ValueError(f"{name}: X and y must have a sample dimension, got 0-d tensors")
    if len(X) == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    if len(X) != len(y):
        raise ValueError(f"{name}: X has {len(X)} samples but y has {len(y)}")
    return X, y
