"""Dense Hessian and Gauss-Newton matrices for small models (the exact reference)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.func import grad, jvp, vmap

from decaylab._checks import check_scalar
from decaylab.curvature._params import select_params
from decaylab.curvature.backends import quiet_torch_internals
from decaylab.curvature.distributed import all_reduce_sum
from decaylab.curvature.operators import GGNOperator, HessianOperator

__all__ = ["dense_hessian", "dense_ggn", "DEFAULT_MAX_PARAMS"]

DEFAULT_MAX_PARAMS = 10_000


def _check_size(model: nn.Module, params: Any, max_params: Any) -> None:
    """Refuse a matrix over ``max_params`` before the operator passes over the data."""
    max_params = int(check_scalar(max_params, "max_params", low=1, integer=True))
    num_params = sum(t.numel() for t in select_params(model, params)[1])
    if num_params > max_params:
        raise ValueError(
            f"max_params={max_params} is below the number of parameters P={num_params}: the dense "
            f"matrix would hold {num_params**2:,} entries; raise max_params to build it anyway"
        )


def dense_hessian(
    model: nn.Module,
    loss_fn: Any,
    data: Any,
    *,
    params: Any = None,
    dtype: torch.dtype = torch.float64,
    device: Any = None,
    max_params: int = DEFAULT_MAX_PARAMS,
    column_chunk: int = 256,
) -> torch.Tensor:
    """The ``(P, P)`` Hessian of the mean loss over all samples, column by column.

    .. math:: H = \\frac{\\sum_b W_b\\, \\nabla^2_w L_b(w)}{\\sum_b W_b}

    with ``W_b`` the loss's normalizer of batch ``b`` (its sample count for most losses;
    see :class:`~decaylab.curvature.operators.CurvatureOperator`), so that ``H`` is the
    Hessian of the loss on all the data in one call, however the data is split.

    Each batch's Hessian is ``jacfwd(jacrev)`` of its mean loss as a function of the
    flat parameter vector (forward-over-reverse over blocks of unit vectors, so
    memory stays at ``column_chunk`` products). Models that ``torch.func`` cannot
    handle fall back to double backward with ``torch.autograd``. The result is
    symmetrized, ``(H + Hᵀ)/2``.

    Parameters
    ----------
    model, loss_fn, data, params
        As for :class:`~decaylab.curvature.operators.HessianOperator`.
    dtype : torch.dtype
        Precision of the computation (default float64).
    device : optional
        Where to compute (default: the parameters' device).
    max_params : int
        Refuse (``ValueError``) when ``P`` exceeds it (default 10,000).
    column_chunk : int
        Columns computed at once.

    Returns
    -------
    torch.Tensor of shape ``(P, P)`` in ``dtype``.

    Examples
    --------
    >>> import torch
    >>> X, y = torch.randn(10, 2), torch.randn(10, 1)
    >>> H = dense_hessian(torch.nn.Linear(2, 1), "half_mse", (X, y))
    >>> Xb = torch.cat([X, torch.ones(10, 1)], 1).double()
    >>> bool(torch.allclose(H, Xb.T @ Xb / 10))
    True
    """
    column_chunk = int(check_scalar(column_chunk, "column_chunk", low=1, integer=True))
    _check_size(model, params, max_params)
    op = HessianOperator(
        model,
        loss_fn,
        data,
        params=params,
        dtype=dtype,
        device=device,
        backend="fwd_rev",
        max_cached_batches=0,
    )
    P = op.num_params
    total = torch.zeros(P, P, dtype=dtype, device=op.device)
    eye = torch.eye(P, dtype=dtype, device=op.device)
    for _, X, y, weight in op._weighted_batches():

        def loss_of_w(w: torch.Tensor, X: torch.Tensor = X, y: torch.Tensor = y) -> torch.Tensor:
            return op._loss(w, X, y)

        try:
            grad_fn = grad(loss_of_w)
            column = vmap(
                lambda t, g=grad_fn: jvp(g, (op._w0,), (t,))[1],
                in_dims=1,
                out_dims=1,
                chunk_size=column_chunk,
            )
            with quiet_torch_internals():
                block = column(eye)
        except (RuntimeError, NotImplementedError, TypeError):
            block = _hessian_double_backward(loss_of_w, op._w0)
        total.add_(block, alpha=weight)
    # total_weight counts every rank's batches, so the sum must too (as op.matmat does).
    total = all_reduce_sum(total, op._group)
    total /= op.total_weight
    return 0.5 * (total + total.T)


def _hessian_double_backward(loss_of_w: Any, w0: torch.Tensor) -> torch.Tensor:
    w = w0.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(loss_of_w(w), w, create_graph=True)
        if not g.requires_grad:  # gradient does not depend on w: zero curvature
            return torch.zeros(w.numel(), w.numel(), dtype=w.dtype, device=w.device)
        rows = []
        for i in range(w.numel()):
            (row,) = torch.autograd.grad(g[i], w, retain_graph=True, allow_unused=True)
            rows.append(torch.zeros_like(w) if row is None else row.detach())
    return torch.stack(rows)


def dense_ggn(
    model: nn.Module,
    loss_fn: Any,
    data: Any,
    *,
    params: Any = None,
    dtype: torch.dtype = torch.float64,
    device: Any = None,
    max_params: int = DEFAULT_MAX_PARAMS,
) -> torch.Tensor:
    """The ``(P, P)`` generalized Gauss-Newton matrix from products with the unit vectors.

    .. math:: G = \\frac{\\sum_b W_b\\, J_b^\\top \\nabla^2_f L_b\\, J_b}{\\sum_b W_b}

    Built from :class:`~decaylab.curvature.operators.GGNOperator` in ``dtype``
    (float64 by default) and symmetrized; see there for the supported losses.

    Examples
    --------
    >>> import torch
    >>> X, y = torch.randn(10, 2), torch.randn(10, 1)
    >>> G = dense_ggn(torch.nn.Linear(2, 1), "half_mse", (X, y))   # linear model: G = H
    >>> bool(torch.allclose(G, dense_hessian(torch.nn.Linear(2, 1), "half_mse", (X, y))))
    True
    """
    _check_size(model, params, max_params)
    op = GGNOperator(model, loss_fn, data, params=params, dtype=dtype, device=device)
    G = op.to_dense(max_params=op.num_params)
    return 0.5 * (G + G.T)
