"""The study's config: defaults, overrides, and one clear error per bad field."""

from __future__ import annotations

import pytest

from decaylab.study.config import ConfigError, config_from_dict, load_config


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        'task = "diabetes"\nseed = 3\n[l2]\nalphas = [0.1, 1]\n[early_stopping]\nlr = 0.5\n'
    )
    cfg = load_config(path, {"seed": 7, "task": None})
    assert (cfg.task, cfg.seed, cfg.l2["alphas"], cfg.early_stopping["lr"]) == (
        "diabetes",
        7,
        [0.1, 1.0],
        0.5,
    )
    assert cfg.curvature["dense_max_params"] == 5000 and cfg.early_stopping["patience"] >= 1
    assert load_config(None).task == "digits-mlp"
    assert config_from_dict({}, {"l1.alphas": [0.5]}).l1["alphas"] == [0.5]


@pytest.mark.parametrize(
    "data, field, words",
    [
        ({"colour": 1}, "colour", "unknown key"),
        ({"l2": {"alpha": [1.0]}}, "l2.alpha", "unknown key"),
        ({"l2": {"alphas": []}}, "l2.alphas", "non-empty list"),
        ({"l2": {"alphas": [1.0, -2.0]}}, "l2.alphas", "> 0"),
        ({"l2": {"alphas": [1.0, 0.5]}}, "l2.alphas", "strictly increasing"),
        ({"l2": {"alphas": ["a"]}}, "l2.alphas", "finite number"),
        ({"l1": {"alphas": 0.1}}, "l1.alphas", "non-empty list"),
        ({"seed": -1}, "seed", "≥ 0"),
        ({"seed": 1.5}, "seed", "integer"),
        ({"task": ""}, "task", "non-empty string"),
        ({"early_stopping": {"lr": 0}}, "early_stopping.lr", "> 0"),
        ({"early_stopping": {"lr": "fast"}}, "early_stopping.lr", '"auto"'),
        ({"early_stopping": {"patience": 0}}, "early_stopping.patience", "≥ 1"),
        ({"early_stopping": {"max_steps": True}}, "early_stopping.max_steps", "integer"),
        ({"curvature": {"dense_max_params": "many"}}, "curvature.dense_max_params", "integer"),
        ({"curvature": {"k": 1}}, "curvature.k", "≥ 2"),
        ({"curvature": 3}, "curvature", "table"),
        ({"l2": {"scratch": "yes"}}, "l2.scratch", "true or false"),
        ({"reference": {"alpha0": -1.0}}, "reference.alpha0", "≥ 0"),
        ({"picture": {"grid": 2}}, "picture.grid", "≥ 3"),
    ],
)
def test_each_bad_field_is_named(data, field, words):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}: ") and words in str(err.value)


def test_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("l2 = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
