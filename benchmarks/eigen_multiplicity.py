"""Products ``eigen`` spends on repeated eigenvalues, and whether it returns every copy.

Cases (issue 13, case 1): dense symmetric matrices whose top-k holds an eigenvalue of
multiplicity 6 or 10, and a small breast-cancer MLP whose hidden units 0-6 are identical
copies, so that (by the permutation symmetry of the copies) one Hessian eigenvalue has
multiplicity 6 with copies at positions 7-12 (the true 9th and 10th eigenvalues are
copies). For each: ``eigen(k)``'s products, whether its values equal ``numpy.linalg.eigh``'s
to 1e-6 relative, and the products of SciPy's ARPACK ``eigsh`` (``tol=0``, its default,
and ``tol=1e-4``) on the same matrix.

Run: ``PYTHONPATH=src python benchmarks/eigen_multiplicity.py``  (about 25 s on one core)
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import scipy.sparse.linalg as sla
import torch
from torch import nn

from decaylab.curvature.lanczos import eigen
from decaylab.curvature.operators import HessianOperator


def rotated(lam: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q, R = np.linalg.qr(rng.standard_normal((lam.size, lam.size)))
    Q = Q * np.sign(np.diag(R))
    A = (Q * lam) @ Q.T
    return 0.5 * (A + A.T)


def repeated_spectrum(mult: int, P: int = 300, seed: int = 0) -> np.ndarray:
    """Three distinct outliers, then ``mult`` copies of 3.0, then 2.9, 2.5 and a bulk."""
    rng = np.random.default_rng(seed)
    head = [6.0, 5.0, 4.0] + [3.0] * mult + [2.9, 2.5]
    return np.concatenate([head, rng.uniform(-1.0, 1.0, P - len(head))])


def duplicated_unit_mlp(
    copies: int = 7, n: int = 200
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """30-12-1 tanh MLP on breast cancer whose hidden units ``0..copies-1`` are identical."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    X_np, y_np = load_breast_cancer(return_X_y=True)
    X = torch.tensor(StandardScaler().fit_transform(X_np)[:n], dtype=torch.float32)
    y = torch.tensor(y_np[:n], dtype=torch.float32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 12), nn.Tanh(), nn.Linear(12, 1), nn.Flatten(0))
    with torch.no_grad():
        model[0].weight[1:copies] = model[0].weight[0]
        model[0].bias[1:copies] = model[0].bias[0]
        model[2].weight[0, :copies] = 0.6
    return model, X, y


def fista_collapsed_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The issue's recipe: 30-16-1 tanh MLP on all of breast cancer (standardized), BCE,
    L2 alpha = 1e-2 on all parameters, FISTA 4,000 steps; its hidden units collapse into
    groups of identical units (here 5 and 11). About 6 s."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    from decaylab.regularize import L2
    from decaylab.training import fit

    X_np, y_np = load_breast_cancer(return_X_y=True)
    X = torch.tensor(StandardScaler().fit_transform(X_np), dtype=torch.float32)
    y = torch.tensor(y_np, dtype=torch.float32)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 16), nn.Tanh(), nn.Linear(16, 1), nn.Flatten(0))
    fit(
        model,
        nn.BCEWithLogitsLoss(),
        (X, y),
        optimizer="fista",
        lr="auto",
        steps=4000,
        penalty=L2(1e-2),
        penalty_params="all",
        progress=False,
    )
    return model, X, y


def dense_hessian64(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Float64 Hessian of the mean BCE by ``torch.func.hessian`` (independent of decaylab)."""
    m64 = copy.deepcopy(model).double()
    names = [name for name, _ in m64.named_parameters()]
    shapes = [p.shape for p in m64.parameters()]
    sizes = [p.numel() for p in m64.parameters()]

    def loss(w: torch.Tensor) -> torch.Tensor:
        pieces = zip(names, torch.split(w, sizes), shapes, strict=True)
        params = {name: t.reshape(s) for name, t, s in pieces}
        out = torch.func.functional_call(m64, params, (X.double(),))
        return nn.functional.binary_cross_entropy_with_logits(out, y.double())

    w0 = torch.cat([p.detach().reshape(-1) for p in m64.parameters()])
    return torch.func.hessian(loss)(w0).numpy()


def eigsh_run(A: np.ndarray, k: int, tol: float) -> tuple[int, bool]:
    """ARPACK's products, and whether its values equal eigh's (1e-6 relative)."""
    count = [0]

    def mv(v: np.ndarray) -> np.ndarray:
        count[0] += v.shape[1] if v.ndim == 2 else 1
        return A @ v

    op = sla.LinearOperator(A.shape, matvec=mv, matmat=mv, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(A.shape[0])
    vals = sla.eigsh(op, k=k, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
    return count[0], right(np.sort(vals)[::-1], A, k, 1e-6)


def right(vals: np.ndarray, A: np.ndarray, k: int, tol: float) -> bool:
    ref = np.linalg.eigvalsh(A)[::-1][:k]
    return bool(np.all(np.abs(vals - ref) <= 1e-6 * np.abs(ref).max() + tol * np.abs(ref)))


def report(name: str, op: object, A: np.ndarray, k: int, tol: float) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = eigen(op, k=k, tol=tol)
        plain = eigen(op, k=k, tol=tol, check_complete=False)
    ok, ok_plain = (
        right(res.eigenvalues.numpy(), A, k, tol),
        right(plain.eigenvalues.numpy(), A, k, tol),
    )
    arpack = [eigsh_run(A, k, t) for t in (0.0, 1e-4)]
    print(
        f"{name:34s} k={k:2d} | eigen: {res.n_matvecs:3d} products (check: "
        f"{res.completeness_matvecs}), right: {ok}, complete: {res.complete}, "
        f"certified: {res.all_converged} | no check: {plain.n_matvecs:3d}, right: {ok_plain} | "
        f"eigsh tol=0: {arpack[0][0]} right: {arpack[0][1]}, tol=1e-4: {arpack[1][0]} right: "
        f"{arpack[1][1]} | warnings: {len(caught)}"
    )


def main() -> None:
    torch.set_num_threads(1)
    for mult, k in ((6, 10), (10, 14)):
        A = rotated(repeated_spectrum(mult), seed=mult)
        report(f"dense float64, multiplicity {mult}", A, A, k, 1e-3)
        report(f"dense float32, multiplicity {mult}", torch.from_numpy(A).float(), A, k, 1e-3)
    model, X, y = duplicated_unit_mlp()
    H = dense_hessian64(model, X, y)
    op = HessianOperator(model, nn.BCEWithLogitsLoss(), (X, y))
    for tol in (1e-3, 1e-4):
        report(f"duplicated-unit MLP (tol={tol:g})", op, H, 10, tol)
    model, X, y = fista_collapsed_mlp()
    H = dense_hessian64(model, X, y)
    op = HessianOperator(model, nn.BCEWithLogitsLoss(), (X, y))
    for tol in (1e-3, 1e-4):
        report(f"FISTA-collapsed MLP (tol={tol:g})", op, H, 10, tol)


if __name__ == "__main__":
    main()
