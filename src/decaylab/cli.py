"""Command line: ``decaylab run``, ``decaylab demo``, ``decaylab report``, ``decaylab --version``.

``decaylab run [--config study.toml] [--task T] [--out DIR] [--fresh]`` runs the study
(reference, curvature, L2, L1, early stopping) with every phase cached in ``DIR/cache``, so
the same command after an interruption continues where it stopped. ``decaylab demo`` is the
study of ``digits-mlp`` with the defaults. ``decaylab report DIR`` re-renders the report
from ``DIR/results.json`` without recomputing. Bad input exits with code 2 and a message
naming the field, never a traceback.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from decaylab import __version__

__all__ = ["app", "main"]

app = typer.Typer(
    name="decaylab",
    help="decaylab: weight decay, L1 and early stopping, predicted from the Hessian and "
    "measured. Start with `decaylab demo`.",
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
        help="Output directory (results.json, reference.pt, cache/, report.html, figures/).",
    ),
]
TaskOption = Annotated[
    str | None,
    typer.Option(
        "--task",
        "-t",
        help="Built-in task (diabetes, digits-mlp, breast-cancer-logistic, "
        "mnist1d-cnn), or FILE.py:FUNCTION, or package.module:FUNCTION returning a "
        "decaylab.tasks.Task. Overrides the config file.",
    ),
]
FreshOption = Annotated[
    bool, typer.Option("--fresh", help="Recompute every phase, ignoring the cache in DIR/cache.")
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only errors and the summary's file paths.")
]
ExecutorOption = Annotated[
    str,
    typer.Option(
        "--executor",
        help="What runs the L2/L1 grid points: `local` (this process) or `ray` (one Ray task "
        "per point; needs decaylab[ray]; docs/scale.md).",
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="Ray cluster to join with --executor ray (`auto`, HOST:6379, ray://HOST:10001); "
        "default: a private local Ray instance.",
    ),
]
AdviseExecutorOption = Annotated[
    str,
    typer.Option(
        "--executor",
        help="What runs the grid baseline's points (--method grid, --compare-grid): `local` or "
        "`ray` (one Ray task per point; needs decaylab[ray]).",
    ),
]
SeedOption = Annotated[
    int | None,
    typer.Option("--seed", help="Seed of the model's initialization (overrides the config)."),
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


def _fail(message: str) -> NoReturn:
    # typer.secho rather than rich: a long path in the message must not be wrapped.
    typer.secho(f"Error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code=2)


@app.command()
def run(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Study config (TOML); every field in docs/study.md."),
    ] = None,
    task: TaskOption = None,
    out: OutOption = DEFAULT_OUT,
    fresh: FreshOption = False,
    seed: SeedOption = None,
    quiet: QuietOption = False,
    executor: ExecutorOption = "local",
    ray_address: RayAddressOption = None,
) -> None:
    """Run the study: predict L2, L1 and early stopping from the Hessian, retrain, compare.

    Under `torchrun --nproc_per_node=N -m decaylab run ...` the curvature is computed on the
    training data sharded over the N ranks, and rank 0 writes DIR (docs/scale.md).
    """
    _study(
        config,
        {"task": task, "seed": seed},
        out=out,
        fresh=fresh,
        quiet=quiet,
        executor=executor,
        ray_address=ray_address,
    )


@app.command()
def demo(
    task: Annotated[
        str,
        typer.Option(
            "--task", "-t", help="Task of the demo; `diabetes` is the exact linear study."
        ),
    ] = "digits-mlp",
    out: OutOption = DEFAULT_OUT,
    fresh: FreshOption = False,
    quiet: QuietOption = False,
) -> None:
    """The study of the digits MLP with the default settings (about a minute on 2 cores)."""
    _study(None, {"task": task}, out=out, fresh=fresh, quiet=quiet)


@app.command()
def report(
    directory: Annotated[Path, typer.Argument(help="A study directory with results.json.")],
) -> None:
    """Re-render DIR/report.html and DIR/figures from DIR/results.json, without recomputing."""
    path = directory / "results.json"
    if not path.is_file():
        _fail(f"{str(path)!r} does not exist: run `decaylab run --out {directory}` first")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        _fail(f"{str(path)!r} is not valid JSON: {exc}")
    html = _render(results, directory)
    if html is None:
        _fail("the report renderer (decaylab.report.render) is not available in this version")
    typer.echo(f"report:  {html}")


def _render(results: dict[str, Any], out: Path) -> Path | None:
    """``decaylab.report.render(results, out)`` when it exists; ``None`` otherwise."""
    try:
        from decaylab.report import render
    except ImportError:
        return None
    return Path(render(results, out))


def _study(
    config_path: Path | None,
    overrides: dict[str, Any],
    *,
    out: Path,
    fresh: bool,
    quiet: bool,
    executor: str = "local",
    ray_address: str | None = None,
) -> None:
    from decaylab.executors.ray import check_executor_option
    from decaylab.study import distributed
    from decaylab.study.config import load_config
    from decaylab.study.run import check_against_task
    from decaylab.tasks import get_task

    start = time.perf_counter()
    distributed.init_from_env()  # a no-op unless started by torchrun with several ranks
    try:  # every check before any compute
        check_executor_option(executor, ray_address)
        cfg = load_config(config_path, overrides)
        task_obj = get_task(cfg.task)
        check_against_task(cfg, task_obj)
        task_obj.validate(cfg.seed)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {str(out)!r} exists and is not a directory")
    except ValueError as exc:
        _fail(str(exc))
    console = Console(quiet=quiet)
    results = _run_with_progress(cfg, task_obj, out, fresh, console, executor, ray_address)
    ranks = distributed.rank_summary(results["task"]["n_train"], results["timings"])
    if distributed.rank() != 0:  # rank 0 renders and prints
        distributed.finish()
        return
    html = _render(results, out)
    elapsed = time.perf_counter() - start
    console.print(_summary_table(results, elapsed))
    if distributed.is_distributed():
        console.print(distributed.format_rank_summary(ranks), highlight=False)
    for warning in results["warnings"]:
        Console(stderr=True).print(f"[yellow]warning:[/] {warning}", highlight=False)
    typer.echo(f"numbers: {out / 'results.json'}")
    typer.echo(f"weights: {out / 'reference.pt'}")
    if html is not None:
        typer.echo(f"report:  {html}")
    else:
        typer.echo("report:  not rendered (decaylab.report.render is not available yet)")
    distributed.finish()


def _run_with_progress(
    cfg: Any,
    task_obj: Any,
    out: Path,
    fresh: bool,
    console: Console,
    executor: str = "local",
    ray_address: str | None = None,
) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from decaylab.study.run import run_study

    bars: dict[str, Any] = {}
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:

        def on_point(label: str, done: int, total: int) -> None:
            if label not in bars:
                bars[label] = progress.add_task(f"{label} grid", total=total)
            progress.update(bars[label], completed=done)

        def log(message: str) -> None:
            progress.console.print(f"[dim]{message}[/]", highlight=False)

        try:
            return run_study(
                cfg,
                out,
                fresh=fresh,
                task=task_obj,
                log=log,
                progress=on_point,
                executor=executor,
                ray_address=ray_address,
            )
        except ValueError as exc:
            _fail(str(exc))
            raise  # unreachable: _fail exits


def _fmt(x: Any) -> str:
    return "—" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))


def _summary_table(res: dict[str, Any], elapsed: float) -> Table:
    ref, curv, l2, l1, es = (
        res[k] for k in ("reference", "curvature", "l2", "l1", "early_stopping")
    )
    table = Table(title=f"decaylab study: {res['task']['name']}", header_style="bold")
    table.add_column("quantity", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_column("note", style="dim")
    table.add_row(
        "parameters, train, val",
        f"{res['task']['n_params']}, {res['task']['n_train']}, {res['task']['n_val']}",
        res["task"]["loss"],
    )
    table.add_row(
        "reference J, val loss",
        f"{_fmt(ref['train_loss'])}, {_fmt(ref['val_loss'])}",
        f"‖∇‖ = {_fmt(ref['grad_norm'])}, α₀ = {_fmt(ref['alpha0'])}",
    )
    table.add_row(
        "curvature",
        curv["path"],
        f"λ_max = {_fmt(curv['eigenvalues'][0])}, "
        f"{curv['n_negative']} negative, trace {_fmt(curv['trace'])}",
    )
    table.add_row(
        "L2 trust region α ≤",
        _fmt(l2["trust_region_alpha_max"]),
        "relative error ≤ " + _fmt(res["config"]["l2"]["trust_threshold"]),
    )
    table.add_row(
        "L2 relative error",
        " … ".join(_fmt(e) for e in (l2["relative_error"][0], l2["relative_error"][-1])),
        f"α = {_fmt(l2['alphas'][0])} … {_fmt(l2['alphas'][-1])} (warm start)",
    )
    table.add_row(
        "L1 zeros precision / recall",
        ", ".join(
            f"{_fmt(p)}/{_fmt(r)}"
            for p, r in zip(l1["zero_precision"], l1["zero_recall"], strict=True)
        ),
        "per grid α",
    )
    table.add_row(
        "early stopping τ*, α = 1/(ετ*)",
        f"{es['best_step']}, {_fmt(es['equivalent_alpha'])}",
        f"ε = {_fmt(es['lr'])}",
    )
    table.add_row(
        "val loss: ES / L2 equiv. / best L2",
        f"{_fmt(es['val_loss_early_stopping'])} /"
        f" {_fmt(es['val_loss_l2_equivalent'])} / {_fmt(es['val_loss_l2_best'])}",
        "",
    )
    reused = res.get("_reused_phases", [])
    table.add_row("phases reused from cache", ", ".join(reused) if reused else "none", "")
    table.add_row("warnings", str(len(res["warnings"])), "listed below and in results.json")
    table.add_row("total time", f"{elapsed:.1f} s", "")
    return table


@app.command()
def advise(
    task: TaskOption = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML with task, seed and an [advise] table."),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output directory (advice.json).")
    ] = Path("decaylab-advice"),
    method: Annotated[
        str | None,
        typer.Option(
            "--method",
            help="path (default), evidence, hypergradient, early_stopping or grid.",
        ),
    ] = None,
    compare_grid: Annotated[
        bool, typer.Option("--compare-grid", help="Also run the 11-point grid baseline.")
    ] = False,
    executor: AdviseExecutorOption = "local",
    ray_address: RayAddressOption = None,
) -> None:
    """Advise a weight decay α for a task: grid quality at a fraction of its compute."""
    from decaylab.advise.command import advise_command

    try:
        advice, path = advise_command(
            task, config, out, method, compare_grid or None, executor, ray_address
        )
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(str(advice))
    typer.echo(f"advice:  {path}")
    typer.echo(f"report:  {_render_advice(out)}")


def _render_advice(out: Path) -> Path:
    """Re-render DIR/report.html with the Advice section when a study is there, else advice only."""
    from decaylab.report import load_results, render
    from decaylab.report.advice import load_advice
    from decaylab.report.page import render_advice

    advice = load_advice(out)
    if advice is None:  # pragma: no cover - advise_command has just written it
        raise RuntimeError(f"{str(out / 'advice.json')!r} was not written")
    if (out / "results.json").is_file():
        return render(load_results(out), out, advice)
    return render_advice(advice, out)


def main() -> None:
    """Entry point for ``python -m decaylab``."""
    app()


if __name__ == "__main__":
    main()
