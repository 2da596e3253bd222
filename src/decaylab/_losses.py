"""Loss modules that decaylab names, and forward-mode-safe rewrites of two torch losses.

``HalfMSELoss`` is the regression loss of the conventions (``docs/conventions.md``).
The two private classes compute the same values as ``nn.MSELoss`` and
``nn.BCEWithLogitsLoss`` with elementary operations, because torch 2.13's fused kernels
are not safe under forward-mode differentiation of their backward (see each class).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["HalfMSELoss"]


def _check_same_shape(loss: str, output: torch.Tensor, target: torch.Tensor) -> None:
    if output.shape != target.shape:
        raise ValueError(
            f"{loss}: output shape {tuple(output.shape)} and target shape "
            f"{tuple(target.shape)} disagree"
        )


class HalfMSELoss(nn.Module):
    """Half squared error, summed over outputs and averaged over samples.

    .. math:: L = \\frac{1}{n} \\sum_{i=1}^n \\tfrac12 \\lVert f_i - y_i \\rVert^2

    This is the regression loss of the conventions. For a single output it equals
    ``0.5 * torch.nn.MSELoss()``; for ``d`` outputs ``MSELoss`` also divides by ``d``,
    this loss does not.

    Examples
    --------
    >>> import torch
    >>> HalfMSELoss()(torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [0.0]])).item()
    2.5
    """

    reduction = "mean"

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("HalfMSELoss", output, target)
        n = output.shape[0] if output.ndim else 1
        return 0.5 * (output - target).pow(2).sum() / n


class MSELossForwardAD(nn.MSELoss):
    """``nn.MSELoss()`` written with elementary ops.

    In torch 2.13, forward-mode AD through ``mse_loss``'s backward raises
    ("ZeroTensors are immutable") under ``jvp(grad)`` and crashes the process under
    ``linearize``; the same mean of squares built from ``sub``/``pow``/``mean``
    differentiates fine.
    """

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("MSELoss", output, target)
        return (output - target).pow(2).mean()


class BCEWithLogitsForwardAD(nn.BCEWithLogitsLoss):
    """``nn.BCEWithLogitsLoss`` (same ``weight``, ``pos_weight``) written with elementary ops.

    .. math:: \\ell = w \\, [(1 - y) x + (1 + (p - 1) y)\\, \\mathrm{softplus}(-x)]

    the formula of torch's kernel. Under :func:`torch.func.linearize` the fused kernel's
    gradient is not pure in torch 2.13 (repeated products of one linearization drift:
    1.4 %, 35 %, 390 %, then NaN); this form gives the same values and stable products.
    Used only where a loss is linearized (``backend="linearize"``).
    """

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("BCEWithLogitsLoss", output, target)
        # softplus(-x) as torch's kernel computes it (F.softplus cuts off at x > 20).
        softplus_neg = torch.log1p(torch.exp(-output.abs())) + (-output).clamp_min(0)
        if self.pos_weight is None:
            per = (1 - target) * output + softplus_neg
        else:
            per = (1 - target) * output + (1 + (self.pos_weight - 1) * target) * softplus_neg
        if self.weight is not None:
            per = per * self.weight
        return per.mean()

    @classmethod
    def like(cls, loss: nn.BCEWithLogitsLoss) -> BCEWithLogitsForwardAD:
        """The elementary twin of ``loss`` (its tensors shared, not copied)."""
        twin = cls(weight=None, pos_weight=None)
        twin.weight = loss.weight
        twin.pos_weight = loss.pos_weight
        return twin
