"""The training loop: :func:`fit`, a short loop over the parts in this package.

Conventions (``docs/conventions.md``): the training objective is the **mean** per-example loss
``J(w)`` (``loss_fn`` must return a mean; for regression use :func:`half_mse`, the ½-squared
error) plus the regularizer:

* ``weight_decay=α`` (coupled): ``J + (α/2)‖w_d‖²`` on the *decayed* parameters ``w_d`` chosen by
  :func:`decaylab.regularize.param_groups` (weights of linear/conv layers; no biases, no norm
  layers, no other 1-D parameters).
* ``weight_decay=wd, decoupled=True``: the AdamW form ``w ← w − ε·wd·w − ε·u(∇J)``, decay first.
* ``penalty=L1(α)`` / ``ElasticNet(α, ρ)``: with ``proximal=True`` the smooth part is added to the
  loss and the soft threshold ``prox(w, ε)`` follows every optimizer step, so weights become
  exactly zero; with ``proximal=False`` the whole penalty goes into the loss (subgradient).

``batch_size=None`` is full-batch training, i.e. exact gradient descent on ``J̃``.
The layout of the parts is described in ``docs/training.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from decaylab.regularize import Penalty
from decaylab.training.config import FitConfig
from decaylab.training.history import History
from decaylab.training.hooks import Callback
from decaylab.training.run import Run

__all__ = ["fit"]


def fit(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train_data: tuple[torch.Tensor, torch.Tensor],
    *,
    val_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    optimizer: str | Callable[[list[dict[str, Any]]], torch.optim.Optimizer] = "sgd",
    lr: float | str = 0.1,
    momentum: float = 0.0,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    weight_decay: float = 0.0,
    decoupled: bool = False,
    penalty: Penalty | None = None,
    proximal: bool = True,
    penalty_params: str = "decayed",
    early_stopping: Any = None,
    eval_every: int = 1,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
    record_every: int | None = None,
    callbacks: Sequence[Callback] = (),
) -> History:
    """Train ``model`` on the mean loss plus a regularizer; record, early-stop, checkpoint.

    One step (``ε = lr``, ``g = ∇`` of the batch's mean loss plus the differentiable regularizer):

    * ``"sgd"``: ``w ← w − ε (g + wd·w)`` (coupled, ``torch.optim.SGD``, optional heavy-ball
      ``momentum``); with ``decoupled=True``: ``w ← (1 − ε·wd) w`` first, then ``w ← w − ε g``
      (identical to coupled for ``momentum=0``; with momentum the decay stays out of the buffer).
    * ``"adam"``: ``torch.optim.Adam`` with coupled L2 (``wd·w`` enters the adaptive moments);
      ``decoupled=True`` switches to ``torch.optim.AdamW``. ``"adamw"`` is always decoupled.
    * ``"fista"``: :class:`FISTA`, full batch only, prox inside the accelerated step.
    * a factory ``callable(param_groups) -> Optimizer``: receives the groups of
      :func:`~decaylab.regularize.param_groups` (``"weight_decay"`` set, or 0 with
      ``decoupled=True``, in which case :func:`fit` applies the decay itself before each step);
      ``lr``/``momentum`` are not passed to it.

    Then, with a ``penalty`` and ``proximal=True``, ``penalty.prox(w, ε)`` on the penalized
    parameters (exact zeros for L1; for Adam this is a heuristic, not a true proximal step of the
    preconditioned problem).

    Parameters
    ----------
    model : nn.Module
    loss_fn : callable ``(prediction, target) -> 0-d tensor``, or a loss name
        Must return the **mean** loss over the batch (e.g. :func:`half_mse`,
        ``nn.BCEWithLogitsLoss()``, ``nn.CrossEntropyLoss()``).
    train_data, val_data : (X, y) tensors or numpy arrays
        Same first dimension, finite. ``val_data`` is only evaluated. Recorded losses are the
        loss of the whole set as one call of ``loss_fn`` gives it (chunks weighted by the
        loss's own normalizer, e.g. class weights and ``ignore_index`` of a cross-entropy).
    optimizer : {"sgd", "adam", "adamw", "fista"} or callable
    lr : float or "auto"
        ``> 0``. ``"auto"`` (FISTA only) uses a backtracking line search.
    momentum : float
        Heavy-ball momentum for ``"sgd"``, in [0, 1).
    steps, epochs : int
        Exactly one. An epoch is ``ceil(N / batch_size)`` steps (1 step with full batch).
    batch_size : int or None
        ``None``: full batch. Otherwise minibatches from a reshuffled permutation per epoch,
        drawn from a ``torch.Generator`` seeded with ``seed`` (the last batch may be smaller).
    weight_decay : float
        ``≥ 0``, on the decayed group of ``param_groups`` (biases, norm layers, 1-D excluded).
    decoupled : bool
    penalty : Penalty or None
        ``L1``, ``L2`` or ``ElasticNet`` from :mod:`decaylab.regularize`.
    proximal : bool
        L1 part by prox (exact zeros) or by subgradient in the loss.
    penalty_params : {"decayed", "all"}
        Which parameters the penalty covers: the decayed group (default; biases and norm
        layers are not penalized), or every trainable parameter.
    early_stopping : EarlyStopping or None
        Monitors ``"val_loss"``, ``"train_loss"`` or ``"objective"`` at every evaluation step
        (step 0 and every ``eval_every`` steps; an extra final evaluation off that grid is
        recorded but not shown to it). ``on_train_end(model)`` is always called at the end.
    eval_every : int
        ``≥ 1``.
    checkpoint_dir : path or None
        Directory for ``checkpoint.pt``, written atomically every ``checkpoint_every`` steps
        (default 100) and at the end, except after a non-finite loss (the last good one stays).
    checkpoint_every : int or None
    resume : bool
        Continue from ``checkpoint_dir/checkpoint.pt``: bit-identical on the CPU to an
        uninterrupted run with the same arguments. A finished checkpoint returns its history
        (with a larger ``steps`` the run continues).
    seed : int
        Seeds the minibatch generator (not the model initialisation).
    progress : bool
        Show a rich progress bar (only when stdout is a terminal).
    record_every : int or None
        Store a flat parameter snapshot every this many steps (and at step 0 and the end).
    callbacks : sequence of Callback
        Hooks called at the points shown in :mod:`decaylab.training.hooks`; they read the
        :class:`TrainState` and may set ``weight_decay``, ``penalty`` (or its ``alpha``), ``lr``
        or ``stop`` between steps.

    Returns
    -------
    History

    Raises
    ------
    ValueError
        Bad arguments (the message names the argument), all before any step: NaN/inf in
        ``train_data``/``val_data``, targets the loss would broadcast against the predictions,
        a sum-reduced loss (module or callable, found by a mean-loss probe), an optimizer class
        instead of a factory, a factory optimizer that would ignore ``weight_decay``;
        ``resume=True`` with an empty or foreign ``checkpoint_dir``
        (:class:`~decaylab.checkpoint.CheckpointError`) or an unsafe checkpoint file
        (:class:`~decaylab.checkpoint.UnsafeCheckpointError`).

    Warns
    -----
    ConvergenceWarning
        The run ended ``stop_reason="non-finite"`` (loss or final weights), or FISTA's
        ``lr="auto"`` search gave up at a step (``History.line_search_failures``).
    TheoryWarning
        An L1 prox after heavy-ball or Adam steps (biased, see docs/training.md).

    Examples
    --------
    >>> import torch
    >>> from decaylab.training import fit, half_mse
    >>> X = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64); y = 2 * X[:, 0]
    >>> model = torch.nn.Linear(1, 1, bias=False).double()
    >>> _ = torch.nn.init.zeros_(model.weight)
    >>> h = fit(model, half_mse, (X, y), lr=0.2, steps=200, weight_decay=0.1, progress=False)
    >>> round(model.weight.item(), 6)  # Σxy / (Σx² + Nα) = 28 / 14.3
    1.958042
    >>> h.step[:3], h.stop_reason
    ([0, 1, 2], None)
    """
    config = FitConfig.check(locals())  # the arguments, by name, before anything runs
    run = Run(config)
    state, hooks = run.state, run.hooks
    finished = run.start()  # fresh, or resumed from checkpoint_dir
    with run.session():  # training mode and progress bar, restored afterwards
        hooks.on_train_start(state)
        stop = finished or run.evaluate_start()
        while not stop and state.step < config.total_steps:
            loss = run.step_rule(run.objective())  # batch → gradient → decay, step, prox
            if not bool(torch.isfinite(loss.detach())):
                run.stop_non_finite()  # nothing moved; record where it stopped
                break
            run.record_step(loss)  # state.step += 1
            hooks.on_step_end(state)  # may change weight_decay, penalty, lr, stop
            stop = run.after_step()  # evaluate on the grid (on_eval), snapshot, checkpoint
        if not finished:
            run.finish()  # final snapshot, final-weights check, last checkpoint
    run.end()  # early stopping restores its best weights; on_train_end
    return state.history
