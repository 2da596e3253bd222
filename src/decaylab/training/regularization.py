"""How ``fit`` applies a regularizer: coupled decay, decoupled decay, penalty in the loss, prox.

One :class:`Regularization` owns every regularizer setting of a run and is the only place
that writes them into the optimizer, so a callback can change ``α`` between steps
(``state.weight_decay = ...``) and the next step, the recorded objective and a checkpoint all
see the same value. Conventions (``docs/conventions.md``):

* coupled ``weight_decay=α``: ``α·w`` joins the gradient (the optimizer's own
  ``"weight_decay"`` on the decayed group), i.e. the loss gains ``(α/2)‖w_d‖²``;
* decoupled (``"sgd"`` or a factory): ``w ← (1 − ε·α) w`` *before* the optimizer step, done
  here, the group's ``"weight_decay"`` staying 0 (``"adam"`` with ``decoupled=True`` is
  ``torch.optim.AdamW``, which does the same itself);
* ``penalty``: its smooth part (or, with ``proximal=False``, all of it) is added to the batch
  loss; with ``proximal=True`` the soft threshold ``prox(w, ε)`` follows each step.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from decaylab._checks import check_scalar
from decaylab.regularize import Penalty, param_groups

__all__ = ["Regularization"]

_DECOUPLED_KEY = "decaylab_decoupled_decay"


class Regularization:
    """The regularizer of one run and how each step applies it.

    Parameters
    ----------
    model : nn.Module
    weight_decay : float
        ``≥ 0``, on the decayed group of :func:`~decaylab.regularize.param_groups`.
    decoupled_by_fit : bool
        Apply the decay before each step here (decoupled ``"sgd"`` or factory optimizers).
    penalty : Penalty or None
        Copied, so that a callback changing ``penalty.alpha`` leaves the caller's object alone.
    proximal : bool
    penalty_params : {"decayed", "all"}

    Attributes
    ----------
    groups : list of dict
        The optimizer groups (decayed group first), built before the optimizer.
    decayed, trainable, penalized : list of tensors
    """

    def __init__(
        self,
        model: nn.Module,
        weight_decay: float,
        *,
        decoupled_by_fit: bool,
        penalty: Penalty | None,
        proximal: bool,
        penalty_params: str,
    ) -> None:
        # Built with a positive probe decay, because with weight_decay=0 both groups would carry
        # 0 and the decayed one could not be told apart; the real value is set afterwards.
        self.groups = param_groups(model, 1.0)
        self.decayed = [p for g in self.groups if g["weight_decay"] > 0 for p in g["params"]]
        self._decayed_ids = {id(p) for p in self.decayed}
        self.trainable = [p for g in self.groups for p in g["params"]]
        self.penalized = self.decayed if penalty_params == "decayed" else self.trainable
        self._penalized_ids = {id(p) for p in self.penalized}
        self.proximal = proximal
        self.decoupled_by_fit = decoupled_by_fit
        self.optimizer: torch.optim.Optimizer | None = None
        self._weight_decay = weight_decay
        for g in self.groups:
            if g["weight_decay"] > 0:
                g["weight_decay"] = weight_decay
        if decoupled_by_fit:
            for g in self.groups:
                g[_DECOUPLED_KEY] = g["weight_decay"]
                g["weight_decay"] = 0.0
        self._penalty: Penalty | None = None
        self.penalty = penalty

    # ------------------------------------------------------------------ the settings

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Use ``optimizer`` (built from :attr:`groups`) for every later change of ``α``.

        Raises ``ValueError`` when a coupled decay is asked for and ``optimizer`` has no
        ``"weight_decay"`` hyperparameter (it would silently ignore it).
        """
        self.optimizer = optimizer
        self.weight_decay = self._weight_decay

    @property
    def weight_decay(self) -> float:
        """``α`` of the weight decay; setting it takes effect from the next step."""
        return self._weight_decay

    @weight_decay.setter
    def weight_decay(self, value: float) -> None:
        value = check_scalar(value, "weight_decay", low=0.0)
        opt = self.optimizer
        if value and opt is not None and not self.decoupled_by_fit:
            if "weight_decay" not in opt.defaults:
                raise ValueError(
                    f"weight_decay={value!r} would be ignored: the optimizer "
                    f"{type(opt).__name__} has no 'weight_decay' hyperparameter; pass "
                    "decoupled=True (fit then applies the decay itself) or penalty=L2(alpha)"
                )
        self._weight_decay = value
        key = _DECOUPLED_KEY if self.decoupled_by_fit else "weight_decay"
        for group in self.groups if self.optimizer is None else self.optimizer.param_groups:
            if group["params"] and id(group["params"][0]) in self._decayed_ids:
                group[key] = value

    @property
    def penalty(self) -> Penalty | None:
        """The penalty (a private copy); setting it takes effect from the next step."""
        return self._penalty

    @penalty.setter
    def penalty(self, value: Penalty | None) -> None:
        if value is not None and not isinstance(value, Penalty):
            raise ValueError(f"penalty must be an L1/L2/ElasticNet penalty or None, got {value!r}")
        if value is not None and not self.penalized:
            raise ValueError(
                "penalty_params='decayed' selects no parameter (the model has no weight "
                "matrices); use penalty_params='all'"
            )
        self._penalty = None if value is None else copy.copy(value)

    def state_dict(self) -> dict[str, Any]:
        """The current ``α`` values (what a checkpoint stores for an exact resume)."""
        p = self._penalty
        penalty = None if p is None else {"alpha": p.alpha, "l1_ratio": p.l1_ratio}
        return {"weight_decay": self._weight_decay, "penalty": penalty}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`: the saved values win over the arguments of the call."""
        self.weight_decay = state["weight_decay"]
        saved = state["penalty"]
        if saved is None:
            self._penalty = None
            return
        restored = self._penalty if self._penalty is not None else Penalty(0.0, 0.0)
        restored.alpha = float(saved["alpha"])
        restored.l1_ratio = float(saved["l1_ratio"])
        self.penalty = restored

    # ------------------------------------------------------------------ one step

    def loss_term(self) -> torch.Tensor | None:
        """The differentiable part added to each batch loss (``None`` without a penalty)."""
        if self._penalty is None:
            return None
        if self.proximal:
            return self._penalty.smooth_penalty(self.penalized)
        return self._penalty.penalty(self.penalized)

    @torch.no_grad()
    def decay_before_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Decoupled decay done by fit: ``w ← (1 − ε·α) w`` on each decayed group."""
        for g in optimizer.param_groups:
            wd = g.get(_DECOUPLED_KEY, 0.0)
            if wd:
                for p in g["params"]:
                    p.mul_(1.0 - g["lr"] * wd)

    def prox(self, params: list[torch.Tensor], step: float) -> None:
        """Soft threshold (in place) of the penalized tensors among ``params`` by ``step·αρ``."""
        if self._penalty is None or not self.proximal:
            return
        chosen = [p for p in params if id(p) in self._penalized_ids]
        if chosen:
            self._penalty.prox(chosen, step)

    @torch.no_grad()
    def prox_after_step(self, optimizer: torch.optim.Optimizer) -> None:
        """The proximal step after a (non-FISTA) optimizer step, group by group."""
        for g in optimizer.param_groups:
            self.prox(g["params"], g["lr"])

    # ------------------------------------------------------------------ measurement

    @torch.no_grad()
    def value(self) -> float:
        """The regularizer in the objective: the full penalty plus ``(α/2)‖w_d‖²``."""
        total = 0.0
        if self._penalty is not None:
            total += float(self._penalty.penalty(self.penalized))
        if self._weight_decay:
            wd = self._weight_decay
            total += 0.5 * wd * sum(float(p.pow(2).sum()) for p in self.decayed)
        return total

    def all_finite(self) -> bool:
        """Every trainable parameter finite."""
        return all(bool(torch.isfinite(t).all()) for t in self.trainable)

    def non_finite_names(self, model: nn.Module) -> list[str]:
        """Names of the trainable parameters holding NaN or ±inf."""
        return [
            n
            for n, p in model.named_parameters()
            if p.requires_grad and not bool(torch.isfinite(p).all())
        ]
