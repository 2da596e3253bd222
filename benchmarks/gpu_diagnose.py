"""GPU diagnosis for the ResNet-18 workload: decaylab's product cost per backend, and anchors.

One prepared run on a CUDA machine (comparison tools from carried wheels, see
``gpu_curvature.sh``)::

    PYTHONPATH=/tmp/site:src python3 benchmarks/gpu_diagnose.py [backends] [eigen|eigen_best]
        [curvlinops]

- ``backends``: for each ``HessianOperator`` backend, the construction time, two single
  products, one 10-column ``matmat`` and the peak GPU memory;
- ``eigen``: ``eigen(k=10, tol=1e-3)`` with ``backend="auto"`` and with the fastest backend
  (``eigen_best``: the fastest only), products counted and timed;
- ``curvlinops``: curvlinops + ``eigsh(tol=1e-3)`` with its determinism check off (cuDNN's
  nondeterministic convolutions fail that check on the GPU).

Not run by ``run_all.py`` (GPU only). Results of the one run: ``results/gpu_diagnose_h200.log``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import curvature as c  # noqa: E402
from workloads import Workload, cifar_resnet18  # noqa: E402

CUDA = torch.device("cuda")


def timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start, out


def backend_costs(wl: Workload, backend: str) -> tuple[str, float]:
    from decaylab.curvature.operators import HessianOperator

    c._release(CUDA)
    V = torch.randn(wl.n_params, 10, device=CUDA)
    s_build, op = timed(
        lambda: HessianOperator(wl.model, wl.loss_fn, (wl.X, wl.y), backend=backend)
    )
    s_first, _ = timed(lambda: op @ V[:, 0])
    s_second, _ = timed(lambda: op @ V[:, 1])
    s_block, _ = timed(lambda: op.matmat(V))
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(
        f"backend={backend} -> {op.backend} build {s_build:.2f}s matvec {s_first:.3f}/"
        f"{s_second:.3f}s matmat10 {s_block:.3f}s peak {peak:.1f}GiB notes={op.backend_notes}",
        flush=True,
    )
    return op.backend, s_second


def eigen_run(wl: Workload, backend: str) -> None:
    from decaylab.curvature.lanczos import eigen
    from decaylab.curvature.operators import HessianOperator

    c._release(CUDA)
    profile = c._ProductTimer(HessianOperator, CUDA)

    def run():
        op = HessianOperator(wl.model, wl.loss_fn, (wl.X, wl.y), backend=backend)
        return op.backend, eigen(op, k=10, tol=1e-3)

    with profile:
        seconds, (chosen, res) = timed(run)
    print(
        f"eigen backend={backend}->{chosen}: {seconds:.2f}s, {res.n_matvecs} products, "
        f"{profile.seconds:.2f}s in {profile.calls} product calls, "
        f"certified {int(res.converged.sum())}/10",
        flush=True,
    )
    print("  eigenvalues", [round(float(x), 2) for x in res.eigenvalues], flush=True)


def curvlinops_run(wl: Workload) -> None:
    from curvlinops import HessianLinearOperator
    from scipy.sparse.linalg import eigsh

    c._release(CUDA)
    params = [p for p in wl.model.parameters() if p.requires_grad]

    def run():
        op = HessianLinearOperator(
            wl.model, wl.loss_fn, params, [(wl.X, wl.y)], check_deterministic=False
        )
        v0 = np.random.default_rng(0).standard_normal(wl.n_params)
        return eigsh(op.to_scipy(), k=10, which="LA", tol=1e-3, v0=v0)

    with c._ColumnCounter(HessianLinearOperator) as counter:
        seconds, (values, _) = timed(run)
    print(
        f"curvlinops+eigsh (check_deterministic=False): {seconds:.2f}s, {counter.count} products",
        flush=True,
    )
    print("  eigenvalues", [round(float(x), 2) for x in sorted(values, reverse=True)], flush=True)


def main() -> None:
    steps = sys.argv[1:] or ["backends", "eigen", "curvlinops"]
    wl = cifar_resnet18(CUDA)
    fastest = ("linearize", float("inf"))
    if "backends" in steps:
        for backend in ("auto", "rev_rev", "linearize", "fwd_rev"):
            try:
                chosen, per_product = backend_costs(wl, backend)
            except Exception as exc:  # report and go on to the next backend
                print(f"backend={backend} FAILED {type(exc).__name__}: {str(exc)[:300]}")
                continue
            if backend != "auto" and per_product < fastest[1]:
                fastest = (chosen, per_product)
    if "eigen" in steps:
        eigen_run(wl, "auto")
    if "eigen" in steps or "eigen_best" in steps:
        eigen_run(wl, fastest[0])
    if "curvlinops" in steps:
        curvlinops_run(wl)


if __name__ == "__main__":
    main()
