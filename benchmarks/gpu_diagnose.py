"""Where the ResNet-18 eigen time goes on a GPU: product cost per backend and kernel setting.

Issue 3 asks for the top-10 Hessian eigenpairs of the CIFAR ResNet-18 (2,048 inputs) in
at most 6 s on an H200. The time is (products) x (seconds per product) + the rest. The
product count is fixed by the spectrum and the tolerance (53-68 here, as for ARPACK), so
this script measures the other factor under each kernel setting a user can choose:

- ``default``: PyTorch's defaults (cuDNN autotuning off, NCHW tensors);
- ``cudnn_benchmark``: ``torch.backends.cudnn.benchmark = True`` (cuDNN times its
  convolution algorithms once per shape and keeps the fastest);
- ``channels_last``: model and inputs in ``torch.channels_last`` memory format (NHWC,
  what tensor-core convolutions prefer);
- ``both``;
- ``bn_affine``: PyTorch's defaults, but the model's eval-mode BatchNorm layers written as
  the affine maps they are (``workloads.with_affine_batchnorm``; the same function, so the
  same Hessian): BatchNorm's double backward is known to be slow on CUDA
  (pytorch/pytorch#3076), and the cached double-backward product cost 4.6 gradients on the
  H200.

For each setting: one gradient of the mean loss and, for each ``HessianOperator`` backend,
the construction time, the first and the best of two further single products, and the
peak memory of one product, each relative to the gradient; under the first setting also the
operators that take most of one product's time (``torch.profiler``). Then ``eigen(k=10, tol=1e-3)``
with ``backend="auto"`` under the setting with the cheapest product.

One prepared run on a CUDA machine (see ``gpu_curvature.sh``)::

    PYTHONPATH=src python3 benchmarks/gpu_diagnose.py [--settings ...] [--skip-eigen]

A dry run on the CPU exercises the same code on a small stand-in::

    python benchmarks/gpu_diagnose.py --device cpu --width 4 --image-size 8 --samples 32

Not run by ``run_all.py``. Results of the earlier H200 run: ``results/gpu_diagnose_h200.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import release, sync, timed  # noqa: E402
from workloads import (  # noqa: E402
    KERNEL_SETTINGS,
    Workload,
    cifar_resnet18,
    kernel_setting,
    with_affine_batchnorm,
)

#: The kernel settings, plus the model with its (eval-mode) BatchNorm layers written as
#: elementary affine maps, under PyTorch's defaults.
SETTINGS = (*KERNEL_SETTINGS, "bn_affine")


@contextlib.contextmanager
def setting_context(name: str, wl: Workload) -> Iterator[Workload]:
    if name != "bn_affine":
        with kernel_setting(name, wl) as view:
            yield view
        return
    yield replace(wl, model=with_affine_batchnorm(wl.model), notes=[*wl.notes, "bn_affine"])


BACKENDS = ("rev_rev", "fwd_rev", "linearize")


def _peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def gradient_seconds(wl: Workload, device: torch.device, repeats: int = 3) -> float:
    params = [p for p in wl.model.parameters() if p.requires_grad]

    def one() -> None:
        loss = wl.loss_fn(wl.model(wl.X), wl.y)
        torch.autograd.grad(loss, params)

    one()  # warm-up (cuDNN autotuning happens here when it is on)
    return min(timed(one, device)[0] for _ in range(repeats))


def top_kernels(fn: Callable, device: torch.device, rows: int = 12) -> list[dict]:
    """The operators that took the most device (else CPU) time in one call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    key = "device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)
    return [
        {"name": e.key, "calls": e.count, "ms": getattr(e, key, 0.0) / 1e3} for e in events[:rows]
    ]


def backend_costs(
    wl: Workload, backend: str, device: torch.device, profile_product: bool = False
) -> dict:
    from decaylab.curvature.operators import HessianOperator

    release(device)
    V = torch.randn(wl.n_params, 3, device=device)
    s_build, op = timed(
        lambda: HessianOperator(wl.model, wl.loss_fn, (wl.X, wl.y), backend=backend), device
    )
    seconds = []
    peak = None
    for j in range(3):
        if j == 1:
            release(device)  # the peak of one product, not of construction
        seconds.append(timed(partial(op.matvec, V[:, j]), device)[0])
        if j == 1:
            peak = _peak_gib(device)
    s_first, s_second, s_third = seconds
    costs = {
        "build_s": s_build,
        "first_s": s_first,
        "product_s": min(s_second, s_third),
        "peak_gib_one_product": peak,
    }
    if profile_product:  # where one product's time goes, operator by operator
        costs["top_kernels"] = top_kernels(partial(op.matvec, V[:, 0]), device)
    return costs


def eigen_run(wl: Workload, device: torch.device, backend: str = "auto") -> dict:
    from decaylab.curvature.lanczos import eigen
    from decaylab.curvature.operators import HessianOperator

    release(device)

    def run():
        op = HessianOperator(wl.model, wl.loss_fn, (wl.X, wl.y), backend=backend)
        return op, eigen(op, k=10, tol=1e-3)

    seconds, (op, res) = timed(run, device)
    return {
        "seconds": seconds,
        "backend": op.backend,
        "backend_notes": list(op.backend_notes),
        "n_matvecs": res.n_matvecs,
        "certified": int(res.converged.sum()),
        "eigenvalues": [float(x) for x in res.eigenvalues],
        "peak_gib": _peak_gib(device),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--skip-eigen", action="store_true")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    wl = cifar_resnet18(
        device, n_samples=args.samples, width=args.width, image_size=args.image_size
    )
    report: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "workload": wl.description,
        "n_params": wl.n_params,
        "settings": {},
    }
    print(f"# {report['device']}, torch {torch.__version__}, {wl.n_params} parameters", flush=True)
    best = ("default", "auto", float("inf"))
    for setting in args.settings:
        with setting_context(setting, wl) as view:
            entry: dict = {"gradient_s": gradient_seconds(view, device), "backends": {}}
            for backend in args.backends:
                try:
                    costs = backend_costs(view, backend, device, setting == args.settings[0])
                except Exception as exc:  # report and go on (e.g. out of memory)
                    costs = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                    release(device)
                else:
                    costs["per_gradient"] = costs["product_s"] / entry["gradient_s"]
                    if costs["product_s"] < best[2]:
                        best = (setting, backend, costs["product_s"])
                entry["backends"][backend] = costs
                kernels = costs.pop("top_kernels", [])
                print(
                    f"{setting:16s} gradient {entry['gradient_s']:.3f}s  {backend:9s} {costs}",
                    flush=True,
                )
                for row in kernels:
                    print(f"    {row['ms']:9.2f} ms  {row['calls']:5d}x  {row['name']}", flush=True)
                if kernels:
                    costs["top_kernels"] = kernels
        report["settings"][setting] = entry
    report["cheapest_product"] = {"setting": best[0], "backend": best[1], "seconds": best[2]}
    if not args.skip_eigen:
        with setting_context(best[0], wl) as view:
            for key, backend in (("eigen_auto", "auto"), ("eigen_cheapest", best[1])):
                if key == "eigen_cheapest" and backend == report["eigen_auto"].get("backend"):
                    break
                try:
                    report[key] = eigen_run(view, device, backend)
                except Exception as exc:  # e.g. out of memory with linearize's cache
                    error = f"{type(exc).__name__}: {exc}"[:300]
                    report[key] = {"backend": backend, "error": error}
                    release(device)
                print(f"eigen under {best[0]}, backend {backend}: {report[key]}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
