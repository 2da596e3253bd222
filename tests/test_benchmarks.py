"""Smoke tests of the benchmark scripts on a tiny ResNet, so their GPU code path runs in CI.

``benchmarks/curvature.py --device cuda`` benchmarks the CIFAR ResNet-18; here the same code
runs on CPU on a width-4 ResNet-18 with 8x8 inputs (44,622 parameters, 16 samples). Only
decaylab is run: curvlinops, PyHessian and hessian-eigenthings are installed by ``make bench``,
not in the dev environment.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY_RESNET = [
    "--workloads",
    "cifar_resnet18",
    "--resnet-width",
    "4",
    "--resnet-image-size",
    "8",
    "--resnet-samples",
    "16",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def bench_path():
    sys.path.insert(0, str(BENCHMARKS))
    yield
    sys.path.remove(str(BENCHMARKS))


def test_curvature_benchmark_runs_on_a_tiny_resnet(bench_path, tmp_path):
    import curvature

    k = 2
    argv = TINY_RESNET + ["--tools", "decaylab", "--k", str(k), "--repeats", "1"]
    # The GPU run's tuned pass (cuDNN autotuning, channels_last inputs) takes this path too.
    argv += ["--kernel-setting", "both"]
    curvature.main(tmp_path, argv=argv + ["--out", str(tmp_path)])

    report = json.loads((tmp_path / "curvature_cpu.json").read_text())
    assert (tmp_path / "curvature_cpu.md").exists()
    (workload,) = report["workloads"]
    assert workload["workload"] == "cifar_resnet18"
    # Width 4 scales every ResNet-18 channel count by 1/16: the model really was shrunk.
    assert workload["n_params"] == 44_622
    assert workload["n_samples"] == 16
    assert "kernel setting: both" in workload["notes"]
    assert torch.backends.cudnn.benchmark is False  # restored afterwards
    (result,) = workload["results"]
    assert result["tool"] == "decaylab"
    assert "error" not in result, result.get("traceback")
    assert len(result["eigenvalues"]) == k
    assert result["eigenvalues"] == sorted(result["eigenvalues"], reverse=True)
    assert result["claimed_converged"] == [True] * k
    # The benchmark's own check, with a product that is not decaylab's. decaylab stops as
    # soon as its bound crosses tol (here at 0.98 tol), and the check's float32 product has
    # rounding of its own, so it is allowed 5 % beyond tol.
    check = result["residual_check"]
    assert check["max_rel_residual"] <= 1.05 * workload["tol"]


def test_hvp_backends_benchmark_runs_on_a_tiny_resnet(bench_path, tmp_path):
    import hvp_backends

    argv = TINY_RESNET + ["--repeats", "1", "--block", "2", "--block-repeats", "1"]
    report = hvp_backends.main(tmp_path, argv=argv + ["--out", str(tmp_path)])

    saved = json.loads((tmp_path / "hvp_backends_cpu.json").read_text())
    assert (tmp_path / "hvp_backends_cpu.md").exists()
    (workload,) = saved["workloads"]
    assert workload["n_params"] == 44_622
    wanted = {(kind, backend) for kind, backend, _ in hvp_backends.CONFIGS}
    assert {(r["operator"], r["backend"].split()[0]) for r in workload["rows"]} == wanted
    assert len(workload["rows"]) == len(hvp_backends.CONFIGS)
    timed = (
        "build_s",
        "first_product_s",
        "product_s",
        "block_column_s",
        "product_over_gradient",
        "block_column_over_gradient",
    )
    for row in workload["rows"]:
        assert "error" not in row, row.get("traceback")
        # No silent fallback: the backend timed is the one asked for.
        if row["backend"] == "auto":
            assert row["backend_in_use"] in {"rev_rev", "fwd_rev", "linearize"}
        else:
            assert row["backend_in_use"] == row["backend"].split()[0]
        for key in timed:
            assert math.isfinite(row[key]) and row[key] > 0, (row["backend"], key)
        assert row["rel_diff_to_autograd"] < 1e-4

    # Every backend's product of the same vector, compared with each other.
    products = report["products"]["cifar_resnet18"]
    assert len(products) == len(hvp_backends.CONFIGS)
    for kind in ("Hessian", "GGN"):
        same_kind = [p for name, p in products.items() if name.split()[0] == kind]
        assert len(same_kind) >= 3
        first = same_kind[0]
        for other in same_kind[1:]:
            assert float((other - first).norm() / first.norm()) < 1e-5
    hessian = products["Hessian rev_rev"]
    ggn = products["GGN rev_rev"]
    # An independent check of the vectors: the float64 forward-over-reverse product of the
    # same trained model (workloads are deterministic) on the same vector.
    from workloads import cifar_resnet18

    wl = cifar_resnet18(device="cpu", seed=0, n_samples=16, width=4, image_size=8)
    names = [n for n, _ in wl.model.named_parameters()]
    model64 = wl.model.double()
    buffers = dict(model64.named_buffers())
    sizes = [p.numel() for p in model64.parameters()]
    shapes = [p.shape for p in model64.parameters()]

    def loss(w: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in zip(names, w.split(sizes), shapes, strict=True)}
        out = torch.func.functional_call(model64, {**params, **buffers}, (wl.X.double(),))
        return torch.nn.functional.cross_entropy(out, wl.y)

    w0 = torch.cat([p.detach().reshape(-1) for p in model64.parameters()])
    v = torch.randn(w0.numel(), generator=torch.Generator().manual_seed(0)).double()
    _, hv64 = torch.func.jvp(torch.func.grad(loss), (w0,), (v,))
    assert float((hessian.double() - hv64).norm() / hv64.norm()) < 1e-4
    # The GGN is positive semi-definite: vᵀ G v ≥ 0 (and differs from the Hessian here).
    assert float(v @ ggn.double()) > 0


@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile on CPU needs a C++ compiler",
)
def test_hvp_backends_times_a_compiled_product(bench_path, tmp_path):
    """``--compile`` times torch.compile of a torch.func product and checks its answer."""
    import hvp_backends

    argv = ["--workloads", "digits_mlp", "--repeats", "1", "--block", "2"]
    argv += ["--block-repeats", "1", "--compile", "--out", str(tmp_path)]
    torch._dynamo.reset()
    hvp_backends.main(tmp_path, argv=argv)

    (workload,) = json.loads((tmp_path / "hvp_backends_cpu.json").read_text())["workloads"]
    compiled = workload["compiled_fwd_rev"]
    assert "error" not in compiled, compiled["error"]
    # Compiling costs far more than one product (it traces, lowers and generates code).
    assert compiled["compile_s"] > 10 * compiled["product_s"] > 0
    assert compiled["rel_diff_to_autograd"] < 1e-4
    assert "torch.compile" in (tmp_path / "hvp_backends_cpu.md").read_text()


def test_affine_batchnorm_twin_has_the_same_hessian(bench_path):
    """The GPU diagnosis swaps eval-mode BatchNorm for its affine map: same function, same H."""
    import workloads
    from decaylab.curvature import HessianOperator

    wl = workloads.cifar_resnet18(n_samples=8, width=4, image_size=8, epochs=1)
    twin = workloads.with_affine_batchnorm(wl.model)
    assert [n for n, _ in twin.named_parameters()] == [n for n, _ in wl.model.named_parameters()]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in twin.modules())
    v = torch.randn(wl.n_params, generator=torch.Generator().manual_seed(0))
    products = [
        HessianOperator(model, wl.loss_fn, (wl.X, wl.y), backend="rev_rev", dtype=torch.float64) @ v
        for model in (wl.model, twin)
    ]
    assert torch.allclose(products[0], products[1], rtol=0, atol=1e-10 * products[0].abs().max())
    with pytest.raises(ValueError, match="eval mode"):
        workloads.with_affine_batchnorm(wl.model.train())
