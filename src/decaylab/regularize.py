"""Explicit penalties (L2, L1, elastic net) and optimizer parameter groups for weight decay.

Conventions (``docs/conventions.md``): the training objective is the **mean** loss ``J(w)``
plus a penalty,

* L2:          ``J(w) + (α/2) ‖w‖²``
* L1:          ``J(w) + α ‖w‖₁``
* elastic net: ``J(w) + α (ρ ‖w‖₁ + (1−ρ)/2 ‖w‖²)``, ``ρ = l1_ratio`` in [0, 1].

The L1 part is not differentiable at zero, so gradient steps on it (the subgradient way) never
land on exact zeros. :meth:`Penalty.prox` applies its proximal operator instead, the soft
threshold ``w ← sign(w) · max(|w| − ε α ρ, 0)``, which makes a weight exactly zero whenever
``|w| ≤ ε α ρ``. A proximal-gradient step is then: gradient step on ``J + smooth_penalty``,
followed by ``prox(params, step=ε)``.

:func:`param_groups` splits a model's trainable parameters into a decayed group and a
non-decayed group (biases, normalization layers, other 1-D parameters, user patterns), the usual
practice for weight decay in networks.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
from torch import nn

from decaylab._checks import check_bool, check_scalar

__all__ = [
    "NORM_LAYERS",
    "DecayEntry",
    "ElasticNet",
    "L1",
    "L2",
    "Penalty",
    "decay_report",
    "param_groups",
    "soft_threshold",
]


def _norm_layer_types() -> tuple[type[nn.Module], ...]:
    types: list[type[nn.Module]] = [nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm]
    # _NormBase is the common base of every BatchNorm*/SyncBatchNorm/InstanceNorm* (and their
    # lazy variants), so user subclasses of those are caught too. It is private, hence the guard.
    norm_base = getattr(nn.modules.batchnorm, "_NormBase", None)
    if norm_base is not None:
        types.append(norm_base)
    types += [
        nn.BatchNorm1d,
        nn.BatchNorm2d,
        nn.BatchNorm3d,
        nn.SyncBatchNorm,
        nn.InstanceNorm1d,
        nn.InstanceNorm2d,
        nn.InstanceNorm3d,
    ]
    rms_norm = getattr(nn, "RMSNorm", None)  # torch >= 2.4
    if rms_norm is not None:
        types.append(rms_norm)
    return tuple(dict.fromkeys(types))


#: Module types whose parameters :func:`param_groups` never decays when ``exclude_norm=True``.
NORM_LAYERS: tuple[type[nn.Module], ...] = _norm_layer_types()


def soft_threshold(x: torch.Tensor, threshold: float) -> torch.Tensor:
    """Soft-threshold a tensor: ``sign(x) · max(|x| − t, 0)``, returned as a new tensor.

    This is the proximal operator of ``t ‖·‖₁``. Entries with ``|x| ≤ t`` become exactly
    ``+0.0``; the others move towards zero by ``t``. It is computed as ``x − clamp(x, −t, t)``,
    which is bit-for-bit the formula above and never produces ``−0.0``.

    Parameters
    ----------
    x : torch.Tensor
        Input tensor (any shape, floating dtype).
    threshold : float
        ``t ≥ 0``.

    Returns
    -------
    torch.Tensor
        New tensor of the same shape, dtype and device as ``x``.

    Examples
    --------
    >>> import torch
    >>> soft_threshold(torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5]), 0.5).tolist()
    [-1.5, 0.0, 0.0, 0.0, 1.0]
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    t = check_scalar(threshold, "threshold", low=0.0)
    return x - x.clamp(-t, t)


def _collect_tensors(params: Any, name: str = "params") -> list[torch.Tensor]:
    """Flatten the accepted ``params`` forms into a list of distinct tensors, in order.

    Tied (shared) tensors count once: the penalty is on the parameter, not on its uses, and
    soft-thresholding a tensor twice would shrink it by twice the threshold.
    """
    if isinstance(params, nn.Module):
        candidates: Iterable[Any] = (p for p in params.parameters() if p.requires_grad)
    elif isinstance(params, torch.Tensor):
        candidates = [params]
    elif isinstance(params, dict):
        candidates = [params]
    else:
        try:
            candidates = iter(params)
        except TypeError as exc:
            raise ValueError(
                f"{name} must be an nn.Module, a tensor, an iterable of tensors or a list of "
                f"optimizer param-group dicts, got {type(params).__name__}"
            ) from exc

    out: list[torch.Tensor] = []
    seen: set[int] = set()

    def add(t: Any) -> None:
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must contain tensors, got an item of type {type(t).__name__}")
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)

    for item in candidates:
        if isinstance(item, dict):
            if "params" not in item:
                raise ValueError(
                    f"{name}: a param-group dict needs a 'params' key, got keys {list(item)}"
                )
            group_params = item["params"]
            for p in [group_params] if isinstance(group_params, torch.Tensor) else group_params:
                add(p)
        elif (
            isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
        ):  # from named_parameters()
            add(item[1])
        else:
            add(item)
    return out


class Penalty:
    """Elastic-net family penalty ``α (ρ ‖w‖₁ + (1−ρ)/2 ‖w‖²)``; base of :class:`L2`, :class:`L1`.

    Parameters
    ----------
    alpha : float
        Overall strength ``α ≥ 0`` (per the conventions: added to the *mean* loss).
    l1_ratio : float
        ``ρ`` in [0, 1]: 0 is pure L2 (``α/2 ‖w‖²``), 1 is pure L1 (``α ‖w‖₁``).

    Notes
    -----
    ``params`` arguments accept an ``nn.Module`` (its parameters with ``requires_grad=True``),
    a tensor, an iterable of tensors or of ``(name, tensor)`` pairs, or a list of optimizer
    param-group dicts (all their ``'params'``, whatever the group's ``weight_decay``). A tensor
    that appears several times (tied weights) counts once.

    Examples
    --------
    >>> import torch
    >>> w = torch.tensor([3.0, -4.0])
    >>> round(Penalty(0.1, 0.5).penalty([w]).item(), 4)  # 0.1 * (0.5*7 + 0.25*25)
    0.975
    """

    def __init__(self, alpha: float, l1_ratio: float) -> None:
        self.alpha = check_scalar(alpha, "alpha", low=0.0)
        self.l1_ratio = check_scalar(l1_ratio, "l1_ratio", low=0.0, high=1.0)

    @property
    def l1_strength(self) -> float:
        """``α ρ``: the coefficient of ``‖w‖₁`` (the prox threshold per unit step)."""
        return self.alpha * self.l1_ratio

    @property
    def l2_strength(self) -> float:
        """``α (1 − ρ)``: the coefficient of ``½ ‖w‖²`` (the coupled weight decay it equals)."""
        return self.alpha * (1.0 - self.l1_ratio)

    @staticmethod
    def _zero(tensors: list[torch.Tensor]) -> torch.Tensor:
        if tensors:
            return torch.zeros((), dtype=tensors[0].dtype, device=tensors[0].device)
        return torch.zeros(())

    def _sum(self, tensors: list[torch.Tensor], fn) -> torch.Tensor:
        total = self._zero(tensors)
        for t in tensors:
            total = total + fn(t).to(total.device)
        return total

    def penalty(self, params: Any) -> torch.Tensor:
        """The full penalty ``α (ρ ‖w‖₁ + (1−ρ)/2 ‖w‖²)``, differentiable, as a 0-d tensor.

        Examples
        --------
        >>> import torch
        >>> round(L1(0.5).penalty([torch.tensor([1.0, -2.0])]).item(), 4)
        1.5
        """
        tensors = _collect_tensors(params)
        total = self._zero(tensors)
        if self.l1_strength > 0:
            total = total + self.l1_strength * self._sum(tensors, lambda t: t.abs().sum())
        if self.l2_strength > 0:
            total = total + 0.5 * self.l2_strength * self._sum(tensors, lambda t: t.pow(2).sum())
        return total

    def smooth_penalty(self, params: Any) -> torch.Tensor:
        """The differentiable part only, ``α (1−ρ)/2 ‖w‖²`` (a zero tensor for pure L1).

        Add this to the loss when the L1 part is handled by :meth:`prox`.

        Examples
        --------
        >>> import torch
        >>> w = [torch.tensor([1.0, -2.0])]
        >>> round(ElasticNet(0.5, 0.5).smooth_penalty(w).item(), 4)  # 0.5*0.5/2*5
        0.625
        >>> L1(0.5).smooth_penalty(w).item()
        0.0
        """
        tensors = _collect_tensors(params)
        if self.l2_strength == 0:
            return self._zero(tensors)
        return 0.5 * self.l2_strength * self._sum(tensors, lambda t: t.pow(2).sum())

    def prox(self, params: Any, step: float) -> None:
        """In place, soft-threshold every tensor by ``step · α · ρ`` (no-op when ``α ρ = 0``).

        After a gradient step of size ``step`` on the smooth part, this completes one
        proximal-gradient step and leaves exact zeros wherever ``|w| ≤ step · α · ρ``.

        Parameters
        ----------
        params
            As in :class:`Penalty`.
        step : float
            The step size ``ε ≥ 0`` just taken (the learning rate for plain SGD).

        Examples
        --------
        >>> import torch
        >>> w = torch.tensor([0.05, -0.3, 1.0])
        >>> L1(1.0).prox([w], step=0.1)
        >>> [round(v, 6) for v in w.tolist()]
        [0.0, -0.2, 0.9]
        """
        eps = check_scalar(step, "step", low=0.0)
        threshold = eps * self.alpha * self.l1_ratio  # this order, so callers can reproduce it
        tensors = _collect_tensors(params)
        if threshold == 0:
            return
        with torch.no_grad():
            for t in tensors:
                t.sub_(t.clamp(-threshold, threshold))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(alpha={self.alpha!r}, l1_ratio={self.l1_ratio!r})"


class L2(Penalty):
    """L2 penalty ``(α/2) ‖w‖²`` (equals coupled weight decay ``α`` for plain SGD).

    Examples
    --------
    >>> import torch
    >>> L2(0.1)
    L2(alpha=0.1)
    >>> round(L2(0.1).penalty([torch.tensor([3.0, 4.0])]).item(), 4)  # 0.05 * 25
    1.25
    """

    def __init__(self, alpha: float) -> None:
        super().__init__(alpha, 0.0)

    def __repr__(self) -> str:
        return f"L2(alpha={self.alpha!r})"


class L1(Penalty):
    """L1 penalty ``α ‖w‖₁``; :meth:`prox` soft-thresholds by ``step · α``.

    Examples
    --------
    >>> import torch
    >>> L1(0.1)
    L1(alpha=0.1)
    >>> round(L1(0.1).penalty([torch.tensor([3.0, -4.0])]).item(), 4)
    0.7
    """

    def __init__(self, alpha: float) -> None:
        super().__init__(alpha, 1.0)

    def __repr__(self) -> str:
        return f"L1(alpha={self.alpha!r})"


class ElasticNet(Penalty):
    """Elastic net ``α (ρ ‖w‖₁ + (1−ρ)/2 ‖w‖²)`` with ``ρ = l1_ratio``.

    ``l1_ratio=0`` equals :class:`L2` and ``l1_ratio=1`` equals :class:`L1`. (scikit-learn's
    ``ElasticNet(alpha=a, l1_ratio=r)`` uses the same penalty on ``(1/2N)‖y − Xw‖²``, so there
    ``α = a`` with the conventions' ½-squared-error mean loss.)

    Examples
    --------
    >>> ElasticNet(0.1, 0.25)
    ElasticNet(alpha=0.1, l1_ratio=0.25)
    """


# --------------------------------------------------------------------------- parameter groups


class DecayEntry(NamedTuple):
    """One row of :func:`decay_report`: parameter name, whether it is decayed, its size."""

    name: str
    decayed: bool
    numel: int


def _is_bias_name(leaf: str) -> bool:
    # Linear/Conv "bias", RNN "bias_ih_l0", MultiheadAttention "in_proj_bias", "bias_k".
    return leaf == "bias" or leaf.startswith("bias_") or leaf.endswith("_bias")


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    exclude_bias: bool = True,
    exclude_norm: bool = True,
    exclude_1d: bool = True,
    exclude: Iterable[str] | str = (),
) -> list[dict[str, Any]]:
    """Split a model's trainable parameters into a decayed and a non-decayed optimizer group.

    A parameter is **not** decayed when (checked in this order) its full name matches a
    pattern of ``exclude`` (``fnmatch``, case-sensitive, against names such as
    ``"encoder.0.weight"``); ``exclude_norm`` and it belongs to a normalization layer, decided by
    module type (:data:`NORM_LAYERS`: BatchNorm*, SyncBatchNorm, InstanceNorm*, LayerNorm,
    GroupNorm, RMSNorm, and subclasses); ``exclude_bias`` and its own name is a bias (``bias``,
    ``bias_*``, ``*_bias``); ``exclude_1d`` and it has at most one dimension. Everything else is
    decayed with ``weight_decay`` — including embedding tables, which are 2-D weights.

    Frozen parameters (``requires_grad=False``) are left out. Every trainable parameter lands in
    exactly one group, once, even when it is shared (tied) between modules; names and order are
    those of ``model.named_parameters()``.

    Parameters
    ----------
    model : nn.Module
    weight_decay : float
        ``≥ 0``; the decayed group's ``"weight_decay"``.
    exclude_bias, exclude_norm, exclude_1d : bool
        Which built-in exclusions apply.
    exclude : iterable of str or str
        Extra ``fnmatch`` patterns on full parameter names never to decay.

    Returns
    -------
    list of dict
        ``[{"params": [...], "weight_decay": weight_decay, "names": [...]},
        {"params": [...], "weight_decay": 0.0, "names": [...]}]``, decayed group first; a group
        with no parameters is omitted (so the list has one element when nothing is excluded,
        or when everything is). Torch optimizers accept the extra ``"names"`` key and keep it
        in ``optimizer.param_groups`` and their state dict.

    Raises
    ------
    ValueError
        ``weight_decay < 0``, ``model`` not an ``nn.Module`` or without trainable parameters,
        ``exclude`` not strings.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    >>> groups = param_groups(net, 1e-2)
    >>> [(g["weight_decay"], g["names"]) for g in groups]  # doctest: +NORMALIZE_WHITESPACE
    [(0.01, ['0.weight', '2.weight']),
     (0.0, ['0.bias', '1.weight', '1.bias', '2.bias'])]
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    wd = check_scalar(weight_decay, "weight_decay", low=0.0)
    for flag, flag_name in (
        (exclude_bias, "exclude_bias"),
        (exclude_norm, "exclude_norm"),
        (exclude_1d, "exclude_1d"),
    ):
        check_bool(flag, flag_name)
    patterns = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    for pat in patterns:
        if not isinstance(pat, str):
            raise ValueError(f"exclude must contain fnmatch patterns (str), got {pat!r}")

    decay_params: list[torch.Tensor] = []
    decay_names: list[str] = []
    keep_params: list[torch.Tensor] = []
    keep_names: list[str] = []
    # named_parameters() yields each tensor once (tied weights under their first name).
    for full_name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        owner_name, _, leaf = full_name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        no_decay = (
            any(fnmatch.fnmatchcase(full_name, pat) for pat in patterns)
            or (exclude_norm and isinstance(owner, NORM_LAYERS))
            or (exclude_bias and _is_bias_name(leaf))
            or (exclude_1d and p.ndim <= 1)
        )
        if no_decay:
            keep_params.append(p)
            keep_names.append(full_name)
        else:
            decay_params.append(p)
            decay_names.append(full_name)

    if not decay_params and not keep_params:
        raise ValueError(
            f"model has no trainable parameters (all {sum(1 for _ in model.parameters())} "
            "are frozen or there are none)"
        )
    groups = []
    if decay_params:
        groups.append({"params": decay_params, "weight_decay": wd, "names": decay_names})
    if keep_params:
        groups.append({"params": keep_params, "weight_decay": 0.0, "names": keep_names})
    return groups


def decay_report(groups: Iterable[dict[str, Any]]) -> list[DecayEntry]:
    """List every parameter of optimizer groups with whether it is decayed and its size.

    A parameter is *decayed* when its group's ``"weight_decay"`` is > 0. Works on the output of
    :func:`param_groups` and on ``optimizer.param_groups`` (where torch has filled in defaults);
    names come from the group's ``"names"`` (or torch's native ``"param_names"``), else
    ``"group{i}.param{j}"``.

    Examples
    --------
    >>> from torch import nn
    >>> rows = decay_report(param_groups(nn.Linear(3, 2), 0.1))
    >>> [tuple(r) for r in rows]
    [('weight', True, 6), ('bias', False, 2)]
    """
    rows: list[DecayEntry] = []
    for i, group in enumerate(groups):
        if not isinstance(group, dict) or "params" not in group:
            raise ValueError(f"groups[{i}] must be a param-group dict with a 'params' key")
        if "weight_decay" not in group:
            raise ValueError(
                f"groups[{i}] has no 'weight_decay' key; pass optimizer.param_groups so the "
                "optimizer's default is known"
            )
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        names = group.get("names", group.get("param_names"))
        if names is None:
            names = [f"group{i}.param{j}" for j in range(len(params))]
        if len(names) != len(params):
            raise ValueError(f"groups[{i}] has {len(names)} names for {len(params)} parameters")
        decayed = check_scalar(group["weight_decay"], f"groups[{i}]['weight_decay']", low=0.0) > 0
        rows.extend(
            DecayEntry(n, decayed, int(p.numel())) for n, p in zip(names, params, strict=True)
        )
    return rows
