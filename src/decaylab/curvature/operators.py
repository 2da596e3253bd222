"""Hessian and generalized Gauss-Newton operators of PyTorch models.

Both operators act on the flat parameter vector (``shared/CONVENTIONS.md``) and
represent the curvature of the **mean** loss over all samples,

.. math::

    J(w) = \\frac{1}{N} \\sum_n \\ell(f(x_n; w), y_n), \\qquad
    H = \\nabla^2 J(w), \\qquad
    G = \\frac{1}{N} \\sum_n J_n^\\top \\, \\nabla^2_f \\ell \\, J_n ,

where a data set split into batches ``b`` of sizes ``n_b`` is combined as
``H v = Σ_b n_b H_b v / Σ_b n_b`` (``H_b`` is the curvature of the batch mean loss).

Products are computed without ever forming the matrix. For every batch the
primal and gradient passes run once, at construction, and their result is
cached (memory permitting). ``"rev_rev"`` keeps the gradient's autograd graph (one
backward pass per product); ``"linearize"`` keeps :func:`torch.func.linearize` of the
gradient instead, and ``"fwd_rev"`` recomputes ``jvp(grad)`` every time. For the
Hessian, ``backend="auto"`` computes its first product with ``rev_rev`` and its second
with ``fwd_rev``, times both, and keeps the faster (which one wins depends on the model
and the device).
``benchmarks/hvp_backends.py`` measures them; ``docs/curvature.md`` has the numbers.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
import traceback
import types
import warnings
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap
from torch.func import linearize as _torch_linearize

from decaylab._checks import check_scalar
from decaylab._inputs import as_loss
from decaylab._losses import HalfMSELoss
from decaylab.curvature._params import select_params
from decaylab.curvature.distributed import (
    all_reduce_max,
    all_reduce_sum,
    raise_if_any_rank_failed,
    resolve_process_group,
    world_size,
)

__all__ = [
    "CurvatureOperator",
    "HessianOperator",
    "GGNOperator",
    "HalfMSELoss",
    "resolve_loss",
    "BACKENDS",
]

BACKENDS = ("auto", "linearize", "fwd_rev", "rev_rev")

#: In-memory ``(X, y)`` data is split into chunks of at most this many samples, so the
#: cached linearization of one chunk (activations of the forward and backward pass)
#: stays bounded; the result does not depend on it.
DEFAULT_CHUNK_SIZE = 2048

#: Share of the memory free at construction that cached linearizations may take.
DEFAULT_CACHE_FRACTION = 0.5

#: Largest relative difference ``‖a − b‖ / max(‖a‖, ‖b‖)`` between two backends' products
#: of the same vector that ``backend="auto"`` puts down to rounding, by dtype.
AGREEMENT_RTOL = {torch.float64: 1e-8, torch.float32: 1e-3}
#: The same for float32 on CUDA with TF32 allowed (cuDNN convolutions default to it), whose
#: 10-bit mantissa makes products differ by ~1e-3 already; and for 16-bit dtypes.
AGREEMENT_RTOL_TF32 = 5e-2
AGREEMENT_RTOL_LOW_PRECISION = 1e-1

#: Samples in the small product each "auto" candidate makes before it is timed: it pays
#: the one-time costs of a backend's first use in the process (measured on CPU: ~0.2 s
#: for ``jvp``), which would otherwise be charged to whichever candidate runs first.
WARMUP_SAMPLES = 2

# A backend that cannot handle a model fails with one of these (a CUDA out-of-memory
# error is a RuntimeError); "auto" skips it.
_BACKEND_ERRORS = (RuntimeError, NotImplementedError, TypeError, AttributeError)


def _tf32_allowed() -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the allow_tf32 flags are deprecated in newer torch
            return bool(
                torch.backends.cudnn.allow_tf32
                or torch.backends.cuda.matmul.allow_tf32
                or torch.get_float32_matmul_precision() != "highest"
            )
    except (AttributeError, RuntimeError):
        return True  # cannot tell: assume the looser arithmetic


def _agreement_rtol(dtype: torch.dtype, device: torch.device) -> float:
    """Relative tolerance within which two backends' products must agree.

    Examples
    --------
    >>> import torch
    >>> cpu = torch.device("cpu")
    >>> _agreement_rtol(torch.float64, cpu), _agreement_rtol(torch.float32, cpu)
    (1e-08, 0.001)
    """
    if dtype == torch.float32 and device.type == "cuda" and _tf32_allowed():
        return AGREEMENT_RTOL_TF32
    return AGREEMENT_RTOL.get(dtype, AGREEMENT_RTOL_LOW_PRECISION)


# Losses convex in the model output: their output Hessian is PSD, hence so is the GGN.
_GGN_LOSSES = (nn.MSELoss, HalfMSELoss, nn.CrossEntropyLoss, nn.BCEWithLogitsLoss)


def resolve_loss(loss_fn: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Turn a loss name or callable into a callable returning the batch **mean** loss.

    The shared input layer's :func:`decaylab._inputs.as_loss`: ``"mse"``
    (``nn.MSELoss``, mean over all elements), ``"half_mse"`` (:class:`HalfMSELoss`,
    ½ squared error per sample), ``"cross_entropy"``, ``"bce_with_logits"``, or any
    callable ``loss_fn(output, target)`` that returns the mean loss of the batch. A
    ``torch.nn`` loss must use ``reduction="mean"``.

    Examples
    --------
    >>> type(resolve_loss("half_mse")).__name__
    'HalfMSELoss'
    """
    return as_loss(loss_fn, "loss_fn")


# --------------------------------------------------------------------------- data


def _is_tensor_pair(data: Any) -> bool:
    return (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
    )


def _fingerprint(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A few order-sensitive sums that change when a batch's content or order changes."""
    parts = []
    for t in (X, y):
        flat = t.detach().reshape(t.shape[0], -1).double()
        rows = flat.sum(dim=1)
        pos = torch.arange(1, rows.shape[0] + 1, dtype=rows.dtype, device=rows.device)
        parts += [rows.sum(), (rows * pos).sum(), flat.abs().sum()]
    return torch.stack(parts).cpu()


# --------------------------------------------------------------------------- memory


def _available_bytes(device: torch.device) -> float:
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


def _reachable_tensor_bytes(root: Any, max_depth: int = 12) -> int:
    """Bytes of distinct tensor storages reachable from closures, partials and modules."""
    seen_obj: set[int] = set()
    seen_storage: set[tuple[str, int]] = set()
    total = 0

    def visit(obj: Any, depth: int) -> None:
        nonlocal total
        if depth > max_depth or id(obj) in seen_obj:
            return
        seen_obj.add(id(obj))
        if isinstance(obj, torch.Tensor):
            if obj.grad_fn is not None:
                visit_graph(obj.grad_fn)
            try:
                storage = obj.untyped_storage()
                key = (str(obj.device), storage.data_ptr())
                if key not in seen_storage:
                    seen_storage.add(key)
                    total += storage.nbytes()
            except (RuntimeError, NotImplementedError):
                total += obj.numel() * obj.element_size()
            return
        if isinstance(obj, (list, tuple, set, frozenset)):
            for item in obj:
                visit(item, depth + 1)
        elif isinstance(obj, dict):
            for item in obj.values():
                visit(item, depth + 1)
        elif isinstance(obj, partial):
            visit(obj.func, depth + 1)
            visit(obj.args, depth + 1)
            visit(obj.keywords, depth + 1)
        elif isinstance(obj, types.FunctionType):
            for cell in obj.__closure__ or ():
                try:
                    visit(cell.cell_contents, depth + 1)
                except ValueError:
                    pass
        elif isinstance(obj, types.MethodType):
            visit(obj.__self__, depth + 1)
        elif isinstance(obj, (nn.Module, _Term)):
            visit(obj.__dict__, depth + 1)

    def visit_graph(node: Any) -> None:
        # Tensors an autograd graph saved for its backward (a cached double-backward term).
        stack = [node]
        while stack:
            current = stack.pop()
            if current is None or id(current) in seen_obj:
                continue
            seen_obj.add(id(current))
            for attr in dir(current):
                if attr.startswith("_saved_"):
                    try:
                        value = getattr(current, attr)
                    except RuntimeError:  # freed or not accessible
                        continue
                    if isinstance(value, torch.Tensor):
                        visit(value, 0)
                    elif isinstance(value, (tuple, list)):
                        for item in value:
                            if isinstance(item, torch.Tensor):
                                visit(item, 0)
            stack.extend(fn for fn, _ in getattr(current, "next_functions", ()))

    visit(root, 0)
    return total


# --------------------------------------------------------------------------- per-batch terms


@contextlib.contextmanager
def quiet_torch_internals() -> Iterator[None]:
    """Silence warnings torch raises about its own internals on first use of forward AD.

    (The jvp decompositions are registered through the deprecated ``torch.jit.script``,
    and ``linearize``'s constant folding warns about a ``get_attr`` node.)
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Attempted to insert a get_attr Node")
        warnings.filterwarnings("ignore", message=".*torch.jit.script. is deprecated")
        yield


def linearize(func: Callable, primal: torch.Tensor) -> tuple[Any, Callable]:
    with quiet_torch_internals():
        return _torch_linearize(func, primal)


class _Term:
    """Curvature of one batch's mean loss; ``matmat`` maps ``(P, m)`` to ``(P, m)``."""

    cached = False
    nbytes = 0

    def __init__(self, vmap_chunk: int) -> None:
        self._vmap_chunk = vmap_chunk
        self._use_vmap = vmap_chunk > 1

    def matvec(self, v: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        if V.shape[1] == 1:
            return self.matvec(V[:, 0]).unsqueeze(1)
        if self._use_vmap:
            try:
                return vmap(self.matvec, in_dims=1, out_dims=1, chunk_size=self._vmap_chunk)(V)
            except (RuntimeError, NotImplementedError, TypeError):
                # Some models have ops without batching rules: columns one at a time.
                self._use_vmap = False
        return torch.stack([self.matvec(V[:, j]) for j in range(V.shape[1])], dim=1)


class _HessLinearized(_Term):
    cached = True

    def __init__(self, loss_of_w: Callable, w0: torch.Tensor, vmap_chunk: int) -> None:
        super().__init__(vmap_chunk)
        _, self._lin = linearize(grad(loss_of_w), w0)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self._lin(v)


class _HessFwdRev(_Term):
    def __init__(self, loss_of_w: Callable, w0: torch.Tensor, vmap_chunk: int) -> None:
        super().__init__(vmap_chunk)
        self._grad_fn = grad(loss_of_w)
        self._w0 = w0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        with quiet_torch_internals():
            return jvp(self._grad_fn, (self._w0,), (v,))[1]


class _HessRevRev(_Term):
    def __init__(
        self, loss_of_w: Callable, w0: torch.Tensor, vmap_chunk: int, cached: bool
    ) -> None:
        super().__init__(vmap_chunk)
        self.cached = cached
        with torch.enable_grad():
            self._w = w0.detach().clone().requires_grad_(True)
            loss = loss_of_w(self._w)
            (self._g,) = torch.autograd.grad(loss, self._w, create_graph=True)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        if not self._g.requires_grad:  # gradient does not depend on w: zero curvature
            return torch.zeros_like(v)
        with torch.enable_grad():
            (hv,) = torch.autograd.grad(
                self._g, self._w, grad_outputs=v, retain_graph=True, allow_unused=True
            )
        return torch.zeros_like(v) if hv is None else hv.detach()

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        if not (self._use_vmap and V.shape[1] > 1 and self._g.requires_grad):
            self._use_vmap = False
            return super().matmat(V)
        blocks = []
        try:
            with torch.enable_grad():
                for start in range(0, V.shape[1], self._vmap_chunk):
                    block = V[:, start : start + self._vmap_chunk].T.contiguous()
                    (hv,) = torch.autograd.grad(
                        self._g,
                        self._w,
                        grad_outputs=block,
                        retain_graph=True,
                        is_grads_batched=True,
                    )
                    blocks.append(hv.detach().T)
        except (RuntimeError, NotImplementedError):
            self._use_vmap = False
            return super().matmat(V)
        return torch.cat(blocks, dim=1)


def _output_hessian_fn(loss_fn: Callable, f0: torch.Tensor, y: torch.Tensor) -> Callable:
    """``u ↦ ∇²_f L(f0, y) u`` for the batch mean loss as a function of the outputs."""
    out_grad = grad(lambda f: loss_fn(f, y).reshape(()))
    return lambda u: jvp(out_grad, (f0,), (u,))[1]


class _GGNFwdRev(_Term):
    """``Jᵀ H_f J v``: ``J v`` by forward mode at each product, ``Jᵀ u`` through the kept
    ``vjp`` of the forward pass."""

    def __init__(
        self,
        out_of_w: Callable,
        loss_fn: Callable,
        y: torch.Tensor,
        w0: torch.Tensor,
        vmap_chunk: int,
    ) -> None:
        super().__init__(vmap_chunk)
        self._out_of_w, self._w0 = out_of_w, w0
        f0, self._vjp = vjp(out_of_w, w0)
        # The output Hessian acts on the small output space: no need to cache it.
        self._hout = _output_hessian_fn(loss_fn, f0.detach(), y)

    def _jacobian_product(self, v: torch.Tensor) -> torch.Tensor:
        return jvp(self._out_of_w, (self._w0,), (v,))[1]

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        with quiet_torch_internals():
            return self._vjp(self._hout(self._jacobian_product(v)))[0]


class _GGNLinearized(_GGNFwdRev):
    """As :class:`_GGNFwdRev`, with ``J v`` through the forward pass linearized once."""

    cached = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        _, self._jacobian_product = linearize(self._out_of_w, self._w0)


class _GGNRevRev(_Term):
    def __init__(
        self,
        out_of_w: Callable,
        loss_fn: Callable,
        y: torch.Tensor,
        w0: torch.Tensor,
        vmap_chunk: int,
        cached: bool,
    ) -> None:
        super().__init__(vmap_chunk)
        self.cached = cached
        with torch.enable_grad():
            self._w = w0.detach().clone().requires_grad_(True)
            self._f = out_of_w(self._w)
            # J v by the double-vjp trick: Jᵀd is linear in d, and its vjp with v is J v.
            self._dummy = torch.zeros_like(self._f, requires_grad=True)
            (self._jt_dummy,) = torch.autograd.grad(
                self._f, self._w, grad_outputs=self._dummy, create_graph=True
            )
            self._f_leaf = self._f.detach().requires_grad_(True)
            (self._loss_grad,) = torch.autograd.grad(
                loss_fn(self._f_leaf, y).reshape(()), self._f_leaf, create_graph=True
            )

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            (u,) = torch.autograd.grad(
                self._jt_dummy, self._dummy, grad_outputs=v, retain_graph=True
            )
            if self._loss_grad.requires_grad:
                (h,) = torch.autograd.grad(
                    self._loss_grad,
                    self._f_leaf,
                    grad_outputs=u,
                    retain_graph=True,
                    allow_unused=True,
                )
                h = torch.zeros_like(u) if h is None else h
            else:
                h = torch.zeros_like(u)
            (out,) = torch.autograd.grad(self._f, self._w, grad_outputs=h, retain_graph=True)
        return out.detach()


# --------------------------------------------------------------------------- operators


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    t = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    return t


def _check_finite(t: torch.Tensor, name: str) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got NaN or inf")


def _like_input(out: torch.Tensor, x: Any) -> Any:
    """A product back in the input's kind: numpy (its float dtype, else float64) or torch."""
    if isinstance(x, np.ndarray):
        return out.cpu().numpy().astype(x.dtype if x.dtype.kind == "f" else np.float64)
    return out


class CurvatureOperator:
    """Common machinery of :class:`HessianOperator` and :class:`GGNOperator`.

    Holds the data, the fixed weights ``w0`` (a copy taken at construction), the
    per-batch cached linearizations, the distributed all-reduce, the safety checks
    and the product counter. Subclasses only say how one batch's curvature acts.

    Attributes
    ----------
    shape : tuple of int
        ``(P, P)``.
    dtype, device
        Where products are computed (results come back in the input's dtype and device).
    num_params : int
        ``P``, length of the flat parameter vector.
    params_names : list of str
        Selected parameter names in flat-vector order.
    num_samples : int
        ``N``, samples over all batches (and all ranks).
    backend : str
        The backend in use: ``"linearize"``, ``"fwd_rev"`` or ``"rev_rev"``. Under
        ``"auto"`` it can change after the first products (see ``backend_timings``).
    n_matvecs : int
        Vector products so far (a block of ``m`` columns counts ``m``).
    n_cached_batches, n_batches : int
        Batches whose primal/gradient pass is cached, and all batches (this rank).
    cache_bytes : int
        Estimated memory held by the cached batches.
    backend_notes : list of str
        Why ``"auto"`` skipped a backend, what it measured, and where the cache budget
        ran out.
    backend_timings : dict of str to float
        Seconds per column of the product ``"auto"`` timed for each candidate backend
        (set-up included when the cache is closed); empty otherwise, and filled by the
        first products.
    """

    _kind = "curvature"
    # Backends "auto" builds and times on the first batch, keeping the fastest; when
    # empty, the first backend of the order (with or without a cache) that works is kept.
    _auto_timed: tuple[str, ...] = ()
    _auto_order: tuple[str, ...] = ("rev_rev", "fwd_rev")
    _auto_order_uncached: tuple[str, ...] = ("rev_rev", "fwd_rev")

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Any,
        data: Any,
        *,
        params: Any = None,
        device: Any = None,
        dtype: torch.dtype | None = None,
        process_group: Any = None,
        backend: str = "auto",
        chunk_size: int | None = DEFAULT_CHUNK_SIZE,
        max_cached_batches: int | None = None,
        cache_memory: float | None = None,
        vmap_chunk: int | None = None,
        check_deterministic: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if chunk_size is not None:
            chunk_size = int(check_scalar(chunk_size, "chunk_size", low=1, integer=True))
        if max_cached_batches is not None:
            max_cached_batches = int(
                check_scalar(max_cached_batches, "max_cached_batches", low=0, integer=True)
            )
        if cache_memory is not None:
            cache_memory = float(check_scalar(cache_memory, "cache_memory", low=0))
        if vmap_chunk is not None:
            vmap_chunk = int(check_scalar(vmap_chunk, "vmap_chunk", low=1, integer=True))
        self._check_train_mode(model)

        self._model = model
        self._loss_fn = resolve_loss(loss_fn)
        self._validate_loss()
        self.params_names, tensors = select_params(model, params)
        self._shapes = [t.shape for t in tensors]
        self._sizes = [t.numel() for t in tensors]
        self.num_params = int(sum(self._sizes))
        self.shape = (self.num_params, self.num_params)
        self.device = torch.device(device) if device is not None else tensors[0].device
        self.dtype = dtype if dtype is not None else tensors[0].dtype
        if not self.dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {self.dtype}")

        selected = set(self.params_names)
        # Every other parameter and buffer moves along (not differentiated).
        self._fixed: dict[str, torch.Tensor] = {}
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if name in selected:
                continue
            self._fixed[name] = self._convert(tensor.detach())
        self._w0 = torch.cat([self._convert(t.detach()).reshape(-1) for t in tensors])

        self._data = data
        self._chunk_size = chunk_size
        self._in_memory = _is_tensor_pair(data)
        if not self._in_memory:
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
        self._requested_backend = backend
        self._max_cached = max_cached_batches
        self._cache_memory = cache_memory
        if vmap_chunk is None:
            # Measured on CPU: pushing columns through vmap is no faster than a loop
            # (and 1.5x slower for fwd_rev); on a GPU it fills the device.
            self._vmap_chunk = 16 if self.device.type == "cuda" else 1
            self._vmap_chunk_rev = 1
        else:
            self._vmap_chunk = self._vmap_chunk_rev = vmap_chunk
        self._check_deterministic = check_deterministic
        self._group = resolve_process_group(process_group)
        self.n_matvecs = 0
        self.backend = backend
        self._terms: dict[int, _Term] = {}
        self.backend_notes: list[str] = []
        self.backend_timings: dict[str, float] = {}
        # "auto" candidates still to be timed on a real product (see _trial_product).
        self._trial_queue: list[str] = []
        self._trial_record: tuple[str, torch.Tensor, torch.Tensor] | None = None
        self._trial_symmetry: float | None = None

        error: BaseException | None = None
        try:
            self._setup()
        except (ValueError, RuntimeError, TypeError) as exc:
            error = exc
        raise_if_any_rank_failed(error, self._group)
        self._n_total = self._reduce_counts()

    # ----------------------------------------------------------------- helpers

    def _convert(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.is_floating_point():
            return tensor.to(device=self.device, dtype=self.dtype)
        return tensor.to(device=self.device)

    @staticmethod
    def _check_train_mode(model: nn.Module) -> None:
        stochastic = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
        offending = [
            name or type(m).__name__
            for name, m in model.named_modules()
            if isinstance(m, stochastic) and m.training
        ]
        if offending:
            raise ValueError(
                "model is in training mode and contains BatchNorm/Dropout modules "
                f"({', '.join(offending[:4])}{'...' if len(offending) > 4 else ''}): the curvature "
                "would change from product to product; call model.eval() first"
            )

    def _validate_loss(self) -> None:
        pass

    def _unflatten(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = w.split(self._sizes)
        out = dict(self._fixed)
        for name, part, shape in zip(self.params_names, parts, self._shapes, strict=True):
            out[name] = part.view(shape)
        return out

    def _forward(self, w: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        return functional_call(self._model, self._unflatten(w), (X,))

    def _loss(self, w: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._loss_fn(self._forward(w, X), y).reshape(())

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

    def _check_output(self, out: torch.Tensor, y: torch.Tensor, index: int) -> None:
        if isinstance(self._loss_fn, (nn.MSELoss, HalfMSELoss)) and out.shape != y.shape:
            raise ValueError(
                f"data: batch {index}: model output shape {tuple(out.shape)} and y shape "
                f"{tuple(y.shape)} disagree (MSE would broadcast them silently)"
            )

    def _check_loss_value(self, X: torch.Tensor, y: torch.Tensor, index: int, twice: bool) -> None:
        with torch.no_grad():
            out = self._forward(self._w0, X)
            if not isinstance(out, torch.Tensor):
                raise ValueError(f"model must return a tensor, got {type(out).__name__}")
            self._check_output(out, y, index)
            loss = self._loss_fn(out, y)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
                raise ValueError(
                    f"loss_fn must return a scalar (the mean loss over the batch), got {shape}"
                )
            if not torch.isfinite(loss):
                raise ValueError(f"loss_fn is not finite on data batch {index}: {loss.item()!r}")
            if twice:
                again = self._loss_fn(self._forward(self._w0, X), y)
                if not torch.allclose(loss, again, rtol=1e-5, atol=0.0):
                    raise ValueError(
                        "model is not deterministic: two forward passes of the same batch gave "
                        f"losses {loss.item()!r} and {again.item()!r} (random layers in forward?); "
                        "the curvature would change from product to product"
                    )

    # Subclasses build the per-batch term for each backend.
    def _make_term(self, backend: str, X: torch.Tensor, y: torch.Tensor, cached: bool) -> _Term:
        raise NotImplementedError

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _allocated_bytes(self) -> int:
        return torch.cuda.memory_allocated(self.device) if self.device.type == "cuda" else 0

    def _forget_failure(self, name: str, exc: BaseException) -> None:
        """Note why ``name`` failed and let go of what its attempt allocated.

        The traceback's frames hold the half-built term (an autograd graph, activations);
        clearing them keeps the traceback printable but frees the memory (a CUDA
        out-of-memory error must not leave the next candidate short of memory).
        """
        self.backend_notes.append(f"{name} failed: {type(exc).__name__}: {exc}"[:300])
        seen: set[int] = set()
        link: BaseException | None = exc
        while link is not None and id(link) not in seen:
            seen.add(id(link))
            if link.__traceback__ is not None:
                traceback.clear_frames(link.__traceback__)
            link = link.__cause__ or link.__context__
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _warm_up(self, name: str, X: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> None:
        """One product on a few samples: it pays a backend's first-use costs in the process
        (which would otherwise be charged to its timed product) and shows early whether
        the backend can differentiate this model at all (raises one of ``_BACKEND_ERRORS``)."""
        try:
            self._make_term(name, X[:WARMUP_SAMPLES], y[:WARMUP_SAMPLES], True).matvec(v)
        except ValueError:
            pass  # about these few samples (a loss that needs more); the full batch decides

    def _probe(self, X: torch.Tensor, y: torch.Tensor, cached: bool) -> _Term:
        """Choose the backend on the first batch and return that batch's term.

        With ``backend="auto"``: when the class names candidates to time
        (``_auto_timed``), those that pass a warm-up product on two samples stay in the
        running, the first of them builds the batch's term, and the first operator
        products decide (:meth:`_trial_product`); otherwise the first of ``_auto_order``
        that builds and multiplies is kept. Candidates that fail are skipped, with the
        reason in :attr:`backend_notes`.
        """
        if self._requested_backend != "auto":
            self.backend = self._requested_backend
            return self._make_term(self.backend, X, y, cached)
        v = torch.randn(
            self.num_params, generator=torch.Generator().manual_seed(0), dtype=self.dtype
        ).to(self.device)
        errors: list[BaseException] = []
        if self._auto_timed:
            alive = []
            for name in self._auto_timed:
                try:
                    self._warm_up(name, X, y, v)
                except _BACKEND_ERRORS as exc:
                    self._forget_failure(name, exc)
                    errors.append(exc)
                    continue
                alive.append(name)
            for name in list(alive):
                try:
                    term = self._make_term(name, X, y, cached)
                except _BACKEND_ERRORS as exc:
                    alive.remove(name)
                    self._forget_failure(name, exc)
                    errors.append(exc)
                    continue
                self.backend = name
                if len(alive) == 1:
                    self.backend_notes.append(f"auto: only {name} works here")
                else:
                    self._trial_queue = [name] + [other for other in alive if other != name]
                    self.backend_notes.append(
                        f"auto: the first products are computed with {', '.join(alive)} in "
                        "turn and timed; the fastest is kept"
                    )
                return term
        else:
            for name in self._auto_order if cached else self._auto_order_uncached:
                term = None
                try:
                    term = self._make_term(name, X, y, cached)
                    term.matvec(v)
                except _BACKEND_ERRORS as exc:
                    term = None
                    self._forget_failure(name, exc)
                    errors.append(exc)
                    continue
                self.backend = name
                return term
        raise errors[-1]

    def _drop_cache(self) -> None:
        self._terms.clear()
        self.n_cached_batches = 0
        self.cache_bytes = 0
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _trial_product(self, V: torch.Tensor) -> tuple[torch.Tensor, str | None]:
        """This rank's product while ``"auto"`` is still choosing, and who computed it.

        Each candidate computes one whole product (all batches), timed per column; a
        candidate that fails there (e.g. out of memory on a full batch) is dropped and
        the next computes the product. When every candidate has been timed, the fastest
        is kept and the cached terms of the others are freed (:meth:`_apply` checks the
        products and decides, after the all-reduce). So choosing costs no extra product:
        only the slower candidates' first products are slower.
        """
        while self._trial_queue:
            name = self._trial_queue[0]
            try:
                self._synchronize()
                start = time.perf_counter()
                acc = self._accumulate(V, name)
                self._synchronize()
                seconds = time.perf_counter() - start
            except _BACKEND_ERRORS as exc:
                self._trial_queue.pop(0)
                self._forget_failure(name, exc)
                if name == self.backend:
                    self._drop_cache()
                    if not self._trial_queue:
                        raise
                    self.backend = self._trial_queue[0]
                continue
            self._trial_queue.pop(0)
            self.backend_timings[name] = seconds / V.shape[1]
            return acc, name
        # The candidates still untimed all failed: keep the fastest of those timed.
        self._finish_trial()
        return self._accumulate(V, self.backend), None

    def _check_trial_symmetry(self, name: str, V: torch.Tensor, W: torch.Tensor) -> None:
        """Two candidates' products must be those of one symmetric matrix.

        With ``W₁ = H V₁`` from one backend and ``W₂ = H V₂`` from another,
        ``V₂ᵀ W₁ = W₂ᵀ V₁`` holds to rounding; a larger gap means the model is not
        deterministic or a backend is wrong for it (``ValueError``). It costs no product
        (a weaker check than comparing the two products of one vector, which would).
        """
        cols = min(V.shape[1], 4)  # a few columns say enough and bound the memory kept
        if self._trial_record is None:
            self._trial_record = (name, V[:, :cols].clone(), W[:, :cols].clone())
            return
        first, V1, W1 = self._trial_record
        V2, W2 = V[:, :cols].double(), W[:, :cols].double()
        V1, W1 = V1.double(), W1.double()
        gap = float((V2.T @ W1 - W2.T @ V1).abs().max())
        scale = float(
            torch.linalg.vector_norm(V2) * torch.linalg.vector_norm(W1)
            + torch.linalg.vector_norm(W2) * torch.linalg.vector_norm(V1)
        )
        relative = 0.0 if gap == 0.0 else gap / scale
        rtol = _agreement_rtol(self.dtype, self.device)
        if relative > rtol:
            raise ValueError(
                f"backend='auto': the {first} and {name} products are not those of one "
                f"symmetric matrix (V2ᵀ H V1 differs from (H V2)ᵀ V1 by a relative "
                f"{relative:.3g}, above the {rtol:g} that {self.dtype} rounding allows). The "
                "model is not deterministic (random layers, data-dependent control flow) or a "
                "backend is wrong for it; check a small case against dense_hessian and pass "
                "an explicit backend"
            )
        self._trial_symmetry = relative

    def _finish_trial(self) -> None:
        timings = self.backend_timings
        chosen = min(timings, key=timings.__getitem__)
        if chosen != self.backend:
            self._drop_cache()
            self.backend = chosen
        per = ", ".join(f"{name} {seconds:.3g} s" for name, seconds in timings.items())
        symmetric = (
            ""
            if self._trial_symmetry is None
            else f"; their products agree (symmetry) to {self._trial_symmetry:.1g}"
        )
        self.backend_notes.append(
            f"auto: the first products took {per} per column{symmetric}; chose {chosen}"
        )
        self._trial_record = None

    def _setup(self) -> None:
        budget = self._cache_memory
        if budget is None:
            budget = DEFAULT_CACHE_FRACTION * _available_bytes(self.device)
        cache_open = (self._max_cached is None or self._max_cached > 0) and budget > 0
        used = 0.0
        n_local = 0
        fingerprints: list[torch.Tensor] = []
        self._batch_sizes: list[int] = []
        first = True
        for index, batch in enumerate(self._raw_batches()):
            X, y = self._prepare(batch, index)
            n = int(X.shape[0])
            self._batch_sizes.append(n)
            if not self._in_memory:
                fingerprints.append(_fingerprint(X, y))
            if n == 0:
                continue
            n_local += n
            self._check_loss_value(X, y, index, twice=first and self._check_deterministic)
            want_cache = cache_open and (
                self._max_cached is None or len(self._terms) < self._max_cached
            )
            if not (first or want_cache):
                continue
            self._synchronize()
            before = self._allocated_bytes()
            if first:
                term = self._probe(X, y, want_cache)
                first = False
            else:
                term = self._make_term(self.backend, X, y, True)
            if not term.cached:
                cache_open = False
                continue
            if self.device.type == "cuda":
                size = float(self._allocated_bytes() - before)
            else:
                size = float(_reachable_tensor_bytes(term))
            term.nbytes = int(size)
            if used + size > budget:
                # Memory bound reached: this and later batches are recomputed per product.
                del term
                cache_open = False
                self.backend_notes.append(
                    f"cache budget {budget:.3g} B reached at batch {index}; "
                    "later batches recomputed"
                )
                continue
            used += size
            self._terms[index] = term
        if n_local == 0 and self._group is None:
            raise ValueError("data is empty: no samples to compute the curvature on")
        self._n_local = n_local
        self.cache_bytes = int(used)
        self.n_batches = len(self._batch_sizes)
        self.n_cached_batches = len(self._terms)
        if self.backend == "auto":  # no non-empty batch on this rank
            self.backend = (
                "fwd_rev" if self._requested_backend == "auto" else self._requested_backend
            )
        if not self._in_memory and self._check_deterministic:
            self._check_second_pass(fingerprints)

    def _check_second_pass(self, fingerprints: list[torch.Tensor]) -> None:
        again = []
        for index, batch in enumerate(self._raw_batches()):
            X, y = self._prepare(batch, index)
            again.append(_fingerprint(X, y))
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

    def _reduce_counts(self) -> int:
        n_total = int(
            round(
                all_reduce_sum(
                    torch.tensor([float(self._n_local)], dtype=torch.float64), self._group
                ).item()
            )
        )
        if n_total == 0:
            raise ValueError("data is empty on every rank: no samples to compute the curvature on")
        if self._group is not None:
            sizes = torch.tensor(
                [float(self.num_params), -float(self.num_params)], dtype=torch.float64
            )
            top = all_reduce_max(sizes, self._group)
            if top[0].item() != -top[1].item():
                raise ValueError("ranks disagree on the number of parameters P; use the same model")
        return n_total

    @property
    def num_samples(self) -> int:
        return self._n_total

    @property
    def world_size(self) -> int:
        return world_size(self._group)

    def reset_counter(self) -> None:
        """Set :attr:`n_matvecs` back to zero."""
        self.n_matvecs = 0

    # ----------------------------------------------------------------- products

    def _accumulate(self, V: torch.Tensor, backend: str) -> torch.Tensor:
        """``Σ_b n_b H_b V`` over this rank's batches, with ``backend``.

        The cached terms belong to :attr:`backend`; with another backend (``"auto"``
        timing a candidate) every batch is computed afresh.
        """
        acc = torch.zeros_like(V)
        own = backend == self.backend
        if own and len(self._terms) == self.n_batches:
            for index, term in self._terms.items():
                acc.add_(term.matmat(V), alpha=self._batch_sizes[index])
            return acc
        for index, batch in enumerate(self._raw_batches()):
            if own and index in self._terms:
                term = self._terms[index]
            else:
                X, y = self._prepare(batch, index)
                if X.shape[0] == 0:
                    continue
                term = self._make_term(backend, X, y, False)
            acc.add_(term.matmat(V), alpha=self._batch_sizes[index])
            del term
        return acc

    def _apply(self, V: torch.Tensor) -> torch.Tensor:
        timed = None
        if self._trial_queue:
            acc, timed = self._trial_product(V)
        else:
            acc = self._accumulate(V, self.backend)
        acc = all_reduce_sum(acc, self._group)
        if timed is not None:
            # Checked on the all-reduced product, so that every rank sees the same numbers
            # and raises alike (a rank raising alone would leave the others waiting).
            self._check_trial_symmetry(timed, V, acc)
            if not self._trial_queue:
                self._finish_trial()
        return acc / self._n_total

    def _name_of_index(self, index: int) -> str:
        start = 0
        for name, size in zip(self.params_names, self._sizes, strict=True):
            if index < start + size:
                return name
            start += size
        return "?"

    def matmat(self, V: Any) -> Any:
        """Product with a block of vectors.

        Parameters
        ----------
        V : torch.Tensor or numpy.ndarray of shape ``(P, m)``

        Returns
        -------
        Same type, dtype and device as ``V``, shape ``(P, m)``; computed in
        :attr:`dtype` on :attr:`device`. Adds ``m`` to :attr:`n_matvecs`.
        """
        T = _as_tensor(V, "V")
        if T.ndim != 2 or T.shape[0] != self.num_params:
            raise ValueError(f"V must have shape ({self.num_params}, m), got {tuple(T.shape)}")
        _check_finite(T, "V")
        return _like_input(self._matmat_checked(T), V)

    def _matmat_checked(self, T: torch.Tensor) -> torch.Tensor:
        work = T.detach().to(device=self.device, dtype=self.dtype)
        if work.shape[1] == 0:
            return T.detach().clone()
        result = self._apply(work).detach()
        self.n_matvecs += int(T.shape[1])
        finite = torch.isfinite(result)
        if not bool(finite.all()):
            index = int((~finite).any(dim=1).nonzero()[0, 0])
            name = self._name_of_index(index)
            raise ValueError(
                f"the {self._kind} product has non-finite values at flat index {index}, in "
                f"parameter {name!r}; check the weights and data for overflow"
            )
        return result.to(device=T.device, dtype=T.dtype if T.is_floating_point() else self.dtype)

    def matvec(self, v: Any) -> Any:
        """Product with one vector ``v`` of length ``P`` (torch or numpy, same type back)."""
        t = _as_tensor(v, "v")
        if t.ndim != 1 or t.shape[0] != self.num_params:
            raise ValueError(
                f"v must be 1-D of length {self.num_params}, got shape {tuple(t.shape)}"
            )
        _check_finite(t, "v")
        return _like_input(self._matmat_checked(t.unsqueeze(1))[:, 0], v)

    def __matmul__(self, other: Any) -> Any:
        ndim = getattr(other, "ndim", None)
        if ndim == 2:
            return self.matmat(other)
        return self.matvec(other)

    def to_dense(self, *, max_params: int = 10_000) -> torch.Tensor:
        """The full ``(P, P)`` matrix from products with the unit vectors (small models only).

        Costs ``P`` products (counted in :attr:`n_matvecs`).
        """
        max_params = int(check_scalar(max_params, "max_params", low=1, integer=True))
        if self.num_params > max_params:
            raise ValueError(
                f"max_params={max_params} is below P={self.num_params}; "
                "raise it to build the dense matrix"
            )
        eye = torch.eye(self.num_params, dtype=self.dtype, device=self.device)
        return self.matmat(eye)

    def to_scipy(self) -> Any:
        """A :class:`scipy.sparse.linalg.LinearOperator` on float64 numpy vectors.

        Products convert to :attr:`dtype` on :attr:`device` and back; they are counted
        in :attr:`n_matvecs`.
        """
        from scipy.sparse.linalg import LinearOperator

        def _mv(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, dtype=np.float64).reshape(-1)
            return self.matvec(x)

        def _mm(X: np.ndarray) -> np.ndarray:
            return self.matmat(np.asarray(X, dtype=np.float64))

        return LinearOperator(
            self.shape, matvec=_mv, rmatvec=_mv, matmat=_mm, rmatmat=_mm, dtype=np.float64
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(P={self.num_params}, N={self._n_total}, "
            f"backend={self.backend!r}, "
            f"dtype={self.dtype}, device={self.device}, cached={self.n_cached_batches}/"
            f"{self.n_batches} batches, world_size={self.world_size})"
        )


class HessianOperator(CurvatureOperator):
    """Hessian of the mean loss over all samples, as a linear operator.

    .. math:: H = \\nabla^2_w \\frac{1}{N}\\sum_{n=1}^N \\ell(f(x_n; w), y_n)
              = \\frac{1}{N}\\sum_b n_b\\, \\nabla^2_w L_b(w)

    where ``L_b`` is the mean loss ``loss_fn`` returns for batch ``b`` of size ``n_b``.

    Parameters
    ----------
    model : torch.nn.Module
        Evaluated at its current weights (copied at construction). Must be in
        ``eval()`` mode if it contains BatchNorm or Dropout.
    loss_fn : callable or str
        ``loss_fn(output, target)`` returning the **mean** loss of a batch, e.g.
        ``torch.nn.CrossEntropyLoss()``, ``torch.nn.MSELoss()`` or
        :class:`HalfMSELoss` (½ squared error, the regression loss of the conventions);
        or one of the names ``"cross_entropy"``, ``"mse"``, ``"half_mse"``, ``"bce_with_logits"``.
    data : (X, y) pair of tensors, or a re-iterable of (X, y) batches
        Batches are weighted by their size. A ``DataLoader`` must be deterministic
        (``shuffle=False``, no random augmentation); this is checked once.
    params : None, names or tensors
        Parameters to differentiate (default: all with ``requires_grad``), laid out in
        ``named_parameters()`` order.
    device, dtype : optional
        Where and in which precision products are computed (default: those of the
        first selected parameter). Parameters, buffers and floating data are converted.
    process_group : optional
        ``torch.distributed`` group over which the data is sharded; ``None`` uses the
        default group when ``torch.distributed`` is initialized.
    backend : {"auto", "rev_rev", "linearize", "fwd_rev"}
        ``"rev_rev"`` is double backward with ``torch.autograd`` on the gradient graph
        cached per batch (recomputed for batches past the memory bound);
        ``"linearize"`` caches :func:`torch.func.linearize` of the gradient per batch;
        ``"fwd_rev"`` recomputes ``jvp(grad)`` at each product. ``"auto"`` checks at
        construction that ``rev_rev`` and ``fwd_rev`` work (one warm-up product each on
        two samples, which also pays their one-time costs), builds ``rev_rev``'s cache,
        and lets the first real products decide: the first is computed with
        ``rev_rev``, the second with ``fwd_rev``, each timed; then the faster is kept
        and the other's memory freed (seconds in ``backend_timings``, the story in
        ``backend_notes``). Choosing thus costs no extra product. Which one wins depends
        on the model and device (``rev_rev`` on a small CPU CNN, ``fwd_rev`` for a
        ResNet-18 on a GPU). The two products must be those of one symmetric matrix,
        ``V₂ᵀ(H V₁) = (H V₂)ᵀV₁`` to rounding (relative ``1e-3`` in float32, ``5e-2``
        with TF32 on CUDA, ``1e-8`` in float64), else ``ValueError``: the model is not
        deterministic or a backend is wrong for it. A candidate that fails (unsupported
        op; CUDA out of memory on a full batch) is dropped with a note and the product
        is computed by the other. ``"linearize"`` is never chosen by ``"auto"``: its
        products can be the cheapest, but its tracing costs seconds per batch, which
        only pays over many products at fixed weights, and the operator does not know
        how many will come; request it explicitly then. Under ``torch.distributed``
        each rank times its own shard and may choose differently (the products agree to
        rounding).
    chunk_size : int or None
        In-memory ``(X, y)`` data is split into chunks of this many samples (default 2048).
    max_cached_batches : int or None
        At most this many batch linearizations are cached (default: no count limit).
    cache_memory : float or None
        Byte budget for cached linearizations (default: half the memory free at
        construction, on the GPU or in RAM). Batches past the budget are recomputed
        at each product (``rev_rev`` from scratch; ``fwd_rev`` under ``linearize``).
    vmap_chunk : int or None
        Columns pushed through :func:`torch.func.vmap` at once in :meth:`matmat`.
    check_deterministic : bool
        Check once that the model and the data give the same thing twice.

    Examples
    --------
    >>> import torch
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> X, y = torch.randn(20, 3), torch.randn(20, 1)
    >>> model = torch.nn.Linear(3, 1)
    >>> H = HessianOperator(model, HalfMSELoss(), (X, y))
    >>> H.shape
    (4, 4)
    >>> Xb = torch.cat([X, torch.ones(20, 1)], dim=1)   # linear model: H = Xᵀ X / N
    >>> torch.allclose(H.matmat(torch.eye(4)), Xb.T @ Xb / 20, atol=1e-5)
    True
    >>> H.n_matvecs
    4
    """

    _kind = "Hessian"
    # No fixed order wins everywhere: one product took 0.17 s by rev_rev and 0.26 s by
    # fwd_rev for a 1-D CNN on CPU, but 0.42 s and 0.255 s for a ResNet-18 on an H200
    # (benchmarks/results/gpu_diagnose_h200.log). So "auto" times them on the first two
    # real products. rev_rev first: it is the one with cached terms, built at set-up, so
    # its timed product is what its later products cost.
    _auto_timed = ("rev_rev", "fwd_rev")

    def _make_term(self, backend: str, X: torch.Tensor, y: torch.Tensor, cached: bool) -> _Term:
        loss_of_w = partial(_loss_closure, self, X, y)
        if backend == "linearize" and cached:
            return _HessLinearized(loss_of_w, self._w0, self._vmap_chunk)
        if backend in ("linearize", "fwd_rev"):
            return _HessFwdRev(loss_of_w, self._w0, self._vmap_chunk)
        return _HessRevRev(loss_of_w, self._w0, self._vmap_chunk_rev, cached)


def _loss_closure(
    op: CurvatureOperator, X: torch.Tensor, y: torch.Tensor, w: torch.Tensor
) -> torch.Tensor:
    return op._loss(w, X, y)


def _output_closure(op: CurvatureOperator, X: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return op._forward(w, X)


class GGNOperator(CurvatureOperator):
    """Generalized Gauss-Newton matrix of the mean loss, positive semi-definite.

    .. math:: G = \\frac{1}{N}\\sum_b n_b\\, J_b^\\top \\, \\nabla^2_f L_b \\, J_b

    with ``J_b = ∂f(X_b; w)/∂w`` the Jacobian of the model outputs and ``∇²_f L_b``
    the Hessian of the batch mean loss with respect to the outputs: ``2/(n d) I``
    for ``MSELoss`` (mean over ``n·d`` elements), ``I/n`` for :class:`HalfMSELoss`,
    ``(diag p_i − p_i p_iᵀ)/n`` per sample for ``CrossEntropyLoss``. The output
    Hessian is obtained by automatic differentiation of ``loss_fn`` itself, so class
    weights, label smoothing and soft targets are honoured.

    Parameters are those of :class:`HessianOperator`; ``loss_fn`` must be convex in
    the output: ``nn.MSELoss``, :class:`HalfMSELoss`, ``nn.CrossEntropyLoss``,
    ``nn.BCEWithLogitsLoss`` (or their names). Each product costs one Jacobian-vector
    product and one vector-Jacobian product. ``"auto"`` takes ``"linearize"`` first
    here: the forward pass is linearized once per batch (``J v`` then costs about a
    forward pass) and its autograd graph kept for ``Jᵀ u``; then ``"rev_rev"`` (the
    double-vjp trick on the kept graph), then ``"fwd_rev"``: the first that builds and
    multiplies one vector on the first batch is kept (no timing here, unlike the Hessian).

    Examples
    --------
    >>> import torch
    >>> X, y = torch.randn(30, 2), torch.randint(0, 3, (30,))
    >>> G = GGNOperator(torch.nn.Linear(2, 3), "cross_entropy", (X, y))
    >>> M = G.to_dense().double()
    >>> bool(torch.allclose(M, M.T, atol=1e-6)), bool(torch.linalg.eigvalsh(M).min() > -1e-6)
    (True, True)
    """

    _kind = "GGN"
    # A linearized forward makes J v as cheap as a forward pass, so a product is one
    # forward-mode pass plus one backward pass: 0.7x a gradient against 1.2-1.4x for the
    # double-vjp trick of "rev_rev" (benchmarks/hvp_backends.py), for a set-up of
    # ~1.5 s of tracing the forward only.
    _auto_order = ("linearize", "rev_rev", "fwd_rev")
    _auto_order_uncached = ("fwd_rev", "rev_rev")

    def _validate_loss(self) -> None:
        if not isinstance(self._loss_fn, _GGN_LOSSES):
            raise ValueError(
                "loss_fn for the GGN must be convex in the model output: nn.MSELoss, HalfMSELoss, "
                "nn.CrossEntropyLoss or nn.BCEWithLogitsLoss (or their names), "
                f"got {self._loss_fn!r}"
            )

    def _make_term(self, backend: str, X: torch.Tensor, y: torch.Tensor, cached: bool) -> _Term:
        out_of_w = partial(_output_closure, self, X)
        if backend == "linearize" and cached:
            return _GGNLinearized(out_of_w, self._loss_fn, y, self._w0, self._vmap_chunk)
        if backend in ("linearize", "fwd_rev"):
            return _GGNFwdRev(out_of_w, self._loss_fn, y, self._w0, self._vmap_chunk)
        return _GGNRevRev(out_of_w, self._loss_fn, y, self._w0, 1, cached)
