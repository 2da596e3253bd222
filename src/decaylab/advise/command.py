"""``decaylab advise [--task T] [--config F] [--out DIR] [--method M] [--compare-grid]``.

The config file is TOML: the top-level ``task`` and ``seed`` (as for ``decaylab run``) and an
``[advise]`` table with ``method``, ``alpha_min``, ``alpha_max``, ``n_grid``, ``compare_grid``
and the training protocol ``optimizer``, ``lr``, ``steps``, ``batch_size``. Other tables (the
study's) are ignored. Command-line options win over the file. ``DIR/advice.json`` receives
:meth:`Advice.to_dict`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the tomli backport
    import tomli as tomllib

from decaylab.advise._train import Protocol
from decaylab.advise.advice import Advice
from decaylab.advise.run import DEFAULT_METHOD, DEFAULT_RANGE, METHODS, advise

__all__ = ["advise_command", "read_config"]

_ADVISE_KEYS = {
    "method",
    "alpha_min",
    "alpha_max",
    "n_grid",
    "compare_grid",
    "optimizer",
    "lr",
    "steps",
    "batch_size",
}
DEFAULT_OUT = Path("decaylab-advice")


def read_config(path: str | Path | None) -> dict[str, Any]:
    """The ``task``, ``seed`` and ``[advise]`` entries of a TOML file, checked for unknown
    ``[advise]`` keys (``ValueError`` naming them)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {exc}") from exc
    section = data.get("advise", {})
    if not isinstance(section, dict):
        raise ValueError("config: [advise] must be a table")
    unknown = set(section) - _ADVISE_KEYS
    if unknown:
        raise ValueError(
            f"config: unknown keys in [advise]: {sorted(unknown)}; known: {sorted(_ADVISE_KEYS)}"
        )
    out = dict(section)
    for key in ("task", "seed"):
        if key in data:
            out[key] = data[key]
    return out


def advise_command(
    task: str | None = None,
    config: str | Path | None = None,
    out: str | Path = DEFAULT_OUT,
    method: str | None = None,
    compare_grid: bool | None = None,
    executor: str = "local",
    ray_address: str | None = None,
) -> tuple[Advice, Path]:
    """Load the task (:func:`decaylab.tasks.get_task`), advise, write ``out/advice.json``."""
    from decaylab.executors.ray import check_executor_option
    from decaylab.tasks import get_task

    check_executor_option(executor, ray_address)
    cfg = read_config(config)
    proto_keys = ("optimizer", "lr", "steps", "batch_size", "seed")
    protocol = Protocol(**{k: cfg[k] for k in proto_keys if k in cfg})
    chosen = method or cfg.get("method", DEFAULT_METHOD)
    if chosen not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {chosen!r}")
    advice = advise(
        get_task(task or cfg.get("task", "digits-mlp")),
        method=chosen,
        compare_grid=bool(cfg.get("compare_grid", False) if compare_grid is None else compare_grid),
        alpha_range=(
            cfg.get("alpha_min", DEFAULT_RANGE[0]),
            cfg.get("alpha_max", DEFAULT_RANGE[1]),
        ),
        n_grid=cfg.get("n_grid", 11),
        protocol=protocol,
        executor=executor,
        ray_address=ray_address,
    )
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    return advice, advice.save(out_dir / "advice.json")
