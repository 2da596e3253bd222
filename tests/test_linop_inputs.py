"""Operators handed in as dense matrices: what the shared adapter (curvature._linop) refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from decaylab.curvature import eigen, spectral_density

# Hermitian, eigenvalues 1 and 3; its real part alone has the double eigenvalue 2.
HERMITIAN = torch.tensor([[2.0, 1j], [-1j, 2.0]], dtype=torch.complex128)


@pytest.mark.parametrize("as_numpy", [False, True], ids=["torch", "numpy"])
@pytest.mark.parametrize(
    "routine",
    [lambda op: eigen(op, k=1), lambda op: spectral_density(op, n_probes=1, n_steps=2)],
    ids=["eigen", "spectral_density"],
)
def test_complex_matrices_are_refused_not_cast_to_their_real_part(routine, as_numpy) -> None:  # noqa: ANN001
    op = HERMITIAN.numpy() if as_numpy else HERMITIAN
    with pytest.raises(ValueError, match="real numeric matrix"):
        routine(op)


def test_real_matrices_still_pass() -> None:
    A = np.array([[2.0, 1.0], [1.0, 2.0]])
    assert float(eigen(torch.from_numpy(A), k=1).eigenvalues[0]) == pytest.approx(3.0)
