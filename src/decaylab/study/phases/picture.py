"""Phase f: the weight-decay picture in the plane of the two top eigenvectors of ``H``.

``J(w₀ + a q₁ + b q₂)`` on a grid, and the coordinates ``(q₁ᵀ(w − w₀), q₂ᵀ(w − w₀))`` of the
predicted and the measured L2 optima of every grid α; ``w₀`` is the origin.
"""

from __future__ import annotations

from typing import Any

import torch

from decaylab.study.config import Config
from decaylab.study.objective import Objective

__all__ = ["run"]


def run(
    obj: Objective,
    reference: dict[str, Any],
    curv: dict[str, Any],
    l2: dict[str, Any],
    config: Config,
) -> dict[str, Any]:
    w0 = reference["w0"]
    Q = curv["eigenvectors"][:, :2]
    pred = (l2["predicted_w"] - w0) @ Q
    meas = (l2["measured_w"] - w0) @ Q
    both = torch.cat([pred, meas]).abs()
    overall = float(both.max()) if both.numel() else 0.0
    radii = [max(1.3 * float(both[:, j].max()), 0.25 * overall, 1e-6) for j in range(2)]
    n = config.picture["grid"]
    a = torch.linspace(-radii[0], radii[0], n, dtype=w0.dtype)
    b = torch.linspace(-radii[1], radii[1], n, dtype=w0.dtype)
    J = [[obj.value(w0 + ai * Q[:, 0] + bj * Q[:, 1]) for ai in a] for bj in b]
    return {
        "a": a.tolist(),
        "b": b.tolist(),
        "J": J,
        "w0": [0.0, 0.0],
        "predicted": pred.tolist(),
        "measured": meas.tolist(),
        "alphas": list(l2["alphas"]),
        "eigenvalues": [float(v) for v in curv["eigenvalues"][:2]],
    }
