"""The main job: predict L2, L1 and early stopping from the Hessian, retrain, compare.

>>> from decaylab.study import load_config
>>> load_config(None, {"task": "diabetes"}).task
'diabetes'

``run_study(load_config("study.toml"), "out")`` is ``decaylab run --config study.toml --out
out``; phases, cache and the results.json schema are described in ``docs/study.md``.
"""

from decaylab.study.config import Config, ConfigError, config_from_dict, load_config
from decaylab.study.run import PHASES, run_study

__all__ = ["PHASES", "Config", "ConfigError", "config_from_dict", "load_config", "run_study"]
