"""Two gloo CPU processes, each with an unequal shard, see the single-process curvature."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from sklearn.datasets import load_digits
from torch import nn

from decaylab.curvature.dense import dense_hessian
from decaylab.curvature.lanczos import eigen
from decaylab.curvature.operators import GGNOperator, HessianOperator

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")


N0 = 47  # rank 0 holds 47 samples (two batches), rank 1 holds the other 103


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    X, y = load_digits(return_X_y=True)
    return (
        torch.tensor(X[:150] / 16.0, dtype=torch.float64),
        torch.tensor(y[:150], dtype=torch.long),
    )


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 3), nn.Tanh(), nn.Linear(3, 10)).double()


def _shard(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    X, y = _data()
    if rank == 0:
        return [(X[:20], y[:20]), (X[20:N0], y[20:N0])]
    return [(X[N0:], y[N0:])]


def _probe_block(P: int) -> torch.Tensor:
    return torch.randn(P, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _model()
        op = HessianOperator(model, nn.CrossEntropyLoss(), _shard(rank))  # default group
        V = _probe_block(op.num_params)
        result = {
            "num_samples": op.num_samples,
            "world_size": op.world_size,
            "HV": op.matmat(V),
            "Hv": op @ V[:, 0],
            "dense": op.to_dense(),
            "GV": GGNOperator(model, "cross_entropy", _shard(rank)).matmat(V),
            "dense_hessian": dense_hessian(model, nn.CrossEntropyLoss(), _shard(rank)),
        }
        res = eigen(op, k=3, tol=1e-8)
        result["eigen"] = torch.as_tensor(np.asarray(res.eigenvalues, dtype=np.float64))
        # a bad shard on one rank makes every rank raise instead of hanging in a collective
        X, y = _shard(rank)[0]
        bad = (X, y[:-1]) if rank == 1 else (X, y)
        try:
            HessianOperator(model, "cross_entropy", bad)
            result["bad"] = "no error"
        except ValueError as exc:
            result["bad"] = str(exc)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
        # Both ranks must be past their last collective before either tears its gloo
        # connections down; a peer closing early once aborted the other rank (SIGABRT).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_ranks_match_single_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    X, y = _data()
    model = _model()
    single = HessianOperator(model, nn.CrossEntropyLoss(), (X, y))
    V = _probe_block(single.num_params)
    HV = single.matmat(V)
    GV = GGNOperator(model, "cross_entropy", (X, y)).matmat(V)
    # The full-data Hessian by torch.func alone: the reference for dense_hessian, and for the
    # single-process products and spectrum the ranks are compared with.
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    w0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def full_loss(w: torch.Tensor) -> torch.Tensor:
        params = dict(
            zip(
                names,
                (
                    t.view(s)
                    for t, s in zip(w.split([s.numel() for s in shapes]), shapes, strict=True)
                ),
                strict=True,
            )
        )
        return nn.functional.cross_entropy(torch.func.functional_call(model, params, (X,)), y)

    H_full = torch.func.hessian(full_loss)(w0)
    assert torch.allclose(HV, H_full @ V, rtol=1e-10, atol=1e-13)
    exact = np.linalg.eigh(H_full.numpy())[0][::-1]

    for r in ranks:
        assert r["num_samples"] == 150 and r["world_size"] == 2
        assert torch.allclose(r["HV"], HV, rtol=1e-12, atol=1e-14)
        assert torch.allclose(r["Hv"], HV[:, 0], rtol=1e-12, atol=1e-14)
        assert torch.allclose(r["GV"], GV, rtol=1e-12, atol=1e-14)
        top = np.linalg.eigh(r["dense"].numpy())[0][::-1][:3]
        assert np.allclose(top, exact[:3], rtol=1e-10, atol=1e-13)
        assert np.allclose(r["eigen"].numpy(), exact[:3], rtol=1e-6)
        # each rank's dense Hessian covers all ranks' samples, not only its shard
        assert torch.allclose(r["dense_hessian"], H_full, rtol=1e-10, atol=1e-13)
    # rank 1 names its own bad batch; rank 0 learns that another rank failed
    assert "data: batch 0" in ranks[1]["bad"]
    assert "another rank failed" in ranks[0]["bad"]


def test_process_group_without_init_is_refused():
    X, y = _data()
    with pytest.raises(ValueError, match="process_group"):
        HessianOperator(_model(), "cross_entropy", (X, y), process_group=object())
