"""Cost of one curvature-vector product per backend, relative to one gradient.

Workloads come from ``benchmarks/workloads.py`` (the same trained models and data as
``benchmarks/curvature.py``): the digits MLP (4,810 parameters), the MNIST-1D CNN (85,930
parameters, 5,000 samples generated offline) and the CIFAR-style ResNet-18, here by default
as a CPU-sized stand-in (width 16 on 16x16 inputs, 701,466 parameters, 512 samples; the same
code as the 11.2 M-parameter network, which ``--resnet-width 64 --resnet-image-size 32
--resnet-samples 2048`` gives back).

For each workload and each backend of ``HessianOperator`` (``rev_rev``, its uncached variant,
``fwd_rev``, ``linearize``) and of ``GGNOperator`` (``linearize``, ``rev_rev``, ``fwd_rev``),
plus each operator's ``"auto"`` (its choice recorded as ``backend_in_use``, its probing in
``build_s``), it records

- ``build_s``: constructing the operator (the per-batch primal/gradient passes and tracing);
- ``first_product_s``: the first product after construction (lazy work shows up here);
- ``product_s``: the best of ``--repeats`` products;
- ``block_column_s``: the best time of a ``--block``-column ``matmat``, divided by the columns;
- ``product_over_gradient`` and ``block_column_over_gradient``: the median over back-to-back
  pairs of (product time / gradient time), the gradient being one ``torch.autograd.grad`` of
  the mean loss over all the data; pairing keeps the ratio meaningful on a machine whose load
  changes from second to second;
- ``rel_diff_to_autograd``: ``||op v - r|| / ||r||`` for the first product, ``r`` computed
  independently of decaylab (Hessian: double backward of the full-data mean loss with
  ``torch.autograd``; GGN: ``Jᵀ H_f J v`` with ``torch.func``), so a fast but wrong backend
  shows.

With ``--compile`` it also times ``torch.compile`` of a plain ``torch.func``
forward-over-reverse product (compile seconds, per-product seconds, speed-up over the same
product eager, and after how many products the compile time is paid back).

Usage::

    .venv/bin/python benchmarks/hvp_backends.py --out benchmarks/results       # CPU, all three
    .venv/bin/python benchmarks/hvp_backends.py --device cuda --resnet-width 64 \\
        --resnet-image-size 32 --resnet-samples 2048 --workloads cifar_resnet18 --out DIR

Writes ``hvp_backends_<tag>.json`` and ``hvp_backends_<tag>.md`` (tag: the device type).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from torch.func import functional_call, jvp, vjp

from decaylab.curvature.operators import GGNOperator, HessianOperator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import release, timed  # noqa: E402
from curvature import machine_info, make_hvp  # noqa: E402
from workloads import WORKLOADS, Workload, workload_from_args  # noqa: E402

#: (operator, backend, extra constructor arguments) in the order they run.
CONFIGS: tuple[tuple[str, str, dict], ...] = (
    ("Hessian", "rev_rev", {}),
    ("Hessian", "rev_rev", {"max_cached_batches": 0}),
    ("Hessian", "fwd_rev", {}),
    ("Hessian", "linearize", {}),
    ("Hessian", "auto", {}),
    ("GGN", "linearize", {}),
    ("GGN", "rev_rev", {}),
    ("GGN", "fwd_rev", {}),
    ("GGN", "auto", {}),
)
OPERATORS = {"Hessian": HessianOperator, "GGN": GGNOperator}


def paired(
    fn: Callable[[], object],
    reference: Callable[[], object],
    repeats: int,
    device: torch.device,
    reference_times: list[float],
) -> tuple[float, float]:
    """Median of ``time(fn) / time(reference)`` over back-to-back pairs, and the best ``fn`` time.

    Every reference time is appended to ``reference_times``.
    """
    ratios, best = [], float("inf")
    for _ in range(repeats):
        t_ref, _ = timed(reference, device)
        t_fn, _ = timed(fn, device)
        reference_times.append(t_ref)
        ratios.append(t_fn / t_ref)
        best = min(best, t_fn)
    ratios.sort()
    return ratios[len(ratios) // 2], best


# -------------------------------------------------------------------------------------------
# Independent products (torch only, no decaylab) to check every backend's answer.
# -------------------------------------------------------------------------------------------


def _trainable(wl: Workload) -> tuple[list[str], list[torch.Tensor]]:
    named = [(n, p) for n, p in wl.model.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


def autograd_hvp(wl: Workload, v: torch.Tensor) -> torch.Tensor:
    """``H v`` of the full-data mean loss by double backward through one batch of everything."""
    _, params = _trainable(wl)
    loss = wl.loss_fn(wl.model(wl.X), wl.y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    pieces = torch.split(v, [p.numel() for p in params])
    dot = sum((g * u.view_as(g)).sum() for g, u in zip(grads, pieces, strict=True))
    out = torch.autograd.grad(dot, params)
    return torch.cat([t.reshape(-1) for t in out]).detach()


def func_ggn_vp(wl: Workload, v: torch.Tensor) -> torch.Tensor:
    """``Jᵀ (∇²_f L) J v`` of the full-data mean loss with ``torch.func`` (jvp, hvp, vjp)."""
    names, params = _trainable(wl)
    frozen = [(n, p.detach()) for n, p in wl.model.named_parameters() if not p.requires_grad]
    others = dict(frozen + list(wl.model.named_buffers()))
    primals = tuple(p.detach() for p in params)
    pieces = torch.split(v, [p.numel() for p in params])
    tangents = tuple(u.view_as(p) for u, p in zip(pieces, params, strict=True))

    def output(*ws: torch.Tensor) -> torch.Tensor:
        return functional_call(wl.model, {**dict(zip(names, ws, strict=True)), **others}, (wl.X,))

    f0, Jv = jvp(output, primals, tangents)

    def loss_grad(f: torch.Tensor) -> torch.Tensor:
        return torch.func.grad(lambda g: wl.loss_fn(g, wl.y))(f)

    _, HJv = jvp(loss_grad, (f0,), (Jv,))
    _, pullback = vjp(output, *primals)
    return torch.cat([t.reshape(-1) for t in pullback(HJv)]).detach()


def compiled_product_costs(
    wl: Workload,
    v: torch.Tensor,
    ref: torch.Tensor,
    repeats: int,
    gradient: Callable[[], object],
    grad_times: list,
) -> dict:
    """Forward-over-reverse ``H v`` written with ``torch.func`` and put through ``torch.compile``.

    Independent of decaylab: it asks whether compiling the product is worth its compile time.
    ``compile_s`` is the first call (tracing, lowering and code generation); ``ref`` is the
    independent ``H v`` (:func:`autograd_hvp`) the first call is compared with.
    """
    product = make_hvp(wl)
    compiled = torch.compile(product)
    device = wl.X.device
    compile_s, first = timed(lambda: compiled(v), device)
    eager_ratio, eager_s = paired(lambda: product(v), gradient, repeats, device, grad_times)
    ratio, best = paired(lambda: compiled(v), gradient, repeats, device, grad_times)
    return {
        "compile_s": compile_s,
        "product_s": best,
        "product_over_gradient": ratio,
        "eager_product_s": eager_s,
        "eager_product_over_gradient": eager_ratio,
        "speedup_over_eager": eager_s / best,
        "break_even_products": compile_s / max(eager_s - best, 1e-12) if best < eager_s else None,
        "rel_diff_to_autograd": float((first - ref).norm() / ref.norm()),
    }


# -------------------------------------------------------------------------------------------
# The run.
# -------------------------------------------------------------------------------------------


def _label(backend: str, extra: dict) -> str:
    if extra == {"max_cached_batches": 0}:
        return f"{backend} (uncached)"
    return backend + "".join(f" {k}={v}" for k, v in extra.items())


def bench_workload(
    wl: Workload,
    repeats: int,
    block: int,
    block_repeats: int,
    log: Callable[[str], None],
    configs: tuple[tuple[str, str, dict], ...] = CONFIGS,
    compile_product: bool = False,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """Time every backend on one workload; returns the summary and each backend's ``op @ v``."""
    device = wl.X.device
    _, params = _trainable(wl)

    def gradient() -> None:
        torch.autograd.grad(wl.loss_fn(wl.model(wl.X), wl.y), params)

    gradient()  # warm-up (allocator, kernels)
    grad_times = [timed(gradient, device)[0] for _ in range(repeats)]
    log(f"[{wl.name}] P={wl.n_params:,} N={wl.n_samples:,}; gradient {min(grad_times):.4f} s")

    generator = torch.Generator().manual_seed(0)
    v = torch.randn(wl.n_params, generator=generator).to(device)
    V = torch.randn(wl.n_params, block, generator=generator).to(device)
    references = {"Hessian": autograd_hvp(wl, v), "GGN": func_ggn_vp(wl, v)}

    rows, products = [], {}
    for kind, backend, extra in configs:
        label = _label(backend, extra)
        row: dict = {"operator": kind, "backend": label}
        release(device)
        try:
            build_s, op = timed(
                lambda kind=kind, backend=backend, extra=extra: OPERATORS[kind](
                    wl.model, wl.loss_fn, (wl.X, wl.y), backend=backend, **extra
                ),
                device,
            )
            first_s, first = timed(lambda op=op: op @ v, device)
            ref = references[kind]
            rel = float((first - ref).norm() / ref.norm())
            r_vec, t_vec = paired(lambda op=op: op @ v, gradient, repeats, device, grad_times)
            r_blk, t_blk = paired(
                lambda op=op: op.matmat(V), gradient, block_repeats, device, grad_times
            )
        except Exception as exc:  # a backend that fails is reported, the others still run
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            row["traceback"] = traceback.format_exc(limit=6)
            log(f"[{wl.name}] {kind} {label} FAILED: {row['error']}")
            rows.append(row)
            continue
        row.update(
            backend_in_use=op.backend,
            build_s=build_s,
            first_product_s=first_s,
            product_s=t_vec,
            product_over_gradient=r_vec,
            block_column_s=t_blk / block,
            block_column_over_gradient=r_blk / block,
            rel_diff_to_autograd=rel,
            cached_batches=op.n_cached_batches,
            batches=op.n_batches,
            backend_notes=list(op.backend_notes),
            backend_timings=dict(getattr(op, "backend_timings", {})),
        )
        products[f"{kind} {label}"] = first.detach().cpu()
        if backend == "auto":
            label = f"auto -> {op.backend}"
        log(
            f"[{wl.name}] {kind:<7} {label:<20} build {build_s:7.3f} s  first {first_s:7.3f} s  "
            f"product {t_vec:7.4f} s ({r_vec:.2f}x)  column {t_blk / block:7.4f} s "
            f"({r_blk / block:.2f}x)  rel. diff {rel:.1e}"
        )
        rows.append(row)
        del op, first
    compiled = None
    if compile_product:
        release(device)
        try:
            compiled = compiled_product_costs(
                wl, v, references["Hessian"], repeats, gradient, grad_times
            )
            log(
                f"[{wl.name}] torch.compile(fwd_rev): compile {compiled['compile_s']:.1f} s, "
                f"product {compiled['product_s']:.4f} s "
                f"({compiled['product_over_gradient']:.2f}x), "
                f"{compiled['speedup_over_eager']:.2f}x over eager, "
                f"rel. diff {compiled['rel_diff_to_autograd']:.1e}"
            )
        except Exception as exc:  # compilers fail in many ways; the table still gets written
            compiled = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            log(f"[{wl.name}] torch.compile(fwd_rev) FAILED: {compiled['error']}")
    t_grad = min(grad_times)
    for row in rows:
        if "product_s" in row:
            row["product_best_over_gradient_best"] = row["product_s"] / t_grad
            row["block_column_best_over_gradient_best"] = row["block_column_s"] / t_grad
    summary = {
        "workload": wl.name,
        "description": wl.description,
        "n_params": wl.n_params,
        "n_samples": wl.n_samples,
        "gradient_s": t_grad,
        "gradient_s_all": grad_times,
        "rows": rows,
    }
    if compiled is not None:
        summary["compiled_fwd_rev"] = compiled
    return summary, products


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# Curvature-vector products per backend, relative to one gradient",
        "",
        f"Machine: {m.get('gpu') or m['cpu']} ({m['device']}); {m['logical_cores']} logical "
        f"cores, torch {m['torch']} with {report['threads']} thread(s).",
        f"Command: `{report['command']}`",
        "",
        "Ratios are medians over back-to-back (gradient, product) pairs, the gradient being one "
        "`torch.autograd.grad` of the mean loss over all the data; seconds are the best of "
        f"{report['repeats']} products ({report['block_repeats']} blocks of {report['block']} "
        "columns). 'rel. diff' compares the first product with an independent torch product "
        "(double backward for the Hessian, `Jᵀ H_f J v` with `torch.func` for the GGN).",
    ]
    for w in report["workloads"]:
        lines += [
            "",
            f"## {w['workload']}: {w['n_params']:,} parameters, {w['n_samples']:,} samples",
            "",
            f"{w['description']}. One gradient: {w['gradient_s']:.4f} s (best).",
            "",
            "| operator | backend | build s | first product s | product s | product / gradient "
            "| column of block s | column / gradient | rel. diff | cached batches |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in w["rows"]:
            if "error" in r:
                failed = f"failed: {r['error'][:80]}"
                lines.append(f"| {r['operator']} | {r['backend']} | {failed} | | | | | | | |")
                continue
            backend = r["backend"]
            if backend == "auto":
                backend = f"auto → {r['backend_in_use']}"
            lines.append(
                f"| {r['operator']} | {backend} | {r['build_s']:.3f} | "
                f"{r['first_product_s']:.4f} | {r['product_s']:.4f} | "
                f"{r['product_over_gradient']:.2f} | {r['block_column_s']:.4f} | "
                f"{r['block_column_over_gradient']:.2f} | {r['rel_diff_to_autograd']:.1e} | "
                f"{r['cached_batches']}/{r['batches']} |"
            )
        c = w.get("compiled_fwd_rev")
        if c is not None and "error" in c:
            lines += ["", f"`torch.compile` of the fwd_rev product failed: {c['error']}"]
        elif c is not None:
            even = c["break_even_products"]
            even = "never" if even is None else f"after {even:.0f} products"
            lines += [
                "",
                "`torch.compile` of a plain `torch.func` forward-over-reverse product (not a "
                f"decaylab backend): compile {c['compile_s']:.1f} s, then {c['product_s']:.4f} s "
                f"per product ({c['product_over_gradient']:.2f} gradients) against "
                f"{c['eager_product_s']:.4f} s eager ({c['eager_product_over_gradient']:.2f}), "
                f"{c['speedup_over_eager']:.2f}x; the compile time is paid back {even}; "
                f"rel. diff {c['rel_diff_to_autograd']:.1e}.",
            ]
    return "\n".join(lines) + "\n"


def main(out_dir: str | Path = "benchmarks/results", argv: list[str] | None = None) -> dict:
    """Run the benchmark; ``argv`` as on the command line (``None``: the defaults).

    Returns the report written to JSON, plus ``report["products"][workload][backend]``, each
    backend's first product ``op @ v`` (kept out of the JSON), for callers that check them.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(out_dir))
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--workloads", nargs="+", choices=sorted(WORKLOADS), default=sorted(WORKLOADS)
    )
    parser.add_argument("--repeats", type=int, default=5, help="products (and gradients) timed")
    parser.add_argument("--block", type=int, default=10, help="columns of the matmat block")
    parser.add_argument("--block-repeats", type=int, default=2, help="blocks timed")
    parser.add_argument("--resnet-width", type=int, default=16, help="64 for ResNet-18")
    parser.add_argument("--resnet-image-size", type=int, default=16, help="32 for CIFAR")
    parser.add_argument("--resnet-samples", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: steadiest on a shared machine; 0 keeps torch's default)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time torch.compile of a torch.func forward-over-reverse product",
    )
    parser.add_argument("--tag", default=None, help="file name suffix (default: the device type)")
    args = parser.parse_args([] if argv is None else argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(msg, flush=True)

    report: dict = {
        "benchmark": "hvp_backends",
        "command": "python benchmarks/hvp_backends.py " + " ".join(argv or []),
        "machine": machine_info(device),
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "block": args.block,
        "block_repeats": args.block_repeats,
        "compile": args.compile,
        "workloads": [],
    }
    products: dict[str, dict[str, torch.Tensor]] = {}
    for name in args.workloads:
        wl = workload_from_args(name, args, device)
        summary, products[name] = bench_workload(
            wl, args.repeats, args.block, args.block_repeats, log, compile_product=args.compile
        )
        report["workloads"].append(summary)
        del wl
        release(device)

    tag = args.tag or device.type
    (out / f"hvp_backends_{tag}.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    (out / f"hvp_backends_{tag}.md").write_text(text)
    print(text)
    report["products"] = products
    return report


if __name__ == "__main__":
    main(argv=sys.argv[1:])
