"""``backend="auto"``: choosing a product backend for this model, loss and device.

The choice is made on the first batch at set-up and, for the Hessian, finished by the
first real products:

1. each candidate of the operator's ``_auto_timed`` makes a warm-up product on
   ``WARMUP_SAMPLES`` samples (paying its one-time costs, and showing whether it can
   differentiate the model at all); the survivors stay in the running;
2. the first survivor builds the batch's (cached) term;
3. the first operator products are computed by each survivor in turn and timed per
   column (:meth:`AutoBackend._trial_product`); their products must be those of one
   symmetric matrix (:meth:`AutoBackend._check_trial_symmetry`); the fastest is kept
   and the others' memory freed.

When the class names no candidates to time (the GGN), the first of ``_auto_order``
that builds and multiplies one vector is kept. A candidate that fails is skipped with a
note in ``backend_notes``. :class:`AutoBackend` is a mixin of
:class:`~decaylab.curvature.operators.CurvatureOperator`; it calls back
``_make_term``, ``_accumulate`` and ``_drop_cache``.

To let ``auto`` consider a new backend, add its name to ``_auto_timed`` (Hessian) or
``_auto_order`` (GGN) of the operator class, and make sure it is trustworthy for every
loss ``auto`` may meet (``linearize`` of the Hessian is not: see
:data:`~decaylab.curvature.backends.LINEARIZE_VERIFIED`).
"""

from __future__ import annotations

import gc
import time
import traceback
import warnings
from typing import TYPE_CHECKING

import torch

from decaylab.curvature.backends import BACKEND_ERRORS, _Term

__all__ = ["AutoBackend", "agreement_rtol", "AGREEMENT_RTOL", "WARMUP_SAMPLES"]

_BACKEND_ERRORS = BACKEND_ERRORS

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


def agreement_rtol(dtype: torch.dtype, device: torch.device) -> float:
    """Relative tolerance within which two backends' products must agree.

    Examples
    --------
    >>> import torch
    >>> cpu = torch.device("cpu")
    >>> agreement_rtol(torch.float64, cpu), agreement_rtol(torch.float32, cpu)
    (1e-08, 0.001)
    """
    if dtype == torch.float32 and device.type == "cuda" and _tf32_allowed():
        return AGREEMENT_RTOL_TF32
    return AGREEMENT_RTOL.get(dtype, AGREEMENT_RTOL_LOW_PRECISION)


class AutoBackend:
    """Mixin: the ``auto`` choice of backend (see the module docstring)."""

    # Backends "auto" builds and times on the first batch, keeping the fastest; when
    # empty, the first backend of the order (with or without a cache) that works is kept.
    _auto_timed: tuple[str, ...] = ()
    _auto_order: tuple[str, ...] = ("rev_rev", "fwd_rev")
    _auto_order_uncached: tuple[str, ...] = ("rev_rev", "fwd_rev")

    # Provided by the operator.
    _requested_backend: str
    backend: str
    backend_notes: list[str]
    backend_timings: dict[str, float]
    _trial_queue: list[str]
    _trial_record: tuple[str, torch.Tensor, torch.Tensor] | None
    _trial_symmetry: float | None
    device: torch.device
    dtype: torch.dtype
    num_params: int

    if TYPE_CHECKING:  # provided by the operator and BatchedCurvature

        def _make_term(
            self, backend: str, X: torch.Tensor, y: torch.Tensor, cached: bool
        ) -> _Term: ...

        def _accumulate(self, V: torch.Tensor, backend: str) -> torch.Tensor: ...

        def _drop_cache(self) -> None: ...

        def _synchronize(self) -> None: ...

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

    def _choose_backend(self, X: torch.Tensor, y: torch.Tensor, cached: bool) -> _Term:
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
            self._verify_backend(X, y)
            return self._make_term(self.backend, X, y, cached)
        v = torch.randn(
            self.num_params, generator=torch.Generator().manual_seed(0), dtype=self.dtype
        ).to(self.device)
        errors: list[BaseException] = []
        choose = self._choose_timed if self._auto_timed else self._choose_in_order
        term = choose(X, y, v, cached, errors)
        if term is None:
            raise errors[-1]
        return term

    def _verify_backend(self, X: torch.Tensor, y: torch.Tensor) -> None:
        """Check once that an explicitly requested backend can be trusted (default: no check)."""

    def _choose_timed(
        self, X: torch.Tensor, y: torch.Tensor, v: torch.Tensor, cached: bool, errors: list
    ) -> _Term | None:
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
        return None

    def _choose_in_order(
        self, X: torch.Tensor, y: torch.Tensor, v: torch.Tensor, cached: bool, errors: list
    ) -> _Term | None:
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
        return None

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
        rtol = agreement_rtol(self.dtype, self.device)
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
