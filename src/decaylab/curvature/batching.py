"""Batching, the per-batch cache and the reduction over batches and ranks.

The data, an ``(X, y)`` pair (cut into chunks of ``chunk_size`` samples) or a
re-iterable of ``(X, y)`` batches (a ``DataLoader``), is passed over once at set-up:
each batch is checked (:mod:`decaylab.curvature.safety`), its loss normalizer ``W_b``
recorded (:func:`decaylab._inputs.batch_weight`), and its term built and cached while
memory allows. A product then sums ``Σ_b W_b (term_b V)`` over this rank's batches
(recomputing uncached terms) and all-reduces over ranks; the operator divides by
``Σ W_b`` over all ranks (:meth:`CurvatureOperator._apply`).

:class:`BatchedCurvature` holds this machinery as a mixin of
:class:`~decaylab.curvature.operators.CurvatureOperator`; it calls back the operator's
``_make_term``, ``_choose_backend`` (:mod:`decaylab.curvature.auto`) and
``_check_batch`` (the safety checks).
"""

from __future__ import annotations

import gc
import os
import types
from collections.abc import Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from decaylab._inputs import batch_weight
from decaylab.curvature.backends import _Term
from decaylab.curvature.distributed import all_reduce_max, all_reduce_sum

__all__ = ["BatchedCurvature", "DEFAULT_CHUNK_SIZE", "DEFAULT_CACHE_FRACTION"]

#: In-memory ``(X, y)`` data is split into chunks of at most this many samples, so the
#: cached linearization of one chunk (activations of the forward and backward pass)
#: stays bounded; the result does not depend on it.
DEFAULT_CHUNK_SIZE = 2048

#: Share of the memory free at construction that cached linearizations may take.
DEFAULT_CACHE_FRACTION = 0.5


def is_tensor_pair(data: Any) -> bool:
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    )


def check_data_container(data: Any) -> None:
    """``data`` is an ``(X, y)`` pair or a re-iterable of batches (not a one-shot iterator)."""
    if is_tensor_pair(data):
        return
    if isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
        raise ValueError(
            "data must be an (X, y) pair of tensors or a re-iterable of (X, y) batches, "
            f"got {type(data).__name__}"
        )
    if iter(data) is data:
        raise ValueError(
            "data must be re-iterable (a list or DataLoader), got a one-shot iterator "
            f"{type(data).__name__}; every product passes over the data again"
        )


def fingerprint(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A few order-sensitive sums that change when a batch's content or order changes."""
    parts = []
    for t in (X, y):
        flat = t.detach().reshape(t.shape[0], -1).double()
        rows = flat.sum(dim=1)
        pos = torch.arange(1, rows.shape[0] + 1, dtype=rows.dtype, device=rows.device)
        parts += [rows.sum(), (rows * pos).sum(), flat.abs().sum()]
    return torch.stack(parts).cpu()


# --------------------------------------------------------------------------- memory


def available_bytes(device: torch.device) -> float:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8e9


def reachable_tensor_bytes(root: Any, max_depth: int = 12) -> int:
    """Bytes of distinct tensor storages reachable from closures, partials and modules."""
    walk = _StorageWalk(max_depth)
    walk.visit(root, 0)
    return walk.total


class _StorageWalk:
    """The walk behind :func:`reachable_tensor_bytes`: every object and autograd node is
    visited once, every storage counted once."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.seen: set[int] = set()  # ids of the objects and graph nodes visited
        self.storages: set[tuple[str, int]] = set()
        self.total = 0

    def visit(self, obj: Any, depth: int) -> None:
        if depth > self.max_depth or id(obj) in self.seen:
            return
        self.seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            self._count(obj)
            return
        for child in _children(obj):
            self.visit(child, depth + 1)

    def _count(self, tensor: torch.Tensor) -> None:
        if tensor.grad_fn is not None:
            self._visit_graph(tensor.grad_fn)
        try:
            storage = tensor.untyped_storage()
            key = (str(tensor.device), storage.data_ptr())
            if key not in self.storages:
                self.storages.add(key)
                self.total += storage.nbytes()
        except (RuntimeError, NotImplementedError):
            self.total += tensor.numel() * tensor.element_size()

    def _visit_graph(self, node: Any) -> None:
        # Tensors an autograd graph saved for its backward (a cached double-backward term).
        stack = [node]
        while stack:
            current = stack.pop()
            if current is None or id(current) in self.seen:
                continue
            self.seen.add(id(current))
            for saved in _saved_tensors(current):
                self.visit(saved, 0)
            stack.extend(fn for fn, _ in getattr(current, "next_functions", ()))


def _children(obj: Any) -> Iterable[Any]:
    """What :class:`_StorageWalk` looks into: containers, partials, closures, bound
    methods, modules and terms (in a fixed order: the depth bound makes order matter)."""
    if isinstance(obj, (list, tuple, set, frozenset)):
        return obj
    if isinstance(obj, dict):
        return obj.values()
    if isinstance(obj, partial):
        return (obj.func, obj.args, obj.keywords)
    if isinstance(obj, types.FunctionType):
        return _closure_contents(obj)
    if isinstance(obj, types.MethodType):
        return (obj.__self__,)
    if isinstance(obj, (nn.Module, _Term)):
        return (obj.__dict__,)
    return ()


def _closure_contents(fn: types.FunctionType) -> Iterator[Any]:
    for cell in fn.__closure__ or ():
        try:
            contents = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        yield contents


def _saved_tensors(node: Any) -> Iterator[torch.Tensor]:
    for attr in dir(node):
        if not attr.startswith("_saved_"):
            continue
        try:
            value = getattr(node, attr)
        except RuntimeError:  # freed or not accessible
            continue
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (tuple, list)):
            yield from (item for item in value if isinstance(item, torch.Tensor))


class BatchedCurvature:
    """Mixin: the pass over the data at set-up, the cache, and the weighted sum of products.

    Attributes it sets: ``_batch_sizes`` and ``_batch_weights`` (per batch of this
    rank), ``_terms`` (cached terms by batch index), ``n_batches``,
    ``n_cached_batches``, ``cache_bytes``, ``_n_local``/``_w_local`` and, after
    :meth:`_reduce_totals`, ``_n_total``/``_w_total`` over all ranks.
    """

    # Provided by the operator.
    _data: Any
    _cache_memory: float | None
    _max_cached: int | None
    _requested_backend: str
    _check_deterministic: bool
    _in_memory: bool
    _chunk_size: int | None
    _terms: dict[int, _Term]
    _loss_fn: Any
    _group: Any
    device: torch.device
    backend: str
    backend_notes: list[str]
    num_params: int

    if TYPE_CHECKING:  # provided by the operator and AutoBackend

        def _convert(self, tensor: torch.Tensor) -> torch.Tensor: ...

        def _check_batch(
            self, X: torch.Tensor, y: torch.Tensor, index: int, first: bool
        ) -> None: ...

        def _make_term(
            self, backend: str, X: torch.Tensor, y: torch.Tensor, cached: bool
        ) -> _Term: ...

        def _choose_backend(self, X: torch.Tensor, y: torch.Tensor, cached: bool) -> _Term: ...

    # ----------------------------------------------------------------- iteration

    def _raw_batches(self) -> Iterator[Any]:
        if self._in_memory:
            X, y = self._data
            if X.ndim == 0 or y.ndim == 0:
                raise ValueError(
                    f"data: X and y must have a batch dimension, got shapes {tuple(X.shape)} "
                    f"and {tuple(y.shape)}"
                )
            n = X.shape[0]
            step = n if self._chunk_size is None else self._chunk_size
            for start in range(0, max(n, 1), max(step, 1)):
                yield (X[start : start + step], y[start : start + step])
        else:
            yield from self._data

    def _prepare(self, batch: Any, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise ValueError(
                f"data: batch {index} must be an (X, y) pair, got {type(batch).__name__}"
                + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
            )
        X, y = batch
        if not isinstance(X, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ValueError(
                f"data: batch {index} must hold tensors, got "
                f"({type(X).__name__}, {type(y).__name__})"
            )
        if X.ndim == 0 or y.ndim == 0 or X.shape[0] != y.shape[0]:
            raise ValueError(
                f"data: batch {index} has X of shape {tuple(X.shape)} and y of shape "
                f"{tuple(y.shape)}; their first (sample) dimensions must agree"
            )
        return self._convert(X), self._convert(y)

    def _counting_batches(self) -> Iterator[tuple[int, Any, float]]:
        """``(index, raw batch, W_b)`` for every batch that counts (samples, non-zero weight)."""
        for index, batch in enumerate(self._raw_batches()):
            if self._batch_weights[index] != 0.0:
                yield index, batch, self._batch_weights[index]

    def _weighted_batches(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, float]]:
        """``(index, X, y, W_b)`` for every batch that counts, converted for the products."""
        for index, batch, weight in self._counting_batches():
            X, y = self._prepare(batch, index)
            yield index, X, y, weight

    # ----------------------------------------------------------------- set-up

    def _setup(self) -> None:
        """One pass over the data: check each batch, weigh it, build and cache terms."""
        budget = self._cache_memory
        if budget is None:
            budget = DEFAULT_CACHE_FRACTION * available_bytes(self.device)
        self._cache_budget = budget
        self._cache_open = (self._max_cached is None or self._max_cached > 0) and budget > 0
        self.cache_bytes = 0
        self._batch_sizes: list[int] = []
        self._batch_weights: list[float] = []
        fingerprints: list[torch.Tensor] = []
        first = True
        for index, batch in enumerate(self._raw_batches()):
            X, y = self._prepare(batch, index)
            if not self._in_memory:
                fingerprints.append(fingerprint(X, y))
            weight = batch_weight(self._loss_fn, y) if X.shape[0] else 0.0
            self._batch_sizes.append(int(X.shape[0]))
            self._batch_weights.append(weight)
            if weight == 0.0:  # no samples, or every target ignored: contributes nothing
                continue
            self._check_batch(X, y, index, first)
            self._add_term(X, y, index, first)
            first = False
        self._n_local = sum(self._batch_sizes)
        self._w_local = sum(self._batch_weights)
        if self._n_local == 0 and self._group is None:
            raise ValueError("data is empty: no samples to compute the curvature on")
        self.n_batches = len(self._batch_sizes)
        self.n_cached_batches = len(self._terms)
        if self.backend == "auto":  # no batch that counts on this rank
            self.backend = (
                "fwd_rev" if self._requested_backend == "auto" else self._requested_backend
            )
        if not self._in_memory and self._check_deterministic:
            self._check_second_pass(fingerprints)

    def _add_term(self, X: torch.Tensor, y: torch.Tensor, index: int, first: bool) -> None:
        """Build batch ``index``'s term when it is the first (which chooses the backend) or
        the cache is open, and keep it while the memory budget allows."""
        want_cache = self._cache_open and (
            self._max_cached is None or len(self._terms) < self._max_cached
        )
        if not (first or want_cache):
            return
        self._synchronize()
        before = self._allocated_bytes()
        if first:
            term = self._choose_backend(X, y, want_cache)
        else:
            term = self._make_term(self.backend, X, y, True)
        if not term.cached:
            self._cache_open = False
            return
        if self.device.type == "cuda":
            size = float(self._allocated_bytes() - before)
        else:
            size = float(reachable_tensor_bytes(term))
        term.nbytes = int(size)
        if self.cache_bytes + size > self._cache_budget:
            # Memory bound reached: this and later batches are recomputed per product.
            del term
            self._cache_open = False
            self.backend_notes.append(
                f"cache budget {self._cache_budget:.3g} B reached at batch {index}; "
                "later batches recomputed"
            )
            return
        self.cache_bytes += int(size)
        self._terms[index] = term

    def _check_second_pass(self, fingerprints: list[torch.Tensor]) -> None:
        again = []
        for index, batch in enumerate(self._raw_batches()):
            X, y = self._prepare(batch, index)
            again.append(fingerprint(X, y))
        same = len(again) == len(fingerprints) and all(
            torch.allclose(a, b, rtol=1e-9, atol=0.0)
            for a, b in zip(again, fingerprints, strict=True)
        )
        if not same:
            raise ValueError(
                "data is not deterministic: two passes over it gave different batches "
                f"({len(fingerprints)} then {len(again)} batches, or different contents). "
                "Use a DataLoader with shuffle=False, drop_last=False and no random augmentation"
            )

    def _reduce_totals(self) -> None:
        """Samples ``N`` and loss weight ``Σ W_b`` over all ranks; ranks must agree on ``P``."""
        local = torch.tensor([float(self._n_local), self._w_local], dtype=torch.float64)
        total = all_reduce_sum(local, self._group)
        self._n_total = int(round(total[0].item()))
        self._w_total = float(total[1].item())
        if self._n_total == 0:
            raise ValueError("data is empty on every rank: no samples to compute the curvature on")
        if self._w_total <= 0.0:
            raise ValueError(
                "data has no target that counts: the loss's normalizer (total target weight, "
                "ignore_index excluded) is 0 over all samples, so its mean is undefined"
            )
        if self._group is not None:
            sizes = torch.tensor(
                [float(self.num_params), -float(self.num_params)], dtype=torch.float64
            )
            top = all_reduce_max(sizes, self._group)
            if top[0].item() != -top[1].item():
                raise ValueError("ranks disagree on the number of parameters P; use the same model")

    # ----------------------------------------------------------------- cache and products

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _allocated_bytes(self) -> int:
        return torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else 0

    def _drop_cache(self) -> None:
        self._terms.clear()
        self.n_cached_batches = 0
        self.cache_bytes = 0
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _accumulate(self, V: torch.Tensor, backend: str) -> torch.Tensor:
        """``Σ_b W_b H_b V`` over this rank's batches, with ``backend``.

        The cached terms belong to :attr:`backend`; with another backend (``"auto"``
        timing a candidate) every batch is computed afresh.
        """
        acc = torch.zeros_like(V)
        own = backend == self.backend
        if own and len(self._terms) == self._n_counting():
            for index, cached in self._terms.items():
                acc.add_(cached.matmat(V), alpha=self._batch_weights[index])
            return acc
        for index, batch, weight in self._counting_batches():
            term = self._terms.get(index) if own else None
            if term is None:  # only a batch without a cached term needs its data converted
                X, y = self._prepare(batch, index)
                term = self._make_term(backend, X, y, False)
            acc.add_(term.matmat(V), alpha=weight)
            del term
        return acc

    def _n_counting(self) -> int:
        return sum(1 for weight in self._batch_weights if weight != 0.0)
