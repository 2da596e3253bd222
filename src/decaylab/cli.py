"""Command-line interface: ``decaylab demo``, ``decaylab run``, ``decaylab --version``.

``decaylab demo [--out DIR]`` runs the closed-form weight-decay study on the built-in
diabetes regression task and writes ``DIR/report.html``, ``DIR/results.json`` and
``DIR/figures/*.png``. ``decaylab run --task NAME`` is the general entry point; each
task kind has a runner in :data:`RUNNERS`, so new tasks plug in without new commands.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from decaylab import __version__

__all__ = ["app", "main"]

app = typer.Typer(
    name="decaylab",
    help=(
        "decaylab: weight decay, L1 and early stopping, predicted from the Hessian and "
        "measured. Start with `decaylab demo`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

DEFAULT_OUT = Path("decaylab-report")

OutOption = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        help="Output directory (created if missing; report.html, results.json and figures/ "
        "inside it are overwritten).",
    ),
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only errors and warnings.")
]
AlphaOption = Annotated[
    float | None,
    typer.Option(
        "--alpha",
        help="α > 0 for the weight-decay picture (figure a); default: the evidence-optimal α.",
    ),
]
LrOption = Annotated[
    float | None,
    typer.Option(
        "--lr", help="Gradient-descent learning rate ε > 0; default 0.5/λ_max."
    ),
]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"decaylab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """decaylab: weight decay, L1 and early stopping, predicted from the Hessian and measured."""


@app.command()
def demo(
    out: OutOption = DEFAULT_OUT,
    quiet: QuietOption = False,
    alpha: AlphaOption = None,
    lr: LrOption = None,
) -> None:
    """Run the weight-decay demo on the built-in diabetes regression task.

    Computes H = XᵀX/N, w*, the ridge path, the L1 path on the PCA-rotated design, the
    gradient-descent trajectory with its equivalent α, and the evidence-optimal α, then
    writes DIR/report.html (self-contained), DIR/results.json and DIR/figures/*.png.
    """
    _run_task("diabetes", out=out, quiet=quiet, alpha=alpha, lr=lr)


@app.command()
def run(
    task: Annotated[
        str,
        typer.Option(
            "--task",
            "-t",
            help="Built-in task. Available now: diabetes (linear regression: the same "
            "study as `decaylab demo`). Later tasks (e.g. digits, MNIST-1D) plug in here.",
        ),
    ] = "diabetes",
    out: OutOption = DEFAULT_OUT,
    quiet: QuietOption = False,
    alpha: AlphaOption = None,
    lr: LrOption = None,
) -> None:
    """Run the study for a built-in task and write its report.

    For a linear-regression task (today: diabetes) this is exactly `decaylab demo` on that
    task. Each task kind has its own runner; tasks of other kinds will add theirs.
    """
    _run_task(task, out=out, quiet=quiet, alpha=alpha, lr=lr)


def _linear_regression_runner(
    task_name: str, *, out: Path, alpha: float | None, lr: float | None
) -> tuple[object, object]:
    from decaylab.demo import run_demo
    from decaylab.report import write_report

    results = run_demo(task_name, alpha=alpha, lr=lr)
    files = write_report(results, out)
    return results, files


RUNNERS: dict[str, Callable[..., tuple[object, object]]] = {
    "linear_regression": _linear_regression_runner,
}
"""Task kind → runner(task_name, *, out, alpha, lr) returning (results, report files)."""


def _fail(message: str) -> None:
    # typer.secho rather than rich: a long path in the message must not be wrapped.
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=2)


def _run_task(
    task_name: str, *, out: Path, quiet: bool, alpha: float | None, lr: float | None
) -> None:
    from decaylab.report.html import check_out_dir
    from decaylab.tasks import TASKS, available_tasks, get_task

    if task_name not in TASKS:
        _fail(f"--task must be one of {', '.join(available_tasks())}; got {task_name!r}.")
    try:
        out = check_out_dir(out)
    except ValueError as exc:
        _fail(f"--out {str(out)!r}: {exc}")
    if alpha is not None and alpha <= 0:
        _fail(f"--alpha must be > 0, got {alpha!r}.")
    if lr is not None and lr <= 0:
        _fail(f"--lr must be > 0, got {lr!r}.")
    kind = get_task(task_name).kind
    runner = RUNNERS.get(kind)
    if runner is None:
        _fail(f"task {task_name!r} has kind {kind!r}, which has no runner yet.")

    console = Console()
    start = time.perf_counter()
    # The warnings are shown once, through rich and in the report's notes, instead of
    # Python's default stderr lines as well.
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            if quiet:
                results, files = runner(task_name, out=out, alpha=alpha, lr=lr)
            else:
                with console.status(f"decaylab: running the {task_name} study…"):
                    results, files = runner(task_name, out=out, alpha=alpha, lr=lr)
        except ValueError as exc:
            _fail(str(exc))
    elapsed = time.perf_counter() - start

    err = Console(stderr=True)
    for note in files.notes:
        count = f" (×{note['count']})" if note.get("count", 1) > 1 else ""
        err.print(f"[yellow]{note['category']}{count}:[/] {note['message']}", highlight=False)
    if not quiet:
        console.print(_summary_table(results, files, elapsed))
        # Plain lines, not table cells: long paths must stay whole to be copied.
        typer.echo(f"report:  {files.html}  (self-contained HTML)")
        typer.echo(f"numbers: {files.json}")
        typer.echo(f"figures: {files.html.parent / 'figures'}  ({len(files.figures)} PNG)")


def _summary_table(res, files, elapsed: float) -> Table:
    ev = res.evidence
    eig = res.eigvals
    table = Table(title=f"decaylab demo: {res.task['name']}", show_header=True,
                  header_style="bold")
    table.add_column("quantity", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("note", style="dim")

    def fmt(x: float) -> str:
        return f"{x:.4g}"

    table.add_row("examples N, weights d", f"{res.n_samples}, {res.n_features}", "")
    table.add_row("eigenvalues of H (max…min)", f"{fmt(eig[0])} … {fmt(eig[-1])}",
                  f"condition number {fmt(eig[0] / eig[-1]) if eig[-1] > 0 else 'inf'}")
    table.add_row("J(w*), R²", f"{fmt(res.loss_at_w_star)}, {fmt(res.r_squared)}",
                  "mean ½ squared error, standardized")
    table.add_row("evidence-optimal α", fmt(ev["alpha"]),
                  f"δ = {fmt(ev['prior_precision'])}, β = {fmt(ev['noise_precision'])}, "
                  f"converged: {ev['converged']}")
    table.add_row("effective parameters γ", fmt(ev["gamma"]), f"of {res.n_features}")
    table.add_row("α of figure (a)", fmt(res.alpha_picture),
                  f"{res.alpha_picture_source}; shrink ×{res.shrink_at_picture[0]:.2f} "
                  f"(steepest) … ×{res.shrink_at_picture[-1]:.2f} (flattest)")
    table.add_row("learning rate ε", fmt(res.lr), res.lr_source)
    table.add_row("steps τ ≈ 1/(ε·α_evidence)", fmt(ev["equivalent_steps"]),
                  "early stopping ≈ evidence α")
    table.add_row("warnings", str(len(files.notes)), "listed in the report's notes")
    table.add_row("time", f"{elapsed:.1f} s", "")
    return table


def main() -> None:
    """Entry point for ``python -m decaylab``."""
    app()


if __name__ == "__main__":
    main()
