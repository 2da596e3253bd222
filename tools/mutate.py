"""Mutation spot-check: do the tests notice a one-line change to a documented behaviour?

Each *mutant* changes one line of a core module: an operator swap (``<`` → ``<=``, ``+`` → ``-``),
a constant change, or a changed default. For each mutant the script copies ``src/`` to a temporary
directory, applies the change there (the checkout is never modified), runs the test files mapped
to that module with ``PYTHONPATH`` pointing at the copy, and records the mutant as

* ``killed``: a test failed (or the run exceeded ``--timeout``, counted separately),
* ``survived``: every test passed, i.e. no test pins that behaviour.

Mutants come from two sources: a curated list per module (``CURATED``: the documented defaults,
corrections and comparisons a user relies on, each with the doc statement it breaks) and, with
``--auto N``, up to N operator/number mutants per module sampled (seeded) from the code tokens
(docstrings and comments are never touched). Results go to ``<out>/mutation.json`` and
``<out>/mutation.md``.

Usage::

    PYTHONPATH=src python tools/mutate.py theory bayes regularize early_stopping \
        --out benchmarks/results [--auto 5] [--timeout 240] [--jobs 1] [--list]

The mutant-free baseline is run first: a module whose tests fail unmutated is reported, not
scored. Runs are sequential by default (the machine has 2 shared cores).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "decaylab"

#: module -> (source files, relative to src/decaylab, as globs; test files run for its mutants)
MODULES: dict[str, tuple[list[str], list[str]]] = {
    "theory": (["theory.py", "_checks.py"], ["tests/test_theory.py", "tests/test_defaults.py"]),
    "bayes": (["bayes.py"], ["tests/test_bayes.py", "tests/test_defaults.py"]),
    "regularize": (["regularize.py"], ["tests/test_regularize.py", "tests/test_defaults.py"]),
    "early_stopping": (
        ["early_stopping.py"],
        ["tests/test_early_stopping.py", "tests/test_defaults.py"],
    ),
    "training": (
        ["training.py", "training/*.py"],
        [
            "tests/test_training*.py",
            "tests/test_checkpoint.py",
            "tests/test_defaults.py",
            "tests/test_mutants_training.py",
        ],
    ),
    "curvature": (
        ["curvature/*.py"],
        [
            "tests/test_curvature_operators.py",
            "tests/test_eigen.py",
            "tests/test_stochastic.py",
            "tests/test_defaults.py",
        ],
    ),
}


@dataclass(frozen=True)
class Mutant:
    module: str
    file: str  # relative to src/decaylab
    old: str  # exact text on one line (must occur exactly once in the file)
    new: str
    why: str  # the documented behaviour it breaks
    kind: str = "curated"
    line: int = 0  # filled in when applied


def _m(module: str, file: str, old: str, new: str, why: str) -> Mutant:
    return Mutant(module, file, old, new, why)


# Documented behaviours (docstrings, docs/*.md). Each `old` must appear exactly once in its file.
CURATED: list[Mutant] = [
    # ---- theory
    _m(
        "theory",
        "theory.py",
        "out = lam_b / denom",
        "out = alpha_b / denom",
        "shrink factor is lambda/(lambda+alpha)",
    ),
    _m(
        "theory",
        "theory.py",
        "gamma = _shrink(lam, factors, stacklevel=2).sum(axis=-1)",
        "gamma = _shrink(lam, factors, stacklevel=2).mean(axis=-1)",
        "gamma is a sum over i",
    ),
    _m(
        "theory",
        "theory.py",
        "return (factors * coords) @ Q.T",
        "return (factors * coords) @ Q",
        "l2_solution = Q f(Lambda) Q^T w*",
    ),
    _m(
        "theory",
        "theory.py",
        "np.maximum(np.abs(w) - a_col / safe_h, 0.0)",
        "np.maximum(np.abs(w) - a_col * safe_h, 0.0)",
        "L1 threshold is alpha/H_ii",
    ),
    _m(
        "theory",
        "theory.py",
        "flat_value = np.where(a_col > 0, 0.0, w)",
        "flat_value = np.where(a_col >= 0, 0.0, w)",
        "H_ii = 0, alpha = 0 returns w*_i",
    ),
    _m(
        "theory",
        "theory.py",
        "if lam.size and lr_val * float(np.max(lam)) >= 2.0:",
        "if lam.size and lr_val * float(np.max(lam)) > 2.0:",
        "lr*lambda_max >= 2 warns (gd)",
    ),
    _m(
        "theory",
        "theory.py",
        "    if np.any(x >= 2.0):",
        "    if np.any(x > 2.0):",
        "lr*lambda_max >= 2 warns (early_stopping_alpha)",
    ),
    _m(
        "theory",
        "theory.py",
        "    elif np.any(x > 1.0):",
        "    elif np.any(x >= 1.0):",
        "lr*lambda = 1 is not an overshoot (alpha = 0 there)",
    ),
    _m(
        "theory",
        "theory.py",
        "out = np.where(tau_b == 0, np.inf, out)",
        "out = np.where(tau_b == 0, 0.0, out)",
        "steps = 0 gives alpha = inf",
    ),
    _m(
        "theory",
        "theory.py",
        "1.0 / (lr_val * np.where(tau_b > 0, tau_b, 1.0))",
        "1.0 / (np.where(tau_b > 0, tau_b, 1.0))",
        "lambda = 0 gives 1/(lr tau)",
    ),
    _m(
        "theory",
        "theory.py",
        "return 100.0 * _F64_EPS * eigvals.size * float(np.max(np.abs(eigvals)))",
        "return 1e-3 * float(np.max(np.abs(eigvals)))",
        "negative-eigenvalue warning tolerance is rounding-level",
    ),
    _m(
        "theory",
        "theory.py",
        "    if asym > np.sqrt(eps) * max(scale, np.finfo(np.float64).tiny):",
        "    if asym > 1e-2 * max(scale, np.finfo(np.float64).tiny):",
        "asymmetry above sqrt(eps) of the input dtype is refused",
    ),
    _m(
        "theory",
        "theory.py",
        "    if err > np.sqrt(eps):",
        "    if err > 1e-2:",
        "non-orthonormal eigvecs are refused",
    ),
    _m(
        "theory",
        "theory.py",
        "out = np.where(np.isposinf(alpha_b), 0.0, out)",
        "out = np.where(np.isposinf(alpha_b), np.nan, out)",
        "alpha = inf gives factor 0",
    ),
    _m(
        "theory",
        "theory.py",
        "        out = 1.0 / (lr_val * tau)",
        "        out = 1.0 / (lr_val + tau)",
        "approx_alpha = 1/(lr tau)",
    ),
    # ---- bayes
    _m(
        "bayes",
        "bayes.py",
        "    tol: float = 1e-10,",
        "    tol: float = 1e-6,",
        "evidence_ridge's default tol is 1e-10",
    ),
    _m(
        "bayes",
        "bayes.py",
        "    max_iter: int = 1000,",
        "    max_iter: int = 10,",
        "evidence_ridge's default max_iter is 1000",
    ),
    _m(
        "bayes",
        "bayes.py",
        "        new_beta = (n - gamma) / float(sse)",
        "        new_beta = n / float(sse)",
        "beta <- (N - gamma)/||y - Xm||^2",
    ),
    _m(
        "bayes",
        "bayes.py",
        "        new_delta = gamma / float(m_sq)",
        "        new_delta = spec.d / float(m_sq)",
        "delta <- gamma/||m||^2",
    ),
    _m(
        "bayes",
        "bayes.py",
        "alpha=float(delta / (beta * n)),",
        "alpha=float(delta / beta),",
        "alpha = delta/(beta N)",
    ),
    _m(
        "bayes",
        "bayes.py",
        "        if change < tol_val:",
        "        if change <= 10 * tol_val:",
        "convergence: relative change below tol",
    ),
    _m(
        "bayes",
        "bayes.py",
        "    delta = 1.0\n",
        "    delta = 10.0\n",
        "starts at delta = 1 like BayesianRidge (n_iter comparable)",
    ),
    _m(
        "bayes",
        "bayes.py",
        "return _scalar_or_array(1.0 / (beta * n_val * sigma**2))",
        "return _scalar_or_array(1.0 / (beta * n_val * sigma))",
        "alpha = 1/(beta N sigma^2)",
    ),
    _m(
        "bayes",
        "bayes.py",
        "return _scalar_or_array(1.0 / (beta * n_val * b))",
        "return _scalar_or_array(1.0 / (n_val * b))",
        "Laplace: alpha = 1/(beta N b)",
    ),
    _m(
        "bayes",
        "bayes.py",
        "    out = np.where(a == 0, -np.inf, out)",
        "    out = np.where(a == 0, 0.0, out)",
        "alpha = 0 has evidence -inf",
    ),
    _m(
        "bayes",
        "bayes.py",
        "        beta = n / energy",
        "        beta = (n - 1) / energy",
        "profiled beta = N/(sse + alpha N ||m||^2)",
    ),
    _m(
        "bayes",
        "bayes.py",
        "logdet = logdet + self.n_null * np.log(delta)",
        "logdet = logdet",
        "log det counts the N < d null directions",
    ),
    _m(
        "bayes",
        "bayes.py",
        "    sse_floor = n * float(np.finfo(np.float64).eps) * float(np.sum(yc**2))",
        "    sse_floor = 0.0",
        "interpolation (beta -> inf) is flagged",
    ),
    _m(
        "bayes",
        "bayes.py",
        "        x_mean = Xa.mean(axis=0)",
        "        x_mean = Xa.mean(axis=0) * 0",
        "fit_intercept centres X",
    ),
    # ---- regularize
    _m(
        "regularize",
        "regularize.py",
        "            total = total + 0.5 * self.l2_strength * self._sum(",
        "            total = total + self.l2_strength * self._sum(",
        "L2 penalty is alpha/2 ||w||^2",
    ),
    _m(
        "regularize",
        "regularize.py",
        "        return self.alpha * (1.0 - self.l1_ratio)",
        "        return self.alpha * self.l1_ratio",
        "l2_strength = alpha (1 - rho)",
    ),
    _m(
        "regularize",
        "regularize.py",
        "    return x - x.clamp(-t, t)",
        "    return x - x.clamp(-t / 2, t / 2)",
        "soft threshold by t",
    ),
    _m(
        "regularize",
        "regularize.py",
        "        threshold = eps * self.alpha * self.l1_ratio",
        "        threshold = eps * self.alpha",
        "prox threshold step*alpha*rho",
    ),
    _m(
        "regularize",
        "regularize.py",
        "    exclude_bias: bool = True,",
        "    exclude_bias: bool = False,",
        "param_groups excludes biases by default",
    ),
    _m(
        "regularize",
        "regularize.py",
        "    exclude_norm: bool = True,",
        "    exclude_norm: bool = False,",
        "param_groups excludes norm layers by default",
    ),
    _m(
        "regularize",
        "regularize.py",
        "    exclude_1d: bool = True,",
        "    exclude_1d: bool = False,",
        "param_groups excludes 1-D parameters by default",
    ),
    _m(
        "regularize",
        "regularize.py",
        "            or (exclude_1d and p.ndim <= 1)",
        "            or (exclude_1d and p.ndim < 1)",
        "1-D parameters are not decayed",
    ),
    _m(
        "regularize",
        "regularize.py",
        "low=0.0) > 0",
        "low=0.0) >= 0",
        "decayed iff weight_decay > 0",
    ),
    _m(
        "regularize",
        "regularize.py",
        "        if id(t) not in seen:",
        "        if True:",
        "tied tensors count once",
    ),
    _m(
        "regularize",
        "regularize.py",
        '    return leaf == "bias" or leaf.startswith("bias_") or leaf.endswith("_bias")',
        '    return leaf == "bias"',
        "bias_* and *_bias names are biases",
    ),
    _m(
        "regularize",
        "regularize.py",
        "(p for p in params.parameters() if p.requires_grad)",
        "(p for p in params.parameters())",
        "frozen parameters are left out",
    ),
    # ---- early_stopping
]


def _load_more_curated() -> None:
    """Curated mutants of early_stopping, training and curvature (kept apart: long lines)."""
    es = "early_stopping.py"
    CURATED.extend(
        [
            _m(
                "early_stopping",
                es,
                "patience: int = 5,",
                "patience: int = 3,",
                "EarlyStopping's default patience is 5",
            ),
            _m(
                "early_stopping",
                es,
                "restore_best: bool = True,",
                "restore_best: bool = False,",
                "restore_best defaults to True",
            ),
            _m(
                "early_stopping",
                es,
                "min_delta: float = 0.0,",
                "min_delta: float = 1e-4,",
                "min_delta defaults to 0",
            ),
            _m(
                "early_stopping",
                es,
                "check_finite: bool = True,",
                "check_finite: bool = False,",
                "check_finite defaults to True",
            ),
            _m(
                "early_stopping",
                es,
                'mode: str = "min",',
                'mode: str = "max",',
                "mode defaults to min",
            ),
            _m(
                "early_stopping",
                es,
                'monitor: str = "val_loss",',
                'monitor: str = "loss",',
                "monitor defaults to val_loss",
            ),
            _m(
                "early_stopping",
                es,
                "            return value < reference - self.min_delta",
                "            return value <= reference - self.min_delta",
                "improvement is strict: value < best - min_delta",
            ),
            _m(
                "early_stopping",
                es,
                "            return value < reference - self.min_delta",
                "            return value < reference + self.min_delta",
                "min_delta must be beaten, not allowed as slack",
            ),
            _m(
                "early_stopping",
                es,
                "        return value > reference + self.min_delta",
                "        return value > reference - self.min_delta",
                "max mode mirrors min",
            ),
            _m(
                "early_stopping",
                es,
                "        if not improved and self.wait >= self.patience:",
                "        if not improved and self.wait > self.patience:",
                "stop at the patience-th non-improving check",
            ),
            _m(
                "early_stopping",
                es,
                "        if s < self.start_from:",
                "        if s <= self.start_from:",
                "warm-up is s < start_from",
            ),
            _m(
                "early_stopping",
                es,
                "        if self.check_finite and not finite:",
                "        if self.check_finite and not finite and s > 0:",
                "a NaN stops at once, even at the first check",
            ),
            _m(
                "early_stopping",
                es,
                "            and not math.isnan(current)\n        ):",
                "        ):",
                "NaN never triggers the stopping threshold",
            ),
            _m(
                "early_stopping",
                es,
                "            self.wait = 0\n            if self.restore_best:",
                "            if self.restore_best:",
                "wait resets on improvement",
            ),
            _m(
                "early_stopping",
                es,
                '        return a < b if self.mode == "min" else a > b',
                '        return a <= b if self.mode == "min" else a > b',
                "divergence is strictly worse than the threshold",
            ),
        ]
    )

    ev, lp, fi, rg = (
        "training/evaluation.py",
        "training/loop.py",
        "training/fista.py",
        "training/regularization.py",
    )
    CURATED.extend(
        [
            _m(
                "training",
                ev,
                "total += float(checked_loss(loss_fn(model(xb), yb))) * w",
                "total += float(checked_loss(loss_fn(model(xb), yb)))",
                "recorded loss: chunks weighted by their normalizer (issue 13 case 8)",
            ),
            _m(
                "training",
                ev,
                "        total_weight += w",
                "        total_weight += 1",
                "recorded loss divides by the total weight, not the chunk count",
            ),
            _m(
                "training",
                ev,
                "    return 0.5 * torch.mean((prediction - target) ** 2)",
                "    return torch.mean((prediction - target) ** 2)",
                "half_mse is ½ the MSE",
            ),
            _m(
                "training",
                rg,
                "            total += 0.5 * wd * sum(",
                "            total += wd * sum(",
                "objective adds (α/2)‖w_d‖²",
            ),
            _m(
                "training",
                lp,
                "    lr: float | str = 0.1,",
                "    lr: float | str = 0.01,",
                "fit's default lr is 0.1",
            ),
            _m(
                "training",
                lp,
                "    eval_every: int = 1,",
                "    eval_every: int = 2,",
                "fit evaluates every step by default",
            ),
            _m(
                "training",
                lp,
                "    proximal: bool = True,",
                "    proximal: bool = False,",
                "L1 is applied by its prox by default",
            ),
            _m(
                "training",
                lp,
                "    momentum: float = 0.0,",
                "    momentum: float = 0.5,",
                "no momentum by default",
            ),
            _m(
                "training",
                lp,
                "    decoupled: bool = False,",
                "    decoupled: bool = True,",
                "weight decay is coupled by default",
            ),
            _m(
                "training",
                fi,
                "        backtrack: float = 2.0,",
                "        backtrack: float = 4.0,",
                "FISTA halves the step when backtracking",
            ),
            _m(
                "training",
                fi,
                "        restart: bool = True,",
                "        restart: bool = False,",
                "FISTA restarts by default",
            ),
            _m(
                "training",
                fi,
                "MAX_BACKTRACKS = 100",
                "MAX_BACKTRACKS = 10",
                "line search gives up (and warns) after 100 trials",
            ),
            _m(
                "training",
                fi,
                "            beta = (t - 1.0) / t_next",
                "            beta = t / t_next",
                "FISTA momentum (t_k - 1)/t_{k+1}",
            ),
            _m(
                "training",
                "training/config.py",
                "DEFAULT_CHECKPOINT_EVERY = 100",
                "DEFAULT_CHECKPOINT_EVERY = 50",
                "checkpoint every 100 steps by default",
            ),
            # ---- formerly tests/_mutants_training.py (issue 13 item 8)
            _m(
                "training",
                ev,
                "[weight(loss_fn, y[start : start + chunk]) for start",
                "[float(len(y[start : start + chunk])) for start",
                "recorded loss weights chunks by the loss's normalizer, not the sample count",
            ),
            _m(
                "training",
                rg,
                'p.mul_(1.0 - g["lr"] * wd)',
                "p.mul_(1.0 - wd)",
                "decoupled decay shrinks by lr * alpha",
            ),
            _m(
                "training",
                rg,
                "                group[key] = value",
                "                pass",
                "setting alpha reaches the optimizer's groups",
            ),
            _m(
                "training",
                "training/checkpointing.py",
                '            state.regularization.load_state_dict(saved["regularization"])',
                "            pass",
                "resume restores the saved alpha",
            ),
            _m(
                "training",
                "training/batches.py",
                "        if position == 0 or self.perm is None:",
                "        if self.perm is None:",
                "mini-batches are reshuffled every epoch",
            ),
            _m(
                "training",
                "training/run.py",
                '        if history.stop_reason != "non-finite" and not '
                "self.regularization.all_finite():",
                "        if False:",
                "non-finite final weights are reported",
            ),
            _m(
                "training",
                "training/run.py",
                "            history.line_search_failures.append(state.step)",
                "            pass",
                "line-search failures are recorded in the history",
            ),
            _m(
                "training",
                "training/run.py",
                "        if on_grid or step == config.total_steps or state.stop:",
                "        if on_grid or state.stop:",
                "the final step is always evaluated",
            ),
            _m(
                "training",
                "training/hooks.py",
                '            group["lr"] = value',
                "            pass",
                "setting lr reaches the optimizer's groups",
            ),
            _m(
                "training",
                "training/config.py",
                "        _check_no_broadcast(loss_fn, prediction, target, name)",
                "        pass",
                "a loss that would broadcast prediction and target is refused",
            ),
        ]
    )
    la, st, op = "curvature/lanczos.py", "curvature/stochastic.py", "curvature/operators.py"
    ba = "curvature/batching.py"
    CURATED.extend(
        [
            _m(
                "curvature",
                la,
                "    tol: float = 1e-3,\n    max_matvecs",
                "    tol: float = 1e-2,\n    max_matvecs",
                "eigen's default tol is 1e-3",
            ),
            _m(
                "curvature",
                la,
                "    check_complete: bool = True,",
                "    check_complete: bool = False,",
                "eigen checks completeness by default",
            ),
            _m(
                "curvature",
                la,
                "_NORM_FLOOR = 1e-6",
                "_NORM_FLOOR = 1e-3",
                "certificate: residual <= tol max(|θ|, 1e-6 ‖H‖)",
            ),
            _m(
                "curvature",
                la,
                "        within = residuals <= self.thresholds(vals)",
                "        within = residuals <= 10 * self.thresholds(vals)",
                "a pair is certified at tol",
            ),
            _m(
                "curvature",
                st,
                "    var = m2 / (n_probe - 1)",
                "    var = m2 / n_probe",
                "diagonal's standard error uses Bessel's correction",
            ),
            _m(
                "curvature",
                st,
                "def trace(op: Any, n_matvecs: int = 100,",
                "def trace(op: Any, n_matvecs: int = 50,",
                "trace uses 100 products by default",
            ),
            _m(
                "curvature",
                st,
                '    op: Any, n_matvecs: int = 100, seed: int = 0, method: str = "diag++"',
                '    op: Any, n_matvecs: int = 100, seed: int = 0, method: str = "bekas"',
                "diagonal defaults to Diag++",
            ),
            _m(
                "curvature",
                op,
                "        return acc / self._w_total",
                "        return acc / self.n_batches",
                "mean over all samples (total weight), not per batch",
            ),
            _m(
                "curvature",
                ba,
                "            acc.add_(term.matmat(V), alpha=weight)",
                "            acc.add_(term.matmat(V))",
                "batches weighted by their weight, e.g. size (uncached path)",
            ),
            _m(
                "curvature",
                ba,
                "                acc.add_(cached.matmat(V), alpha=self._batch_weights[index])",
                "                acc.add_(cached.matmat(V))",
                "batches weighted by their weight, e.g. size (cached path)",
            ),
        ]
    )


_load_more_curated()

_SWAPS = {
    "<": "<=",
    "<=": "<",
    ">": ">=",
    ">=": ">",
    "==": "!=",
    "!=": "==",
    "+": "-",
    "-": "+",
    "*": "/",
    "/": "*",
    "and": "or",
    "or": "and",
}


def _code_tokens(text: str) -> list[tuple[int, int, int, str]]:
    """(line, start col, end col, token) of operators and numbers outside strings/comments."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.OP and tok.string in _SWAPS:
            out.append((tok.start[0], tok.start[1], tok.end[1], tok.string))
        elif tok.type == tokenize.NAME and tok.string in ("and", "or"):
            out.append((tok.start[0], tok.start[1], tok.end[1], tok.string))
        elif tok.type == tokenize.NUMBER and tok.start[0] == tok.end[0]:
            out.append((tok.start[0], tok.start[1], tok.end[1], tok.string))
    return out


def auto_mutants(module: str, n: int, seed: int) -> list[Mutant]:
    """Up to ``n`` operator/number mutants of the module's files, sampled with ``seed``."""
    candidates: list[Mutant] = []
    for rel in _module_files(module):
        text = (SRC / rel).read_text()
        lines = text.splitlines(keepends=True)
        for line_no, c0, c1, tok in _code_tokens(text):
            line = lines[line_no - 1]
            if line.lstrip().startswith(("raise ", 'f"', '"', "warn")) or "ValueError" in line:
                continue  # error messages and warnings: their wording is not behaviour
            if "stacklevel" in line:
                continue  # where a warning points: not a computed value
            star_marker = tok in ("*", "/") and (
                line[c1:].lstrip().startswith((",", ")")) or line[:c0].rstrip().endswith(("(", ","))
            )
            if star_marker:
                continue  # *args / keyword-only markers, not arithmetic
            if tok in _SWAPS:
                new_tok = _SWAPS[tok]
            elif tok in ("0", "0.0"):
                new_tok = "1" if tok == "0" else "1.0"
            else:
                try:
                    new_tok = (
                        repr(float(tok) * 10) if "." in tok or "e" in tok else str(int(tok) + 1)
                    )
                except ValueError:
                    continue
            new_line = line[:c0] + new_tok + line[c1:]
            candidates.append(
                Mutant(
                    module, rel, line, new_line, f"auto: {tok!r} -> {new_tok!r}", "auto", line_no
                )
            )
    rng = random.Random(seed)
    return rng.sample(candidates, min(n, len(candidates)))


def _module_files(module: str) -> list[str]:
    files: list[str] = []
    for pattern in MODULES[module][0]:
        files += sorted(str(p.relative_to(SRC)) for p in SRC.glob(pattern) if p.is_file())
    return files


def _test_files(module: str) -> list[str]:
    files: list[str] = []
    for pattern in MODULES[module][1]:
        files += sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(pattern))
    return list(dict.fromkeys(files))


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed | survived | timeout | not-applicable
    seconds: float
    detail: str = ""
    tests: list[str] = field(default_factory=list)


def _apply(mutant: Mutant, src_copy: Path) -> tuple[bool, int, str]:
    path = src_copy / "decaylab" / mutant.file
    if not path.exists():
        return False, 0, f"{mutant.file} not in this checkout"
    text = path.read_text()
    if mutant.kind == "auto":  # a whole line, located by its number (it may repeat elsewhere)
        lines = text.splitlines(keepends=True)
        if mutant.line > len(lines) or lines[mutant.line - 1] != mutant.old:
            return False, 0, "line changed since sampling"
        lines[mutant.line - 1] = mutant.new
        path.write_text("".join(lines))
        return True, mutant.line, ""
    if text.count(mutant.old) != 1:
        return False, 0, f"text found {text.count(mutant.old)} times (code changed?)"
    line = text[: text.index(mutant.old)].count("\n") + 1
    path.write_text(text.replace(mutant.old, mutant.new))
    return True, line, ""


def _run_tests(tests: list[str], src_copy: Path, timeout: float) -> tuple[str, float, str]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    env = {"PYTHONPATH": str(src_copy), "PATH": "/usr/bin:/bin", "HOME": str(src_copy)}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, f"over {timeout:.0f} s"
    seconds = time.perf_counter() - start
    tail = (proc.stdout.strip().splitlines() or [""])[-1]
    failed = [ln.split(" ")[1] for ln in proc.stdout.splitlines() if ln.startswith("FAILED")]
    return ("survived" if proc.returncode == 0 else "killed"), seconds, (failed or [tail])[0]


def run_module(module: str, mutants: list[Mutant], timeout: float) -> tuple[dict, list[Outcome]]:
    tests = _test_files(module)
    with tempfile.TemporaryDirectory(prefix="decaylab-mutate-") as tmp:
        copy = Path(tmp) / "src"
        shutil.copytree(ROOT / "src", copy, ignore=shutil.ignore_patterns("__pycache__"))
        status, seconds, detail = _run_tests(tests, copy, timeout)
    baseline = {
        "status": "pass" if status == "survived" else status,
        "seconds": round(seconds, 1),
        "detail": detail if status != "survived" else "",
        "tests": tests,
    }
    outcomes: list[Outcome] = []
    if baseline["status"] != "pass":
        return baseline, outcomes
    for mutant in mutants:
        with tempfile.TemporaryDirectory(prefix="decaylab-mutate-") as tmp:
            copy = Path(tmp) / "src"
            shutil.copytree(ROOT / "src", copy, ignore=shutil.ignore_patterns("__pycache__"))
            ok, line, why = _apply(mutant, copy)
            placed = Mutant(**{**asdict(mutant), "line": line or mutant.line})
            if not ok:
                outcomes.append(Outcome(placed, "not-applicable", 0.0, why))
                continue
            status, seconds, detail = _run_tests(tests, copy, timeout)
        outcomes.append(Outcome(placed, status, round(seconds, 1), detail, tests))
        print(f"  {module}:{placed.line} {status:9s} {seconds:5.1f}s  {mutant.why}", flush=True)
    return baseline, outcomes


def _rate_dicts(outcomes: list[dict]) -> dict:
    scored = [o for o in outcomes if o["status"] != "not-applicable"]
    killed = sum(o["status"] in ("killed", "timeout") for o in scored)
    return {
        "mutants": len(scored),
        "killed": killed,
        "survived": len(scored) - killed,
        "kill_rate": round(killed / len(scored), 3) if scored else None,
        "not_applicable": len(outcomes) - len(scored),
    }


def write_report(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "mutation.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Mutation spot-check",
        "",
        "Commands, in order (a later run with --only replaces those mutants' results):",
        "",
        *[f"- `{c}`" for c in results["commands"]],
        "",
        f"Date: {results['created']}",
        "",
        "| module | mutants | killed | survived | kill rate | baseline |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, mod in results["modules"].items():
        r = mod["summary"]
        rate = "—" if r["kill_rate"] is None else f"{100 * r['kill_rate']:.0f} %"
        lines.append(
            f"| {name} | {r['mutants']} | {r['killed']} | {r['survived']} | {rate} | "
            f"{mod['baseline']['status']} ({mod['baseline']['seconds']} s) |"
        )
    lines += [
        "",
        "## Mutants",
        "",
        "| module | line | kind | change | documented behaviour | result | first failing test |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, mod in results["modules"].items():
        for o in mod["mutants"]:
            change = f"`{o['old'].strip()[:60]}` → `{o['new'].strip()[:60]}`".replace("|", "\\|")
            lines.append(
                f"| {name} | {o['file']}:{o['line']} | {o['kind']} | {change} | "
                f"{o['why']} | **{o['status']}** | {o['detail'][:80]} |"
            )
    (out / "mutation.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="+", choices=sorted(MODULES))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--auto", type=int, default=0, help="sampled auto mutants per module")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per test run")
    parser.add_argument("--only-curated", action="store_true")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument(
        "--only", nargs="+", default=None, help="run only mutants whose description contains one"
    )
    args = parser.parse_args(argv)

    previous, commands = {}, []
    if (args.out / "mutation.json").exists():
        earlier = json.loads((args.out / "mutation.json").read_text())
        previous, commands = earlier.get("modules", {}), earlier.get("commands", [])
    command = "python tools/mutate.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    results = {
        "command": command,
        "commands": [*commands, command],
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "modules": dict(previous),
    }
    for module in args.modules:
        mutants = [m for m in CURATED if m.module == module]
        if args.auto:
            mutants += auto_mutants(module, args.auto, args.seed)
        if args.only:
            mutants = [m for m in mutants if any(text in m.why for text in args.only)]
        if args.list:
            for m in mutants:
                print(
                    f"{module} {m.file} [{m.kind}] {m.why}: {m.old.strip()!r} -> {m.new.strip()!r}"
                )
            continue
        print(f"{module}: {len(mutants)} mutants, tests {_test_files(module)}", flush=True)
        baseline, outcomes = run_module(module, mutants, args.timeout)
        fresh = [
            {**asdict(o.mutant), "status": o.status, "seconds": o.seconds, "detail": o.detail}
            for o in outcomes
        ]
        # With --only, earlier results of the other mutants of this module are kept; a curated
        # mutant is one behaviour (its `why`), so a rerun with updated text replaces the old one.
        keep = [] if not args.only else previous.get(module, {}).get("mutants", [])
        keys = {_result_key(m) for m in fresh}
        merged = [m for m in keep if _result_key(m) not in keys] + fresh
        results["modules"][module] = {
            "baseline": baseline,
            "summary": _rate_dicts(merged),
            "mutants": merged,
        }
        print(f"{module}: {results['modules'][module]['summary']}", flush=True)
        write_report(results, args.out)
    return 0


def _result_key(mutant: dict) -> tuple:
    if mutant["kind"] == "curated":
        return ("curated", mutant["why"])
    return (mutant["file"], mutant["old"], mutant["new"])


if __name__ == "__main__":
    raise SystemExit(main())
