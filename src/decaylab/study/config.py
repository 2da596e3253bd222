"""The study's configuration: a TOML file, every field validated before any compute.

``load_config(path, overrides)`` reads the file with :mod:`tomllib`, applies command-line
overrides (``{"task": ..., "seed": ...}`` or dotted keys such as ``"l2.alphas"``) and
checks every field against :data:`SPEC`; an unknown key or a bad value raises
:class:`ConfigError` (a ``ValueError``) whose message starts with the field's dotted name.
Every field, its default and its meaning are listed in ``docs/study.md``.

>>> cfg = config_from_dict({"task": "diabetes", "l2": {"alphas": [0.1, 1.0]}})
>>> cfg.task, cfg.l2["alphas"], cfg.curvature["dense_max_params"]
('diabetes', [0.1, 1.0], 5000)
>>> config_from_dict({"l2": {"alphas": [1.0, -1.0]}})
Traceback (most recent call last):
...
decaylab.study.config.ConfigError: l2.alphas: every value must be > 0, got -1.0
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the tomli backport
    import tomli as tomllib

__all__ = ["SPEC", "Config", "ConfigError", "config_from_dict", "load_config"]


class ConfigError(ValueError):
    """A bad configuration; ``field`` is the dotted name of the offending key."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


# kind, default, extra: kinds are "str", "int", "float", "bool", "alphas", "float|auto".
# int/float extras: (low, low_open); str extras: allowed values or None.
SPEC: dict[str, Any] = {
    "task": ("str", "digits-mlp", None),
    "seed": ("int", 0, (0, False)),
    "reference": {
        "alpha0": ("float|auto", "auto", (0.0, False)),
        "max_iter": ("int", 3000, (1, False)),
        "tol": ("float", 1e-7, (0.0, True)),
    },
    "curvature": {
        "dense_max_params": ("int", 5000, (1, False)),
        "k": ("int", 10, (2, False)),
        "tol": ("float", 1e-4, (0.0, True)),
        "trace_matvecs": ("int", 60, (3, False)),
        "density_probes": ("int", 3, (1, False)),
        "density_steps": ("int", 40, (2, False)),
        "diagonal_matvecs": ("int", 60, (3, False)),
        "cg_tol": ("float", 1e-8, (0.0, True)),
        "cg_max_iter": ("int", 500, (1, False)),
    },
    "l2": {
        "alphas": ("alphas", [1.2e-4, 2e-4, 5e-4, 2e-3, 1e-2], None),
        "max_iter": ("int", 1000, (1, False)),
        "tol": ("float", 1e-7, (0.0, True)),
        "scratch": ("bool", True, None),
        "trust_threshold": ("float", 0.1, (0.0, True)),
    },
    "l1": {
        "alphas": ("alphas", [1e-3, 3e-3, 1e-2], None),
        "max_iter": ("int", 1500, (1, False)),
        "tol": ("float", 1e-7, (0.0, True)),
    },
    "early_stopping": {
        "lr": ("float|auto", "auto", (0.0, True)),
        "patience": ("int", 100, (1, False)),
        "max_steps": ("int", 3000, (1, False)),
        "record_every": ("int", 10, (1, False)),
    },
    "picture": {
        "grid": ("int", 25, (3, False)),
    },
}


@dataclass(frozen=True)
class Config:
    """Validated configuration; sections are plain dicts (see :data:`SPEC`)."""

    task: str = "digits-mlp"
    seed: int = 0
    reference: dict[str, Any] = field(default_factory=dict)
    curvature: dict[str, Any] = field(default_factory=dict)
    l2: dict[str, Any] = field(default_factory=dict)
    l1: dict[str, Any] = field(default_factory=dict)
    early_stopping: dict[str, Any] = field(default_factory=dict)
    picture: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, the form stored in results.json."""
        return {name: (dict(v) if isinstance(v, dict) else v) for name, v in self.__dict__.items()}


def _number(value: Any, name: str, integer: bool, bounds: tuple[float, bool]) -> Any:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (integer and not isinstance(value, int))
    ):
        kind = "an integer" if integer else "a number"
        raise ConfigError(name, f"must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(name, f"must be finite, got {value!r}")
    low, low_open = bounds
    if value < low or (low_open and value == low):
        raise ConfigError(name, f"must be {'>' if low_open else '≥'} {low}, got {value!r}")
    return value if integer else float(value)


def _alphas(value: Any, name: str) -> list[float]:
    if not isinstance(value, list) or not value:
        raise ConfigError(name, f"must be a non-empty list of numbers, got {value!r}")
    out = []
    for a in value:
        if isinstance(a, bool) or not isinstance(a, int | float) or not math.isfinite(a):
            raise ConfigError(name, f"every value must be a finite number, got {a!r}")
        if a <= 0:
            raise ConfigError(name, f"every value must be > 0, got {float(a)!r}")
        out.append(float(a))
    if any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise ConfigError(name, f"must be strictly increasing, got {out}")
    return out


def _check(kind: str, value: Any, name: str, extra: Any) -> Any:
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise ConfigError(name, f"must be a non-empty string, got {value!r}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(name, f"must be true or false, got {value!r}")
        return value
    if kind == "alphas":
        return _alphas(value, name)
    if kind == "float|auto":
        if value == "auto":
            return value
        if isinstance(value, str):
            raise ConfigError(name, f'must be a number or "auto", got {value!r}')
        return _number(value, name, False, extra)
    return _number(value, name, kind == "int", extra)


def _validate(section: dict[str, Any], spec: dict[str, Any], prefix: str) -> dict[str, Any]:
    unknown = sorted(set(section) - set(spec))
    if unknown:
        name = f"{prefix}{unknown[0]}"
        raise ConfigError(name, f"unknown key; valid keys here: {', '.join(sorted(spec))}")
    out: dict[str, Any] = {}
    for key, sub in spec.items():
        name = f"{prefix}{key}"
        if isinstance(sub, dict):
            value = section.get(key, {})
            if not isinstance(value, dict):
                raise ConfigError(name, f"must be a table [{name}], got {value!r}")
            out[key] = _validate(value, sub, f"{name}.")
        else:
            kind, default, extra = sub
            out[key] = (
                _check(kind, section[key], name, extra)
                if key in section
                else (list(default) if isinstance(default, list) else default)
            )
    return out


def config_from_dict(data: dict[str, Any], overrides: dict[str, Any] | None = None) -> Config:
    """Validate a nested dict (as read from TOML) plus dotted-key overrides."""
    merged: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = merged
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(p, f"must be a table [{p}]")
        node[leaf] = value
    return Config(**_validate(merged, SPEC, ""))


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read ``path`` (TOML; ``None`` = defaults only), apply ``overrides``, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("--config", f"file {str(p)!r} does not exist")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError("--config", f"{str(p)!r} is not valid TOML: {exc}") from exc
    return config_from_dict(data, overrides)
