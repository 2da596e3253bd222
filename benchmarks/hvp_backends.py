"""Cost of one curvature-vector product per backend, relative to one gradient.

Workload: a 1-D CNN (about 86k parameters) on MNIST-1D generated offline
(``mnist1d.make_dataset``; 5,000 samples), or random data with ``--data random``.

    .venv/bin/python benchmarks/hvp_backends.py --threads 1 [--device cpu] [--repeats 5] \
        [--json out.json]

Prints, for each backend, the one-off setup time, the best time of one product and
of one column of a 10-column block (``matmat``), and each one's cost relative to
one gradient over the same data (median over back-to-back product/gradient pairs).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from torch import nn

from decaylab.curvature.operators import GGNOperator, HessianOperator


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 40)),
        nn.Conv1d(1, 32, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(32, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Conv1d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool1d(2),
        nn.Flatten(),
        nn.Linear(640, 96),
        nn.ReLU(),
        nn.Linear(96, 10),
    )


def load_data(kind: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    if kind == "mnist1d":
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = max(n, 100) * 5 // 4 + 1
        d = make_dataset(args)  # generated locally, no download
        X = torch.tensor(d["x"], dtype=torch.float32)[:n]
        y = torch.tensor(d["y"], dtype=torch.long)[:n]
        return X, y
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 40, generator=g), torch.randint(0, 10, (n,), generator=g)


def _wall(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def paired_ratio(
    fn: Callable[[], object],
    reference: Callable[[], object],
    repeats: int,
    device: torch.device,
    reference_times: list[float],
) -> tuple[float, float]:
    """Median of ``time(fn) / time(reference)`` over back-to-back pairs, and the best ``fn`` time.

    Timing each product right next to a gradient keeps the ratio meaningful on a
    machine whose load changes from second to second. Every reference time is
    appended to ``reference_times``.
    """
    ratios, best = [], float("inf")
    for _ in range(repeats):
        t_ref = _wall(reference, device)
        t_fn = _wall(fn, device)
        reference_times.append(t_ref)
        ratios.append(t_fn / t_ref)
        best = min(best, t_fn)
    ratios.sort()
    return ratios[len(ratios) // 2], best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", default="mnist1d", choices=["mnist1d", "random"])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (1 is steadiest on a busy machine)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = make_cnn().to(device).eval()
    X, y = load_data(args.data, args.n)
    X, y = X.to(device), y.to(device)
    loss_fn = nn.CrossEntropyLoss()
    P = sum(p.numel() for p in model.parameters())

    def gradient() -> None:
        model.zero_grad(set_to_none=True)
        loss_fn(model(X), y).backward()

    gradient()
    grad_times = [_wall(gradient, device) for _ in range(args.repeats)]
    t_grad = min(grad_times)
    print(f"device={device} threads={torch.get_num_threads()} P={P} N={args.n} data={args.data}")
    print(f"one gradient over all data: {t_grad:.4f} s")
    header = f"{'operator':<9} {'backend':<30} {'setup s':>8} {'product s':>10} {'ratio':>6}"
    header += f" {'col of block s':>15} {'ratio':>6}"
    print(header)

    v = torch.randn(P, device=device)
    V = torch.randn(P, args.block, device=device)
    rows = []
    configs = [
        ("Hessian", "linearize", {}),
        ("Hessian", "linearize", {"chunk_size": None}),
        ("Hessian", "fwd_rev", {}),
        ("Hessian", "rev_rev", {}),
        ("Hessian", "rev_rev", {"chunk_size": None}),
        ("Hessian", "rev_rev", {"max_cached_batches": 0}),
        ("GGN", "linearize", {}),
        ("GGN", "fwd_rev", {}),
        ("GGN", "rev_rev", {}),
    ]
    for kind, backend, extra in configs:
        cls = HessianOperator if kind == "Hessian" else GGNOperator
        start = time.perf_counter()
        op = cls(model, loss_fn, (X, y), backend=backend, **extra)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        setup = time.perf_counter() - start
        op @ v  # warm-up
        r_vec, t_vec = paired_ratio(
            lambda op=op, v=v: op @ v, gradient, args.repeats, device, grad_times
        )
        r_blk, t_blk = paired_ratio(
            lambda op=op, V=V: op.matmat(V), gradient, max(2, args.repeats // 2), device, grad_times
        )
        t_col, r_col = t_blk / args.block, r_blk / args.block
        label = backend + (
            "" if not extra else " " + ",".join(f"{key}={val}" for key, val in extra.items())
        )
        print(
            f"{kind:<9} {label:<30} {setup:>8.3f} {t_vec:>10.4f} {r_vec:>6.2f}"
            f" {t_col:>15.4f} {r_col:>6.2f}"
        )
        rows.append(
            {
                "operator": kind,
                "backend": label,
                "setup_s": setup,
                "product_s": t_vec,
                "product_over_gradient": r_vec,
                "block_column_s": t_col,
                "block_column_over_gradient": r_col,
                "cached_batches": op.n_cached_batches,
                "batches": op.n_batches,
            }
        )
        del op
    t_grad = min(grad_times)
    print(f"\nbest gradient over the whole run: {t_grad:.4f} s; best-time ratios:")
    for row in rows:
        row["product_best_over_gradient_best"] = row["product_s"] / t_grad
        row["block_column_best_over_gradient_best"] = row["block_column_s"] / t_grad
        print(
            f"{row['operator']:<9} {row['backend']:<30} product {row['product_s'] / t_grad:5.2f}"
            f"  block column {row['block_column_s'] / t_grad:5.2f}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "device": str(device),
                    "threads": torch.get_num_threads(),
                    "P": P,
                    "N": args.n,
                    "gradient_s": t_grad,
                    "rows": rows,
                },
                fh,
                indent=2,
            )


if __name__ == "__main__":
    main()
