"""Top-10 Hessian eigenvalues, side by side in one run: decaylab vs PyHessian, hessian-eigenthings,
curvlinops + scipy eigsh.

Every tool gets the same trained model, the same full batch and the same mean cross-entropy loss
(a single batch, so the per-batch averaging of PyHessian and hessian-eigenthings agrees with the
mean over all samples). Each tool runs ``--repeats`` times, interleaved, and the best time is
reported; absolute seconds on a shared machine are noisy, the ratios are what matter.

For each tool the benchmark records:

- seconds (best of the repeats; operator construction included),
- Hessian-vector products used (counted by wrapping the tool's product where it does not report
  it; products done while building an operator, such as curvlinops' determinism check, count),
- the maximal relative error of the top-10 eigenvalues against the exact answer (digits MLP:
  ``eigh`` of the dense float64 Hessian from ``torch.func``) or against a float64
  ``eigsh(tol=1e-8)`` (MNIST-1D CNN); the ResNet-18 workload has no reference, so its error is
  the relative distance to curvlinops + eigsh (flagged as such),
- what the tool claims about convergence, and an independent check: ``||H q - theta q|| <=
  tol * |theta|`` with our own Hessian-vector product (not counted, not timed).

Usage::

    python benchmarks/curvature.py --out benchmarks/results                  # CPU: MLP + CNN
    python benchmarks/curvature.py --device cuda --out DIR                    # GPU: ResNet-18
    python benchmarks/curvature.py --device cpu --workloads cifar_resnet18 \\
        --resnet-samples 8 --out /tmp/x                                       # CUDA path on CPU
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.func import functional_call, grad, jvp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import release, sync, timed  # noqa: E402
from workloads import (  # noqa: E402
    KERNEL_SETTINGS,
    WORKLOADS,
    Workload,
    kernel_setting,
    workload_from_args,
)

K = 10
TOL = 1e-3
REFERENCE_TOL = 1e-8
ALL_TOOLS = ("decaylab", "curvlinops+eigsh", "hessian-eigenthings", "pyhessian")


# ---------------------------------------------------------------------------------------------
# Our own products: the reference and the independent residual check use these, never a tool's.
# ---------------------------------------------------------------------------------------------


def _flat_loss(wl: Workload, model: torch.nn.Module, X: torch.Tensor) -> Callable:
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for n, p in model.named_parameters() if p.requires_grad]
    sizes = [s.numel() for s in shapes]
    buffers = dict(model.named_buffers())

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(flat, sizes)
        params = {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        return wl.loss_fn(functional_call(model, {**params, **buffers}, (X,)), wl.y)

    return loss_of


def _flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad])


def _flat_objective(
    wl: Workload, dtype: torch.dtype = torch.float32
) -> tuple[Callable, torch.Tensor]:
    """The mean loss as a function of the flat parameters, and those parameters, in ``dtype``."""
    model = wl.model if dtype == torch.float32 else copy.deepcopy(wl.model).to(dtype)
    return _flat_loss(wl, model, wl.X.to(dtype)), _flat_params(model)


def make_hvp(wl: Workload, dtype: torch.dtype = torch.float32) -> Callable:
    """Forward-over-reverse product ``v -> H v`` of the mean loss, in ``dtype``."""
    loss_of, w = _flat_objective(wl, dtype)
    gradient = grad(loss_of)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        return jvp(gradient, (w,), (v.to(dtype),))[1]

    return hvp


def make_cached_hvp64(wl: Workload) -> Callable:
    """Float64 double-backward product with the gradient graph built once and kept.

    For the tight reference only: each product is one backward pass through the retained
    graph, about three times cheaper than forward-over-reverse here.
    """
    loss_of, w = _flat_objective(wl, torch.float64)
    w.requires_grad_(True)
    (gradient,) = torch.autograd.grad(loss_of(w), w, create_graph=True)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        (out,) = torch.autograd.grad(gradient, w, v.to(torch.float64), retain_graph=True)
        return out.detach()

    return hvp


def dense_hessian64(wl: Workload) -> np.ndarray:
    loss_of, w = _flat_objective(wl, torch.float64)
    H = torch.func.jacrev(grad(loss_of), chunk_size=256)(w)
    return (0.5 * (H + H.T)).cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Tools. Each returns (eigenvalues descending, eigenvectors (P, k) or None, products, claims).
# ---------------------------------------------------------------------------------------------


@dataclass
class ToolOutput:
    eigenvalues: np.ndarray
    eigenvectors: torch.Tensor | None
    products: int
    claimed_converged: list[bool] | None  # None: the tool makes no claim per pair
    note: str = ""
    extra: dict = field(default_factory=dict)


def _sorted_desc(values: np.ndarray, vectors: torch.Tensor | None):
    order = np.argsort(-values, kind="stable")
    vecs = None if vectors is None else vectors[:, torch.as_tensor(order.copy())]
    return values[order], vecs, order


def run_decaylab(wl: Workload, seed: int) -> ToolOutput:
    from decaylab.curvature.lanczos import eigen
    from decaylab.curvature.operators import HessianOperator

    device = wl.X.device
    profile = _ProductTimer(HessianOperator, device)
    with profile:
        op = HessianOperator(wl.model, wl.loss_fn, (wl.X, wl.y))
        res = eigen(op, k=K, tol=TOL, seed=seed)
    values = np.asarray(torch.as_tensor(res.eigenvalues).detach().cpu().double())
    vectors = torch.as_tensor(res.eigenvectors).detach()
    conv = np.asarray(torch.as_tensor(res.converged).cpu()).astype(bool)
    values, vectors, order = _sorted_desc(values, vectors)
    return ToolOutput(
        values,
        vectors,
        int(op.n_matvecs),
        [bool(c) for c in conv[order]],
        note=f"eigen n_matvecs={int(res.n_matvecs)}",
        extra={
            "eigen_n_matvecs": int(res.n_matvecs),
            "operator_n_matvecs": int(op.n_matvecs),
            "seconds_in_products": profile.seconds,
            "product_calls": profile.calls,
            "residuals": [float(r) for r in np.asarray(torch.as_tensor(res.residuals).cpu())],
        },
    )


def run_curvlinops(wl: Workload, seed: int) -> ToolOutput:
    from curvlinops import HessianLinearOperator
    from scipy.sparse.linalg import eigsh

    counter = _ColumnCounter(HessianLinearOperator)
    params = [p for p in wl.model.parameters() if p.requires_grad]
    # On the GPU, cuDNN's nondeterministic convolutions make curvlinops' determinism check
    # fail (11 of 11.2 M entries off at rtol 5e-5 on an H200), so it is switched off there.
    check = wl.X.device.type != "cuda"
    with counter:
        op = HessianLinearOperator(
            wl.model, wl.loss_fn, params, [(wl.X, wl.y)], check_deterministic=check
        )
        setup = counter.count
        v0 = np.random.default_rng(seed).standard_normal(op.shape[0])
        values, vectors = eigsh(op.to_scipy(), k=K, which="LA", tol=TOL, v0=v0)
    values, vectors_t, _ = _sorted_desc(values, torch.from_numpy(vectors))
    # eigsh raises ArpackNoConvergence rather than return unconverged pairs.
    return ToolOutput(
        values,
        vectors_t.float(),
        counter.count,
        [True] * K,
        note=(
            f"{setup} of the products in the operator's determinism check"
            if check
            else "determinism check off (fails on cuDNN)"
        ),
        extra={"setup_products": setup},
    )


def run_eigenthings(wl: Workload, seed: int) -> ToolOutput:
    from hessian_eigenthings import HessianOperator, lanczos, supervised_loss

    op = HessianOperator(wl.model, [(wl.X, wl.y)], supervised_loss(wl.loss_fn))
    count = [0]
    matvec = op.matvec

    def counted(v: torch.Tensor) -> torch.Tensor:
        count[0] += 1
        return matvec(v)

    op.matvec = counted  # type: ignore[method-assign]
    res = lanczos(op, k=K, seed=seed)  # its defaults: max_iter=2k, tol=1e-4, which="LM"
    values = res.eigenvalues.detach().cpu().double().numpy()
    vectors = res.eigenvectors.detach().T
    values, vectors, order = _sorted_desc(values, vectors)
    conv = res.converged.cpu().numpy()[order]
    return ToolOutput(
        values,
        vectors,
        count[0],
        [bool(c) for c in conv],
        note=f"lanczos defaults: {res.iterations} steps, tol=1e-4, which=LM",
    )


def run_pyhessian(wl: Workload, seed: int) -> ToolOutput:
    # ``pyhessian.hessian`` is shadowed by the class of that name in the package namespace.
    ph = importlib.import_module("pyhessian.hessian")

    count = [0]
    original = ph.hessian_vector_product

    def counted(gradsH, params, v):
        count[0] += 1
        return original(gradsH, params, v)

    ph.hessian_vector_product = counted
    try:
        torch.manual_seed(seed)
        h = ph.hessian(wl.model, wl.loss_fn, data=(wl.X, wl.y), cuda=wl.X.is_cuda)
        values, vectors = h.eigenvalues(top_n=K)  # defaults: maxIter=100, tol=1e-3
        flat = torch.stack([torch.cat([t.reshape(-1) for t in v]) for v in vectors], dim=1)
        del h
    finally:
        ph.hessian_vector_product = original
        # PyHessian leaves a create_graph gradient in .grad.
        wl.model.zero_grad(set_to_none=True)
    values, flat, _ = _sorted_desc(np.asarray(values, dtype=np.float64), flat.detach())
    return ToolOutput(values, flat, count[0], None, note="power iteration with deflation")


TOOL_RUNNERS: dict[str, Callable[[Workload, int], ToolOutput]] = {
    "decaylab": run_decaylab,
    "curvlinops+eigsh": run_curvlinops,
    "hessian-eigenthings": run_eigenthings,
    "pyhessian": run_pyhessian,
}


class _ColumnCounter:
    """Counts curvlinops' per-batch product columns by wrapping ``_matmat_batch`` on the class."""

    def __init__(self, cls: type) -> None:
        self.cls, self.count = cls, 0

    def __enter__(self):
        original = self.original = self.cls._matmat_batch
        counter = self

        def counted(op, X, y, M):
            counter.count += int(M[0].shape[-1])
            return original(op, X, y, M)

        self.cls._matmat_batch = counted
        return self

    def __exit__(self, *exc):
        self.cls._matmat_batch = self.original


class _ProductTimer:
    """Seconds spent inside an operator's products (``__matmul__``, ``matmat``, ``matvec``).

    Patches the class for the duration; a product calling another product is timed once.
    """

    METHODS = ("__matmul__", "matmat", "matvec")

    def __init__(self, cls: type, device: torch.device) -> None:
        self.cls, self.device = cls, device
        self.seconds, self.calls, self._depth, self._saved = 0.0, 0, 0, {}

    def _wrap(self, method: Callable) -> Callable:
        timer = self

        def timed(*args, **kwargs):
            if timer._depth:
                return method(*args, **kwargs)
            timer._depth += 1
            try:
                sync(timer.device)
                start = time.perf_counter()
                out = method(*args, **kwargs)
                sync(timer.device)
                timer.seconds += time.perf_counter() - start
                timer.calls += 1
                return out
            finally:
                timer._depth -= 1

        return timed

    def __enter__(self):
        for name in self.METHODS:
            method = getattr(self.cls, name, None)
            if callable(method):
                self._saved[name] = vars(self.cls).get(name)
                setattr(self.cls, name, self._wrap(method))
        return self

    def __exit__(self, *exc):
        for name, own in self._saved.items():
            if own is None:  # inherited: drop the wrapper, the base class method shows again
                delattr(self.cls, name)
            else:
                setattr(self.cls, name, own)


# ---------------------------------------------------------------------------------------------
# Reference, checks and the run.
# ---------------------------------------------------------------------------------------------


def reference_eigenvalues(wl: Workload, seed: int) -> dict:
    device = wl.X.device
    if wl.n_params <= 10_000:
        seconds, H = timed(lambda: dense_hessian64(wl), device)
        values = np.linalg.eigvalsh(H)[::-1][:K].copy()
        return {
            "kind": "exact: eigh of the dense float64 Hessian (torch.func)",
            "eigenvalues": values.tolist(),
            "seconds": seconds,
        }
    if wl.name == "mnist1d_cnn":
        from scipy.sparse.linalg import LinearOperator, eigsh

        hvp = make_cached_hvp64(wl)
        count = [0]

        def matvec(v: np.ndarray) -> np.ndarray:
            count[0] += 1
            tv = torch.from_numpy(np.ascontiguousarray(v).reshape(-1)).to(device)
            return hvp(tv).cpu().numpy()

        P = wl.n_params
        A = LinearOperator((P, P), matvec=matvec, dtype=np.float64)
        v0 = np.random.default_rng(seed + 1).standard_normal(P)

        def solve():
            return eigsh(A, k=K, which="LA", tol=REFERENCE_TOL, v0=v0, ncv=40)

        seconds, (values, _) = timed(solve, device)
        return {
            "kind": f"float64 eigsh(tol={REFERENCE_TOL:g}, which='LA'), double-backward products",
            "eigenvalues": np.sort(values)[::-1].tolist(),
            "seconds": seconds,
            "products": count[0],
        }
    return {"kind": "none (relative errors are against curvlinops + eigsh)", "eigenvalues": None}


def residual_check(hvp: Callable, out: ToolOutput, device: torch.device) -> dict:
    """Independent ``||H q - theta q|| / |theta|`` for each returned pair, with our own product."""
    if out.eigenvectors is None:
        return {}
    rel = []
    for i, theta in enumerate(out.eigenvalues):
        q = out.eigenvectors[:, i].to(device=device, dtype=torch.float32)
        q = q / q.norm()
        r = hvp(q) - float(theta) * q
        rel.append(float(r.norm()) / max(abs(float(theta)), 1e-30))
    return {
        "rel_residuals": rel,
        "max_rel_residual": max(rel),
        "n_within_tol": int(sum(r <= TOL for r in rel)),
    }


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    for name, module in (
        ("pyhessian", "pyhessian"),
        ("hessian-eigenthings", "hessian_eigenthings"),
        ("curvlinops", "curvlinops"),
        ("scipy", "scipy"),
    ):
        info[name] = _version(name, module)
    return info


def _version(dist: str, module: str) -> str | None:
    from importlib import metadata

    for candidate in (dist, f"{dist}-for-pytorch", module):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(candidate)
    return None


def unit_costs(wl: Workload, hvp: Callable, repeats: int = 3) -> dict:
    device = wl.X.device
    loss_of, w = _flat_objective(wl)
    gradient = grad(loss_of)
    v = torch.randn(w.shape, generator=torch.Generator().manual_seed(0)).to(device)
    g_s = min(timed(lambda: gradient(w), device)[0] for _ in range(repeats))
    h_s = min(timed(lambda: hvp(v), device)[0] for _ in range(repeats))
    return {"gradient_s": g_s, "hvp_forward_over_reverse_s": h_s}


def bench_workload(
    wl: Workload, tools: list[str], repeats: int, seed: int, log: Callable[[str], None]
) -> dict:
    device = wl.X.device
    log(f"[{wl.name}] {wl.n_params:,} parameters, {wl.n_samples} samples, acc {wl.train_accuracy}")
    hvp = make_hvp(wl)
    costs = unit_costs(wl, hvp)
    log(f"[{wl.name}] unit costs {costs}")
    ref = reference_eigenvalues(wl, seed)
    log(f"[{wl.name}] reference: {ref.get('kind')} in {ref.get('seconds', 0):.1f} s")

    runs: dict[str, dict] = {t: {"seconds_all": []} for t in tools}
    for rep in range(repeats):
        # Rotate the order so no tool always runs first (cold caches) or last.
        order = tools[rep % len(tools) :] + tools[: rep % len(tools)]
        for tool in order:
            if runs[tool].get("error"):
                continue
            release(device)
            try:
                seconds, out = timed(lambda tool=tool: TOOL_RUNNERS[tool](wl, seed), device)
            except Exception as exc:  # a failing tool is reported, the run goes on
                runs[tool]["error"] = f"{type(exc).__name__}: {exc}"
                runs[tool]["traceback"] = traceback.format_exc(limit=6)
                log(f"[{wl.name}] {tool} FAILED: {runs[tool]['error']}")
                continue
            runs[tool]["seconds_all"].append(seconds)
            if seconds <= min(runs[tool]["seconds_all"]):  # keep the best run's details
                runs[tool]["output"] = out
                if device.type == "cuda":
                    runs[tool]["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            log(f"[{wl.name}] {tool} run {rep + 1}: {seconds:.2f} s, {out.products} products")

    ref_values = ref["eigenvalues"]
    if ref_values is None and "output" in runs.get("curvlinops+eigsh", {}):
        ref_values = runs["curvlinops+eigsh"]["output"].eigenvalues.tolist()
    results = []
    for tool in tools:
        entry: dict = {"tool": tool}
        run = runs[tool]
        if "output" not in run:
            entry["error"] = run.get("error", "did not run")
            entry["traceback"] = run.get("traceback")
            results.append(entry)
            continue
        out: ToolOutput = run["output"]
        entry.update(
            seconds=min(run["seconds_all"]),
            seconds_all=run["seconds_all"],
            products=out.products,
            eigenvalues=out.eigenvalues.tolist(),
            claimed_converged=out.claimed_converged,
            note=out.note,
            peak_gpu_memory_gib=run.get("peak_gib"),
            **out.extra,
        )
        if ref_values is not None and len(out.eigenvalues) == K:
            ref_arr = np.asarray(ref_values)
            entry["rel_errors"] = (np.abs(out.eigenvalues - ref_arr) / np.abs(ref_arr)).tolist()
            entry["max_rel_error"] = max(entry["rel_errors"])
        entry["residual_check"] = residual_check(hvp, out, device)
        results.append(entry)
        del run["output"]
    base = next((r for r in results if r["tool"] == "decaylab" and "seconds" in r), None)
    for r in results:
        if base and "seconds" in r:
            r["ratio_to_decaylab"] = r["seconds"] / base["seconds"]
    return {
        "workload": wl.name,
        "description": wl.description,
        "n_params": wl.n_params,
        "n_samples": wl.n_samples,
        "train_accuracy": wl.train_accuracy,
        "notes": wl.notes,
        "unit_costs": costs,
        "reference": ref,
        "k": K,
        "tol": TOL,
        "repeats": repeats,
        "results": results,
    }


# ---------------------------------------------------------------------------------------------
# Output.
# ---------------------------------------------------------------------------------------------


def _claims(r: dict) -> str:
    claims = r.get("claimed_converged")
    check = r.get("residual_check") or {}
    checked = f"{check['n_within_tol']}/{K} pass" if check else "n/a"
    if claims is None:
        said = "no flag"
    else:
        said = f"{sum(claims)}/{len(claims)} flagged"
    return f"{said}; residual check {checked}"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Curvature benchmark: top-{K} Hessian eigenvalues",
        "",
        f"Machine: {m.get('gpu') or m['cpu']} ({m['device']}); CPU {m['cpu']}, "
        f"{m['logical_cores']} logical cores, torch {m['torch']} ({m['torch_threads']} threads); "
        f"scipy {m['scipy']}, curvlinops {m['curvlinops']}, hessian-eigenthings "
        f"{m['hessian-eigenthings']}, PyHessian {m['pyhessian']}.",
        f"Command: `{report['command']}`",
        "",
        f"k = {K}, tol = {TOL:g} for decaylab and eigsh; best of the repeats; seconds include "
        "building the operator. 'certified' = the tool's own per-pair flags, then our "
        f"independent check `||Hq - θq|| ≤ {TOL:g}·|θ|` with a separate product.",
    ]
    for w in report["workloads"]:
        ref = w["reference"]
        c = w["unit_costs"]
        lines += [
            "",
            f"## {w['workload']}: {w['n_params']:,} parameters, {w['n_samples']:,} samples",
            "",
            f"{w['description']} (train accuracy {w['train_accuracy']:.3f}). "
            f"One gradient {c['gradient_s']:.3f} s, one forward-over-reverse HVP "
            f"{c['hvp_forward_over_reverse_s']:.3f} s. Reference: {ref['kind']}"
            + (f", {ref['seconds']:.1f} s" if ref.get("seconds") else "")
            + f". {w['repeats']} runs per tool.",
            "",
            "| tool | seconds | ratio to decaylab | products | max rel. error | certified? |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in w["results"]:
            if "seconds" not in r:
                lines.append(f"| {r['tool']} | failed: {r['error'][:80]} | | | | |")
                continue
            err = r.get("max_rel_error")
            ratio = r.get("ratio_to_decaylab", float("nan"))
            lines.append(
                f"| {r['tool']} | {r['seconds']:.2f} | {ratio:.2f}"
                f" | {r['products']} | {'n/a' if err is None else f'{err:.2e}'} | {_claims(r)} |"
            )
        if ref.get("eigenvalues"):
            vals = ", ".join(f"{v:.4g}" for v in ref["eigenvalues"])
            lines += ["", f"Reference top-{K}: {vals}."]
        for r in w["results"]:
            if r["tool"] == "decaylab" and "seconds_in_products" in r:
                lines += [
                    "",
                    f"decaylab profile: {r['seconds_in_products']:.2f} s of {r['seconds']:.2f} s "
                    f"inside {r['product_calls']} operator calls ({r['products']} products; "
                    f"{r['seconds_in_products'] / max(r['products'], 1):.3f} s per product).",
                ]
    return "\n".join(lines) + "\n"


def main(out_dir: str | Path = "benchmarks/results", argv: list[str] | None = None) -> dict:
    global K
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(out_dir))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workloads", nargs="+", choices=sorted(WORKLOADS))
    parser.add_argument("--tools", nargs="+", choices=ALL_TOOLS, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, default=K, help="eigenpairs (10; smaller for smoke tests)")
    parser.add_argument("--resnet-samples", type=int, default=2048)
    parser.add_argument(
        "--resnet-width", type=int, default=64, help="64: ResNet-18; 16: a CPU-sized stand-in"
    )
    parser.add_argument("--resnet-image-size", type=int, default=32, help="32: CIFAR-shaped")
    parser.add_argument(
        "--kernel-setting",
        choices=KERNEL_SETTINGS,
        default="default",
        help="cuDNN autotuning and/or channels_last for every tool (benchmarks/gpu_diagnose.py)",
    )
    parser.add_argument("--tag", default=None, help="file name suffix (default: the device type)")
    args = parser.parse_args([] if argv is None else argv)
    K = args.k

    device = torch.device(args.device)
    workloads = args.workloads or (
        ["cifar_resnet18"] if device.type == "cuda" else ["digits_mlp", "mnist1d_cnn"]
    )
    repeats = args.repeats or (2 if device.type == "cuda" else 3)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    report = {
        "benchmark": "curvature",
        "command": "python benchmarks/curvature.py " + " ".join(argv or []),
        "machine": machine_info(device),
        "workloads": [],
    }
    for name in workloads:
        wl = workload_from_args(name, args, device)
        tools = list(args.tools or ALL_TOOLS)
        if name == "cifar_resnet18" and args.tools is None:
            # PyHessian needs ~115 s here on an H200 (issue 3); its anchor is quoted instead.
            tools = [t for t in tools if t != "pyhessian"]
        with kernel_setting(args.kernel_setting, wl) as view:
            report["workloads"].append(bench_workload(view, tools, repeats, args.seed, log))
        del wl
        release(device)

    tag = args.tag or device.type
    (out / f"curvature_{tag}.json").write_text(json.dumps(report, indent=2, default=_jsonable))
    text = markdown(report)
    (out / f"curvature_{tag}.md").write_text(text)
    print(text)
    return report


def _jsonable(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    return str(obj)


if __name__ == "__main__":
    main(argv=sys.argv[1:])
