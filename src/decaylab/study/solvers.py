"""Deterministic full-batch solvers on flat vectors: L-BFGS (smooth) and FISTA (L1).

Both return the final iterate and a dict with ``converged``, ``iterations`` and the
optimality measure reached, so the study can say when a measurement is not trustworthy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["fista", "lbfgs"]

Fn = Callable[[torch.Tensor], torch.Tensor]


def lbfgs(
    fn: Fn, w_start: torch.Tensor, *, max_iter: int, tol: float
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Minimize ``fn`` from ``w_start`` with L-BFGS (strong Wolfe line search).

    Stops when ``max|∇fn| ≤ tol`` or after ``max_iter`` iterations; ``converged`` says which.
    ``grad`` is the gradient at the returned iterate.
    """
    w = w_start.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [w],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        tolerance_grad=tol,
        tolerance_change=0.0,
        history_size=30,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value = fn(w)
        value.backward()
        return value

    # LBFGS stops on a flat line search too; restart a few times while progress is made.
    iterations = 0
    for _ in range(4):
        opt.step(closure)
        iterations = int(opt.state[w]["n_iter"])
        g = _grad(fn, w)
        if float(g.abs().max()) <= tol or iterations >= max_iter:
            break
        opt.param_groups[0]["max_iter"] = max(max_iter - iterations, 1)
    w = w.detach()  # g is its gradient (the loop runs at least once)
    if iterations < max_iter and float(g.abs().max()) > tol:
        # the line search stalled before the budget was spent: finish on the gradient
        w, g = newton_polish(fn, w, tol=tol)
    gmax = float(g.abs().max())
    return w, {
        "converged": bool(gmax <= tol),
        "iterations": iterations,
        "grad": g,
        "grad_norm": float(g.norm()),
        "grad_max": gmax,
        "value": float(fn(w.detach())),
    }


def newton_polish(
    fn: Fn, w: torch.Tensor, *, tol: float, max_newton: int = 8, cg_iters: int = 100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Newton-CG steps from ``w`` while they reduce ``max|∇fn|`` (no line search); the
    final iterate and its gradient.

    L-BFGS's line search compares function values, which stop resolving progress once the
    decrease is below the rounding of ``fn`` (``|∇|`` around 1e-9 for a loss near 1): the
    gradient itself keeps resolving it. Each step solves ``∇²fn δ = −∇fn`` by conjugate
    gradients on Hessian-vector products, stopping at negative curvature (Steihaug); a step
    is kept only when it lowers the largest gradient entry.
    """
    g = _grad(fn, w)
    for _ in range(max_newton):
        gmax = float(g.abs().max())
        if gmax <= tol:
            break
        x = w.detach().clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(fn(x), x, create_graph=True)

        def hvp(v: torch.Tensor, x: torch.Tensor = x, gx: torch.Tensor = gx) -> torch.Tensor:
            (h,) = torch.autograd.grad(gx, x, v, retain_graph=True)
            return h.detach()

        delta = _cg_steihaug(hvp, -g, cg_iters, tol=1e-3 * min(1.0, gmax))
        w_new = w + delta
        g_new = _grad(fn, w_new)
        if float(g_new.abs().max()) >= gmax:
            break
        w, g = w_new.detach(), g_new
    return w, g


def _cg_steihaug(
    hvp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int, tol: float
) -> torch.Tensor:
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = float(r @ r)
    bnorm = rr**0.5
    for _ in range(iters):
        if rr**0.5 <= tol * bnorm:
            break
        Ap = hvp(p)
        pAp = float(p @ Ap)
        if pAp <= 0:
            break
        step = rr / pAp
        x = x + step * p
        r = r - step * Ap
        rr_new = float(r @ r)
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def _grad(fn: Fn, w: torch.Tensor) -> torch.Tensor:
    x = w.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(x), x)
    return g


def _soft(x: torch.Tensor, thresh: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.clamp(x.abs() - thresh, min=0.0)


def fista(
    fn: Fn,
    weights: torch.Tensor,
    w_start: torch.Tensor,
    *,
    step: float,
    max_iter: int,
    tol: float,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Minimize ``fn(w) + Σ_i weights_i |w_i|`` by FISTA with backtracking and restarts.

    Beck & Teboulle (2009) with the adaptive restart of O'Donoghue & Candès (2015): the
    momentum is reset when it points against the last step. Stops when the norm of the
    gradient mapping ``‖(y − prox(y − t∇f(y)))/t‖`` is ``≤ tol``. The prox
    ``sign(x) max(|x| − t·weights, 0)`` gives exact zeros.
    """
    x = w_start.detach().clone()
    y, theta, t = x.clone(), 1.0, float(step)
    mapping = float("inf")
    it = 0
    for it in range(1, max_iter + 1):
        yv = y.clone().requires_grad_(True)
        fy = fn(yv)
        (gy,) = torch.autograd.grad(fy, yv)
        fy_val = float(fy.detach())
        while True:  # backtracking: the quadratic upper bound must hold at the new point
            x_new = _soft(y - t * gy, t * weights)
            d = x_new - y
            with torch.no_grad():
                if float(fn(x_new)) <= fy_val + float(gy @ d) + float(d @ d) / (2 * t) + 1e-15:
                    break
            t *= 0.5
        mapping = float(d.norm()) / t
        if mapping <= tol:
            x = x_new
            break
        if float(d @ (x_new - x)) < 0 and it > 1:  # restart: momentum against the step
            theta = 1.0
        theta_new = 0.5 * (1 + (1 + 4 * theta * theta) ** 0.5)
        y = x_new + ((theta - 1) / theta_new) * (x_new - x)
        x, theta = x_new, theta_new
    return x.detach(), {
        "converged": bool(mapping <= tol),
        "iterations": it,
        "gradient_mapping": mapping,
        "step": t,
    }
