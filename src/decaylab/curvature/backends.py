"""Product backends: how one batch's curvature multiplies a block of vectors.

A *term* is the curvature of one batch's mean loss ``L_b`` at the fixed weights ``w0``,
as an object with ``matvec(v)`` (``P`` to ``P``) and ``matmat(V)`` (``(P, m)`` to
``(P, m)``). The operator (:mod:`decaylab.curvature.operators`) weights and sums the
terms of all batches; a backend only says how one product is computed:

- ``rev_rev``: double backward through the batch gradient's autograd graph, kept per
  batch (GGN: the double-vjp trick for ``J v`` on the kept forward graph);
- ``fwd_rev``: ``jvp(grad)`` recomputed at every product, nothing kept (GGN: ``jvp``
  of the forward for ``J v``, the kept ``vjp`` for ``Jᵀ u``);
- ``linearize``: :func:`torch.func.linearize` of the gradient, kept per batch (GGN: of
  the forward only; the output Hessian is small and recomputed).

To add a backend: write a ``_Term`` subclass here (``matvec``, and ``matmat`` when
columns can go through at once), set ``cached = True`` when it holds per-batch state
worth keeping, build it in :func:`hessian_term` / :func:`ggn_term`, add its name to
:data:`BACKENDS`, and (optionally) to the ``auto`` candidates in
:mod:`decaylab.curvature.auto`. ``tests/test_curvature_operators.py`` checks every
backend against ``torch.func.hessian``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.func import grad, jvp, vjp, vmap
from torch.func import linearize as _torch_linearize

from decaylab._losses import BCEWithLogitsForwardAD, HalfMSELoss, MSELossForwardAD

__all__ = [
    "BACKENDS",
    "BACKEND_ERRORS",
    "hessian_term",
    "ggn_term",
    "linearize",
    "linearize_safe_loss",
    "linearize_verified",
    "quiet_torch_internals",
]

BACKENDS = ("auto", "linearize", "fwd_rev", "rev_rev")

# A backend that cannot handle a model fails with one of these (a CUDA out-of-memory
# error is a RuntimeError); "auto" skips it.
BACKEND_ERRORS = (RuntimeError, NotImplementedError, TypeError, AttributeError)


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


def _kept_vjp(output: torch.Tensor, inputs: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
    """``(∂output/∂inputs)ᵀ cotangent`` through a kept graph (kept for the next product);
    zero where ``output`` does not depend on ``inputs`` (a part of zero curvature)."""
    if not output.requires_grad:
        return torch.zeros_like(cotangent)
    with torch.enable_grad():
        (out,) = torch.autograd.grad(
            output, inputs, grad_outputs=cotangent, retain_graph=True, allow_unused=True
        )
    return torch.zeros_like(cotangent) if out is None else out.detach()


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
        return _kept_vjp(self._g, self._w, v)

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
        f0, self._vjp = vjp(out_of_w, w0)  # type: ignore[misc]  # (no aux: two values)
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
        _, self._jacobian_product = linearize(self._out_of_w, self._w0)  # type: ignore[method-assign]


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
            h = _kept_vjp(self._loss_grad, self._f_leaf, u)  # the output Hessian times J v
            (out,) = torch.autograd.grad(self._f, self._w, grad_outputs=h, retain_graph=True)
        return out.detach()


# --------------------------------------------------------------------------- factories


def hessian_term(
    backend: str,
    loss_of_w: Callable,
    w0: torch.Tensor,
    cached: bool,
    vmap_chunk: int,
    vmap_chunk_rev: int,
) -> _Term:
    """The Hessian term of one batch, ``loss_of_w`` being its mean loss of the flat weights.

    ``"linearize"`` without a cache (past the memory budget) falls back to ``fwd_rev``,
    which computes the same product without keeping anything.
    """
    if backend == "linearize" and cached:
        return _HessLinearized(loss_of_w, w0, vmap_chunk)
    if backend in ("linearize", "fwd_rev"):
        return _HessFwdRev(loss_of_w, w0, vmap_chunk)
    return _HessRevRev(loss_of_w, w0, vmap_chunk_rev, cached)


def ggn_term(
    backend: str,
    out_of_w: Callable,
    loss_fn: Callable,
    y: torch.Tensor,
    w0: torch.Tensor,
    cached: bool,
    vmap_chunk: int,
) -> _Term:
    """The GGN term of one batch, ``out_of_w`` being its model outputs of the flat weights."""
    if backend == "linearize" and cached:
        return _GGNLinearized(out_of_w, loss_fn, y, w0, vmap_chunk)
    if backend in ("linearize", "fwd_rev"):
        return _GGNFwdRev(out_of_w, loss_fn, y, w0, vmap_chunk)
    return _GGNRevRev(out_of_w, loss_fn, y, w0, 1, cached)


# --------------------------------------------------------------------------- linearize safety

#: Loss types whose gradient torch 2.13 linearizes purely: repeated products of one
#: linearization equal double backward (``tests/test_curvature_operators.py`` checks each).
#: ``nn.BCEWithLogitsLoss`` is not among them (its products drift, then turn NaN) and is
#: replaced by its elementary twin; ``HuberLoss`` and ``SoftMarginLoss`` have no forward-AD
#: formula for their backward at all. Other losses are checked once at set-up.
LINEARIZE_VERIFIED: tuple[type, ...] = (
    HalfMSELoss,
    MSELossForwardAD,
    BCEWithLogitsForwardAD,
    nn.CrossEntropyLoss,
    nn.NLLLoss,
    nn.L1Loss,
    nn.SmoothL1Loss,
    nn.KLDivLoss,
    nn.PoissonNLLLoss,
)


def linearize_safe_loss(loss_fn: Callable) -> Callable:
    """``loss_fn``, or an equal loss whose linearized gradient is pure (BCE with logits)."""
    if type(loss_fn) is nn.BCEWithLogitsLoss:
        return BCEWithLogitsForwardAD.like(loss_fn)
    return loss_fn


def linearize_verified(loss_fn: Callable) -> bool:
    """Whether ``loss_fn`` (after :func:`linearize_safe_loss`) is of a verified type."""
    return type(loss_fn) in LINEARIZE_VERIFIED
