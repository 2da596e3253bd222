"""``advise(task, method=...)``: run one method, train at its α, check trust, return Advice."""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from decaylab._checks import ConvergenceWarning, check_bool, check_scalar
from decaylab.advise import advice as trust
from decaylab.advise._spectrum import spectrum_of
from decaylab.advise._train import Budget, Protocol, Trainer, check_task
from decaylab.advise.advice import Advice
from decaylab.advise.early_stopping import early_stopping_search
from decaylab.advise.evidence import evidence_search
from decaylab.advise.grid import grid_search, log_grid
from decaylab.advise.hypergradient import hypergradient_search
from decaylab.advise.path import path_search
from decaylab.executors import LocalExecutor
from decaylab.executors.ray import check_executor_option

__all__ = ["advise", "METHODS", "DEFAULT_METHOD", "DEFAULT_RANGE"]

METHODS = ("path", "evidence", "hypergradient", "early_stopping", "grid")
DEFAULT_METHOD = "path"
DEFAULT_RANGE = (1e-6, 1e-1)
_RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {
    "path": path_search,
    "evidence": evidence_search,
    "hypergradient": hypergradient_search,
    "early_stopping": early_stopping_search,
}


def _checked_range(alpha_range: Any) -> tuple[float, float]:
    if not isinstance(alpha_range, (tuple, list)) or len(alpha_range) != 2:
        raise ValueError(f"alpha_range must be a pair (low, high), got {alpha_range!r}")
    low = check_scalar(alpha_range[0], "alpha_range[0]", low=0.0, low_inclusive=False)
    high = check_scalar(alpha_range[1], "alpha_range[1]", low=0.0, low_inclusive=False)
    if not low < high:
        raise ValueError(f"alpha_range must have low < high, got {alpha_range!r}")
    return float(low), float(high)


def _checked_protocol(protocol: Any) -> Protocol:
    if protocol is None:
        return Protocol()
    if isinstance(protocol, Protocol):
        return protocol
    if isinstance(protocol, dict):
        unknown = set(protocol) - set(Protocol.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"protocol has unknown keys {sorted(unknown)}; known: "
                f"{sorted(Protocol.__dataclass_fields__)}"
            )
        return Protocol(**protocol)
    raise ValueError(f"protocol must be a Protocol, a dict or None, got {protocol!r}")


def advise(
    task: Any,
    *,
    method: str = DEFAULT_METHOD,
    compare_grid: bool = False,
    alpha_range: tuple[float, float] = DEFAULT_RANGE,
    n_grid: int = 11,
    protocol: Protocol | dict | None = None,
    trust_checks: bool = True,
    options: dict[str, Any] | None = None,
    executor: Any = None,
    ray_address: str | None = None,
) -> Advice:
    """Advise a weight decay ``α`` for ``task``, trained with ``protocol``.

    Parameters
    ----------
    task
        Anything with ``model`` (zero-argument factory), ``loss_fn`` (mean loss),
        ``train=(X, y)`` and ``val=(X, y)`` (e.g. :class:`decaylab.tasks.Task`).
    method : {"path", "evidence", "hypergradient", "early_stopping", "grid"}
        ``"path"`` (default; see ``docs/advise.md`` for the benchmark that chose it).
    compare_grid : bool
        Also run the ``n_grid``-point grid over ``alpha_range`` and attach it.
    alpha_range : (low, high)
        The α searched, ``0 < low < high``.
    n_grid : int
        Grid points (``"grid"`` method and ``compare_grid``).
    protocol : Protocol or dict
        The training at one α (optimizer, lr, steps, batch_size, seed); default
        :class:`~decaylab.advise._train.Protocol` (Adam 1e-2, 3,000 full-batch steps).
    trust_checks : bool
        Compute the Hessian's extreme eigenvalues and ``γ`` at the final weights (a few
        hundred curvature products, counted in the compute).
    options : dict
        Keyword arguments for the method's own function (e.g. ``corrector_steps``).
    executor : None, "local", "ray" or an executor
        What runs the grid points (``"grid"`` method and ``compare_grid``): in this process
        (``None``/``"local"``), one Ray task per point (``"ray"``: joins ``ray_address``, or the
        Ray instance of this process, else starts a local one), or any object with the
        executors' ``map``. The grid's compute is the sum of its points' compute.
    ray_address : str or None
        Ray cluster to join with ``executor="ray"``.

    Returns
    -------
    Advice
    """
    check_task(task)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    compare_grid = check_bool(compare_grid, "compare_grid")
    trust_checks = check_bool(trust_checks, "trust_checks")
    low, high = _checked_range(alpha_range)
    n_grid = int(check_scalar(n_grid, "n_grid", low=3, integer=True))
    proto = _checked_protocol(protocol)
    options = dict(options or {})
    if isinstance(executor, str) or ray_address is not None:
        check_executor_option(executor if isinstance(executor, str) else "local", ray_address)
    if method == "grid" or compare_grid:
        with _grid_executor(executor, ray_address) as points:
            return _advise(
                task, method, compare_grid, low, high, n_grid, proto, trust_checks, options, points
            )
    return _advise(
        task, method, compare_grid, low, high, n_grid, proto, trust_checks, options, None
    )


@contextlib.contextmanager
def _grid_executor(executor: Any, ray_address: str | None) -> Iterator[Any]:
    """The executor for the grid points; one this function starts is closed afterwards."""
    if executor is None or executor == "local":
        yield LocalExecutor()
        return
    if executor != "ray":
        yield executor
        return
    from decaylab.executors.ray import RayExecutor

    points = RayExecutor(address=ray_address)
    try:
        yield points
    finally:
        points.close()


def _advise(
    task: Any,
    method: str,
    compare_grid: bool,
    low: float,
    high: float,
    n_grid: int,
    proto: Protocol,
    trust_checks: bool,
    options: dict[str, Any],
    points: Any,
) -> Advice:
    """:func:`advise` after its checks; ``points`` runs the grid points."""
    budget = Budget()
    messages: list[str | None] = []
    if method == "grid":
        res = grid_search(task, proto, log_grid(low, high, n_grid), budget, points, **options)
        alpha = res["best_alpha"]
        curves = {"alpha": res["alphas"], "val_loss": res["val_loss"]}
    else:
        res = _RUNNERS[method](task, proto, (low, high), budget, **options)
        alpha = float(res["alpha"])
        curves, extra = _curves_and_messages(method, res, proto)
        messages += extra
    final, unconverged = _final_training(task, proto, alpha, budget)
    messages.append(unconverged)
    messages.append(trust.edge_warning(alpha, low, high))
    if method == "path":
        messages.append(trust.path_mismatch_warning(min(curves["val_loss"]), final.val_loss()))
    if "val_loss" in curves and len(curves["val_loss"]) >= 3:
        messages.append(trust.curve_warning(curves["alpha"], curves["val_loss"]))
    gamma, n_params = res.get("gamma"), int(res.get("n_params", _n_decayed(final)))
    if trust_checks:
        lam_min, lam_max, gamma_here = _curvature_checks(final, budget, need_gamma=gamma is None)
        gamma = gamma if gamma is not None else gamma_here
        messages.append(trust.curvature_warning(lam_min, lam_max))
    messages.append(trust.gamma_warning(gamma, n_params))
    texts = trust.emit(messages)
    advice = Advice(
        alpha=alpha,
        method=method,
        val_loss=final.val_loss(),
        val_accuracy=final.val_accuracy(),
        train_loss=final.train_loss(),
        gamma=gamma,
        n_params=n_params,
        curves=curves,
        compute_seconds=budget.seconds,
        grad_evals=budget.grad_evals,
        warnings=texts,
        protocol=proto.to_dict(),
        details={k: v for k, v in res.items() if not k.startswith("curve")},
    )
    if compare_grid and method == "grid":
        advice.grid = copy.deepcopy(res)  # the method has just run this very grid
    elif compare_grid:
        advice.grid = grid_search(task, proto, log_grid(low, high, n_grid), executor=points)
    return advice


def _curves_and_messages(method: str, res: dict, proto: Protocol) -> tuple[dict, list]:
    if method == "path":
        return {"alpha": res["curve_alpha"], "val_loss": res["curve_val_loss"]}, []
    if method == "early_stopping":
        msgs: list[str | None] = []
        if proto.optimizer != "sgd":
            msgs.append(
                f"the early-stopping equivalence is gradient-descent theory; with "
                f"{proto.optimizer} the step size lr={proto.lr:g} is not what each "
                "direction sees, so its α is a rough guide"
            )
        if res["stopped_at_end"]:
            msgs.append(
                "the validation loss was still falling at the last step: no early "
                "stopping point, the α is a bound"
            )
        if res["alpha_per_direction"] is None:
            msgs.append(
                "the per-direction equivalence has no α in the range; the scalar 1/(lr·τ*) = "
                f"{res['alpha_timescale']:.3g} is used (clipped to the range)"
            )
        return {"step": res["curve_step"], "val_loss_unregularized": res["curve_val_loss"]}, msgs
    curves = {"step": res["step"], "alpha_trace": res["alpha_trace"]}
    if method == "evidence":
        curves.update(alpha=res["curve_alpha"], log_evidence=res["curve_log_evidence"])
        msgs = [trust.settled_warning("the evidence fixed point", res["last_change"])]
        if not res["exact_spectrum"]:
            msgs.append(
                "the evidence used the top-k GGN eigenvalues plus the trace "
                "remainder (an approximation that errs low), not the dense GGN"
            )
        msgs.append(res.get("per_group_note"))
        per_group = res.get("alpha_per_group")
        if per_group and max(per_group.values()) > 10 * min(per_group.values()):
            listed = ", ".join(f"{name}: {a:.3g}" for name, a in per_group.items())
            msgs.append(
                f"the layers' evidence-optimal α differ by more than 10× ({listed}); the "
                "single α is a compromise between layers that want different decay"
            )
        return curves, msgs
    curves.update(val_loss_trace=res["val_loss_trace"], hypergradient=res["hypergradient"])
    msgs = [
        trust.settled_warning("the hypergradient iteration on log α", res["last_change"], tol=0.25)
    ]
    if res["ggn_fallbacks"]:
        msgs.append(
            f"H + αD had negative curvature in {res['ggn_fallbacks']} of "
            f"{res['updates']} updates; the GGN was used there instead of the Hessian"
        )
    return curves, msgs


def _final_training(
    task: Any, proto: Protocol, alpha: float, budget: Budget
) -> tuple[Trainer, str | None]:
    """The advised model: the protocol at ``α``; flags an objective still falling at the end."""
    trainer = Trainer(task, proto, alpha, budget)
    first = max(int(0.9 * proto.steps), 1)
    trainer.run(first)
    before = trainer.objective()
    trainer.run(proto.steps - first)
    return trainer, trust.unconverged_warning(before, trainer.objective())


def _n_decayed(trainer: Trainer) -> int:
    return int(sum(p.numel() for p in trainer.decayed))


def _curvature_checks(
    trainer: Trainer, budget: Budget, need_gamma: bool
) -> tuple[float | None, float | None, float | None]:
    """Extreme Hessian eigenvalues (Lanczos, a negative Ritz value certifies negative
    curvature) and ``γ`` of the GGN at the final weights."""
    from decaylab.advise._curv import make_operator
    from decaylab.curvature import eigen

    op = make_operator(trainer.model, trainer.loss_fn, (trainer.X, trainer.y), "hessian")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        top = eigen(op, k=1, which="largest", max_matvecs=40, tol=1e-2)
        bottom = eigen(op, k=1, which="smallest", max_matvecs=80, tol=1e-2)
    budget.add_products(top.n_matvecs + bottom.n_matvecs)
    gamma = None
    if need_gamma:
        spec = spectrum_of(trainer, budget, structure="auto", k=32, n_matvecs=60)
        gamma = float(spec.gamma(np.array([trainer.alpha]))[0])
    return float(bottom.eigenvalues[0]), float(top.eigenvalues[0]), gamma
