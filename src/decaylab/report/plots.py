"""The study report's seven figures, drawn from ``results.json`` alone (matplotlib, Agg).

Each builder takes the checked :class:`~decaylab.report._results.Study` and returns a
:class:`Plot` (the figure, its title and a caption with this run's numbers), or ``None`` when
the phase it needs is missing. Captions say what the reader sees and, where the numbers say
so, that the theory did **not** hold: a comparison counts as holding within
:data:`~decaylab.report._results.TRUST_TOLERANCE` (10 %, the trust region's rule) and, for
shrink factors, precision and recall (numbers in [0, 1]), within 0.1 absolute.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from decaylab.report._format import fmt, plural  # noqa: E402
from decaylab.report._results import Study  # noqa: E402

__all__ = ["Plot", "make_plots"]

ABS_TOLERANCE = 0.10
"""Largest |predicted − measured| of a quantity in [0, 1] (shrink, precision, recall) that holds."""
_SHRINK_WINDOW = (-0.25, 1.25)
_TRUST_COLOR = "#2ca02c"
_PRED: dict[str, Any] = dict(ls="--", marker="o", mfc="white", lw=1.4, ms=6)
_MEAS: dict[str, Any] = dict(ls="-", marker="s", lw=1.8, ms=5)


@dataclass
class Plot:
    """One figure of the report, not yet written to disk."""

    key: str
    title: str
    caption: str
    figure: Figure
    holds: bool | None = None
    """False where the caption says the theory did not hold; None where no test applies."""


def make_plots(study: Study) -> list[Plot]:
    """All figures whose data are present, in the order of the page."""
    builders = (
        spectrum,
        shrink,
        relative_error,
        validation_loss,
        l1_zeros,
        early_stopping,
        picture,
    )
    return [p for p in (b(study) for b in builders) if p is not None]


# --------------------------------------------------------------------------- helpers


def _alpha_colors(alphas: Sequence[float] | np.ndarray) -> list[Any]:
    """One viridis colour per α, in grid order (dark = small α)."""
    cmap = colormaps["viridis"]
    n = len(alphas)
    return [cmap(0.9 * i / max(1, n - 1)) for i in range(n)]


def _alpha_axis(ax: Axes, alphas: np.ndarray) -> None:
    ax.set_xscale("log")
    lo, hi = float(alphas.min()), float(alphas.max())
    pad = (hi / lo) ** 0.04 if hi > lo else 2.0
    ax.set_xlim(lo / pad, hi * pad)
    ax.set_xlabel("α (total L2 strength, log scale)")
    ax.grid(True, which="major", color="0.9", lw=0.6)


def shade_trust_region(ax: Axes, l2: dict[str, Any]) -> None:
    """Shade α from the axis' left edge to the trust region's largest α (if any)."""
    top = l2["trust_region_alpha_max"]
    if top is None:
        return
    left = ax.get_xlim()[0]
    ax.axvspan(
        left,
        top,
        color=_TRUST_COLOR,
        alpha=0.12,
        lw=0,
        zorder=0,
        label=f"trust region α ≤ {fmt(top)}",
        gid="trust-region",
    )
    ax.set_xlim(left=left)


def _first_failure(alphas: np.ndarray, ok: np.ndarray) -> tuple[float | None, float | None]:
    """(largest α before the first failing one, first failing α), in ascending α."""
    order = np.argsort(alphas)
    last_ok = None
    for i in order:
        if not ok[i]:
            return last_ok, float(alphas[i])
        last_ok = float(alphas[i])
    return last_ok, None


def _holds_words(what: str, last_ok: float | None, first_bad: float | None, worst: str) -> str:
    """A sentence: where ``what`` held, and where it did NOT (with the worst number)."""
    if first_bad is None:
        return f"{what} held at every α of the grid ({worst})."
    if last_ok is None:
        return f"{what} did NOT hold at any α of the grid ({worst})."
    return (
        f"{what} held for α ≤ {fmt(last_ok)}; from α = {fmt(first_bad)} on it did NOT hold "
        f"({worst})."
    )


def _finish(fig: Figure) -> Figure:
    """Lay the figure out when it is drawn (one draw instead of tight_layout's two)."""
    fig.set_layout_engine("constrained")
    return fig


# --------------------------------------------------------------------------- (1) spectrum


def spectrum(study: Study) -> Plot | None:
    """Eigenvalues of H at w₀, descending, on a symmetric log scale, with the α grid."""
    curv = study.get("curvature")
    if curv is None:
        return None
    eig = np.sort(curv["eigenvalues"])[::-1]
    l2 = study.get("l2")
    alphas = l2["alphas"] if l2 is not None else np.array([])
    density = curv.get("density")
    fig = Figure(figsize=(10, 4.6))
    axes = fig.subplots(1, 2, width_ratios=[3, 2]) if density else [fig.add_subplot()]
    _draw_scree(axes[0], eig, alphas)
    if density:
        _draw_density(axes[1], density, alphas)
    return Plot(
        "spectrum",
        "Spectrum of the Hessian at w₀ and the α grid",
        _spectrum_caption(study, eig, alphas),
        _finish(fig),
        holds=False if _n_negative(study, eig) else None,
    )


def _n_negative(study: Study, eig: np.ndarray) -> int:
    curv = study.get("curvature") or {}
    n = curv.get("n_negative")
    return int(n) if n is not None else int(np.sum(eig < 0))


ZERO_RTOL = 1e-6
"""Eigenvalues with |λ| ≤ ZERO_RTOL·λ_max are drawn as numerically zero (rounding, not sign)."""


def spectrum_groups(eig: np.ndarray, alphas: np.ndarray) -> list[tuple[np.ndarray, str, str]]:
    """(mask, colour, legend label) of: kept at every α, depends on α, shrunk at every α,
    numerically zero, negative."""
    tol = ZERO_RTOL * float(np.max(np.abs(eig))) if eig.size else 0.0
    lo, hi = (float(alphas.min()), float(alphas.max())) if alphas.size else (np.inf, np.inf)
    groups = [
        (eig > hi, "#1f5fa8", "λ > every α: kept"),
        ((eig <= hi) & (eig > lo), "#8c8c8c", "between the α: kept or shrunk, by α"),
        ((eig <= lo) & (eig > tol), "#e08a00", "λ < every α: shrunk"),
        (np.abs(eig) <= tol, "#c7c7c7", f"|λ| ≤ {ZERO_RTOL:g}·λ_max: numerically 0"),
        (eig < -tol, "#d62728", "λ < 0: w₀ not a minimum"),
    ]
    return [(m, c, f"{label} ({int(m.sum()):,})") for m, c, label in groups]


def _draw_scree(ax: Axes, eig: np.ndarray, alphas: np.ndarray) -> None:
    idx = np.arange(1, eig.size + 1)
    positive = eig[eig > 0]
    floor = (
        float(alphas.min()) / 10
        if alphas.size
        else (float(positive.min()) if positive.size else 1e-8)
    )
    for mask, color, label in spectrum_groups(eig, alphas):
        if mask.any():
            negative = color == "#d62728"
            ax.scatter(
                idx[mask],
                eig[mask],
                s=(14 if eig.size > 200 else 24) * (2 if negative else 1),
                color=color,
                label=label,
                zorder=3,
                marker="v" if negative else "o",
            )
    for a, color in zip(alphas, _alpha_colors(alphas), strict=True):
        ax.axhline(a, color=color, lw=1.0, zorder=2)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_yscale("symlog", linthresh=floor, linscale=0.6)
    top = float(eig.max()) * 3 if eig.size and eig.max() > 0 else 1.0
    bottom = float(eig.min()) * 3 if eig.size and eig.min() < -floor else -floor
    ax.set_ylim(bottom, max(top, float(alphas.max()) * 3 if alphas.size else top))
    if eig.size > 50:
        ax.set_xscale("log")
    ax.set_xlabel(
        "index i of the eigenvalue (descending" + (", log scale)" if eig.size > 50 else ")")
    )
    ax.set_ylabel(f"eigenvalue λᵢ (symmetric log; linear for |λ| < {fmt(floor)})")
    ax.legend(fontsize=7.5, loc="lower left", framealpha=0.9)
    ax.grid(True, which="major", color="0.92", lw=0.6)
    if alphas.size:  # the α of each line as a tick on the right, off the data
        right = ax.twinx()
        right.set_yscale("symlog", linthresh=floor, linscale=0.6)
        right.set_ylim(ax.get_ylim())
        right.set_yticks(alphas, [f"α = {fmt(a)}" for a in alphas], fontsize=7)
        right.minorticks_off()
        for tick, color in zip(right.get_yticklabels(), _alpha_colors(alphas), strict=True):
            tick.set_color(color)
    ax.set_title(
        "Directions above an α line are kept by weight decay at that α, those below removed",
        fontsize=9.5,
    )


def _draw_density(ax: Axes, density: dict[str, np.ndarray], alphas: np.ndarray) -> None:
    grid, values = density["grid"], density["values"]
    keep = (grid > 0) & (values > 0)
    ax.plot(grid[keep], values[keep], color="#1f5fa8", lw=1.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    if keep.any():  # the smoothed density dips by tens of decades between peaks: not of interest
        top = float(values[keep].max())
        ax.set_ylim(top * 1e-8, top * 3)
    for a, color in zip(alphas, _alpha_colors(alphas), strict=True):
        ax.axvline(a, color=color, lw=1.0)
    ax.set_xlabel("eigenvalue λ (log scale)")
    ax.set_ylabel("spectral density (SLQ estimate)")
    ax.set_title("Spectral density, α grid as lines", fontsize=9.5)
    if (grid <= 0).any():
        ax.text(
            0.02,
            0.02,
            f"{int(np.sum(grid <= 0))} grid points with λ ≤ 0 not shown",
            transform=ax.transAxes,
            fontsize=7.5,
            color="0.3",
        )


def _spectrum_caption(study: Study, eig: np.ndarray, alphas: np.ndarray) -> str:
    curv = study.get("curvature") or {}
    n_params = study.task.get("n_params")
    dense = curv.get("path") == "dense"
    how = (
        "all of them, by a dense eigendecomposition"
        if dense
        else f"the top {eig.size} of {fmt(n_params)} by certified Lanczos"
    )
    text = (
        f"Eigenvalues λᵢ of the Hessian H of the mean training loss at w₀, descending "
        f"({how}), on a symmetric log scale. Each horizontal line is one α of the L2 grid: "
        "weight decay keeps the directions well above its line (λ ≫ α, shrink factor "
        "λ/(λ+α) near 1) and removes those well below (λ ≪ α). "
    )
    if curv.get("density") is not None:
        text += (
            "Right: the smoothed density of the whole spectrum (stochastic Lanczos quadrature). "
        )
    alpha0 = (study.get("reference") or {}).get("alpha0")
    if alpha0:
        text += (
            f"The reference already carries the base penalty α₀ = {fmt(alpha0)}, so relative to "
            "w₀ a grid α shrinks by about (λ+α₀)/(λ+α). "
        )
    if alphas.size:
        lo, hi = float(alphas.min()), float(alphas.max())
        bound = "" if dense else " at least"
        n_lo = int(np.sum(eig > lo))
        text += (
            f"At the smallest α = {fmt(lo)},{bound} {plural(n_lo, 'direction')} "
            f"{'has' if n_lo == 1 else 'have'} λ > α; at the largest, "
            f"α = {fmt(hi)}, {int(np.sum(eig > hi))}. "
        )
    n_neg = _n_negative(study, eig)
    if n_neg:
        where = (
            f"red triangles; the most negative is {fmt(float(eig.min()))}"
            if eig.min() < 0
            else "not among the eigenvalues listed"
        )
        text += (
            f"{plural(n_neg, 'eigenvalue is', 'eigenvalues are')} negative ({where}): "
            "w₀ is not a minimum along "
            "them, the quadratic model has no minimum there and its shrink factors leave "
            "[0, 1], so the theory does NOT hold along those directions."
        )
    else:
        text += (
            "No eigenvalue is negative: w₀ is a minimum of the quadratic model."
            if dense
            else "No negative eigenvalue is among those computed; only the top ones were, so "
            "negative curvature further down the spectrum is not ruled out."
        )
    return text


# --------------------------------------------------------------------------- (2) shrink


def shrink_deviation(l2: dict[str, Any]) -> np.ndarray:
    """Per α, the largest |measured − predicted| shrink over the top-k directions."""
    return np.nanmax(np.abs(l2["shrink_measured"] - l2["shrink_predicted"]), axis=1)


def shrink(study: Study) -> Plot | None:
    """Predicted against measured shrink along the top-k eigenvectors, one colour per α."""
    l2 = study.get("l2")
    if l2 is None or l2["shrink_predicted"] is None or l2["shrink_measured"] is None:
        return None
    pred, meas, alphas = l2["shrink_predicted"], l2["shrink_measured"], l2["alphas"]
    k = pred.shape[1]
    fig = Figure(figsize=(10.5, 4.6))
    ax_l, ax_r = fig.subplots(1, 2, width_ratios=[3, 2])
    x = _direction_axis(ax_l, _top_eigenvalues(study, k), k)
    colors = _alpha_colors(alphas)
    for i, color in enumerate(colors):
        ax_l.plot(x, pred[i], color=color, ls="--", lw=1.2)
        _clipped_markers(ax_l, x, meas[i], color, "s", 22)
        _clipped_markers(ax_r, pred[i], meas[i], color, "o", 16)
    clipped = int(np.sum((meas < _SHRINK_WINDOW[0]) | (meas > _SHRINK_WINDOW[1])))
    ax_l.plot([], [], color="0.3", ls="--", label="predicted (quadratic model)")
    ax_l.plot([], [], color="0.3", ls="none", marker="s", label="measured (retrained)")
    if clipped:
        ax_l.plot([], [], color="0.3", ls="none", marker="^", label="measured, off the scale")
    ax_l.legend(fontsize=8, loc="lower right")
    ax_l.set_ylabel("shrink factor along qᵢ")
    ax_l.set_ylim(_SHRINK_WINDOW[0] - 0.03, _SHRINK_WINDOW[1] + 0.03)
    ax_l.set_title(
        "Shrink along the top eigenvectors (dashed: theory, squares: measured)", fontsize=9.5
    )
    _diagonal_panel(ax_r, "predicted shrink", "measured shrink")
    ax_r.legend(fontsize=8, loc="upper left")
    _alpha_colorbar(fig, ax_r, alphas, colors)
    holds, caption = _shrink_caption(l2, k, clipped)
    return Plot("shrink", "Predicted against measured shrink", caption, _finish(fig), holds)


def _clipped_markers(
    ax: Axes, x: np.ndarray, y: np.ndarray, color: Any, marker: str, size: float
) -> None:
    """Scatter ``y`` inside the shrink window; points outside as triangles on its edge."""
    lo, hi = _SHRINK_WINDOW
    inside = (y >= lo) & (y <= hi)
    ax.scatter(x[inside], y[inside], color=color, marker=marker, s=size, zorder=3)
    for mask, edge, tri in ((y > hi, hi, "^"), (y < lo, lo, "v")):
        if mask.any():
            ax.scatter(
                x[mask],
                np.full(int(mask.sum()), edge),
                color=color,
                marker=tri,
                s=size * 1.6,
                zorder=3,
                edgecolor="black",
                lw=0.4,
            )


def _direction_axis(ax: Axes, lam: np.ndarray | None, k: int) -> np.ndarray:
    """x positions 1..k for the top directions, each tick labelled with its λᵢ."""
    x = np.arange(1, k + 1, dtype=float)
    ax.set_xticks(x)
    if lam is not None:
        ax.set_xticklabels(
            [f"{i}\n{fmt(v)}" for i, v in zip(range(1, k + 1), lam, strict=True)], fontsize=7.5
        )
        ax.set_xlabel("top direction qᵢ: index i and eigenvalue λᵢ")
    else:
        ax.set_xlabel("top direction qᵢ: index i")
    ax.set_xlim(0.5, k + 0.5)
    return x


def _top_eigenvalues(study: Study, k: int) -> np.ndarray | None:
    for sec, key in (("reference", "hessian_top_eigenvalues"), ("curvature", "eigenvalues")):
        block = study.get(sec)
        values = None if block is None else block.get(key)
        if values is not None and len(values) >= k:
            return np.sort(np.asarray(values, dtype=float))[::-1][:k]
    return None


def _diagonal_panel(ax: Axes, xlabel: str, ylabel: str) -> None:
    lo, hi = _SHRINK_WINDOW
    ref = np.array([lo, hi])
    ax.fill_between(
        ref,
        ref - ABS_TOLERANCE,
        ref + ABS_TOLERANCE,
        color=_TRUST_COLOR,
        alpha=0.12,
        lw=0,
        label=f"within ±{ABS_TOLERANCE:g}",
    )
    ax.plot(ref, ref, color="black", lw=0.8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("On the diagonal: the theory holds", fontsize=9.5)


def _shrink_caption(l2: dict[str, Any], k: int, clipped: int) -> tuple[bool, str]:
    dev = shrink_deviation(l2)
    last_ok, first_bad = _first_failure(l2["alphas"], dev <= ABS_TOLERANCE)
    worst = int(np.nanargmax(dev))
    text = (
        f"Along each of the top {k} eigenvectors qᵢ of H, the factor qᵢᵀw̃ / qᵢᵀw₀ by which "
        "weight decay shrinks the weights: dashed lines the quadratic model's prediction "
        "(λᵢ/(λᵢ+α) when every weight is decayed and α₀ = 0), squares the retrained model, one "
        "colour per α (left); the same pairs against each other (right), where the theory "
        "holds on the diagonal. "
    )
    text += _holds_words(
        f"The prediction (within ±{ABS_TOLERANCE:g})",
        last_ok,
        first_bad,
        f"largest gap {fmt(dev[worst])} at α = {fmt(l2['alphas'][worst])}",
    )
    if clipped:
        text += (
            f" {plural(clipped, 'measured value')} outside "
            f"[{_SHRINK_WINDOW[0]:g}, {_SHRINK_WINDOW[1]:g}] "
            f"{'is' if clipped == 1 else 'are'} drawn at the edge."
        )
    return first_bad is None, text


# --------------------------------------------------------------------------- (3) relative error


def relative_error(study: Study) -> Plot | None:
    """Relative error of the predicted L2 optimum against α, trust region shaded."""
    l2 = study.get("l2")
    if l2 is None:
        return None
    alphas, tol = l2["alphas"], l2["trust_tolerance"]
    fig = Figure(figsize=(8, 4.6))
    ax = fig.add_subplot()
    _alpha_axis(ax, alphas)
    shade_trust_region(ax, l2)
    ax.plot(
        alphas,
        l2["relative_error"],
        color="#1f5fa8",
        **_MEAS,
        label="‖w̃ − w_meas‖ / ‖w_meas − w₀‖, retrained from w₀",
    )
    if l2.get("relative_error_scratch") is not None:
        ax.plot(
            alphas,
            l2["relative_error_scratch"],
            color="#e08a00",
            ls=":",
            marker="^",
            lw=1.4,
            label="the same, retrained from scratch",
        )
    retrain = _retrain_ratio(l2)
    if retrain is not None:
        ax.plot(
            alphas,
            retrain,
            color="0.45",
            ls="-.",
            lw=1.0,
            marker=".",
            label="retraining error / displacement (the measurement's own error)",
        )
    ax.axhline(tol, color="#d62728", lw=1.0, ls="--", label=f"{100 * tol:g} % (trust rule)")
    ax.set_yscale("log")
    ax.set_ylabel("relative error of the prediction")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    title = "Where the quadratic prediction of the L2 optimum holds"
    if l2["trust_region_alpha_max"] is None:
        title += "\n(nowhere on this grid: no trust region)"
    ax.set_title(title, fontsize=10)
    holds = l2["trust_region_alpha_max"] is not None and bool(np.all(l2["relative_error"] <= tol))
    return Plot(
        "relative_error",
        "Relative error of the prediction and the trust region",
        _relative_error_caption(l2, retrain),
        _finish(fig),
        holds,
    )


def _retrain_ratio(l2: dict[str, Any]) -> np.ndarray | None:
    """The retraining error as a fraction of the displacement ‖w_meas − w₀‖.

    results.json states it that way already (docs/study.md: ``retrain_error`` is relative).
    """
    return l2.get("retrain_error")


def trust_words(l2: dict[str, Any]) -> str:
    """The trust region in one or two sentences, with the numbers of this run."""
    alphas, err, tol = l2["alphas"], l2["relative_error"], l2["trust_tolerance"]
    top = l2["trust_region_alpha_max"]
    order = np.argsort(alphas)
    pct = f"{100 * tol:g} %"
    if top is None:
        i = order[0]
        return (
            f"The quadratic prediction did NOT hold at any α of the grid: already at the "
            f"smallest, α = {fmt(alphas[i])}, it is {_pct(err[i])} off (rule: ≤ {pct})."
        )
    inside = int(np.sum(alphas <= top))
    text = (
        f"The quadratic prediction of the L2 optimum holds (relative error ≤ {pct}) for "
        f"α ≤ {fmt(top)}, {inside} of the {alphas.size} grid values."
    )
    beyond = [i for i in order if alphas[i] > top]
    if beyond:
        i = beyond[0]
        text += (
            f" Above it, the theory did NOT hold: at α = {fmt(alphas[i])} the prediction "
            f"is {_pct(err[i])} off, and {_pct(np.nanmax(err[beyond]))} at worst."
        )
    return text


def _pct(x: float) -> str:
    return "an unknown amount (null)" if not np.isfinite(x) else f"{fmt(100 * x)} %"


def _retrain_words(alphas: np.ndarray, error: np.ndarray, retrain: np.ndarray, tol: float) -> str:
    """Whether the measurement (retraining) is accurate enough to judge the prediction."""
    noisy = retrain > 0.1 * np.maximum(error, 1e-300)
    if not np.any(noisy):
        return (
            " The retraining error (grey) stays below a tenth of the measured gap at every α, "
            "so the measured error is the theory's, not the optimizer's."
        )
    resolved = noisy & (error + retrain <= tol)  # within the rule even if all of it were real
    unsure = noisy & ~resolved
    text = ""
    if resolved.any():
        text += (
            f" At α = {', '.join(fmt(a) for a in alphas[resolved])} the measured gap is at the "
            "level of the retraining error (grey): the prediction agrees with the retrained "
            "optimum as closely as retraining can tell."
        )
    if unsure.any():
        text += (
            f" At α = {', '.join(fmt(a) for a in alphas[unsure])} the retraining error is more "
            "than a tenth of the measured gap, so the measured error there is itself uncertain."
        )
    return text


def _relative_error_caption(l2: dict[str, Any], retrain: np.ndarray | None) -> str:
    text = (
        "Relative distance between the predicted optimum w̃(α) of the quadratic model at w₀ "
        "and the optimum measured by retraining from w₀ (blue squares), against α. The "
        "trust region is the α up to which the error stays below the dashed line at every "
        "grid point"
        + (
            ": the shaded band. "
            if l2["trust_region_alpha_max"] is not None
            else "; there is none here, so nothing is shaded. "
        )
        + trust_words(l2)
    )
    scratch = l2.get("relative_error_scratch")
    if scratch is not None and np.isfinite(scratch).any():
        text += (
            f" Measured from scratch instead (orange), the gap is between "
            f"{_pct(np.nanmin(scratch))} and {_pct(np.nanmax(scratch))}."
        )
    if retrain is not None:
        text += _retrain_words(l2["alphas"], l2["relative_error"], retrain, l2["trust_tolerance"])
    return text


# --------------------------------------------------------------------------- (4) validation


def validation_loss(study: Study) -> Plot | None:
    """Validation (left) and training (right) loss against α: predicted, warm, from scratch."""
    l2 = study.get("l2")
    if l2 is None or l2.get("val_loss_measured") is None:
        return None
    alphas = l2["alphas"]
    fig = Figure(figsize=(10, 4.4))
    ax_v, ax_t = fig.subplots(1, 2)
    _draw_loss_curves(ax_v, ax_t, l2)
    _mark_lowest(ax_v, l2)
    ref = study.get("reference") or {}
    for ax, key in ((ax_v, "val_loss"), (ax_t, "train_loss")):
        _alpha_axis(ax, alphas)
        shade_trust_region(ax, l2)
        if ref.get(key) is not None:
            ax.axhline(ref[key], color="0.4", lw=0.8, ls="--", label="reference w₀")
        log = _log_if_wide(ax)
        ax.legend(fontsize=8)
        ax.set_ylabel(("validation loss" if ax is ax_v else "training loss J") + log)
    ax_v.set_title("Validation loss", fontsize=10)
    ax_t.set_title("Training loss", fontsize=10)
    holds, caption = _validation_caption(l2)
    return Plot("validation_loss", "Validation loss against α", caption, _finish(fig), holds)


def _draw_loss_curves(ax_v: Axes, ax_t: Axes, l2: dict[str, Any]) -> None:
    """Validation (``ax_v``) and training (``ax_t``) loss: predicted, warm, from scratch."""
    alphas = l2["alphas"]
    series = (
        ("val_loss_predicted", "predicted (quadratic model at w₀)", "#d62728", _PRED),
        ("val_loss_measured", "measured, retrained from w₀", "#1f5fa8", _MEAS),
        (
            "val_loss_scratch",
            "measured, retrained from scratch",
            "#e08a00",
            dict(ls=":", marker="^", lw=1.4, ms=5),
        ),
    )
    for key, label, color, style in series:
        if l2.get(key) is not None:
            ax_v.plot(alphas, l2[key], color=color, label=label, **style)
    for key, label, color, style in (
        ("train_loss_predicted", "predicted", "#d62728", _PRED),
        ("train_loss_measured", "measured (from w₀)", "#1f5fa8", _MEAS),
    ):
        if l2.get(key) is not None:
            ax_t.plot(alphas, l2[key], color=color, label=label, **style)


def _mark_lowest(ax: Axes, l2: dict[str, Any]) -> None:
    """A star at the lowest measured and the lowest predicted validation loss."""
    alphas = l2["alphas"]
    for key, color in (("val_loss_measured", "#1f5fa8"), ("val_loss_predicted", "#d62728")):
        values = l2.get(key)
        if values is not None and np.isfinite(values).any():
            i = int(np.nanargmin(values))
            ax.scatter(
                alphas[i],
                values[i],
                marker="*",
                s=230,
                color=color,
                edgecolor="black",
                lw=0.6,
                zorder=6,
            )
    ax.scatter(
        [],
        [],
        marker="*",
        s=120,
        color="0.6",
        edgecolor="black",
        lw=0.6,
        label="lowest of each curve",
    )


def _log_if_wide(ax: Axes) -> str:
    """Log y-scale when the plotted positive values span more than a factor 5 (else the
    measured curves flatten under a diverging prediction); returns a label suffix."""
    values = np.concatenate(
        [np.asarray(line.get_ydata(), dtype=float) for line in ax.lines] or [np.array([])]
    )
    values = values[np.isfinite(values)]
    if values.size and values.min() > 0 and values.max() / values.min() > 5:
        ax.set_yscale("log")
        return " (log scale)"
    return ""


def _validation_caption(l2: dict[str, Any]) -> tuple[bool | None, str]:
    alphas, meas = l2["alphas"], l2["val_loss_measured"]
    text = (
        "Validation loss (left) and training loss (right) of the weights the quadratic "
        "model predicts (red, dashed), of the model retrained from w₀ (blue) and from "
        "scratch (orange) against α"
        + ("; shaded: the trust region. " if l2["trust_region_alpha_max"] is not None else ". ")
    )
    if not np.isfinite(meas).any():
        return None, text + "No measured validation loss is available."
    best = int(np.nanargmin(meas))
    text += f"Retrained from w₀, α = {fmt(alphas[best])} validates best ({fmt(meas[best])}). "
    pred = l2.get("val_loss_predicted")
    if pred is None or not np.isfinite(pred).any():
        return None, text
    pbest = int(np.nanargmin(pred))
    if pbest == best:
        text += "The prediction picks the same α. "
    else:
        text += (
            f"The prediction picks α = {fmt(alphas[pbest])} instead: it did NOT find the "
            "best α of the grid. "
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.abs(pred - meas) / np.abs(meas)
    last_ok, first_bad = _first_failure(alphas, gap <= 0.10)
    worst = int(np.nanargmax(gap))
    text += _holds_words(
        "The predicted validation loss (within 10 %)",
        last_ok,
        first_bad,
        f"{_pct(gap[worst])} off at α = {fmt(alphas[worst])}",
    )
    return first_bad is None and pbest == best, text


# --------------------------------------------------------------------------- (5) L1


def l1_zeros(study: Study) -> Plot | None:
    """Zeros predicted by soft-thresholding w₀ by α/H_ii against those FISTA produced."""
    l1 = study.get("l1")
    if l1 is None or l1.get("n_zero_measured") is None:
        return None
    alphas = l1["alphas"]
    fig = Figure(figsize=(10, 4.4))
    ax_n, ax_p = fig.subplots(1, 2)
    if l1.get("n_zero_predicted") is not None:
        ax_n.plot(alphas, l1["n_zero_predicted"], color="#d62728", label="predicted zeros", **_PRED)
    ax_n.plot(
        alphas, l1["n_zero_measured"], color="#1f5fa8", label="measured zeros (FISTA)", **_MEAS
    )
    if l1.get("n_penalized") is not None:
        ax_n.axhline(
            l1["n_penalized"],
            color="0.4",
            lw=0.8,
            ls="--",
            label=f"penalized weights ({fmt(int(l1['n_penalized']))})",
        )
    ax_n.set_ylabel("number of exactly zero weights")
    for key, label, color, marker in (
        ("zero_precision", "precision", "#9467bd", "o"),
        ("zero_recall", "recall", "#2ca02c", "s"),
    ):
        if l1.get(key) is not None:
            ax_p.plot(alphas, l1[key], color=color, marker=marker, lw=1.6, label=label)
    ax_p.axhspan(
        1 - ABS_TOLERANCE,
        1.02,
        color=_TRUST_COLOR,
        alpha=0.12,
        lw=0,
        label=f"≥ {1 - ABS_TOLERANCE:g}",
    )
    ax_p.set_ylim(-0.02, 1.02)
    ax_p.set_ylabel("precision, recall of the predicted zeros")
    for ax in (ax_n, ax_p):
        _alpha_axis(ax, alphas)
        ax.set_xlabel("α (L1 strength, log scale)")
        ax.legend(fontsize=8)
    ax_n.set_title("How many weights L1 sets to zero", fontsize=10)
    ax_p.set_title("Which ones: precision and recall of the prediction", fontsize=10)
    holds, caption = _l1_caption(study, l1)
    return Plot("l1_zeros", "L1: predicted against measured zeros", caption, _finish(fig), holds)


def _l1_caption(study: Study, l1: dict[str, Any]) -> tuple[bool | None, str]:
    curv = study.get("curvature") or {}
    source = curv.get("diagonal_source")
    how = {"exact": "exact", "estimated": "estimated (stochastic)"}.get(str(source), "")
    text = (
        "Weights that L1 sets exactly to zero, against α: predicted by soft-thresholding w₀ "
        f"by α/Hᵢᵢ with the {how} Hessian diagonal (red), and measured after proximal "
        "training to convergence (blue); right, the precision (predicted zeros that are "
        "zero) and recall (zeros that were predicted) of the predicted set. "
    )
    last = int(np.argmax(l1["alphas"]))
    n_pred = l1.get("n_zero_predicted")
    text += (
        f"At the largest α = {fmt(l1['alphas'][last])}, {fmt(_int(n_pred, last))} zeros "
        f"were predicted and {fmt(_int(l1['n_zero_measured'], last))} measured. "
    )
    prec, rec = l1.get("zero_precision"), l1.get("zero_recall")
    if prec is None or rec is None:
        return None, text
    both = np.fmin(prec, rec)  # NaN (no zero predicted or measured) counts as undecided
    defined = np.isfinite(both)
    if not defined.any():
        return None, text + "Precision and recall are undefined at every α (no zeros)."
    last_ok, first_bad = _first_failure(l1["alphas"][defined], both[defined] >= 1 - ABS_TOLERANCE)
    worst = int(np.nanargmin(both))
    text += _holds_words(
        f"The diagonal rule (precision and recall ≥ {1 - ABS_TOLERANCE:g})",
        last_ok,
        first_bad,
        f"min(precision, recall) = {fmt(both[worst])} at α = {fmt(l1['alphas'][worst])}",
    )
    undefined = int(np.sum(~defined))
    if undefined:
        text += (
            f" At {plural(undefined, 'α')} precision or recall is undefined (no zero "
            "predicted or measured): gaps."
        )
    return first_bad is None, text


def _int(values: np.ndarray | None, i: int) -> int | None:
    if values is None or not np.isfinite(values[i]):
        return None
    return int(values[i])


# --------------------------------------------------------------------------- (6) early stopping


def early_stopping(study: Study) -> Plot | None:
    """Validation curve with τ*, trajectory predicted vs measured, per-direction α."""
    es = study.get("early_stopping")
    if es is None or es.get("val_curve") is None:
        return None
    fig = Figure(figsize=(10, 7.6))
    grid = fig.add_gridspec(2, 2, height_ratios=[1.1, 1])
    _draw_val_curve(fig.add_subplot(grid[0, :]), es)
    _draw_trajectory(fig.add_subplot(grid[1, 0]), es)
    _draw_alpha_per_direction(fig.add_subplot(grid[1, 1]), study, es)
    holds, caption = _early_stopping_caption(study, es)
    return Plot(
        "early_stopping", "Early stopping and its equivalent α", caption, _finish(fig), holds
    )


def _draw_val_curve(ax: Axes, es: dict[str, Any]) -> None:
    curve = es["val_curve"]
    ax.plot(curve["steps"], curve["val_loss"], color="#1f5fa8", lw=1.8, label="validation loss")
    if curve.get("train_loss") is not None:
        ax.plot(curve["steps"], curve["train_loss"], color="0.5", lw=1.2, label="training loss")
    tau = es["best_step"]
    alpha = es["equivalent_alpha"]
    ax.axvline(
        tau,
        color="#d62728",
        lw=1.4,
        ls="--",
        label=f"τ* = {fmt(int(tau))}: equivalent α = 1/(ετ*) = {fmt(alpha)}",
    )
    if es.get("patience"):
        ax.axvspan(
            tau,
            tau + es["patience"],
            color="#d62728",
            alpha=0.08,
            lw=0,
            label=f"patience ({fmt(int(es['patience']))} steps)",
        )
    ax.set_yscale("log")
    ax.set_xlabel(f"gradient-descent step (ε = {fmt(es['lr'])}, full batch)")
    ax.set_ylabel("loss (log scale)")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(
        "Gradient descent from the initialization, stopped at the best validation loss", fontsize=10
    )
    ax.grid(True, color="0.92", lw=0.6)


def _draw_trajectory(ax: Axes, es: dict[str, Any]) -> None:
    traj = es.get("trajectory")
    ax.set_title("Distance travelled along the top directions", fontsize=9.5)
    if traj is None:
        ax.text(0.5, 0.5, "no trajectory in results.json", ha="center", transform=ax.transAxes)
        return
    ax.plot(
        traj["steps"], traj["predicted"], color="#d62728", ls="--", lw=1.6, label="quadratic model"
    )
    ax.plot(traj["steps"], traj["measured"], color="#1f5fa8", lw=1.8, label="measured")
    ax.axvline(es["best_step"], color="#d62728", lw=1.0, ls="--")
    ax.set_xlabel("step t")
    ax.set_ylabel("‖w_t − w_init‖ along the top directions")
    ax.legend(fontsize=8)
    ax.grid(True, color="0.92", lw=0.6)


def _draw_alpha_per_direction(ax: Axes, study: Study, es: dict[str, Any]) -> None:
    ax.set_title("Exact equivalent α per direction vs the scalar rule", fontsize=9.5)
    per = es.get("equivalent_alpha_per_direction")
    if per is None:
        ax.text(0.5, 0.5, "no per-direction α in results.json", ha="center", transform=ax.transAxes)
        return
    x = _direction_axis(ax, _top_eigenvalues(study, per.size), per.size)
    alpha = es["equivalent_alpha"]
    floor = CONVERGED_RATIO * alpha
    shown = np.isfinite(per) & (per > floor)
    if shown.any():
        ax.plot(x[shown], per[shown], "o", color="#9467bd", label="exact αᵢ")
    if (~shown).any():
        ax.plot(
            x[~shown],
            np.full(int((~shown).sum()), 0.04),
            "x",
            ms=8,
            mew=2,
            color="#d62728",
            transform=ax.get_xaxis_transform(),
            label=f"αᵢ < {CONVERGED_RATIO:g}·1/(ετ*): converged, not regularized",
        )
    ax.axhline(alpha, color="#d62728", ls="--", lw=1.2, label=f"1/(ετ*) = {fmt(alpha)}")
    ax.set_yscale("log")
    top = max(float(np.nanmax(per[shown])) if shown.any() else alpha, alpha) * 5
    ax.set_ylim(floor / 5, top)
    ax.set_ylabel("equivalent α")
    ax.legend(fontsize=7.5)
    ax.grid(True, color="0.92", lw=0.6)


def trajectory_gap(es: dict[str, Any]) -> float | None:
    """Largest |predicted − measured| distance, relative to the largest measured one."""
    traj = es.get("trajectory")
    if traj is None:
        return None
    scale = np.nanmax(np.abs(traj["measured"]))
    if not np.isfinite(scale) or scale == 0:
        return None
    return float(np.nanmax(np.abs(traj["predicted"] - traj["measured"])) / scale)


def _early_stopping_caption(study: Study, es: dict[str, Any]) -> tuple[bool | None, str]:
    tau, alpha = es["best_step"], es["equivalent_alpha"]
    text = (
        f"Top: full-batch gradient descent with step ε = {fmt(es['lr'])} from the task's "
        f"initialization; the validation loss is lowest at step τ* = {fmt(int(tau))} "
        f"(dashed), which the scalar rule turns into α = 1/(ετ*) = {fmt(alpha)}. "
    )
    holds: bool | None = None
    per = es.get("equivalent_alpha_per_direction")
    if per is not None and alpha:
        sentence, ok = _per_direction_words(per, alpha)
        text += sentence
        holds = ok
    gap = trajectory_gap(es)
    if gap is not None:
        ok = gap <= 0.10
        text += (
            f"Bottom left: the quadratic model's path ‖w_t − w_init‖ along the top "
            f"directions differs from the measured one by at most {_pct(gap)} of its "
            f"length{'' if ok else ': the quadratic trajectory did NOT hold'}. "
        )
        holds = (holds if holds is not None else True) and ok
    text += _es_losses(es)
    return holds, text


CONVERGED_RATIO = 1e-6
"""An exact αᵢ below this fraction of 1/(ετ*) means gradient descent has converged along qᵢ."""


def scalar_rule_factor(per: np.ndarray, alpha: float) -> float | None:
    """Largest factor between an exact αᵢ (not converged) and the scalar α = 1/(ετ*) (≥ 1)."""
    active = per[np.isfinite(per) & (per > CONVERGED_RATIO * alpha)]
    if active.size == 0:
        return None
    ratio = active / alpha
    return float(np.max(np.maximum(ratio, 1 / ratio)))


def _per_direction_words(per: np.ndarray, alpha: float) -> tuple[str, bool]:
    off = scalar_rule_factor(per, alpha)
    n_done = int(np.sum(np.isfinite(per) & (per <= CONVERGED_RATIO * alpha)))
    text = f"Bottom right: the exact equivalent α along each of the top {per.size} eigenvectors"
    if off is not None:
        active = per[per > CONVERGED_RATIO * alpha]
        text += (
            f" ranges from {fmt(active.min())} to {fmt(active.max())}, up to a factor "
            f"{fmt(off)} from the scalar rule"
        )
    if n_done:
        text += (
            f"; along {plural(n_done, 'direction')} it is below {CONVERGED_RATIO:g}·1/(ετ*) "
            "(crosses): gradient descent has converged there, so early stopping does not "
            "regularize them, while L2 at 1/(ετ*) still shrinks them"
        )
    ok = n_done == 0 and off is not None and off <= 2
    text += (
        ". The scalar rule holds within a factor 2 there. "
        if ok
        else ": the scalar rule 1/(ετ) did NOT hold along these directions (it needs ελᵢ ≪ 1 "
        "and λᵢ ≪ α). "
    )
    return text, ok


def _es_losses(es: dict[str, Any]) -> str:
    parts = [
        (key, label)
        for key, label in (
            ("val_loss_early_stopping", "early stopping"),
            ("val_loss_l2_equivalent", "L2 at α = 1/(ετ*) toward the initialization"),
            ("val_loss_l2_equivalent_zero", "toward zero (ordinary weight decay)"),
            ("val_loss_l2_best", "the best L2 of the grid"),
        )
        if es.get(key) is not None
    ]
    if not parts:
        return ""
    return "Validation loss: " + "; ".join(f"{label} {fmt(es[key])}" for key, label in parts) + "."


# --------------------------------------------------------------------------- (7) picture


def picture_gaps(pic: dict[str, Any]) -> np.ndarray | None:
    """Per α, ‖predicted − measured‖ / ‖measured − w₀‖ in the plane."""
    if pic.get("predicted") is None or pic.get("measured") is None:
        return None
    w0 = pic["w0"] if pic.get("w0") is not None else np.zeros(2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.linalg.norm(pic["predicted"] - pic["measured"], axis=1) / np.linalg.norm(
            pic["measured"] - w0, axis=1
        )


def picture(study: Study) -> Plot | None:
    """Contours of J in the plane of q₁, q₂ through w₀ with w₀, predicted and measured w̃."""
    pic = study.get("picture")
    if pic is None:
        return None
    a, b, J = pic["a"], pic["b"], pic["J"]
    ratio = (b.max() - b.min()) / max(a.max() - a.min(), 1e-300)
    to_scale = 0.5 <= ratio <= 2  # equal axes unless that would leave the page mostly empty
    fig = Figure(figsize=(8.0, 2.4 + 5.0 * min(max(ratio, 0.5), 1.0) if to_scale else 5.6))
    ax = fig.add_subplot()
    excess = J - np.nanmin(J)
    positive = excess[excess > 0]
    if positive.size:
        levels = np.geomspace(max(positive.min(), positive.max() * 1e-4), positive.max(), 14)
        ax.contourf(
            a,
            b,
            np.maximum(excess, levels[0]),
            levels=levels,
            norm=LogNorm(),
            cmap="Blues_r",
            alpha=0.35,
        )
        ax.contour(
            a,
            b,
            np.maximum(excess, levels[0]),
            levels=levels,
            norm=LogNorm(),
            colors="#1f5fa8",
            linewidths=0.6,
        )
    w0 = pic["w0"] if pic.get("w0") is not None else np.zeros(2)
    _draw_picture_points(fig, ax, pic)
    ax.scatter(w0[0], w0[1], marker="*", s=200, color="black", zorder=4, label="w₀ (reference)")
    ax.set_xlim(a.min(), a.max())
    ax.set_ylim(b.min(), b.max())
    if to_scale:
        ax.set_aspect("equal", adjustable="box")
    lam = _top_eigenvalues(study, 2)
    names = [f"q{s}" + ("" if lam is None else f" (λ = {fmt(lam[i])})") for i, s in enumerate("₁₂")]
    ax.set_xlabel(f"coordinate along {names[0]}, relative to w₀")
    ax.set_ylabel(f"coordinate along {names[1]}, relative to w₀")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    ax.set_title(
        "Weight decay in the plane of the two top eigenvectors"
        + ("" if to_scale else " (axes not to the same scale)"),
        fontsize=10,
    )
    holds, caption = _picture_caption(study, pic)
    return Plot("picture", "The weight-decay picture", caption, _finish(fig), holds)


def _draw_picture_points(fig: Figure, ax: Axes, pic: dict[str, Any]) -> None:
    pred, meas, alphas = pic.get("predicted"), pic.get("measured"), pic.get("alphas")
    if pred is None or meas is None:
        return
    n = pred.shape[0]
    alphas = alphas if alphas is not None and alphas.size == n else np.arange(1.0, n + 1)
    colors = _alpha_colors(alphas)
    ax.plot(
        pred[:, 0],
        pred[:, 1],
        color="#d62728",
        lw=0.8,
        ls="--",
        zorder=3,
        label="predicted path as α grows",
    )
    for i in range(n):
        ax.plot([pred[i, 0], meas[i, 0]], [pred[i, 1], meas[i, 1]], color=colors[i], lw=0.7)
    ax.scatter(
        pred[:, 0],
        pred[:, 1],
        s=55,
        facecolor="white",
        edgecolor=colors,
        lw=1.6,
        zorder=5,
        label="predicted w̃(α) (quadratic model)",
    )
    ax.scatter(
        meas[:, 0],
        meas[:, 1],
        s=40,
        marker="s",
        color=colors,
        edgecolor="black",
        lw=0.5,
        zorder=5,
        label="measured w̃(α) (retrained), projected",
    )
    if pic.get("alphas") is not None and alphas.size == n:
        _alpha_colorbar(fig, ax, alphas, colors)


def _alpha_colorbar(fig: Figure, ax: Axes, alphas: np.ndarray, colors: list[Any]) -> None:
    """A colour bar beside ``ax`` with one band per grid α, labelled with its value."""
    n = alphas.size
    mappable = matplotlib.cm.ScalarMappable(
        norm=BoundaryNorm(np.arange(n + 1) - 0.5, n), cmap=ListedColormap(colors)
    )
    cax = ax.inset_axes((1.04, 0.0, 0.045, 1.0))
    bar = fig.colorbar(mappable, cax=cax, ticks=np.arange(n))
    bar.ax.set_yticklabels([fmt(a) for a in alphas], fontsize=7.5)
    bar.set_label("α (one colour per grid value)", fontsize=8)


def _picture_caption(study: Study, pic: dict[str, Any]) -> tuple[bool | None, str]:
    text = (
        "Contours of the training loss J (log-spaced levels above its minimum on this grid) "
        "in the plane through w₀ spanned by the two top eigenvectors q₁, q₂ of H. Star: "
        "w₀; circles: the optimum of J + (α/2)‖w‖² the quadratic model predicts; squares: "
        "the retrained optimum projected onto the plane; one colour per α, a thin line "
        "joins each pair. "
    )
    gaps = picture_gaps(pic)
    if gaps is None:
        return None, text + "No predicted or measured points are in results.json."
    alphas = pic.get("alphas")
    alphas = (
        alphas if alphas is not None and alphas.size == gaps.size else np.arange(1.0, gaps.size + 1)
    )
    last_ok, first_bad = _first_failure(alphas, gaps <= 0.10)
    worst = int(np.nanargmax(gaps)) if np.isfinite(gaps).any() else 0
    text += _holds_words(
        "In this plane the prediction (within 10 % of the measured move)",
        last_ok,
        first_bad,
        f"{_pct(gaps[worst])} off at α = {fmt(alphas[worst])}",
    )
    return first_bad is None, text
