"""The ``"path"`` method: a warm-started regularization path, predictor + corrector.

From the largest ``α`` down, each new ``α`` is reached by

1. **predictor** (``predictor=True``, off by default): the quadratic prediction ``w̃(α)``
   from the GGN at the current weights (one damped Newton step,
   :func:`~decaylab.advise._curv.newton_predictor`). Measured on digits-mlp it moves the
   weights along nearly flat directions by ``α_old/α_new`` (the quadratic model's answer for a
   loss that is locally linear there), the path's validation curve then favours small α and
   the advice was 25 % worse than the grid; without it the path was within 1 %
   (``docs/advise.md``);
2. **corrector**: ``corrector_steps`` steps of the task's optimizer, its state kept;

and the validation loss is recorded. The coarse sweep (``n_coarse`` log-spaced ``α``)
stops once the validation loss has risen twice past its minimum. Then successive parabolic
interpolation in ``log α`` refines around the minimum (``n_refine`` more points, each
warm-started from the nearest point already on the path). Finally one training at the best
``α`` with the task's own protocol gives the advised model and its validation loss; it
counts in the compute.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from decaylab.advise._curv import newton_predictor
from decaylab.advise._train import Budget, Protocol, Trainer

__all__ = ["path_search", "parabola_vertex"]


def parabola_vertex(x: np.ndarray, y: np.ndarray) -> float | None:
    """Abscissa of the vertex of the parabola through three points, ``None`` if it opens
    downwards (or the points are collinear).

    >>> round(parabola_vertex(np.array([0.0, 1.0, 3.0]), np.array([4.0, 1.0, 1.0])), 12)
    2.0
    """
    a, b, c = np.polyfit(x, y, 2)
    if not a > 0:
        return None
    return float(-b / (2 * a))


def _next_refinement(xs: np.ndarray, vs: np.ndarray, min_gap: float) -> float | None:
    """The next ``log α`` to try: the vertex through the best point and its neighbours,
    kept inside their bracket and ``min_gap`` away from points already tried."""
    order = np.argsort(xs)
    xs, vs = xs[order], vs[order]
    i = int(np.argmin(vs))
    if i == 0 or i == xs.size - 1:
        return None
    lo, hi = xs[i - 1], xs[i + 1]
    vertex = parabola_vertex(xs[i - 1 : i + 2], vs[i - 1 : i + 2])
    if vertex is None:
        vertex = 0.5 * (xs[i] + (lo if vs[i - 1] < vs[i + 1] else hi))
    vertex = float(np.clip(vertex, lo + min_gap, hi - min_gap))
    if np.min(np.abs(xs - vertex)) < min_gap:
        # Too close to a point tried: golden-section step into the larger side instead.
        wide_hi = (hi - xs[i]) > (xs[i] - lo)
        vertex = xs[i] + 0.382 * ((hi - xs[i]) if wide_hi else (lo - xs[i]))
        if np.min(np.abs(xs - vertex)) < min_gap:
            return None
    return vertex


def path_search(
    task: Any,
    protocol: Protocol,
    alpha_range: tuple[float, float],
    budget: Budget,
    *,
    n_coarse: int = 6,
    n_refine: int = 3,
    corrector_steps: int | None = None,
    start_steps: int | None = None,
    predictor: bool = False,
    cg_iters: int = 30,
    max_relative_step: float | None = None,
) -> dict[str, Any]:
    """Run the path; return the α with the lowest validation loss seen and the curve.

    ``corrector_steps`` defaults to ``protocol.steps // 8`` and ``start_steps`` (the first,
    largest ``α``, from the seeded initialization) to ``protocol.steps // 4``.
    """
    corrector = corrector_steps or max(protocol.steps // 8, 1)
    trainer = Trainer(task, protocol, alpha_range[1], budget)
    trainer.run(start_steps or max(protocol.steps // 4, 1))
    logs = np.linspace(math.log(alpha_range[1]), math.log(alpha_range[0]), n_coarse)
    points: list[dict[str, Any]] = []

    def record() -> None:
        points.append(
            {
                "log_alpha": math.log(trainer.alpha),
                "val_loss": trainer.val_loss(),
                "state": trainer.state(),
            }
        )

    record()
    for log_a in logs[1:]:
        _move(trainer, math.exp(log_a), corrector, predictor, cg_iters, budget, max_relative_step)
        record()
        vals = [p["val_loss"] for p in points]
        best = int(np.argmin(vals))
        if len(vals) - 1 - best >= 2 and all(np.diff(vals[best:]) > 0):
            break
    spacing = abs(logs[1] - logs[0]) if logs.size > 1 else 1.0
    for _ in range(n_refine):
        xs = np.array([p["log_alpha"] for p in points])
        vs = np.array([p["val_loss"] for p in points])
        nxt = _next_refinement(xs, vs, min_gap=0.08 * spacing)
        if nxt is None:
            break
        nearest = points[int(np.argmin(np.abs(xs - nxt)))]
        trainer.load(nearest["state"])
        _move(trainer, math.exp(nxt), corrector, predictor, cg_iters, budget, max_relative_step)
        record()
    xs = np.array([p["log_alpha"] for p in points])
    vs = np.array([p["val_loss"] for p in points])
    order = np.argsort(xs)
    best = int(np.argmin(vs))
    return {
        "alpha": float(math.exp(xs[best])),
        "curve_alpha": np.exp(xs[order]).tolist(),
        "curve_val_loss": vs[order].tolist(),
        "visit_order_alpha": np.exp(xs).tolist(),
        "corrector_steps": corrector,
    }


def _move(
    trainer: Trainer,
    alpha: float,
    corrector: int,
    predictor: bool,
    cg_iters: int,
    budget: Budget,
    max_relative_step: float | None = None,
) -> None:
    if predictor:
        info = newton_predictor(
            trainer, alpha, max_iter=cg_iters, max_relative_step=max_relative_step
        )
        budget.add_products(info["products"])
    trainer.set_alpha(alpha)
    trainer.run(corrector)
