"""decaylab: weight decay, L1 and early stopping, predicted from the Hessian and measured.

The top-level names are loaded lazily (PEP 562), so ``import decaylab`` and the command
line stay fast and torch is imported only when a torch-based tool is used.

>>> import decaylab
>>> decaylab.EarlyStopping(patience=2).patience
2
>>> sorted(name for name in decaylab.__all__ if name.startswith("L"))
['L1', 'L2']
"""

from __future__ import annotations

import importlib
from typing import Any

from decaylab._checks import ConvergenceWarning, TheoryWarning

__version__ = "0.1.0"

_LAZY = {
    "fit": "decaylab.training",
    "History": "decaylab.training",
    "FISTA": "decaylab.training",
    "half_mse": "decaylab.training",
    "Callback": "decaylab.training",
    "TrainState": "decaylab.training",
    "EarlyStopping": "decaylab.early_stopping",
    "StopReason": "decaylab.early_stopping",
    "L1": "decaylab.regularize",
    "L2": "decaylab.regularize",
    "ElasticNet": "decaylab.regularize",
    "param_groups": "decaylab.regularize",
    "decay_report": "decaylab.regularize",
    "evidence_ridge": "decaylab.bayes",
    "laplace_log_evidence": "decaylab.bayes",
    "Advice": "decaylab.advise",
}
_SUBMODULES = (
    "theory",
    "bayes",
    "curvature",
    "regularize",
    "early_stopping",
    "training",
    "tasks",
    "study",
    "report",
    "checkpoint",
    "advise",
)

__all__ = ["ConvergenceWarning", "TheoryWarning", "__version__", *_LAZY, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"decaylab.{name}")
    else:
        raise AttributeError(f"module 'decaylab' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
