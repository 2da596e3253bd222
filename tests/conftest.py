"""Fixtures shared by the test modules."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Run the suite on one BLAS/OpenMP thread.

    The models here are tiny; on a shared 2-core machine, worker threads waiting for busy
    cores made small products orders of magnitude slower than one thread. One thread also
    makes the crash-and-resume tests compare like with like (same reduction order).
    """
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance (2 CPUs) for the test module that asks for it; yields ``ray``.

    Its workers find decaylab and the tests' point functions (``tests/_ray_points.py``)
    through ``PYTHONPATH``. Skips the module's Ray tests where Ray is not installed.
    """
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    tests = Path(__file__).resolve().parent
    paths = os.pathsep.join([str(tests.parent / "src"), str(tests)])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": paths}},
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def digits_mlp():
    """A briefly trained 64-64-10 MLP (4,810 parameters) on 128 digits, and its exact Hessian.

    Returns ``(model, X, y, H)`` with ``H`` the float64 Hessian of the mean cross-entropy,
    computed independently of decaylab by ``torch.func.hessian`` of a flat-vector loss.
    """
    from sklearn.datasets import load_digits

    X_np, y_np = load_digits(return_X_y=True)
    X = torch.tensor(X_np[:128] / 16.0, dtype=torch.float32)
    y = torch.tensor(y_np[:128])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    model.eval()
    model.zero_grad(set_to_none=True)

    m64 = copy.deepcopy(model).double()
    names = [name for name, _ in m64.named_parameters()]
    shapes = [p.shape for _, p in m64.named_parameters()]
    sizes = [p.numel() for _, p in m64.named_parameters()]

    def loss(w: torch.Tensor) -> torch.Tensor:
        pieces = zip(names, torch.split(w, sizes), shapes, strict=True)
        params = {nm: t.reshape(s) for nm, t, s in pieces}
        out = torch.func.functional_call(m64, params, (X.double(),))
        return nn.functional.cross_entropy(out, y)

    w0 = torch.cat([p.detach().reshape(-1) for p in m64.parameters()])
    H = torch.func.hessian(loss)(w0)
    return model, X, y, H.numpy()
