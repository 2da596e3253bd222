"""Dense symmetric test matrices with known spectra, and a bare operator over one
(shared by the eigen and estimator tests)."""

from __future__ import annotations

import numpy as np
import torch


def rotated(lam: np.ndarray, seed: int = 0) -> np.ndarray:
    """Dense symmetric matrix with eigenvalues ``lam`` and Haar-random eigenvectors."""
    rng = np.random.default_rng(seed)
    Q, R = np.linalg.qr(rng.standard_normal((lam.size, lam.size)))
    Q = Q * np.sign(np.diag(R))
    A = (Q * lam) @ Q.T
    return 0.5 * (A + A.T)


def nn_like(P: int, seed: int = 0) -> np.ndarray:
    """A few large outliers, then an indefinite bulk near zero (as in network Hessians)."""
    rng = np.random.default_rng(seed)
    outliers = 40.0 * 0.7 ** np.arange(10)
    bulk = np.concatenate([rng.normal(0, 0.01, P - 10 - P // 5), rng.uniform(-0.3, 1.0, P // 5)])
    return np.concatenate([outliers, bulk])


class DenseDuckOperator:
    """Only ``shape``, ``dtype``, ``device`` and ``matmat``: an operator that is neither a
    tensor, an array nor a scipy LinearOperator, computing ``A @ V`` in ``dtype``."""

    def __init__(self, A: np.ndarray, dtype: torch.dtype) -> None:
        self.shape = A.shape
        self.dtype = dtype
        self.device = torch.device("cpu")
        self._matrix = torch.from_numpy(A).to(dtype)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self._matrix @ V
