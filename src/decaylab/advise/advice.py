"""The :class:`Advice` record and the trust checks every method runs.

Each check returns a sentence (or ``None``); the methods collect them in
``Advice.warnings`` and also raise them as :class:`~decaylab.TheoryWarning` /
:class:`~decaylab.ConvergenceWarning`, so a value the advisor cannot vouch for is never
silent.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from decaylab._checks import ConvergenceWarning, TheoryWarning

__all__ = [
    "Advice",
    "edge_warning",
    "curve_warning",
    "gamma_warning",
    "curvature_warning",
    "settled_warning",
    "emit",
]

ADVICE_SCHEMA_VERSION = 1


@dataclass
class Advice:
    """The advisor's answer: an ``α`` and the evidence for it.

    Attributes
    ----------
    alpha : float
        The advised L2 strength (decaylab's ``α``, mean loss).
    method : str
    val_loss : float
        Validation loss of a model trained at ``alpha`` with the task's own protocol
        (from its seeded initialization, all steps).
    val_accuracy : float or None
        Its validation accuracy, for classifiers.
    train_loss : float
    gamma : float or None
        Effective number of parameters ``Σ λ_i/(λ_i + α)`` of the GGN at the final weights
        (``None`` where the method computed no curvature).
    n_params : int
        Parameters carrying the decay.
    curves : dict
        What the method saw, as lists: ``{"alpha": [...], "val_loss": [...]}`` for the path,
        ``{"alpha": [...], "log_evidence": [...]}`` for the evidence, the ``α`` trajectory
        (``"step"``, ``"alpha_trace"``) for the online methods, and so on.
    compute_seconds : float
        Wall time of the whole method, the final training included.
    grad_evals : float
        Gradient evaluations (optimizer steps weighted by batch fraction; a curvature
        product counts two), the final training included.
    warnings : list of str
        Why the advice might not be trusted (empty when every check passed).
    grid : dict or None
        With ``compare_grid=True``: ``{alphas, val_loss, best_alpha, best_val_loss,
        compute_seconds, grad_evals}`` of the grid baseline.
    protocol : dict
        The training protocol used.
    details : dict
        Method-specific extras (e.g. the two early-stopping α's).
    """

    alpha: float
    method: str
    val_loss: float
    val_accuracy: float | None
    train_loss: float
    gamma: float | None
    n_params: int
    curves: dict[str, list[float]]
    compute_seconds: float
    grad_evals: float
    warnings: list[str] = field(default_factory=list)
    grid: dict[str, Any] | None = None
    protocol: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (``schema_version`` 1; non-finite floats become ``None``)."""
        return {"schema_version": ADVICE_SCHEMA_VERSION, **_plain(asdict(self))}

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` (a file, or a directory → advice.json)."""
        path = Path(path)
        if path.is_dir() or path.suffix != ".json":
            path.mkdir(parents=True, exist_ok=True)
            path = path / "advice.json"
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def __str__(self) -> str:
        head = (
            f"alpha={self.alpha:.3g} ({self.method}): val_loss={self.val_loss:.4g}, "
            f"{self.compute_seconds:.1f} s, {self.grad_evals:.0f} gradient evaluations"
        )
        if self.grid is not None:
            head += (
                f"; grid best alpha={self.grid['best_alpha']:.3g} val_loss="
                f"{self.grid['best_val_loss']:.4g} in {self.grid['compute_seconds']:.1f} s"
            )
        return "\n".join([head, *(f"warning: {w}" for w in self.warnings)])


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# --------------------------------------------------------------------------- trust checks


def emit(messages: list[str | None], category: type[Warning] | None = None) -> list[str]:
    """Warn each non-empty message and return them as a list.

    The category is ``category`` or, by default, ``ConvergenceWarning`` for a method or
    training that did not settle or converge and ``TheoryWarning`` otherwise. Each warning
    points at the first caller outside ``decaylab.advise`` (the user's line), however many
    of the package's frames lie between (``decaylab.advise(...)`` adds one).
    """
    out = [m for m in messages if m]
    level = _first_outside_frame()
    for m in out:
        chosen = category or (
            ConvergenceWarning if "settled" in m or "converged" in m else TheoryWarning
        )
        warnings.warn(m, chosen, stacklevel=level)
    return out


def _first_outside_frame() -> int:
    """``stacklevel`` (for ``warnings.warn`` in the caller) of the first frame outside this
    package."""
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        "decaylab.advise"
    ):
        frame = frame.f_back
        level += 1
    return level


def edge_warning(alpha: float, low: float, high: float, *, decades: float = 0.25) -> str | None:
    """The chosen α lies within ``decades`` of an end of the searched range ``[low, high]``:
    the optimum may lie outside it."""
    if math.log10(alpha / low) <= decades or math.log10(high / alpha) <= decades:
        return (
            f"alpha={alpha:.3g} is at the edge of the range searched [{low:.3g}, "
            f"{high:.3g}]: the optimum may lie outside it; widen the range"
        )
    return None


def curve_warning(
    alphas: Any, values: Any, *, flat: float = 0.01, noise: float = 0.005
) -> str | None:
    """A validation curve too flat (max−min below ``flat`` of the min) or too noisy (more
    than one local minimum deeper than ``noise`` of the min) to choose an α from."""
    order = np.argsort(np.asarray(alphas, dtype=float))
    v = np.asarray(values, dtype=float)[order]
    v = v[np.isfinite(v)]
    if v.size < 3:
        return None
    lo = float(v.min())
    if (float(v.max()) - lo) <= flat * abs(lo):
        return (
            f"the validation loss varies by less than {flat:.0%} over the α searched "
            f"({lo:.4g} … {float(v.max()):.4g}): too flat to choose α from"
        )
    minima = [
        i
        for i in range(v.size)
        if (i == 0 or v[i] < v[i - 1]) and (i == v.size - 1 or v[i] < v[i + 1])
    ]
    deep = [
        i
        for i in minima
        if min(v[max(i - 1, 0)], v[min(i + 1, v.size - 1)]) - v[i] > noise * abs(lo)
        or i in (0, v.size - 1)
    ]
    if len(deep) > 1:
        return (
            f"the validation curve has {len(deep)} separate local minima: too noisy to "
            "trust the chosen α without more seeds or a finer search"
        )
    return None


def gamma_warning(gamma: float | None, n_params: int, *, fraction: float = 0.9) -> str | None:
    """``γ`` close to the parameter count: the data pin down nearly every direction and the
    prior does little, so the evidence (and the quadratic model) carry little information."""
    if gamma is not None and gamma >= fraction * n_params:
        return (
            f"gamma={gamma:.1f} is near the number of decayed parameters {n_params}: "
            "almost no direction is regularized; the evidence is uninformative here"
        )
    return None


def path_mismatch_warning(seen: float, final: float, *, tol: float = 0.02) -> str | None:
    """The final training at the path's chosen α validates worse, by more than ``tol``, than
    the path's own point there: the path's curve came from short warm-started trainings, and
    their own implicit early stopping, not the decay, made that α look best."""
    if final > (1.0 + tol) * seen:
        return (
            f"a full training at the chosen α reaches validation loss {final:.4g}, "
            f"{final / seen - 1:.1%} above the {seen:.4g} the path saw there: its short "
            "warm-started trainings favoured this α; check it against a grid "
            "(compare_grid=True) or another method"
        )
    return None


def curvature_warning(
    lambda_min: float | None, lambda_max: float | None, *, tol: float = 1e-3
) -> str | None:
    """Negative Hessian curvature at the weights beyond ``tol·λ_max``: not a minimum, so the
    quadratic model behind the prediction and the hypergradient does not hold there."""
    if lambda_min is None or lambda_max is None:
        return None
    if lambda_min < -tol * abs(lambda_max):
        return (
            f"the Hessian at the final weights has a negative eigenvalue "
            f"{lambda_min:.3g} (largest {lambda_max:.3g}): not a minimum, the quadratic "
            "model does not hold there"
        )
    return None


def settled_warning(what: str, change: float, *, tol: float = 0.1) -> str | None:
    """An iterate whose last relative change exceeds ``tol`` has not settled."""
    if not math.isfinite(change) or change > tol:
        return f"{what} had not settled: its last relative change was {change:.2g} (> {tol:g})"
    return None


def unconverged_warning(
    objective_before: float, objective_after: float, *, tol: float = 0.01
) -> str | None:
    """The final training's objective still fell by more than ``tol`` over its last tenth."""
    drop = (objective_before - objective_after) / max(abs(objective_after), 1e-12)
    if drop > tol:
        return (
            f"the final training had not converged: its objective still fell by "
            f"{drop:.1%} over the last tenth of the steps; train longer"
        )
    return None


__all__ += ["unconverged_warning", "ConvergenceWarning"]
