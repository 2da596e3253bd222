"""Run every benchmark in this folder, one process each, and collect their results.

``make bench`` calls ``python benchmarks/run_all.py --out benchmarks/results``. Each benchmark
script here runs in its own Python process (so one's threads, caches and memory do not skew
another's timings):

- a script defining ``main(out_dir, ...)`` is imported and called with the output folder;
- a script without such a ``main`` is run as ``python SCRIPT`` (plus ``--json FOLDER/NAME.json``
  when it takes ``--json``) with ``BENCH_OUT`` set to the folder; what it prints becomes
  ``NAME.md``.

Each benchmark writes its own JSON and Markdown table into the folder, and its console output is
kept in ``<name>.log`` there (the only record for a script that writes no files); this runner adds
``summary.json`` and ``summary.md`` listing what ran, how long it took and whether it failed.
A failing benchmark does not stop the others; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Benchmarks in the order they run; helpers (``workloads.py``) and this runner are not.
BENCHMARKS = ("curvature.py", "hvp_backends.py", "l1_solvers.py", "ray_grid.py", "advisor.py")
NOT_BENCHMARKS = {"run_all.py", "workloads.py", "gpu_diagnose.py"}  # helpers, GPU-only


def _has_main(path: Path) -> bool:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            params = node.args.args + node.args.kwonlyargs
            return bool(params) and params[0].arg in {"out_dir", "out", "output_dir"}
    return False


def discover(names: list[str] | None = None) -> list[Path]:
    found = [HERE / n for n in BENCHMARKS if (HERE / n).exists()]
    found += sorted(
        p
        for p in HERE.glob("*.py")
        if p.name not in NOT_BENCHMARKS and p.name not in BENCHMARKS and not p.name.startswith("_")
    )
    if names:
        wanted = {n if n.endswith(".py") else f"{n}.py" for n in names}
        found = [p for p in found if p.name in wanted]
    return found


def run_one(path: Path, out_dir: Path) -> dict:
    env = dict(os.environ, BENCH_OUT=str(out_dir), PYTHONUNBUFFERED="1")
    if _has_main(path):
        code = (
            f"import sys; sys.path.insert(0, {str(HERE)!r}); "
            f"import {path.stem} as b; b.main({str(out_dir)!r})"
        )
        cmd = [sys.executable, "-c", code]
        how = "main(out_dir)"
    else:
        cmd = [sys.executable, str(path)]
        how = "script"
        if '"--json"' in path.read_text():
            cmd += ["--json", str(out_dir / f"{path.stem}.json")]
            how = "script --json"
    print(f"=== {path.name} ({how})", flush=True)
    log_path = out_dir / f"{path.stem}.log"
    start = time.perf_counter()
    # The console shows the run live; the log keeps what a script-only benchmark printed.
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=HERE.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        returncode = proc.wait()
    seconds = time.perf_counter() - start
    status = "ok" if returncode == 0 else f"failed (exit {returncode})"
    table = out_dir / f"{path.stem}.md"
    if how != "main(out_dir)" and returncode == 0:
        # A script prints its table; keep it as the benchmark's Markdown.
        table.write_text(
            f"# {path.stem}\n\n`python benchmarks/{path.name}`\n\n```\n"
            + log_path.read_text()
            + "```\n"
        )
    print(f"=== {path.name}: {status} in {seconds:.0f} s", flush=True)
    return {"benchmark": path.stem, "how": how, "seconds": seconds, "status": status}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--only", nargs="+", help="benchmark names to run (default: all)")
    args = parser.parse_args(argv)
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    runs = [run_one(path, out_dir) for path in discover(args.only)]
    (out_dir / "summary.json").write_text(json.dumps(runs, indent=2))
    lines = ["| benchmark | how | seconds | status |", "| --- | --- | ---: | --- |"]
    for r in runs:
        lines.append(f"| {r['benchmark']} | {r['how']} | {r['seconds']:.0f} | {r['status']} |")
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["status"] == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
