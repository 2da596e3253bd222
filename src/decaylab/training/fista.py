"""The :class:`FISTA` optimizer: accelerated proximal gradient with restart and line search."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch

from decaylab._checks import ConvergenceWarning, check_scalar

__all__ = ["FISTA", "MAX_BACKTRACKS"]

#: Trials of the ``lr="auto"`` line search per step before it gives up (and warns).
MAX_BACKTRACKS = 100


class FISTA(torch.optim.Optimizer):
    r"""Accelerated proximal gradient (FISTA) with adaptive restart, for full-batch training.

    Minimizes ``F(w) = f(w) + g(w)`` with ``f`` smooth (the closure's loss plus
    ``(weight_decay/2)‖w‖²`` per group) and ``g`` handled by ``prox`` (e.g. ``L1(α).prox``).
    Beck & Teboulle (2009), with step ``ε = lr``:

    .. code-block:: text

        x_{k+1} = prox_{ε g}(y_k − ε ∇f(y_k))
        t_{k+1} = (1 + sqrt(1 + 4 t_k²)) / 2
        y_{k+1} = x_{k+1} + ((t_k − 1) / t_{k+1}) (x_{k+1} − x_k)

    and the gradient restart of O'Donoghue & Candès (2015): when
    ``(y_k − x_{k+1})·(x_{k+1} − x_k) > 0`` (the step goes against the momentum) the momentum is
    dropped (``t = 1``, ``y_{k+1} = x_{k+1}``). Between steps the parameters hold the iterate
    ``x_k`` (so exact zeros from the prox are visible); the extrapolated point ``y_k`` is in the
    optimizer state and ``t_k`` in ``param_groups[0]["t"]``, so ``state_dict()`` captures the
    whole method for an exact resume.

    Convergence needs ``lr ≤ 1/L`` with ``L`` the Lipschitz constant of ``∇f``. ``lr="auto"``
    instead runs the backtracking line search of Beck & Teboulle: start at ``lr=1`` and divide
    the step by ``backtrack`` until ``f(x) ≤ f(y) + ∇f(y)·(x − y) + ‖x − y‖²/(2ε)``; the step never
    grows again. Each trial costs one more closure call. After :data:`MAX_BACKTRACKS` trials
    without success (``f`` not smooth, or not deterministic) the step is taken with the last
    trial, a :class:`~decaylab.ConvergenceWarning` is raised and
    ``param_groups[0]["line_search_failures"]`` counts it.

    Parameters
    ----------
    params : iterable of tensors or param-group dicts
    lr : float or "auto"
    weight_decay : float
        Coupled L2 coefficient (part of ``f``).
    prox : callable ``prox(params, step)`` or None
        Applied in place, per group, to the group's parameters after the gradient step (for
        example ``L1(0.01).prox``). ``None`` is plain accelerated gradient descent.
    restart : bool
        Use the gradient restart.
    backtrack : float
        ``> 1``; step divisor of the line search.

    Examples
    --------
    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor([3.0, -0.05]))
    >>> opt = FISTA([w], lr=0.5, prox=lambda ps, step: [p.sub_(p.clamp(-step * 0.1, step * 0.1))
    ...                                                  for p in ps])
    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = 0.5 * (w ** 2).sum()
    ...     loss.backward()
    ...     return loss
    >>> for _ in range(50):
    ...     _ = opt.step(closure)
    >>> w.detach().tolist()  # argmin ½w² + 0.1|w| = 0
    [0.0, 0.0]
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | str = "auto",
        *,
        weight_decay: float = 0.0,
        prox: Callable[[list[torch.Tensor], float], Any] | None = None,
        restart: bool = True,
        backtrack: float = 2.0,
    ) -> None:
        self.line_search = isinstance(lr, str)
        if self.line_search:
            if lr != "auto":
                raise ValueError(f"lr must be a positive number or 'auto', got {lr!r}")
            lr_value = 1.0
        else:
            lr_value = check_scalar(lr, "lr", low=0.0, low_inclusive=False)
        check_scalar(weight_decay, "weight_decay", low=0.0)
        self.backtrack = check_scalar(backtrack, "backtrack", low=1.0, low_inclusive=False)
        if prox is not None and not callable(prox):
            raise ValueError(f"prox must be callable or None, got {prox!r}")
        self.prox = prox
        self.restart = bool(restart)
        super().__init__(params, {"lr": lr_value, "weight_decay": weight_decay})
        self.param_groups[0].setdefault("t", 1.0)
        self.param_groups[0].setdefault("restarts", 0)
        self.param_groups[0].setdefault("line_search_failures", 0)

    @property
    def line_search_failures(self) -> int:
        """Steps whose line search gave up (0 without ``lr="auto"``)."""
        return int(self.param_groups[0].get("line_search_failures", 0))

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _smooth_extra(self) -> float:
        total = 0.0
        for group in self.param_groups:
            wd = group["weight_decay"]
            if wd:
                total += 0.5 * wd * sum(float(p.detach().pow(2).sum()) for p in group["params"])
        return total

    def _smooth_gradients(self) -> list[torch.Tensor]:
        """``∇f(y)``: the closure's gradients plus ``weight_decay·y`` per group."""
        grads = []
        for group in self.param_groups:
            for p in group["params"]:
                g = torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
                if group["weight_decay"]:
                    g.add_(p.detach(), alpha=group["weight_decay"])
                grads.append(g)
        return grads

    def _proximal_step(self, y: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """Parameters ← ``prox_{ε g}(y − ε ∇f(y))`` with each group's current ``ε``."""
        k = 0
        for group in self.param_groups:
            for p in group["params"]:
                p.copy_(y[k]).add_(grads[k], alpha=-group["lr"])
                k += 1
            if self.prox is not None:
                self.prox(group["params"], group["lr"])

    def _quadratic_model(
        self, f_y: float, y: list[torch.Tensor], grads: list[torch.Tensor]
    ) -> float:
        """``f(y) + ∇f(y)·(x − y) + ‖x − y‖²/(2ε)`` at the current parameters ``x``."""
        k = 0
        value = f_y
        for group in self.param_groups:
            for p in group["params"]:
                diff = p.detach() - y[k]
                value += float((grads[k] * diff).sum())
                value += float(diff.pow(2).sum()) / (2.0 * group["lr"])
                k += 1
        return value

    def _search(
        self,
        closure: Callable[[], torch.Tensor],
        f_y: float,
        y: list[torch.Tensor],
        grads: list[torch.Tensor],
    ) -> None:
        """Take the proximal step, backtracking ``lr`` until sufficient decrease (``"auto"``)."""
        params = self._params()
        for _ in range(MAX_BACKTRACKS):
            self._proximal_step(y, grads)
            if not self.line_search:
                return
            with torch.enable_grad():
                f_x = float(closure().detach()) + self._smooth_extra()
            model_value = self._quadratic_model(f_y, y, grads)
            slack = 10.0 * torch.finfo(params[0].dtype).eps * max(1.0, abs(f_y))
            if f_x <= model_value + slack:
                return
            for group in self.param_groups:
                group["lr"] /= self.backtrack
        self.param_groups[0]["line_search_failures"] = self.line_search_failures + 1
        warnings.warn(
            f"FISTA's line search found no step with sufficient decrease in {MAX_BACKTRACKS} "
            f"trials (last f(x) = {f_x!r} > model {model_value!r}); the step was taken anyway "
            f"with lr = {self.param_groups[0]['lr'] * self.backtrack:.3g}. The loss may not be "
            "smooth or not deterministic (dropout?); the result is not a converged FISTA run",
            ConvergenceWarning,
            stacklevel=5,  # _search, step, torch's no_grad and hook wrappers, the caller
        )

    def _extrapolate(self, y: list[torch.Tensor], x_old: list[torch.Tensor]) -> None:
        """Momentum ``t`` and the next point ``y``, with the gradient restart."""
        params = self._params()
        first = self.param_groups[0]
        t = first["t"]
        against = sum(
            float(((yk - p.detach()) * (p.detach() - xk)).sum())
            for yk, p, xk in zip(y, params, x_old, strict=True)
        )
        if self.restart and against > 0:
            t_next, beta = 1.0, 0.0
            first["restarts"] += 1
        else:
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            beta = (t - 1.0) / t_next
        for p, xk in zip(params, x_old, strict=True):
            yk = self.state[p]["y"]
            # y ← x_{k+1} + β (x_{k+1} − x_k)
            yk.copy_(p.detach()).add_(p.detach() - xk, alpha=beta)
        first["t"] = t_next

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        """One FISTA step; ``closure`` must zero the gradients, compute ``f``, and backward.

        Returns the loss at the extrapolated point ``y_k``. A non-finite loss leaves the
        parameters and the state unchanged.
        """
        if closure is None:
            raise ValueError("closure is required: FISTA evaluates the loss itself")
        params = self._params()
        for p in params:
            if "y" not in self.state[p]:
                self.state[p]["y"] = p.detach().clone()
        x_old = [p.detach().clone() for p in params]
        for p in params:
            p.copy_(self.state[p]["y"])
        with torch.enable_grad():
            loss = closure()
        if not bool(torch.isfinite(loss.detach())):
            for p, x in zip(params, x_old, strict=True):
                p.copy_(x)
            return loss
        y = [self.state[p]["y"] for p in params]
        grads = self._smooth_gradients()
        f_y = float(loss.detach()) + (self._smooth_extra() if self.line_search else 0.0)
        self._search(closure, f_y, y, grads)
        self._extrapolate(y, x_old)
        return loss
