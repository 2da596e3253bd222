"""Legacy array tasks of the closed-form linear demo (:mod:`decaylab.demo`).

The study uses :class:`decaylab.tasks.Task`; this module keeps the design-matrix form of
the diabetes data that the closed-form demo and its report read.

Original description: built-in tasks: small data sets that ship with installed packages.

A task bundles a design matrix, targets, the loss that decaylab's conventions
attach to it, and enough metadata to undo the preprocessing. Tasks are looked up
by name through :func:`get_task`; :data:`TASKS` is the registry, so a new task
(e.g. digits or MNIST-1D classification) is one function plus one registry entry.

Conventions (``docs/conventions.md``): the objective is the **mean** per-example
loss, ``J(w) = (1/N) Σ_n ℓ(f(x_n; w), y_n)``, with ``ℓ = ½ (y − f)²`` for regression.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["LinearTask", "TASKS", "available_tasks", "diabetes", "get_task"]

HALF_SQUARED_ERROR = "half_squared_error"


@dataclass(frozen=True)
class LinearTask:
    """A supervised-learning data set prepared for decaylab.

    Attributes
    ----------
    name : str
        Registry name (``decaylab run --task NAME``).
    kind : str
        ``"linear_regression"`` for a linear model with the ½-squared-error loss,
        whose quadratic model is exact; later kinds (``"classification"``) plug in
        with their own runners.
    X : ndarray, shape (N, d)
        Design matrix, float64.
    y : ndarray, shape (N,)
        Targets, float64.
    feature_names : tuple of str
        One name per column of ``X``.
    loss : str
        Per-example loss name; ``"half_squared_error"`` means ``ℓ = ½ (y − f)²``.
    description : str
        One sentence for reports.
    source : str
        Where the data comes from (package and loader).
    preprocessing : dict
        Means and scales removed from the raw data, so predictions can be mapped back:
        ``raw_X = X * x_scale + x_mean`` and ``raw_y = y * y_scale + y_mean``.
    """

    name: str
    kind: str
    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    loss: str
    description: str
    source: str
    preprocessing: dict = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        """Number of examples ``N``."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of weights ``d`` (no intercept: the data are centred)."""
        return int(self.X.shape[1])


def diabetes(*, standardize_target: bool = True) -> LinearTask:
    """scikit-learn's bundled diabetes regression data, standardized and centred.

    Each of the 10 raw features is centred and divided by its population standard
    deviation (``ddof=0``), so ``H = XᵀX/N`` is the features' correlation matrix
    (unit diagonal, trace ``d``). The target is centred, and by default also divided by
    its standard deviation so that ``J(w) = (1/2N) ‖y − Xw‖²`` is dimensionless and
    ``J(0) = ½``. Because everything is centred, the linear model needs no intercept.

    Parameters
    ----------
    standardize_target : bool, default True
        Divide the centred target by its standard deviation. With ``False`` the target
        stays in the raw units (disease progression score).

    Returns
    -------
    Task
        ``X`` of shape (442, 10), ``y`` of shape (442,), loss ``half_squared_error``.

    Examples
    --------
    >>> import numpy as np
    >>> task = diabetes()
    >>> task.X.shape, task.y.shape
    ((442, 10), (442,))
    >>> bool(np.allclose(np.diag(task.X.T @ task.X / task.n_samples), 1.0))
    True
    >>> round(float(task.y.mean()), 12) == 0.0 and round(float(task.y.std()), 12) == 1.0
    True
    """
    from sklearn.datasets import load_diabetes

    raw = load_diabetes(scaled=False)
    raw_X = np.asarray(raw.data, dtype=np.float64)
    raw_y = np.asarray(raw.target, dtype=np.float64)
    x_mean = raw_X.mean(axis=0)
    x_scale = raw_X.std(axis=0)
    y_mean = float(raw_y.mean())
    y_scale = float(raw_y.std()) if standardize_target else 1.0
    X = (raw_X - x_mean) / x_scale
    y = (raw_y - y_mean) / y_scale
    return LinearTask(
        name="diabetes",
        kind="linear_regression",
        X=X,
        y=y,
        feature_names=tuple(str(name) for name in raw.feature_names),
        loss=HALF_SQUARED_ERROR,
        description=(
            "Diabetes progression one year after baseline from 10 clinical measurements "
            "(442 patients; Efron et al. 2004), features standardized, target "
            + ("standardized." if standardize_target else "centred.")
        ),
        source="sklearn.datasets.load_diabetes(scaled=False)",
        preprocessing={
            "x_mean": x_mean.tolist(),
            "x_scale": x_scale.tolist(),
            "y_mean": y_mean,
            "y_scale": y_scale,
        },
    )


TASKS: dict[str, Callable[[], LinearTask]] = {
    "diabetes": diabetes,
}
"""Registry of built-in tasks: name → zero-argument loader."""


def available_tasks() -> list[str]:
    """Names accepted by :func:`get_task`, sorted.

    Examples
    --------
    >>> "diabetes" in available_tasks()
    True
    """
    return sorted(TASKS)


def get_task(name: str) -> LinearTask:
    """Load a built-in task by name.

    Parameters
    ----------
    name : str
        One of :func:`available_tasks`.

    Raises
    ------
    ValueError
        If ``name`` is not a registered task; the message lists the valid names.

    Examples
    --------
    >>> get_task("diabetes").n_features
    10
    """
    if name not in TASKS:
        raise ValueError(f"task must be one of {available_tasks()}, got {name!r}")
    return TASKS[name]()
