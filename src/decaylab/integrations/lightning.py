"""Curvature and decay diagnostics inside a Lightning training run.

:class:`CurvatureMonitor` is a ``lightning.pytorch.Callback``. At the end of every
``every_n_epochs``-th training epoch it computes, on the data it was given and at the
current weights,

* the top-``k`` eigenvalues ``λ_1 ≥ … ≥ λ_k`` of the Hessian ``H = ∇²J(w)`` (or of the
  generalized Gauss-Newton matrix) of the **mean** loss ``J`` (:func:`decaylab.curvature.eigen`;
  only certified eigenvalues are logged, the others are counted as uncertified and warned
  about with :class:`~decaylab.ConvergenceWarning`);
* the Hutch++ estimate of ``tr(H)`` and its standard error;
* the effective number of parameters for the optimizer's weight decay ``α``: its top-``k``
  part ``γ_k = Σ_{i≤k} λ_i / (λ_i + α)`` over the certified eigenvalues and, for the GGN
  (positive semi-definite), the upper bound on the full ``γ``,
  ``γ ≤ γ_k + min(P − k, (tr(G) + 2 se − Σ_{i≤k} λ_i) / α)`` (each remaining term is at
  most ``λ_i/α`` and at most 1 when ``λ_i ≥ 0``).
  The Hessian away from a minimum has eigenvalues below ``−α``, whose terms exceed 1, so no
  such bound is logged for it;
* the L2 strength that early stopping at this step is roughly equivalent to,
  ``α_ES = 1 / Σ_t ε_t`` (``= 1/(ε·steps)`` for a constant learning rate ``ε``);
* the seconds the call took and the products it used,

and sends them to every logger of the trainer (``trainer.loggers``) at ``trainer.global_step``,
under ``curvature/…``. ``monitor.history`` keeps the same values, with all ``k`` eigenvalues,
their ``certified`` flags and residuals.

It does not change the training: the random number generators (torch CPU and CUDA, numpy,
Python's ``random``) are restored after each call, as are every submodule's train/eval mode and
every parameter's ``.grad``; the curvature is computed in eval mode (dropout off, batch-norm
running statistics used and not updated) on a copy of the weights. So a run with the monitor
ends with bit-identical weights to a run without it.

Weight decay and what ``α`` means. ``α`` is read from the param groups of the trainer's
optimizers that hold the monitored parameters (or given as ``alpha=``). For SGD (and Adam's
coupled ``weight_decay``) it is the L2 strength of ``J(w) + α/2 ‖w‖²`` and ``γ`` has its
textbook meaning. For AdamW (decoupled: ``w ← w − ε·wd·w − ε·Adam step``) the stationary point
solves ``∇J = −wd (√v̂ + eps) ⊙ w``: a per-coordinate L2 of strength ``wd (√v̂_j + eps)``, not
``wd``. The monitor then still logs ``γ`` at ``α = wd`` (what SGD with that decay would give),
logs ``weight_decay_decoupled = 1``, and warns once (:class:`~decaylab.TheoryWarning`).
Likewise ``α_ES = 1/Σε_t`` is the plain gradient-descent relation (``shared/CONVENTIONS.md``);
for adaptive optimizers it is only indicative.

Under DDP every rank runs the callback (the operators all-reduce over the default process
group); give every rank the same data, or its own shard for sharded curvature.
"""

from __future__ import annotations

import contextlib
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from decaylab._checks import ConvergenceWarning, TheoryWarning, check_bool, check_scalar
from decaylab._inputs import as_tensor_pair
from decaylab.curvature import GGNOperator, HessianOperator, eigen, select_params, trace
from decaylab.curvature.batching import check_data_container
from decaylab.theory import effective_parameters

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError:  # pragma: no cover - depends on the environment
    try:
        # The same classes under the pre-2.0 package name; mypy sees them as a second definition.
        from pytorch_lightning import Callback, LightningModule, Trainer  # type: ignore[assignment]
    except ImportError as exc:
        raise ImportError(
            "decaylab.integrations.lightning needs Lightning: pip install 'decaylab[lightning]'"
        ) from exc

__all__ = ["CurvatureMonitor"]

CURVATURES = {"hessian": HessianOperator, "ggn": GGNOperator}


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore torch (CPU, CUDA), numpy and Python ``random`` generator states on exit."""
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


@contextlib.contextmanager
def preserved_module(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode; restore every submodule's mode and every ``.grad`` on exit."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad) for p in model.parameters()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode
        for param, grad in grads:
            param.grad = grad


def _check_data(data: Any) -> Any:
    """An ``(X, y)`` pair (tensors or numpy, checked by the shared input layer) or a
    re-iterable of ``(X, y)`` batches such as a ``DataLoader`` (refused here as the
    operators refuse it; its batches are checked when the operator is built)."""
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and not isinstance(data[0], (tuple, list))
    ):
        return as_tensor_pair(data, "data")
    check_data_container(data)
    return data


def _is_decoupled(optimizer: torch.optim.Optimizer, group: dict) -> bool:
    return isinstance(optimizer, torch.optim.AdamW) or bool(group.get("decoupled_weight_decay"))


def optimizer_decay(
    optimizers: Sequence[torch.optim.Optimizer], params: Sequence[torch.Tensor]
) -> tuple[set[float], bool]:
    """Distinct weight decays of the groups holding ``params``, and whether any is decoupled."""
    wanted = {id(p) for p in params}
    decays: set[float] = set()
    decoupled = False
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            if any(id(p) in wanted for p in group["params"]):
                decays.add(float(group.get("weight_decay", 0.0)))
                decoupled = decoupled or _is_decoupled(optimizer, group)
    return decays, decoupled


class CurvatureMonitor(Callback):
    """Log certified curvature, ``γ`` and the early-stopping ``α`` during Lightning training.

    Parameters
    ----------
    data : (X, y) tensors or a re-iterable of (X, y) batches
        Where the curvature is measured (typically the training set or a fixed subset of it).
        The curvature is of the mean loss over all of it.
    every_n_epochs : int
        Compute at the end of epochs ``n, 2n, …`` (1-based), ``≥ 1``.
    k : int
        Number of top eigenvalues, ``≥ 1``.
    loss_fn : str or callable, optional
        Mean loss ``loss_fn(pl_module(X), y)`` (a name of :func:`decaylab.curvature.resolve_loss`
        such as ``"cross_entropy"`` or ``"half_mse"``). Default: ``pl_module.loss_fn``.
    curvature : {"hessian", "ggn"}
    params : optional
        Parameter selection (names or tensors of ``pl_module``); default all trainable ones.
    alpha : float, optional
        L2 strength for ``γ``; default: the optimizer's ``weight_decay`` for these parameters.
    trace_matvecs : int
        Products for the Hutch++ trace (``≥ 4``), or 0 to skip the trace.
    tol, max_matvecs, seed
        Passed to :func:`decaylab.curvature.eigen`.
    dtype : torch.dtype, optional
        Dtype of the products (e.g. ``torch.float64`` for reference accuracy); default the model's.
    warm_start : bool
        Start each Lanczos run from the previous call's eigenvectors (fewer products).
    prefix : str
        Prefix of the logged metric names.

    Examples
    --------
    >>> import torch
    >>> X, y = torch.randn(64, 3), torch.randn(64, 1)
    >>> monitor = CurvatureMonitor((X, y), loss_fn="half_mse", k=2)
    >>> monitor.k, monitor.every_n_epochs
    (2, 1)
    """

    def __init__(
        self,
        data: Any,
        every_n_epochs: int = 1,
        k: int = 5,
        *,
        loss_fn: str | Callable[..., torch.Tensor] | None = None,
        curvature: str = "hessian",
        params: Any = None,
        alpha: float | None = None,
        trace_matvecs: int = 30,
        tol: float = 1e-3,
        max_matvecs: int | None = None,
        seed: int = 0,
        dtype: torch.dtype | None = None,
        warm_start: bool = True,
        prefix: str = "curvature/",
    ) -> None:
        super().__init__()
        self.data = _check_data(data)
        self.every_n_epochs = int(
            check_scalar(every_n_epochs, "every_n_epochs", low=1, integer=True)
        )
        self.k = int(check_scalar(k, "k", low=1, integer=True))
        if curvature not in CURVATURES:
            raise ValueError(f"curvature must be one of {sorted(CURVATURES)}, got {curvature!r}")
        self.curvature = curvature
        self.loss_fn = loss_fn
        self.params = params
        self.alpha = None if alpha is None else float(check_scalar(alpha, "alpha", low=0.0))
        self.trace_matvecs = int(check_scalar(trace_matvecs, "trace_matvecs", low=0, integer=True))
        if 0 < self.trace_matvecs < 4:
            raise ValueError(f"trace_matvecs must be 0 or >= 4, got {trace_matvecs!r}")
        self.tol = float(check_scalar(tol, "tol", low=0.0, low_inclusive=False))
        self.max_matvecs = max_matvecs
        self.seed = int(check_scalar(seed, "seed", integer=True))
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        self.dtype = dtype
        self.warm_start = check_bool(warm_start, "warm_start")
        self.prefix = str(prefix)
        self.history: list[dict[str, Any]] = []
        self._lr_sum = 0.0
        self._last_step = 0
        self._previous: torch.Tensor | None = None
        self._warned: set[str] = set()
        # The data and the model's determinism are checked by the first operator built; the
        # later ones skip that (a second pass over a DataLoader and a second forward pass).
        self._determinism_checked = False

    # ------------------------------------------------------------------ hooks

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        """Accumulate ``Σ_t ε_t`` over the optimizer steps taken since the last call."""
        steps = trainer.global_step - self._last_step
        if steps > 0 and trainer.optimizers:
            self._lr_sum += steps * float(trainer.optimizers[0].param_groups[0]["lr"])
        self._last_step = trainer.global_step

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        start = time.perf_counter()
        with preserved_rng(), preserved_module(pl_module), torch.inference_mode(False):
            with torch.enable_grad():
                record = self._measure(trainer, pl_module)
        record["seconds"] = time.perf_counter() - start
        self.history.append(record)
        metrics = self._metrics(record)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"lr_sum": self._lr_sum, "last_step": self._last_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._lr_sum = float(state_dict["lr_sum"])
        self._last_step = int(state_dict["last_step"])

    # -------------------------------------------------------------- computing

    def _loss_fn(self, pl_module: LightningModule) -> Any:
        loss_fn = self.loss_fn if self.loss_fn is not None else getattr(pl_module, "loss_fn", None)
        if loss_fn is None:
            raise ValueError(
                "loss_fn: pass CurvatureMonitor(..., loss_fn=...) or give the LightningModule "
                "a loss_fn attribute (the mean loss of its predictions)"
            )
        return loss_fn

    def _measure(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        operator = CURVATURES[self.curvature](
            pl_module,
            self._loss_fn(pl_module),
            self.data,
            params=self.params,
            device=pl_module.device,
            dtype=self.dtype,
            check_deterministic=not self._determinism_checked,
        )
        self._determinism_checked = True
        k = min(self.k, operator.num_params)
        v0 = self._previous if self.warm_start else None
        if v0 is not None and v0.shape[0] != operator.num_params:
            v0 = None
        result = eigen(
            operator, k, tol=self.tol, max_matvecs=self.max_matvecs, seed=self.seed, v0=v0
        )
        self._previous = result.eigenvectors.sum(dim=1).detach()
        record: dict[str, Any] = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "eigenvalues": result.eigenvalues.tolist(),
            "certified": result.converged.tolist(),
            "residuals": result.residuals.tolist(),
            "num_params": operator.num_params,
        }
        if not result.all_converged:
            warnings.warn(
                f"CurvatureMonitor: {int((~result.converged).sum())} of {k} eigenvalues not "
                f"certified at epoch {trainer.current_epoch}; they are not logged "
                "(raise max_matvecs or tol)",
                ConvergenceWarning,
                stacklevel=2,
            )
        if self.trace_matvecs:
            tr = trace(operator, n_matvecs=self.trace_matvecs, seed=self.seed)
            record["trace"], record["trace_std_error"] = tr.estimate, tr.std_error
        record["n_matvecs"] = operator.n_matvecs
        record.update(self._decay(trainer, pl_module, record))
        return record

    def _alpha(self, trainer: Trainer, pl_module: LightningModule) -> tuple[float | None, bool]:
        if self.alpha is not None:
            return self.alpha, False
        _, tensors = select_params(pl_module, self.params)
        decays, decoupled = optimizer_decay(trainer.optimizers, tensors)
        if len(decays) == 1:
            alpha = decays.pop()
            if decoupled:
                self._warn_once(
                    "decoupled",
                    f"CurvatureMonitor: the optimizer's weight_decay={alpha:g} is decoupled "
                    "(AdamW): it is not the L2 strength alpha, whose per-coordinate equivalent is "
                    "wd*(sqrt(v_hat)+eps); gamma is logged at alpha=wd, as for SGD",
                )
            return alpha, decoupled
        if len(decays) > 1:
            self._warn_once(
                "mixed",
                f"CurvatureMonitor: the monitored parameters have different weight decays "
                f"{sorted(decays)}; gamma needs one alpha: pass alpha= or params= of one group",
            )
        return None, decoupled

    def _decay(self, trainer: Trainer, pl_module: LightningModule, record: dict) -> dict:
        lam = np.array(record["eigenvalues"])[np.array(record["certified"], dtype=bool)]
        out: dict[str, Any] = {"early_stopping_alpha": 1.0 / self._lr_sum if self._lr_sum else None}
        if lam.size and self._lr_sum and trainer.optimizers:
            lr = float(trainer.optimizers[0].param_groups[0]["lr"])
            out["lr_times_lambda_max"] = lr * float(lam[0])
            if isinstance(trainer.optimizers[0], torch.optim.SGD) and lr * lam[0] >= 2:
                self._warn_once("diverge", "CurvatureMonitor: lr * lambda_max >= 2: SGD diverges")
        alpha, decoupled = self._alpha(trainer, pl_module)
        out["alpha"], out["weight_decay_decoupled"] = alpha, decoupled
        if alpha is None or not lam.size:
            return out
        out["gamma"] = float(effective_parameters(lam, alpha))
        # The bound needs every lambda_i > -alpha: known for the GGN (PSD), not for the Hessian.
        complete = lam.size == len(record["eigenvalues"])
        if self.curvature == "ggn" and "trace" in record and complete and alpha > 0:
            rest = record["trace"] + 2 * record["trace_std_error"] - float(lam.sum())
            free = record["num_params"] - lam.size
            out["gamma_upper"] = out["gamma"] + min(free, max(rest, 0.0) / alpha)
        return out

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, TheoryWarning, stacklevel=3)

    def _metrics(self, record: dict[str, Any]) -> dict[str, float]:
        """Flat float metrics: certified eigenvalues only, ``None`` values left out."""
        p = self.prefix
        metrics = {
            f"{p}eig_{i + 1}": v
            for i, (v, ok) in enumerate(
                zip(record["eigenvalues"], record["certified"], strict=True)
            )
            if ok
        }
        metrics[f"{p}n_certified"] = float(sum(record["certified"]))
        keys = (
            "trace",
            "trace_std_error",
            "gamma",
            "gamma_upper",
            "alpha",
            "weight_decay_decoupled",
            "early_stopping_alpha",
            "lr_times_lambda_max",
            "seconds",
            "n_matvecs",
        )
        for key in keys:
            if record.get(key) is not None:
                metrics[p + key] = float(record[key])
        return metrics
