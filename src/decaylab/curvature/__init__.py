"""Curvature of PyTorch models: Hessian and GGN operators, eigenpairs, trace, diagonal, density.

Operators (:class:`HessianOperator`, :class:`GGNOperator`) give matrix-free products with the
curvature of the **mean** loss over all samples; :func:`eigen` returns certified eigenpairs
(every pair either meets its residual tolerance or is flagged); :func:`trace`,
:func:`diagonal` and :func:`spectral_density` are stochastic estimators with error bars;
:func:`dense_hessian` is the exact reference for small models.

>>> import torch
>>> from decaylab.curvature import HessianOperator, eigen
>>> _ = torch.manual_seed(0)
>>> X, y = torch.randn(50, 3), torch.randn(50, 1)
>>> model = torch.nn.Linear(3, 1, bias=False)
>>> op = HessianOperator(model, "half_mse", (X, y), dtype=torch.float64)
>>> res = eigen(op, k=2)
>>> exact = torch.linalg.eigvalsh(X.double().T @ X.double() / 50).flip(0)[:2]
>>> bool(torch.allclose(res.eigenvalues.double(), exact, rtol=1e-6)), bool(res.converged.all())
(True, True)
"""

from decaylab.curvature._params import flatten_params, param_slices, select_params, unflatten_like
from decaylab.curvature.dense import dense_ggn, dense_hessian
from decaylab.curvature.lanczos import EigenResult, eigen
from decaylab.curvature.operators import (
    CurvatureOperator,
    GGNOperator,
    HalfMSELoss,
    HessianOperator,
    resolve_loss,
)
from decaylab.curvature.stochastic import (
    DiagonalResult,
    SpectralDensity,
    TraceResult,
    diagonal,
    spectral_density,
    trace,
)

__all__ = [
    "CurvatureOperator",
    "HessianOperator",
    "GGNOperator",
    "HalfMSELoss",
    "resolve_loss",
    "dense_hessian",
    "dense_ggn",
    "eigen",
    "EigenResult",
    "trace",
    "TraceResult",
    "diagonal",
    "DiagonalResult",
    "spectral_density",
    "SpectralDensity",
    "flatten_params",
    "unflatten_like",
    "select_params",
    "param_slices",
]
