"""Time the study: `decaylab demo` (digits-mlp, defaults) and mnist1d-cnn on the operator path.

Each case runs ``python -m decaylab.cli ... --fresh`` in its own process (the command a user
types, imports included) and records the wall time, the process's CPU time (user + system:
on a shared machine the wall time includes waiting for a core), the per-phase timings from
``results.json`` and a few of its numbers. Writes ``study_<case>.json`` and ``study.md`` into
the output folder.

    python benchmarks/study.py --out benchmarks/results [--cases demo mnist1d]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = {
    "demo": ["demo"],
    "mnist1d": ["run", "--config", str(HERE / "configs" / "mnist1d_cnn.toml")],
}


def run_case(name: str, work: Path) -> dict:
    out = work / name
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "src")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "decaylab.cli",
            *CASES[name],
            "--out",
            str(out),
            "--fresh",
            "--quiet",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    record = {
        "case": name,
        "command": " ".join(["decaylab", *CASES[name], "--fresh"]),
        "returncode": proc.returncode,
        "wall_s": wall,
        "cpu_s": cpu,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_1min_after": os.getloadavg()[0],
        },
    }
    if proc.returncode != 0:
        record["stderr_tail"] = proc.stderr[-2000:]
        return record
    res = json.loads((out / "results.json").read_text())
    record.update(
        task=res["task"],
        timings=res["timings"],
        curvature_path=res["curvature"]["path"],
        lambda_max=res["curvature"]["eigenvalues"][0],
        n_negative=res["curvature"]["n_negative"],
        trust_region_alpha_max=res["l2"]["trust_region_alpha_max"],
        relative_error=res["l2"]["relative_error"],
        l2_alphas=res["l2"]["alphas"],
        best_step=res["early_stopping"]["best_step"],
        n_warnings=len(res["warnings"]),
    )
    return record


def markdown(records: list[dict]) -> str:
    lines = [
        "# Study timings",
        "",
        "`python benchmarks/study.py`: each case is the CLI in a fresh process with "
        "`--fresh`. CPU = user + system seconds of that process; on a shared machine wall "
        "time also counts waiting for a core.",
        "",
        "| case | params | path | wall s | CPU s | reference | curvature | l2 | l1 | "
        "early stopping | picture | load after |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in records:
        if r["returncode"] != 0:
            lines.append(f"| {r['case']} | failed (exit {r['returncode']}) | | | | | | | | | | |")
            continue
        t = r["timings"]
        phases = " | ".join(
            f"{t.get(p, float('nan')):.1f}"
            for p in ("reference", "curvature", "l2", "l1", "early_stopping", "picture")
        )
        lines.append(
            f"| {r['case']} | {r['task']['n_params']} | {r['curvature_path']} | "
            f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {phases} | "
            f"{r['machine']['load_avg_1min_after']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(out_dir: str | Path, cases: tuple[str, ...] = ("demo", "mnist1d")) -> list[dict]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    with tempfile.TemporaryDirectory() as work:
        for name in cases:
            record = run_case(name, Path(work))
            (out_dir / f"study_{name}.json").write_text(json.dumps(record, indent=1))
            records.append(record)
            print(
                f"{name}: exit {record['returncode']}, wall {record['wall_s']:.1f} s, "
                f"CPU {record['cpu_s']:.1f} s",
                flush=True,
            )
    (out_dir / "study.md").write_text(markdown(records))
    return records


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["demo", "mnist1d"])
    args = parser.parse_args()
    main(args.out, tuple(args.cases))
