"""Parameter selection and the flat parameter vector.

The flat parameter vector (see ``shared/CONVENTIONS.md``) is the concatenation,
in ``model.named_parameters()`` order, of every selected parameter, each flattened
in row-major order. By default every parameter with ``requires_grad=True`` is
selected; ``params=`` selects a subset by name or by tensor. An explicit selection
is still laid out in ``named_parameters()`` order, so the same set of parameters
always gives the same vector, whatever order the user listed them in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["select_params", "flatten_params", "unflatten_like", "param_slices"]


def select_params(
    model: nn.Module, params: Any = None
) -> tuple[list[str], list[torch.nn.Parameter]]:
    """Names and tensors of the selected parameters, in ``named_parameters()`` order.

    Parameters
    ----------
    model : torch.nn.Module
        The model whose parameters are selected.
    params : None, str, tensor, or iterable of str / tensors
        ``None`` selects every parameter with ``requires_grad=True``. Otherwise
        each entry is a name from ``model.named_parameters()`` or one of the
        model's parameter tensors (compared by identity).

    Returns
    -------
    names : list of str
    tensors : list of torch.nn.Parameter

    Examples
    --------
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    >>> select_params(model, ["1.bias", model[0].weight])[0]
    ['0.weight', '1.bias']
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    named = list(model.named_parameters())
    if params is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
        if not chosen:
            raise ValueError("model has no parameter with requires_grad=True; pass params=")
        return [n for n, _ in chosen], [p for _, p in chosen]

    if isinstance(params, (str, torch.Tensor)):
        params = [params]
    if not isinstance(params, Iterable):
        raise ValueError(f"params must be None, names or tensors, got {type(params).__name__}")
    entries = list(params)
    if not entries:
        raise ValueError("params must select at least one parameter, got an empty selection")

    by_name = dict(named)
    by_id = {id(p): n for n, p in named}
    wanted: set[str] = set()
    for entry in entries:
        if isinstance(entry, str):
            if entry not in by_name:
                raise ValueError(
                    f"params: {entry!r} is not a parameter name of the model "
                    f"(known: {list(by_name)[:8]}{'...' if len(by_name) > 8 else ''})"
                )
            name = entry
        elif isinstance(entry, torch.Tensor):
            if id(entry) not in by_id:
                raise ValueError(
                    f"params: a tensor of shape {tuple(entry.shape)} is not a parameter "
                    "of the model"
                )
            name = by_id[id(entry)]
        else:
            raise ValueError(f"params entries must be names or tensors, got {entry!r}")
        if name in wanted:
            raise ValueError(f"params: {name!r} is selected twice")
        wanted.add(name)
    chosen = [(n, p) for n, p in named if n in wanted]
    return [n for n, _ in chosen], [p for _, p in chosen]


def param_slices(model: nn.Module, params: Any = None) -> dict[str, slice]:
    """Where each selected parameter lives in the flat vector.

    Examples
    --------
    >>> import torch
    >>> param_slices(torch.nn.Linear(3, 2))
    {'weight': slice(0, 6, None), 'bias': slice(6, 8, None)}
    """
    names, tensors = select_params(model, params)
    out: dict[str, slice] = {}
    start = 0
    for name, tensor in zip(names, tensors, strict=True):
        out[name] = slice(start, start + tensor.numel())
        start += tensor.numel()
    return out


def flatten_params(model: nn.Module, params: Any = None) -> torch.Tensor:
    """The flat parameter vector ``w`` (a detached copy).

    Parameters
    ----------
    model : torch.nn.Module
    params : see :func:`select_params`

    Returns
    -------
    torch.Tensor
        1-D tensor of length ``P = sum(p.numel())`` in the parameters' dtype and device.

    Examples
    --------
    >>> import torch
    >>> lin = torch.nn.Linear(2, 1)
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.tensor([[1.0, 2.0]])); _ = lin.bias.fill_(3.0)
    >>> flatten_params(lin).tolist()
    [1.0, 2.0, 3.0]
    """
    _, tensors = select_params(model, params)
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def unflatten_like(
    vec: torch.Tensor, model: nn.Module, params: Any = None
) -> dict[str, torch.Tensor]:
    """Split a flat vector into tensors shaped like the selected parameters.

    Parameters
    ----------
    vec : torch.Tensor
        1-D tensor of length ``P`` (numpy arrays are converted).
    model : torch.nn.Module
    params : see :func:`select_params`

    Returns
    -------
    dict of str to torch.Tensor
        ``{name: view of vec shaped like the parameter}`` in flat-vector order;
        views share memory with ``vec``.

    Examples
    --------
    >>> import torch
    >>> parts = unflatten_like(torch.arange(8.0), torch.nn.Linear(3, 2))
    >>> {k: tuple(v.shape) for k, v in parts.items()}
    {'weight': (2, 3), 'bias': (2,)}
    """
    names, tensors = select_params(model, params)
    if not isinstance(vec, torch.Tensor):
        vec = torch.as_tensor(vec)
    total = sum(t.numel() for t in tensors)
    if vec.ndim != 1 or vec.shape[0] != total:
        raise ValueError(f"vec must be 1-D of length {total}, got shape {tuple(vec.shape)}")
    out: dict[str, torch.Tensor] = {}
    start = 0
    for name, tensor in zip(names, tensors, strict=True):
        out[name] = vec[start : start + tensor.numel()].reshape(tensor.shape)
        start += tensor.numel()
    return out
