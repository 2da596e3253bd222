"""Hessian and generalized Gauss-Newton operators of PyTorch models.

This module is the one place that defines *what* is computed: the curvature of the
**mean loss over all samples**, combined from batches as the loss's own mean would
combine them (:class:`CurvatureOperator`). *How* one batch's product is computed lives
elsewhere, one concern per module:

- :mod:`~decaylab.curvature.backends`: the product backends (``rev_rev``, ``fwd_rev``,
  ``linearize``) as per-batch terms;
- :mod:`~decaylab.curvature.batching`: the pass over the data, the per-batch cache and
  the weighted sum over batches and ranks (:mod:`~decaylab.curvature.distributed`);
- :mod:`~decaylab.curvature.safety`: the checks of model, batches, loss, backend and
  products;
- :mod:`~decaylab.curvature.auto`: the choice made by ``backend="auto"``;
- :mod:`decaylab._inputs`: loss names, the mean-loss probe and each batch's normalizer.

``benchmarks/hvp_backends.py`` measures the backends; ``docs/curvature.md`` has the numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from decaylab._checks import check_scalar
from decaylab._inputs import as_loss, loss_to
from decaylab._losses import HalfMSELoss
from decaylab.curvature._params import select_params
from decaylab.curvature.auto import AGREEMENT_RTOL, AutoBackend, agreement_rtol
from decaylab.curvature.backends import (
    BACKENDS,
    _GGNFwdRev,
    _GGNLinearized,
    _GGNRevRev,
    _HessFwdRev,
    _HessLinearized,
    _HessRevRev,
    _Term,
    ggn_term,
    hessian_term,
    linearize,
    linearize_safe_loss,
    linearize_verified,
    quiet_torch_internals,
)
from decaylab.curvature.batching import (
    DEFAULT_CACHE_FRACTION,
    DEFAULT_CHUNK_SIZE,
    BatchedCurvature,
    check_data_container,
    is_tensor_pair,
)
from decaylab.curvature.distributed import (
    all_reduce_sum,
    raise_if_any_rank_failed,
    resolve_process_group,
    world_size,
)
from decaylab.curvature.safety import (
    LINEARIZE_CHECK_SAMPLES,
    as_vector_tensor,
    check_batch_loss,
    check_product,
    check_train_mode,
    check_vector,
    like_input,
    verify_linearize,
)

__all__ = [
    "CurvatureOperator",
    "HessianOperator",
    "GGNOperator",
    "HalfMSELoss",
    "resolve_loss",
    "BACKENDS",
]

# Re-exported: tests and benchmarks reach the terms and helpers through this module.
_REEXPORTED = (
    AGREEMENT_RTOL,
    DEFAULT_CACHE_FRACTION,
    _GGNFwdRev,
    _GGNLinearized,
    _GGNRevRev,
    _HessFwdRev,
    _HessLinearized,
    _HessRevRev,
    linearize,
    quiet_torch_internals,
)

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


class CurvatureOperator(BatchedCurvature, AutoBackend):
    """Curvature of the mean loss over all samples, as a linear operator on flat weights.

    **The definition.** ``loss_fn`` returns a batch's mean ``L_b = S_b / W_b``: its summed
    loss ``S_b`` over its normalizer ``W_b`` (:func:`decaylab._inputs.batch_weight`: the
    sample count ``n_b`` for most losses; the total class weight of the targets that are
    not ``ignore_index`` for ``CrossEntropyLoss``/``NLLLoss``). The loss over all data,
    as one call of ``loss_fn`` on all of it would compute it, is

    .. math::

        J(w) = \\frac{\\sum_b S_b(w)}{\\sum_b W_b}
             = \\frac{\\sum_b W_b \\, L_b(w)}{\\sum_b W_b},
        \\qquad
        C \\, v = \\frac{\\sum_b W_b \\, C_b v}{\\sum_b W_b},

    with ``C_b`` the curvature of ``L_b``: the Hessian ``∇²_w L_b``
    (:class:`HessianOperator`) or the generalized Gauss-Newton matrix
    ``J_bᵀ ∇²_f L_b J_b`` (:class:`GGNOperator`). Sums run over the batches of every
    rank under ``torch.distributed``. So the result does not depend on how the data is
    split; a batch whose targets are all ignored has ``W_b = 0`` and adds nothing. A
    custom ``loss_fn`` is checked at set-up to be such a mean (duplicating a batch leaves
    it unchanged; cutting a batch in two recombines exactly), else ``ValueError``.

    This class holds the fixed weights ``w0`` (a copy taken at construction), the
    parameter layout and the public products; batching and the cache come from
    :class:`~decaylab.curvature.batching.BatchedCurvature`, the backend choice from
    :class:`~decaylab.curvature.auto.AutoBackend`. Subclasses only say how one batch's
    curvature acts (``_make_term``).

    Attributes
    ----------
    shape : tuple of int
        ``(P, P)``.
    dtype, device
        Where products are computed (results come back in the input's dtype and device).
        The loss's own tensors (class weights, ``pos_weight``) are converted there too.
    num_params : int
        ``P``, length of the flat parameter vector.
    params_names : list of str
        Selected parameter names in flat-vector order.
    num_samples : int
        ``N``, samples over all batches (and all ranks).
    total_weight : float
        ``Σ_b W_b`` over all batches and ranks (``N`` for most losses).
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
        self._read_limits(chunk_size, max_cached_batches, cache_memory, vmap_chunk)
        check_train_mode(model)
        loss = resolve_loss(loss_fn)
        self._model = model
        self._set_params(model, params, device, dtype)
        self._loss_fn = loss_to(loss, dtype=self.dtype, device=self.device)
        self._validate_loss()
        check_data_container(data)
        self._data = data
        self._in_memory = is_tensor_pair(data)
        self._requested_backend = self.backend = backend
        self._check_deterministic = check_deterministic
        self._group = resolve_process_group(process_group)
        self.n_matvecs = 0
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
        self._reduce_totals()

    # ----------------------------------------------------------------- set-up

    def _read_limits(
        self,
        chunk_size: Any,
        max_cached_batches: Any,
        cache_memory: Any,
        vmap_chunk: Any,
    ) -> None:
        if chunk_size is not None:
            chunk_size = int(check_scalar(chunk_size, "chunk_size", low=1, integer=True))
        if max_cached_batches is not None:
            max_cached_batches = int(
                check_scalar(max_cached_batches, "max_cached_batches", low=0, integer=True)
            )
        if cache_memory is not None:
            cache_memory = float(check_scalar(cache_memory, "cache_memory", low=0))
        self._chunk_size = chunk_size
        self._max_cached = max_cached_batches
        self._cache_memory = cache_memory
        if vmap_chunk is not None:
            vmap_chunk = int(check_scalar(vmap_chunk, "vmap_chunk", low=1, integer=True))
        self._vmap_chunk_option = vmap_chunk

    def _set_params(self, model: nn.Module, params: Any, device: Any, dtype: Any) -> None:
        """The flat layout, ``w0``, and every other parameter and buffer (moved along,
        not differentiated), in the operator's dtype on its device."""
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
        self._fixed: dict[str, torch.Tensor] = {
            name: self._convert(tensor.detach())
            for name, tensor in [*model.named_parameters(), *model.named_buffers()]
            if name not in selected
        }
        self._w0 = torch.cat([self._convert(t.detach()).reshape(-1) for t in tensors])
        if self._vmap_chunk_option is None:
            # Measured on CPU: pushing columns through vmap is no faster than a loop
            # (and 1.5x slower for fwd_rev); on a GPU it fills the device.
            self._vmap_chunk = 16 if self.device.type == "cuda" else 1
            self._vmap_chunk_rev = 1
        else:
            self._vmap_chunk = self._vmap_chunk_rev = self._vmap_chunk_option

    def _convert(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.is_floating_point():
            return tensor.to(device=self.device, dtype=self.dtype)
        return tensor.to(device=self.device)

    def _validate_loss(self) -> None:
        pass

    def _check_batch(self, X: torch.Tensor, y: torch.Tensor, index: int, first: bool) -> None:
        forward = partial(self._forward, self._w0)
        twice = first and self._check_deterministic
        check_batch_loss(forward, self._loss_fn, X, y, index, first=first, twice=twice)

    # ----------------------------------------------------------------- the model as f(w)

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

    # Subclasses build the per-batch term for each backend.
    def _make_term(self, backend: str, X: torch.Tensor, y: torch.Tensor, cached: bool) -> _Term:
        raise NotImplementedError

    # ----------------------------------------------------------------- totals

    @property
    def num_samples(self) -> int:
        return self._n_total

    @property
    def total_weight(self) -> float:
        return self._w_total

    @property
    def world_size(self) -> int:
        return world_size(self._group)

    def reset_counter(self) -> None:
        """Set :attr:`n_matvecs` back to zero."""
        self.n_matvecs = 0

    # ----------------------------------------------------------------- products

    def _apply(self, V: torch.Tensor) -> torch.Tensor:
        """``C V = Σ_b W_b C_b V / Σ_b W_b`` over all batches of all ranks."""
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
        return acc / self._w_total

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
        T = as_vector_tensor(V, "V")
        if T.ndim != 2 or T.shape[0] != self.num_params:
            raise ValueError(f"V must have shape ({self.num_params}, m), got {tuple(T.shape)}")
        check_vector(T, "V")
        return like_input(self._matmat_checked(T), V)

    def _matmat_checked(self, T: torch.Tensor) -> torch.Tensor:
        work = T.detach().to(device=self.device, dtype=self.dtype)
        if work.shape[1] == 0:
            return T.detach().clone()
        result = self._apply(work).detach()
        self.n_matvecs += int(T.shape[1])
        check_product(result, self._kind, self.params_names, self._sizes)
        return result.to(device=T.device, dtype=T.dtype if T.is_floating_point() else self.dtype)

    def matvec(self, v: Any) -> Any:
        """Product with one vector ``v`` of length ``P`` (torch or numpy, same type back)."""
        t = as_vector_tensor(v, "v")
        if t.ndim != 1 or t.shape[0] != self.num_params:
            raise ValueError(
                f"v must be 1-D of length {self.num_params}, got shape {tuple(t.shape)}"
            )
        check_vector(t, "v")
        return like_input(self._matmat_checked(t.unsqueeze(1))[:, 0], v)

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

    .. math:: H = \\nabla^2_w J(w)
              = \\frac{\\sum_b W_b\\, \\nabla^2_w L_b(w)}{\\sum_b W_b}

    where ``L_b`` is the mean loss ``loss_fn`` returns for batch ``b`` and ``W_b`` its
    normalizer (``n_b`` samples for most losses; see :class:`CurvatureOperator`). This
    equals ``torch.func.hessian`` of ``loss_fn`` on all the data in one call.

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
        Class weights and ``ignore_index`` of ``CrossEntropyLoss``/``NLLLoss`` are honoured
        as torch's mean honours them; a callable that hides such a normalizer is refused
        (pass the module, or give it a ``batch_weight(target)`` method). Its tensors
        follow ``dtype`` and ``device``.
    data : (X, y) pair of tensors, or a re-iterable of (X, y) batches
        Batches are weighted by the loss's normalizer (their size for most losses). A
        ``DataLoader`` must be deterministic (``shuffle=False``, no random
        augmentation); this is checked once.
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
        ``"linearize"`` caches :func:`torch.func.linearize` of the gradient per batch
        (``BCEWithLogitsLoss`` is linearized through an equal elementary form, as torch's
        own is impure; a loss not known to be safe is checked once on a few samples:
        three repeated products must equal double backward, else ``ValueError``);
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
        closure = _linearized_loss_closure if backend == "linearize" else _loss_closure
        loss_of_w = partial(closure, self, X, y)
        return hessian_term(
            backend, loss_of_w, self._w0, cached, self._vmap_chunk, self._vmap_chunk_rev
        )

    def _verify_backend(self, X: torch.Tensor, y: torch.Tensor) -> None:
        """``linearize`` on a loss not known to be safe: compare it with double backward."""
        if self.backend != "linearize" or linearize_verified(self._linearize_loss):
            return
        X, y = X[:LINEARIZE_CHECK_SAMPLES], y[:LINEARIZE_CHECK_SAMPLES]
        v = torch.randn(
            self.num_params, generator=torch.Generator().manual_seed(1), dtype=self.dtype
        ).to(self.device)
        verify_linearize(
            lambda: self._make_term("linearize", X, y, True),
            lambda: self._make_term("rev_rev", X, y, False),
            v,
            agreement_rtol(self.dtype, self.device),
        )

    @property
    def _linearize_loss(self) -> Callable:
        """The loss as linearized: torch's BCE-with-logits is replaced by its equal twin."""
        if not hasattr(self, "_linearize_loss_fn"):
            self._linearize_loss_fn = linearize_safe_loss(self._loss_fn)
        return self._linearize_loss_fn


def _loss_closure(
    op: CurvatureOperator, X: torch.Tensor, y: torch.Tensor, w: torch.Tensor
) -> torch.Tensor:
    return op._loss(w, X, y)


def _linearized_loss_closure(
    op: HessianOperator, X: torch.Tensor, y: torch.Tensor, w: torch.Tensor
) -> torch.Tensor:
    return op._linearize_loss(op._forward(w, X), y).reshape(())


def _output_closure(op: CurvatureOperator, X: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return op._forward(w, X)


class GGNOperator(CurvatureOperator):
    """Generalized Gauss-Newton matrix of the mean loss, positive semi-definite.

    .. math:: G = \\frac{\\sum_b W_b\\, J_b^\\top \\, \\nabla^2_f L_b \\, J_b}{\\sum_b W_b}

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
        return ggn_term(backend, out_of_w, self._loss_fn, y, self._w0, cached, self._vmap_chunk)
