"""FISTA's documented defaults against an explicit numpy FISTA (mutants of tools/mutate.py).

Restart on by default, momentum ``(t_k − 1)/t_{k+1}``, the line search dividing the step by
``backtrack = 2``; giving up (with a warning) after ``MAX_BACKTRACKS = 100`` trials is pinned
in tests/test_training_parts.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from decaylab.training import FISTA

A = np.array([[9.0, 2.5], [2.5, 1.0]])  # ill-conditioned: the momentum overshoots, restarts fire
B = np.array([1.0, -2.0])
ALPHA = 0.05


def _soft(x: np.ndarray, t: float) -> np.ndarray:
    return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


def _numpy_fista(x0: np.ndarray, lr: float, steps: int) -> tuple[np.ndarray, int]:
    """Beck & Teboulle with O'Donoghue & Candès' gradient restart, as the docstring states."""
    x_prev, y, t, restarts = x0.copy(), x0.copy(), 1.0, 0
    for _ in range(steps):
        x = _soft(y - lr * (A @ y - B), lr * ALPHA)
        if (y - x) @ (x - x_prev) > 0:
            t_next, beta = 1.0, 0.0
            restarts += 1
        else:
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
            beta = (t - 1.0) / t_next
        y = x + beta * (x - x_prev)
        x_prev, t = x, t_next
    return x_prev, restarts


def _l1_prox(params, step):
    for p in params:
        p.sub_(p.clamp(-step * ALPHA, step * ALPHA))


def _quadratic_closure(w: torch.Tensor, opt: torch.optim.Optimizer):
    At, Bt = torch.tensor(A), torch.tensor(B)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = 0.5 * w @ At @ w - Bt @ w
        loss.backward()
        return loss

    return closure


def test_fista_defaults_equal_explicit_fista_with_restart():
    x0 = np.array([2.0, -3.0])
    w = torch.nn.Parameter(torch.tensor(x0))
    opt = FISTA([w], lr=0.1, prox=_l1_prox)
    closure = _quadratic_closure(w, opt)
    for _ in range(40):
        opt.step(closure)
    ref, restarts = _numpy_fista(x0, 0.1, 40)
    assert restarts > 0  # the case exercises the restart
    np.testing.assert_allclose(w.detach().numpy(), ref, rtol=1e-12, atol=1e-14)
    assert opt.param_groups[0]["restarts"] == restarts


def test_fista_line_search_halves_the_step():
    # f = ½ 5 w₁² from w = (1, 0): sufficient decrease holds iff lr ≤ 1/5, so halving from 1
    # stops at 0.125 (quartering would stop at 0.0625).
    w = torch.nn.Parameter(torch.tensor([1.0, 0.0], dtype=torch.float64))
    opt = FISTA([w], lr="auto")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = 2.5 * w[0] ** 2 + 0.5 * w[1] ** 2
        loss.backward()
        return loss

    opt.step(closure)
    assert opt.param_groups[0]["lr"] == 0.125
    assert w.detach().tolist() == [1.0 - 0.125 * 5.0, 0.0]


def test_fit_checkpoints_every_100_steps_by_default(tmp_path):
    """A crash at step 170 leaves the checkpoint of step 100 (every 50 would leave 150)."""
    from decaylab import Callback
    from decaylab.checkpoint import load_checkpoint
    from decaylab.training import fit, half_mse

    class Crash(Callback):
        def on_step_end(self, state) -> None:
            if state.step == 170:
                raise KeyboardInterrupt

    X = torch.randn(16, 2, dtype=torch.float64)
    y = X.sum(1, keepdim=True)
    model = torch.nn.Linear(2, 1).double()
    with pytest.raises(KeyboardInterrupt):
        fit(
            model,
            half_mse,
            (X, y),
            steps=400,
            eval_every=50,
            checkpoint_dir=tmp_path,
            callbacks=[Crash()],
            progress=False,
        )
    assert load_checkpoint(tmp_path)["step"] == 100
