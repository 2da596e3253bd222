"""The weight-decay advisor: ``decaylab.advise(task, method=...) -> Advice``.

One small unit per method (``path``, ``evidence``, ``hypergradient``, ``early_stopping``,
``grid``), the :class:`Advice` record with its trust checks, and :func:`advise` that runs a
method, trains at its α with the task's protocol, and checks the result. The package is
itself callable, so ``decaylab.advise(task)`` and ``from decaylab.advise import advise``
are the same function.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from decaylab.advise._train import Protocol
from decaylab.advise.advice import Advice
from decaylab.advise.run import DEFAULT_METHOD, DEFAULT_RANGE, METHODS, advise

__all__ = ["advise", "Advice", "Protocol", "METHODS", "DEFAULT_METHOD", "DEFAULT_RANGE"]


class _CallableModule(types.ModuleType):
    """``decaylab.advise`` is both this package and :func:`advise`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Advice:
        return advise(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
