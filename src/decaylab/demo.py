"""The demo computation: the closed-form theory of weight decay on a real regression task.

For a linear model with the ½-squared-error loss the quadratic model is exact, so every
quantity of ``docs/conventions.md`` can be computed in closed form from one
eigen-decomposition of ``H = XᵀX/N``:

* ``w* = H⁻¹ Xᵀy/N``, the unregularized minimizer of ``J(w) = (1/2N) ‖y − Xw‖²``;
* the ridge (L2) path ``w̃(α) = Q (Λ + αI)⁻¹ Λ Qᵀ w*`` and the shrink factors ``λ_i/(λ_i+α)``;
* the L1 path on the decorrelated design ``Z = XQ`` (PCA rotation, ``ZᵀZ/N = Λ`` diagonal),
  where L1 soft-thresholds each coordinate of ``v* = Qᵀw*`` by ``α/λ_i``;
* the gradient-descent trajectory ``w_τ = Q [I − (I − εΛ)^τ] Qᵀ w*`` from ``w_0 = 0``, the
  exact per-direction equivalent ``α_i`` of stopping at step ``τ`` and the scalar rule
  ``α ≈ 1/(ετ)``;
* the evidence-optimal α (MacKay's fixed point) and the log evidence against α.

:func:`run_demo` does the computation (no plotting, no files) and returns a
:class:`DemoResults`; :mod:`decaylab.report` turns it into figures and an HTML page.
All formulas come from :mod:`decaylab.theory` and :mod:`decaylab.bayes`; this module only
wires them to the data.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from decaylab._checks import ConvergenceWarning, TheoryWarning, check_scalar
from decaylab.tasks.legacy import LinearTask as Task
from decaylab.tasks.legacy import get_task

__all__ = ["DemoResults", "run_demo", "to_jsonable"]

# Gradient-descent run length: stop once the flattest direction has closed all but this
# fraction of its gap to w*, so the trajectory visibly reaches w*.
_GD_REMAINING_GAP = 0.01
_GD_MAX_STEPS = 200_000
# Steps at which the early-stopping equivalence is tabulated (besides the evidence-matched τ).
_TABLE_STEPS = (10, 100, 1000)


@dataclass
class DemoResults:
    """Everything the demo computed, as float64 arrays and plain numbers.

    Coordinates: ``w`` vectors are in the standardized feature basis; ``v`` vectors are
    in the eigenbasis (``v = Qᵀw``), which is also the weight vector of the decorrelated
    design ``Z = XQ``. Eigenvalues are sorted descending (``eigvals[0]`` = λ_max).
    """

    task: dict[str, Any]
    hessian: np.ndarray
    eigvals: np.ndarray
    eigvecs: np.ndarray
    w_star: np.ndarray
    v_star: np.ndarray
    loss_at_zero: float
    loss_at_w_star: float
    r_squared: float
    # alpha grid shared by the ridge, L1, evidence and γ curves
    alphas: np.ndarray
    ridge_path: np.ndarray
    ridge_path_rotated: np.ndarray
    l1_path_rotated: np.ndarray
    l1_zero_alpha: np.ndarray
    effective_parameters: np.ndarray
    log_evidence: np.ndarray
    log_evidence_note: str
    # evidence (type-II maximum likelihood)
    evidence: dict[str, Any]
    # the α used for the weight-decay picture, and the ridge solution there
    alpha_picture: float
    alpha_picture_source: str
    w_tilde: np.ndarray
    shrink_at_picture: np.ndarray
    shrink_at_evidence: np.ndarray
    # gradient descent and early stopping
    lr: float
    lr_source: str
    gd_steps: np.ndarray
    gd_trajectory_rotated: np.ndarray
    early_stopping: list[dict[str, Any]]
    consistency: dict[str, float]
    warnings: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_samples(self) -> int:
        return int(self.task["n_samples"])

    @property
    def n_features(self) -> int:
        return int(self.task["n_features"])

    @property
    def gd_trajectory(self) -> np.ndarray:
        """Trajectory in the feature basis, shape ``(len(gd_steps), d)``."""
        return self.gd_trajectory_rotated @ self.eigvecs.T

    def to_dict(self) -> dict[str, Any]:
        """Nested dict of plain Python values (arrays become lists; NaN/inf kept)."""
        return {
            "task": self.task,
            "loss": {
                "J_at_zero": self.loss_at_zero,
                "J_at_w_star": self.loss_at_w_star,
                "r_squared": self.r_squared,
            },
            "hessian": {
                "matrix": self.hessian,
                "eigenvalues": self.eigvals,
                "eigenvectors_columns": self.eigvecs,
                "lambda_max": float(self.eigvals[0]),
                "lambda_min": float(self.eigvals[-1]),
                "condition_number": _ratio(self.eigvals[0], self.eigvals[-1]),
                "trace": float(np.sum(self.eigvals)),
            },
            "w_star": dict(zip(self.task["feature_names"], self.w_star.tolist(), strict=True)),
            "v_star_eigenbasis": self.v_star,
            "weight_decay_picture": {
                "alpha": self.alpha_picture,
                "alpha_source": self.alpha_picture_source,
                "w_tilde": self.w_tilde,
                "shrink_factors": self.shrink_at_picture,
                "plane": "coordinates (q_1ᵀw, q_dᵀw): largest and smallest eigenvalue",
                "w_star_in_plane": [float(self.v_star[0]), float(self.v_star[-1])],
                "w_tilde_in_plane": [
                    float(self.eigvecs[:, 0] @ self.w_tilde),
                    float(self.eigvecs[:, -1] @ self.w_tilde),
                ],
                "effective_parameters": float(np.sum(self.shrink_at_picture)),
            },
            "evidence": {**self.evidence, "shrink_factors": self.shrink_at_evidence},
            "gradient_descent": {
                "lr": self.lr,
                "lr_source": self.lr_source,
                "lr_times_lambda_max": self.lr * float(self.eigvals[0]),
                "w0": "zeros",
                "n_steps": int(self.gd_steps[-1]),
                "final_distance_to_w_star": float(
                    np.linalg.norm(self.gd_trajectory_rotated[-1] - self.v_star)
                ),
                "early_stopping": self.early_stopping,
            },
            "l1_decorrelated": {
                "design": "Z = X Q (PCA rotation); ZᵀZ/N = diag(eigenvalues)",
                "h_diag": self.eigvals,
                "w_star": self.v_star,
                "alpha_at_which_coefficient_hits_zero": self.l1_zero_alpha,
            },
            "consistency_checks": self.consistency,
            "paths": {
                "alphas": self.alphas,
                "ridge_path": self.ridge_path,
                "ridge_path_eigenbasis": self.ridge_path_rotated,
                "l1_path_eigenbasis": self.l1_path_rotated,
                "effective_parameters": self.effective_parameters,
                "log_evidence": self.log_evidence,
                "log_evidence_note": self.log_evidence_note,
                "gd_steps": self.gd_steps,
                "gd_trajectory_eigenbasis": self.gd_trajectory_rotated,
            },
            "warnings": self.warnings,
            "timings": {"compute_seconds": self.seconds},
        }


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b != 0 else math.inf


def run_demo(
    task: Task | str = "diabetes",
    *,
    alpha: float | None = None,
    lr: float | None = None,
    n_alphas: int = 200,
) -> DemoResults:
    """Compute the closed-form weight-decay theory on a linear-regression task.

    Parameters
    ----------
    task : Task or str, default "diabetes"
        A :class:`~decaylab.tasks.Task` of kind ``"linear_regression"`` or its name.
    alpha : float, optional
        α (decaylab scaling: ``J̃ = J + (α/2)‖w‖²``) for the weight-decay picture.
        Default: the evidence-optimal α.
    lr : float, optional
        Gradient-descent learning rate ε. Default ``0.5/λ_max`` (stable and monotone:
        ``ελ_i ≤ 0.5`` in every direction).
    n_alphas : int, default 200
        Points on the log-spaced α grid, which spans ``[λ_min/100, 100·λ_max]``.

    Returns
    -------
    DemoResults
        Every warning raised during the computation (e.g. ``TheoryWarning``) is recorded
        in ``results.warnings`` **and** re-emitted to the caller.

    Examples
    --------
    >>> res = run_demo("diabetes")
    >>> res.eigvals.shape, res.ridge_path.shape[1]
    ((10,), 10)
    >>> bool(np.all(np.diff(res.eigvals) <= 0))
    True
    >>> bool(0 < res.evidence["alpha"] < res.eigvals[0])
    True
    """
    start = time.perf_counter()
    if isinstance(task, str):
        task = get_task(task)
    if task.kind != "linear_regression" or task.loss != "half_squared_error":
        raise ValueError(
            "task must be a linear-regression task with the half-squared-error loss for "
            f"the closed-form demo, got kind={task.kind!r}, loss={task.loss!r}"
        )
    n_alphas = check_scalar(n_alphas, "n_alphas", low=2, integer=True)
    if alpha is not None:
        alpha = check_scalar(alpha, "alpha", low=0.0, low_inclusive=False)
    if lr is not None:
        lr = check_scalar(lr, "lr", low=0.0, low_inclusive=False)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = _compute(task, alpha=alpha, lr=lr, n_alphas=n_alphas)
    results.warnings = _dedupe_warnings(caught)
    for record in caught:
        # Never hide what the theory could not vouch for: the caller sees it too.
        warnings.warn_explicit(
            record.message, record.category, record.filename, record.lineno
        )
    results.seconds = time.perf_counter() - start
    return results


def _dedupe_warnings(caught: list[warnings.WarningMessage]) -> list[dict[str, str]]:
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for record in caught:
        key = (record.category.__name__, str(record.message))
        if key in seen:
            seen[key]["count"] += 1
        else:
            seen[key] = {
                "category": record.category.__name__,
                "message": str(record.message),
                "source": f"{record.filename}:{record.lineno}",
                "count": 1,
            }
    return list(seen.values())


def _compute(task: Task, *, alpha: float | None, lr: float | None, n_alphas: int) -> DemoResults:
    from decaylab import bayes, theory

    X, y = task.X, task.y
    n, d = X.shape
    hessian = X.T @ X / n
    hessian = 0.5 * (hessian + hessian.T)  # exact symmetry; rounding would trip the check
    eigvals, eigvecs = theory.eigh_descending(hessian)
    eigvecs = _fix_signs(eigvecs)
    if eigvals[-1] <= 0:
        warnings.warn(
            f"H = XᵀX/N is singular (smallest eigenvalue {eigvals[-1]:.3g}); w* is the "
            "minimum-norm least-squares solution and the flat directions carry no data.",
            TheoryWarning,
            stacklevel=2,
        )
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]
    v_star = eigvecs.T @ w_star
    loss_at_zero = 0.5 * float(np.mean(y**2))
    loss_at_w_star = 0.5 * float(np.mean((y - X @ w_star) ** 2))
    r_squared = 1.0 - loss_at_w_star / loss_at_zero if loss_at_zero > 0 else math.nan

    lam_max = float(eigvals[0])
    lam_min_pos = float(eigvals[eigvals > 0][-1]) if np.any(eigvals > 0) else 1.0
    alphas = np.logspace(np.log10(lam_min_pos) - 2, np.log10(lam_max) + 2, n_alphas)

    # Ridge path in the feature basis (theory) and in the eigenbasis (its rotation).
    ridge_path = theory.l2_solution(w_star, alphas, eigvals=eigvals, eigvecs=eigvecs)
    ridge_path_rotated = ridge_path @ eigvecs
    # L1 on the decorrelated design Z = XQ: diagonal curvature h = eigenvalues.
    l1_path_rotated = theory.l1_solution(v_star, eigvals, alphas)
    l1_zero_alpha = eigvals * np.abs(v_star)
    gamma = theory.effective_parameters(eigvals, alphas)

    # Evidence: MacKay's fixed point on the centred data (no intercept, like the model).
    ev = bayes.evidence_ridge(X, y, fit_intercept=False)
    evidence = {
        "alpha": float(ev.alpha),
        "prior_precision": float(ev.prior_precision),
        "noise_precision": float(ev.noise_precision),
        "gamma": float(ev.gamma),
        "log_evidence": float(ev.log_evidence),
        "n_iter": int(ev.n_iter),
        "converged": bool(getattr(ev, "converged", True)),
        "coef": np.asarray(ev.coef, dtype=np.float64),
        "prior_std": float(1.0 / math.sqrt(ev.prior_precision))
        if ev.prior_precision > 0
        else math.inf,
        "noise_std": float(1.0 / math.sqrt(ev.noise_precision))
        if ev.noise_precision > 0
        else math.inf,
        "equivalent_steps": None,
    }
    if not evidence["converged"]:
        warnings.warn(
            f"evidence_ridge stopped after {ev.n_iter} iterations without converging; "
            "the evidence-optimal α is not certified.",
            ConvergenceWarning,
            stacklevel=2,
        )
    log_evidence, log_evidence_note = _log_evidence_curve(bayes, X, y, alphas)

    if alpha is None:
        alpha_picture, alpha_source = float(ev.alpha), "evidence-optimal α"
    else:
        alpha_picture, alpha_source = float(alpha), "chosen with --alpha"
    w_tilde = theory.l2_solution(w_star, alpha_picture, eigvals=eigvals, eigvecs=eigvecs)
    shrink_at_picture = theory.shrink_factors(eigvals, alpha_picture)

    # Gradient descent from w0 = 0.
    if lr is None:
        lr, lr_source = 0.5 / lam_max, "0.5/λ_max"
    else:
        lr_source = "chosen with --lr"
    n_steps = _steps_to_converge(lr, float(eigvals[-1]))
    gd_steps = _trajectory_steps(n_steps)
    gd_trajectory = theory.gd_iterate(w_star, lr, gd_steps, eigvals=eigvals, eigvecs=eigvecs)
    gd_trajectory_rotated = gd_trajectory @ eigvecs

    evidence_steps = float(theory.equivalent_steps(ev.alpha, lr))
    evidence["equivalent_steps"] = evidence_steps
    tau_ev = max(1, round(evidence_steps)) if math.isfinite(evidence_steps) else None
    # Steps too close to the evidence-matched τ would draw on top of it in figure (c).
    table_steps = sorted(
        {t for t in _TABLE_STEPS if tau_ev is None or not tau_ev / 2 <= t <= 2 * tau_ev}
        | ({tau_ev} if tau_ev is not None else set())
    )
    early_stopping = []
    for tau in table_steps:
        v_gd = eigvecs.T @ theory.gd_iterate(w_star, lr, tau, eigvals=eigvals, eigvecs=eigvecs)
        per_direction = theory.early_stopping_alpha(eigvals, lr, tau)
        scalar = float(theory.approx_alpha(lr, tau))
        early_stopping.append(
            {
                "steps": int(tau),
                "matches": "evidence-optimal α" if tau == tau_ev else "",
                "alpha_scalar_1_over_lr_steps": scalar,
                "alpha_per_direction": per_direction,
                "ratio_per_direction_to_scalar": per_direction / scalar,
                "shrink_gd": _kept_fraction(v_gd, v_star),
                "w_gd_eigenbasis": v_gd,
                "shrink_l2_at_scalar_alpha": theory.shrink_factors(eigvals, scalar),
            }
        )

    consistency = {
        # MAP under the evidence prior is the ridge solution at the evidence α.
        "max_abs_map_minus_ridge_at_evidence_alpha": float(
            np.max(
                np.abs(
                    evidence["coef"]
                    - theory.l2_solution(w_star, ev.alpha, eigvals=eigvals, eigvecs=eigvecs)
                )
            )
        ),
        "evidence_gamma_minus_effective_parameters": float(
            ev.gamma - theory.effective_parameters(eigvals, ev.alpha)
        ),
    }

    task_info = {
        "name": task.name,
        "description": task.description,
        "source": task.source,
        "loss": task.loss,
        "n_samples": int(n),
        "n_features": int(d),
        "feature_names": list(task.feature_names),
    }
    return DemoResults(
        task=task_info,
        hessian=hessian,
        eigvals=eigvals,
        eigvecs=eigvecs,
        w_star=w_star,
        v_star=v_star,
        loss_at_zero=loss_at_zero,
        loss_at_w_star=loss_at_w_star,
        r_squared=r_squared,
        alphas=alphas,
        ridge_path=ridge_path,
        ridge_path_rotated=ridge_path_rotated,
        l1_path_rotated=l1_path_rotated,
        l1_zero_alpha=l1_zero_alpha,
        effective_parameters=gamma,
        log_evidence=log_evidence,
        log_evidence_note=log_evidence_note,
        evidence=evidence,
        alpha_picture=alpha_picture,
        alpha_picture_source=alpha_source,
        w_tilde=w_tilde,
        shrink_at_picture=shrink_at_picture,
        shrink_at_evidence=theory.shrink_factors(eigvals, ev.alpha),
        lr=float(lr),
        lr_source=lr_source,
        gd_steps=gd_steps,
        gd_trajectory_rotated=gd_trajectory_rotated,
        early_stopping=early_stopping,
        consistency=consistency,
    )


def _fix_signs(eigvecs: np.ndarray) -> np.ndarray:
    """Flip each eigenvector so its largest-magnitude entry is positive (stable plots)."""
    idx = np.argmax(np.abs(eigvecs), axis=0)
    signs = np.sign(eigvecs[idx, np.arange(eigvecs.shape[1])])
    signs[signs == 0] = 1.0
    return eigvecs * signs


def _steps_to_converge(lr: float, lam_min: float) -> int:
    """Steps until the flattest direction's gap ``|1−ελ|^τ`` falls below 1 %."""
    contraction = abs(1.0 - lr * lam_min)
    if lam_min <= 0 or contraction >= 1.0:
        return _GD_MAX_STEPS if lam_min > 0 else 10_000
    if contraction == 0.0:
        return 1
    steps = math.ceil(math.log(_GD_REMAINING_GAP) / math.log(contraction))
    return int(min(max(steps, 1), _GD_MAX_STEPS))


def _kept_fraction(v: np.ndarray, v_star: np.ndarray) -> np.ndarray:
    """``v_i / v*_i`` per direction; NaN where ``v*_i = 0`` (no fraction to keep)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v_star != 0, v / np.where(v_star != 0, v_star, 1.0), np.nan)


def _trajectory_steps(n_steps: int) -> np.ndarray:
    """Every step up to 100, then log-spaced steps: a smooth curve without 10⁵ rows."""
    dense = np.arange(min(n_steps, 100) + 1)
    if n_steps <= 100:
        return dense
    sparse = np.unique(np.round(np.geomspace(100, n_steps, 400)).astype(np.int64))
    return np.unique(np.concatenate([dense, sparse, _TABLE_STEPS, [n_steps]]))


def _log_evidence_curve(
    bayes: Any, X: np.ndarray, y: np.ndarray, alphas: np.ndarray
) -> tuple[np.ndarray, str]:
    """Log evidence on the α grid, the noise precision β maximized out for each α."""
    curve = bayes.log_evidence_ridge(X, y, alphas, fit_intercept=False)
    return np.asarray(curve, dtype=np.float64), (
        "with the noise precision β maximized out at each α"
    )


def to_jsonable(obj: Any, *, path: str = "", nulls: dict[str, str] | None = None) -> Any:
    """Convert results to JSON-safe values: arrays → lists, NaN/±inf → ``None``.

    Every replaced value is recorded in ``nulls`` (JSON path → reason), so the file can say
    why a number is missing instead of silently dropping it.

    Examples
    --------
    >>> nulls = {}
    >>> to_jsonable({"a": np.array([1.0, np.inf]), "b": np.nan}, nulls=nulls)
    {'a': [1.0, None], 'b': None}
    >>> sorted(nulls)
    ['a[1]', 'b']
    """
    if nulls is None:
        nulls = {}
    if isinstance(obj, dict):
        return {
            str(k): to_jsonable(v, path=f"{path}.{k}" if path else str(k), nulls=nulls)
            for k, v in obj.items()
        }
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, path=f"{path}[{i}]", nulls=nulls) for i, v in enumerate(obj)]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        if math.isnan(value):
            nulls[path] = "NaN: not defined for these inputs"
            return None
        if math.isinf(value):
            nulls[path] = f"{'+' if value > 0 else '-'}infinity (e.g. no finite equivalent)"
            return None
        return value
    return obj
