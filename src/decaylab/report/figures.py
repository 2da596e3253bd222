"""The demo's five figures, drawn from :class:`decaylab.demo.DemoResults`.

Matplotlib runs on the Agg backend only (no display, no GUI toolkit), and figures are
built as :class:`matplotlib.figure.Figure` objects without pyplot's global state.

Each figure function returns a :class:`FigureInfo` whose caption (two sentences) states
what the reader sees, with the numbers of this run filled in.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

if TYPE_CHECKING:
    from decaylab.demo import DemoResults

__all__ = ["FigureInfo", "make_figures"]

_DPI = 110
_STAR = dict(marker="*", s=220, color="black", zorder=6)
_TILDE = dict(marker="o", s=70, color="#d62728", edgecolor="white", zorder=6)


@dataclass(frozen=True)
class FigureInfo:
    """One written figure: file, title and a two-sentence caption."""

    key: str
    path: Path
    title: str
    caption: str


def make_figures(res: DemoResults, out_dir: Path) -> list[FigureInfo]:
    """Draw figures (a)–(e) into ``out_dir`` as PNG files and return their descriptions."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        _weight_decay_picture(res, out_dir / "a_weight_decay_picture.png"),
        _shrink_factors(res, out_dir / "b_shrink_factors.png"),
        _early_stopping(res, out_dir / "c_early_stopping.png"),
        _l1_vs_l2(res, out_dir / "d_l1_vs_l2_paths.png"),
        _evidence(res, out_dir / "e_evidence.png"),
    ]


# --------------------------------------------------------------------------- helpers


def _fmt(x: float) -> str:
    """Compact number for captions and labels."""
    x = float(x)
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.3g}"
    return f"{x:.2e}"


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=_DPI)


def _plane_window(points: np.ndarray, pad: float = 0.22) -> tuple[tuple, tuple]:
    """Axis limits with equal spans containing ``points`` (rows = (x, y))."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = float(np.max(hi - lo))
    span = span if span > 0 else 1.0
    half = 0.5 * span * (1 + 2 * pad)
    centre = 0.5 * (lo + hi)
    return (centre[0] - half, centre[0] + half), (centre[1] - half, centre[1] + half)


def _plane_loss_contours(
    ax, res: DemoResults, xlim, ylim, u_star, levels, highlight: float | None = None
) -> None:
    """Contours of J restricted to the plane through w* spanned by q_1 and q_d.

    In coordinates ``u = (q_1ᵀw, q_dᵀw)`` the quadratic is axis-aligned:
    ``J = J(w*) + ½ λ_1 (u_1 − u*_1)² + ½ λ_d (u_d − u*_d)²``.
    """
    lam1, lamd = float(res.eigvals[0]), float(res.eigvals[-1])
    gx = np.linspace(*xlim, 500)
    gy = np.linspace(*ylim, 500)
    UX, UY = np.meshgrid(gx, gy)
    excess = 0.5 * lam1 * (UX - u_star[0]) ** 2 + 0.5 * lamd * (UY - u_star[1]) ** 2
    top = max(float(excess.max()), float(levels[-1])) * 1.01
    fill_levels = np.concatenate([[0.0], levels[levels < top], [top]])
    ax.contourf(UX, UY, excess, levels=fill_levels, cmap="Blues_r", alpha=0.22)
    ax.contour(UX, UY, excess, levels=levels, colors="#1f5fa8", linewidths=0.8)
    if highlight is not None:
        ax.contour(UX, UY, excess, levels=[highlight], colors="#1f5fa8", linewidths=2.0)


def _penalty_circles(ax, radii, highlight: float | None = None) -> None:
    theta = np.linspace(0, 2 * np.pi, 400)
    for r in radii:
        ax.plot(r * np.cos(theta), r * np.sin(theta), color="#e08a00", lw=0.8, ls="--")
    if highlight is not None:
        ax.plot(highlight * np.cos(theta), highlight * np.sin(theta), color="#e08a00", lw=2.0)


def _plane_labels(ax, res: DemoResults) -> None:
    d = res.n_features
    ax.set_xlabel(f"$q_1^\\top w$   (λ$_1$ = {_fmt(res.eigvals[0])}: steepest)")
    ax.set_ylabel(f"$q_{{{d}}}^\\top w$   (λ$_{{{d}}}$ = {_fmt(res.eigvals[-1])}: flattest)")
    ax.axhline(0, color="0.6", lw=0.6)
    ax.axvline(0, color="0.6", lw=0.6)


# --------------------------------------------------------------------------- (a)


def _weight_decay_picture(res: DemoResults, path: Path) -> FigureInfo:
    d = res.n_features
    alpha = res.alpha_picture
    u_star = np.array([res.v_star[0], res.v_star[-1]])
    s = np.array([res.shrink_at_picture[0], res.shrink_at_picture[-1]])
    u_tilde = s * u_star
    lam1, lamd = float(res.eigvals[0]), float(res.eigvals[-1])
    xlim, ylim = _plane_window(np.vstack([[0.0, 0.0], u_star, u_tilde]))

    tangent_level = 0.5 * lam1 * (u_tilde[0] - u_star[0]) ** 2 + 0.5 * lamd * (
        u_tilde[1] - u_star[1]
    ) ** 2
    base = tangent_level if tangent_level > 0 else 1e-3
    levels = np.unique(base * 4.0 ** np.arange(-3, 6))
    r_tilde = float(np.hypot(*u_tilde))
    r_max = float(np.hypot(max(map(abs, xlim)), max(map(abs, ylim))))
    step = r_tilde / 2 if r_tilde > 0 else r_max / 6
    radii = [r for r in np.arange(step, r_max, step) if not np.isclose(r, r_tilde)]

    fig = Figure(figsize=(7.2, 7.0))
    ax = fig.add_subplot()
    _plane_loss_contours(ax, res, xlim, ylim, u_star, levels, highlight=base)
    _penalty_circles(ax, radii, highlight=r_tilde)
    ridge = res.ridge_path_rotated
    ax.plot(ridge[:, 0], ridge[:, -1], color="#d62728", lw=1.0, ls=":", zorder=4)
    ax.scatter(*u_star, **_STAR)
    ax.scatter(*u_tilde, **_TILDE)
    ax.scatter(0, 0, marker="+", s=80, color="black", zorder=6)
    ax.annotate("", xy=u_tilde, xytext=u_star,
                arrowprops=dict(arrowstyle="->", color="#d62728", lw=1.5), zorder=5)
    ax.annotate("  $w^*$", u_star, fontsize=13, va="center")
    ax.annotate("  $\\tilde w$", u_tilde, fontsize=13, va="center", color="#d62728")
    ax.annotate(" 0", (0, 0), fontsize=10, va="top")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal", adjustable="box")
    _plane_labels(ax, res)
    ax.plot([], [], color="#1f5fa8", lw=0.8, label="contours of $J$ (plane through $w^*$)")
    ax.plot([], [], color="#e08a00", lw=0.8, ls="--",
            label="circles $\\|w\\|$ = const (L2 penalty)")
    ax.plot([], [], color="#d62728", lw=1.0, ls=":", label="ridge path $\\tilde w(\\alpha)$")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, fontsize=8.5)
    ax.set_title(
        f"Weight decay at α = {_fmt(alpha)} ({res.alpha_picture_source}): "
        f"shrink ×{s[0]:.2f} along $q_1$, ×{s[1]:.2f} along $q_{{{d}}}$",
        fontsize=10,
    )
    fig.tight_layout()
    _save(fig, path)
    caption = (
        f"Contours of J (blue ellipses, axis-aligned in these coordinates) in the plane "
        f"through w* spanned by the steepest eigenvector q₁ (λ₁ = {_fmt(lam1)}) and the "
        f"flattest q_{d} (λ_{d} = {_fmt(lamd)}; axis ratio √(λ₁/λ_{d}) = "
        f"{np.sqrt(lam1 / lamd):.0f}, so the ellipses look like needles), with circles of the "
        f"L2 penalty centred at the origin. At α = {_fmt(alpha)} "
        f"({res.alpha_picture_source}) w̃ (red dot) sits where a J-ellipse touches a penalty "
        "circle (both drawn bold): w̃ keeps "
        f"{100 * s[0]:.0f}% of w* along the steep direction but only {100 * s[1]:.0f}% along "
        f"the flat one."
    )
    return FigureInfo("a", path, "(a) The weight-decay picture", caption)


# --------------------------------------------------------------------------- (b)


def _shrink_factors(res: DemoResults, path: Path) -> FigureInfo:
    lam = res.eigvals[res.eigvals > 0]
    lo, hi = np.log10(lam.min()) - 1.5, np.log10(lam.max()) + 1.5
    grid = np.logspace(lo, hi, 400)
    decades = 10.0 ** np.arange(np.floor(np.log10(lam.min())), np.floor(np.log10(lam.max())) + 1)
    alpha_ev = res.evidence["alpha"]
    alphas = sorted({*decades.tolist(), alpha_ev})
    cmap = colormaps["viridis"]

    fig = Figure(figsize=(7.4, 4.8))
    ax = fig.add_subplot()
    for i, a in enumerate(alphas):
        is_ev = a == alpha_ev
        color = "#d62728" if is_ev else cmap(i / max(1, len(alphas) - 1))
        label = f"α = {_fmt(a)}" + (" (evidence-optimal)" if is_ev else "")
        ax.plot(grid, grid / (grid + a), color=color, lw=2.4 if is_ev else 1.3, label=label)
    shrink_ev = res.shrink_at_evidence
    ax.scatter(res.eigvals, shrink_ev, color="#d62728", edgecolor="black", s=45, zorder=5,
               label="eigenvalues of $H$ (on the evidence curve)")
    for value in res.eigvals:
        ax.axvline(value, ymin=0, ymax=0.04, color="black", lw=1.2)
    ax.axhline(0.5, color="0.5", lw=0.7, ls=":")
    ax.set_xscale("log")
    ax.set_xlim(grid[0], grid[-1])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("eigenvalue λ of $H = X^\\top X/N$ (log scale)")
    ax.set_ylabel("shrink factor λ/(λ+α)")
    ax.legend(loc="lower right", fontsize=8.5)
    ax.set_title("L2 keeps directions with λ ≫ α and removes those with λ ≪ α", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    n_halved = int(np.sum(shrink_ev < 0.5))
    caption = (
        "Each curve is the shrink factor λ/(λ+α) that L2 applies along an eigenvector with "
        "eigenvalue λ: directions with λ ≫ α keep their coefficient (factor ≈ 1), directions "
        "with λ ≪ α lose it (≈ 0), and the switch is at λ = α (dotted line at ½). "
        f"The dots and bottom ticks are the {res.n_features} eigenvalues of the data's H; at "
        f"the evidence-optimal α = {_fmt(alpha_ev)}, {n_halved} of them "
        f"{'is' if n_halved == 1 else 'are'} shrunk by more than half."
    )
    return FigureInfo("b", path, "(b) Shrink factors against curvature", caption)


# --------------------------------------------------------------------------- (c)


def _early_stopping(res: DemoResults, path: Path) -> FigureInfo:
    d = res.n_features
    u_star = np.array([res.v_star[0], res.v_star[-1]])
    traj = res.gd_trajectory_rotated[:, [0, -1]]
    ridge = res.ridge_path_rotated[:, [0, -1]]
    xlim, ylim = _plane_window(np.vstack([[0.0, 0.0], u_star]))
    lam1, lamd = float(res.eigvals[0]), float(res.eigvals[-1])
    corner_level = 0.5 * lam1 * u_star[0] ** 2 + 0.5 * lamd * u_star[1] ** 2
    levels = np.unique(corner_level * 4.0 ** np.arange(-8, 2))

    fig = Figure(figsize=(7.2, 7.0))
    ax = fig.add_subplot()
    _plane_loss_contours(ax, res, xlim, ylim, u_star, levels)
    ax.plot(ridge[:, 0], ridge[:, 1], color="#d62728", lw=2.2,
            label="ridge path $\\tilde w(\\alpha)$, α from ∞ (origin) to 0")
    ax.plot(traj[:, 0], traj[:, 1], color="black", lw=1.2, ls="--",
            label=f"gradient descent from 0, ε = {_fmt(res.lr)} ({res.lr_source})")
    early = [row for row in res.early_stopping]
    cmap = colormaps["plasma"]
    for i, row in enumerate(early):
        tau = row["steps"]
        color = cmap(0.1 + 0.75 * i / max(1, len(early) - 1))
        gd_pt = np.asarray(row["w_gd_eigenbasis"])[[0, -1]]
        l2_pt = np.array(row["shrink_l2_at_scalar_alpha"])[[0, -1]] * u_star
        ax.plot([gd_pt[0], l2_pt[0]], [gd_pt[1], l2_pt[1]], color=color, lw=0.8)
        ax.scatter(*gd_pt, marker="s", s=42, color=color, edgecolor="black", zorder=6)
        ax.scatter(*l2_pt, marker="o", s=42, color=color, edgecolor="black", zorder=6)
        tag = " ≈ evidence α" if row["matches"] else ""
        ax.annotate(
            f"  τ = {tau}: 1/(ετ) = {_fmt(row['alpha_scalar_1_over_lr_steps'])}{tag}",
            gd_pt, fontsize=8, va="center", color="black",
        )
    ax.scatter(*u_star, **_STAR)
    ax.annotate("  $w^*$", u_star, fontsize=13, va="center")
    ax.scatter([], [], marker="s", color="0.6", edgecolor="black", label="GD after τ steps")
    ax.scatter([], [], marker="o", color="0.6", edgecolor="black",
               label="ridge at α = 1/(ετ)")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal", adjustable="box")
    _plane_labels(ax, res)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8.5)
    ax.set_title("Early stopping as regularization: GD trajectory vs ridge path", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    caption = (
        f"Gradient descent from w₀ = 0 (dashed, ε = {_fmt(res.lr)}) moves first along the "
        f"steep direction q₁ and only slowly along the flat q_{d}, tracing nearly the same "
        "curve as the ridge path w̃(α) (red) from α = ∞ at the origin to α = 0 at w*, in the "
        "same plane and coordinates as (a). Each square is GD after τ steps and its paired "
        "circle is the ridge solution at α = 1/(ετ): stopping early acts like weight decay "
        "(the exact per-direction α is in the table below)."
    )
    return FigureInfo("c", path, "(c) Early stopping against the ridge path", caption)


# --------------------------------------------------------------------------- (d)


def _l1_vs_l2(res: DemoResults, path: Path) -> FigureInfo:
    d = res.n_features
    alphas = res.alphas
    cmap = colormaps["tab10"] if d <= 10 else colormaps["viridis"]
    fig = Figure(figsize=(10.5, 4.6))
    ax_l2, ax_l1 = fig.subplots(1, 2, sharey=True)
    for i in range(d):
        color = cmap(i % 10) if d <= 10 else cmap(i / max(1, d - 1))
        label = f"PC{i + 1} (λ = {_fmt(res.eigvals[i])})"
        ax_l2.plot(alphas, res.ridge_path_rotated[:, i], color=color, lw=1.4, label=label)
        ax_l1.plot(alphas, res.l1_path_rotated[:, i], color=color, lw=1.4)
        z = res.l1_zero_alpha[i]
        if alphas[0] <= z <= alphas[-1]:
            ax_l1.scatter(z, 0.0, color=color, edgecolor="black", s=28, zorder=5)
    for ax, name in ((ax_l2, "L2 (weight decay)"), (ax_l1, "L1")):
        ax.set_xscale("log")
        ax.axhline(0, color="0.4", lw=0.7)
        ax.set_xlabel("α (log scale)")
        ax.set_title(name, fontsize=10)
        ax.set_xlim(alphas[0], alphas[-1])
    ax_l2.set_ylabel("coefficient $v_i$ of the decorrelated design $Z = XQ$")
    handles, labels = ax_l2.get_legend_handles_labels()
    ax_l1.legend(handles, labels, fontsize=7.5, loc="lower right", ncol=2)
    fig.suptitle(
        "Coefficient paths on the PCA-rotated design ($Z^\\top Z/N$ = Λ diagonal): "
        "L1 hits exact zeros, L2 only approaches them",
        fontsize=10,
    )
    fig.tight_layout()
    _save(fig, path)
    order = np.argsort(res.l1_zero_alpha)
    caption = (
        "Coefficients of the decorrelated design Z = XQ (the PCA rotation, so ZᵀZ/N = Λ is "
        "diagonal) against α: L2 (left) multiplies coefficient i by λᵢ/(λᵢ+α), so every "
        "coefficient decays smoothly and none is exactly zero at finite α. L1 (right) "
        "soft-thresholds coefficient i by α/λᵢ, so it is exactly 0 once α ≥ λᵢ|vᵢ*| (dots): "
        f"PC{order[0] + 1} drops out first, at α = {_fmt(res.l1_zero_alpha[order[0]])}, and "
        f"PC{order[-1] + 1} last, at α = {_fmt(res.l1_zero_alpha[order[-1]])}."
    )
    return FigureInfo("d", path, "(d) L1 against L2 coefficient paths", caption)


# --------------------------------------------------------------------------- (e)


def _evidence(res: DemoResults, path: Path) -> FigureInfo:
    alphas = res.alphas
    ev = res.evidence
    fig = Figure(figsize=(7.4, 6.0))
    ax_ev, ax_g = fig.subplots(2, 1, sharex=True)
    ax_ev.plot(alphas, res.log_evidence, color="#1f5fa8", lw=1.8)
    ax_ev.scatter(ev["alpha"], ev["log_evidence"], color="#d62728", edgecolor="black",
                  s=60, zorder=5, label=f"maximum: α = {_fmt(ev['alpha'])}")
    ax_ev.set_ylabel("log evidence  ln p(y | X, α)")
    finite = res.log_evidence[np.isfinite(res.log_evidence)]
    if finite.size:
        top = float(max(finite.max(), ev["log_evidence"]))
        span = top - float(finite.min())
        ax_ev.set_ylim(top - min(span, max(40.0, 0.25 * span)) - 1, top + 0.08 * max(span, 1))
    ax_g.plot(alphas, res.effective_parameters, color="#2ca02c", lw=1.8)
    ax_g.scatter(ev["alpha"], ev["gamma"], color="#d62728", edgecolor="black", s=60, zorder=5,
                 label=f"γ = {ev['gamma']:.2f} at the evidence optimum")
    ax_g.axhline(res.n_features, color="0.5", lw=0.7, ls=":")
    ax_g.set_ylabel("effective parameters γ(α)")
    ax_g.set_ylim(-0.2, res.n_features + 0.5)
    ax_g.set_xlabel("α (log scale)")
    for ax in (ax_ev, ax_g):
        ax.axvline(ev["alpha"], color="#d62728", lw=1.0, ls="--")
        ax.set_xscale("log")
        ax.set_xlim(alphas[0], alphas[-1])
        ax.legend(loc="lower left", fontsize=8.5)
    ax_ev.set_title("Type-II maximum likelihood picks α", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    caption = (
        "Top: log evidence (marginal likelihood of the targets) against α, "
        f"{res.log_evidence_note}; it peaks at the evidence-optimal α = {_fmt(ev['alpha'])} "
        "(dashed line, MacKay's fixed "
        f"point). Bottom: effective number of parameters γ(α) = Σ λᵢ/(λᵢ+α), which falls from "
        f"{res.n_features} (α → 0) to 0 (α → ∞); at the optimum γ = {ev['gamma']:.2f}, so about "
        f"{ev['gamma']:.1f} of the {res.n_features} weights are determined by the data."
    )
    return FigureInfo("e", path, "(e) Evidence and effective parameters", caption)
