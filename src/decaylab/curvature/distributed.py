"""Helpers for curvature operators whose data is sharded over ``torch.distributed`` ranks.

Each rank holds a shard of the data. A product is summed over ranks with the
sample counts as weights, ``H v = (Σ_r n_r H_r v) / Σ_r n_r``, so that every rank
sees the product of the mean loss over all samples of all ranks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "resolve_process_group",
    "world_size",
    "all_reduce_sum",
    "all_reduce_max",
    "raise_if_any_rank_failed",
]


def resolve_process_group(process_group: Any = None) -> Any:
    """The group to all-reduce over, or ``None`` for a single process.

    ``None`` means the default group when ``torch.distributed`` is initialized and
    a single process otherwise; a group object is used as given.

    Examples
    --------
    >>> resolve_process_group(None) is None  # torch.distributed not initialized here
    True
    """
    if process_group is not None:
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "process_group was given but torch.distributed is not initialized; "
                "call torch.distributed.init_process_group first or pass process_group=None"
            )
        return process_group
    if dist.is_available() and dist.is_initialized():
        return dist.group.WORLD
    return None


def world_size(group: Any) -> int:
    """Number of ranks in ``group`` (1 for a single process).

    Examples
    --------
    >>> world_size(None)
    1
    """
    if group is None:
        return 1
    return dist.get_world_size(group)


def _reduce(tensor: torch.Tensor, group: Any, op: Any) -> torch.Tensor:
    # gloo reduces CPU tensors, NCCL only CUDA ones: move there and back.
    backend = str(dist.get_backend(group)).lower()
    if backend == "gloo" and tensor.device.type != "cpu":
        where = torch.device("cpu")
    elif backend == "nccl" and tensor.device.type != "cuda":
        where = torch.device("cuda", torch.cuda.current_device())
    else:
        where = tensor.device
    work = tensor.detach().to(where, copy=True)
    dist.all_reduce(work, op=op, group=group)
    return work.to(tensor.device)


def all_reduce_sum(tensor: torch.Tensor, group: Any) -> torch.Tensor:
    """Sum of ``tensor`` over the ranks of ``group`` (identity when ``group`` is None).

    Examples
    --------
    >>> import torch
    >>> all_reduce_sum(torch.tensor([1.0, 2.0]), None).tolist()
    [1.0, 2.0]
    """
    if group is None:
        return tensor
    return _reduce(tensor, group, dist.ReduceOp.SUM)


def all_reduce_max(tensor: torch.Tensor, group: Any) -> torch.Tensor:
    """Element-wise maximum over the ranks of ``group`` (identity when ``group`` is None).

    Examples
    --------
    >>> import torch
    >>> all_reduce_max(torch.tensor([3.0]), None).tolist()
    [3.0]
    """
    if group is None:
        return tensor
    return _reduce(tensor, group, dist.ReduceOp.MAX)


def raise_if_any_rank_failed(error: BaseException | None, group: Any) -> None:
    """Raise on every rank when any rank failed, so no rank waits forever in a collective.

    A rank that failed re-raises its own error; the others raise a ``ValueError``
    saying another rank failed.

    Examples
    --------
    >>> raise_if_any_rank_failed(None, None)  # nothing failed, single process
    """
    if group is None:
        if error is not None:
            raise error
        return
    flag = torch.tensor([1.0 if error is not None else 0.0])
    failed = all_reduce_max(flag, group).item() > 0
    if error is not None:
        raise error
    if failed:
        raise ValueError(
            "another rank failed while building the curvature operator (see its error); "
            "every rank must pass valid model, loss_fn and data"
        )
