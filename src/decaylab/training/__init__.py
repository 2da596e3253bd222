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

from decaylab.training.evaluation import half_mse
from decaylab.training.fista import FISTA
from decaylab.training.history import History
from decaylab.training.hooks import Callback, TrainState
from decaylab.training.loop import fit

__all__ = ["FISTA", "Callback", "History", "TrainState", "fit", "half_mse"]
