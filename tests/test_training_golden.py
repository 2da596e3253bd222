"""Bit-identical behaviour of ``fit`` across the redesign of the training loop.

The expected results in ``tests/data/training_golden.json`` were produced by the *pre-redesign*
``fit`` (``python tests/_golden_training.py``); each configuration is re-run here and its final
weights, history and snapshots must match to the last bit. The reference is therefore an
independent implementation: the old monolithic loop.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).with_name("_golden_training.py")
_spec = importlib.util.spec_from_file_location("_golden_training", _PATH)
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

EXPECTED = json.loads(golden.GOLDEN.read_text())


def test_every_configuration_has_a_golden_result():
    assert sorted(EXPECTED) == sorted(golden.CONFIGS)


@pytest.mark.parametrize("name", sorted(golden.CONFIGS))
def test_fit_is_bit_identical_to_the_golden_run(name):
    got = golden.run_encoded(name)
    want = EXPECTED[name]
    assert got["weights"] == want["weights"]
    for key, value in want["history"].items():
        assert got["history"][key] == value, key


def test_golden_runs_cover_the_stop_reasons():
    reasons = {r["history"]["stop_reason"] for r in EXPECTED.values()}
    assert {None, "patience", "threshold", "non-finite"} <= reasons
