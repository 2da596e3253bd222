"""Mutation spot-check of the training package (issue 13 item 8): one-line mutants of documented
behaviour, each run against the training tests; every mutant must be killed.

Run ``python tests/_mutants_training.py`` from the repository root (about 6 minutes on a
shared 2-core machine; 12/12 killed when written). Not collected by pytest.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
MUTANTS = [
    (
        "src/decaylab/training/evaluation.py",
        "total += float(checked_loss(loss_fn(model(xb), yb))) * w",
        "total += float(checked_loss(loss_fn(model(xb), yb)))",
        "chunks not weighted",
    ),
    (
        "src/decaylab/training/evaluation.py",
        "        w = weight(loss_fn, yb)",
        "        w = len(yb)",
        "count weighting",
    ),
    (
        "src/decaylab/training/regularization.py",
        'p.mul_(1.0 - g["lr"] * wd)',
        "p.mul_(1.0 - wd)",
        "decoupled decay without lr",
    ),
    (
        "src/decaylab/training/regularization.py",
        "total += 0.5 * wd * sum",
        "total += wd * sum",
        "objective 2x decay",
    ),
    (
        "src/decaylab/training/regularization.py",
        "                group[key] = value",
        "                pass",
        "setter does not reach optimizer",
    ),
    (
        "src/decaylab/training/checkpointing.py",
        '            state.regularization.load_state_dict(saved["regularization"])',
        "            pass",
        "resume ignores saved alpha",
    ),
    (
        "src/decaylab/training/batches.py",
        "        if position == 0 or self.perm is None:",
        "        if self.perm is None:",
        "no reshuffle per epoch",
    ),
    (
        "src/decaylab/training/run.py",
        '        if history.stop_reason != "non-finite" and not self.regularization.all_finite():',
        "        if False:",
        "final weights unchecked",
    ),
    (
        "src/decaylab/training/run.py",
        "            history.line_search_failures.append(state.step)",
        "            pass",
        "failures not recorded",
    ),
    (
        "src/decaylab/training/run.py",
        "        if on_grid or step == config.total_steps or state.stop:",
        "        if on_grid or state.stop:",
        "final step not evaluated",
    ),
    (
        "src/decaylab/training/hooks.py",
        '            group["lr"] = value',
        "            pass",
        "lr setter",
    ),
    (
        "src/decaylab/training/config.py",
        "        _check_no_broadcast(loss_fn, prediction, target, name)",
        "        pass",
        "no broadcast check",
    ),
]
TESTS = [
    "tests/test_training.py",
    "tests/test_training_parts.py",
    "tests/test_training_callbacks.py",
    "tests/test_training_inputs.py",
    "tests/test_training_golden.py",
    "tests/test_checkpoint.py",
]


def main() -> None:
    killed = 0
    for path, old, new, label in MUTANTS:
        killed += run_mutant(path, old, new, label)
    print(f"{killed}/{len(MUTANTS)} killed")


def run_mutant(path: str, old: str, new: str, label: str) -> bool:
    f = ROOT / path
    src = f.read_text()
    assert src.count(old) == 1, (label, src.count(old))
    f.write_text(src.replace(old, new))
    try:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                *TESTS,
                "-x",
                "-q",
                "-p",
                "no:cacheprovider",
                "-k",
                "not sigkill",
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": "src"},
            capture_output=True,
            text=True,
        )
        dead = r.returncode != 0
        first = [line for line in r.stdout.splitlines() if line.startswith("FAILED")][:1]
        print(f"{'KILLED ' if dead else 'SURVIVED'} {label}: {first}", flush=True)
        return dead
    finally:
        f.write_text(src)


if __name__ == "__main__":
    main()
