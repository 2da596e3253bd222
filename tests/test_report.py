"""The study report: render(results, out_dir) from results.json alone.

Numbers in captions and figures are checked against computations written here with explicit
loops (not the report's own helpers), on a synthetic results dict that follows schema 1.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from _report_results import make_results, modified, rendered_report
from decaylab.report import load_results, render
from decaylab.report import plots as P
from decaylab.report._format import fmt
from decaylab.report._results import read_results, trust_region
from decaylab.report.page import FIGURE_FILES


def _text(page) -> str:
    """The page as plain text (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")))


def _trust_by_loop(alphas, errors, tol=0.10):
    """Largest α whose error and every smaller α's error are ≤ tol (explicit loop)."""
    pairs = sorted(zip(alphas, errors, strict=True))
    best = None
    for i in range(len(pairs)):
        if all(e is not None and e <= tol for _, e in pairs[: i + 1]):
            best = pairs[i][0]
    return best


# --------------------------------------------------------------------------- the written files


def test_page_is_self_contained_and_embeds_the_written_figures():
    page = rendered_report()
    source = page.read_text(encoding="utf-8")
    files = sorted(p.name for p in (page.parent / "figures").iterdir())
    assert files == sorted(FIGURE_FILES.values())
    embedded = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', source)
    assert len(embedded) == 7
    on_disk = {(page.parent / "figures" / f).read_bytes() for f in files}
    assert {base64.b64decode(e) for e in embedded} == on_disk
    # nothing the browser would fetch: no external src/href, no <link>, no script, no url()
    assert not re.search(r'(src|href)="(?!data:|#)', source)
    assert "<link" not in source and "<script" not in source and "url(" not in source
    assert "@media print" in source and "break-inside: avoid" in source  # style.css inlined


def test_captions_state_this_runs_numbers():
    results = make_results()
    text = _text(rendered_report())
    l2, es, l1 = results["l2"], results["early_stopping"], results["l1"]
    top = _trust_by_loop(l2["alphas"], l2["relative_error"])
    assert f"holds (relative error ≤ 10 %) for α ≤ {fmt(top)}" in text
    first_out = min(a for a in l2["alphas"] if a > top)
    err = l2["relative_error"][l2["alphas"].index(first_out)]
    assert f"at α = {fmt(first_out)} the prediction is {fmt(100 * err)} % off" in text
    tau = es["best_step"]
    assert f"τ* = {tau:,}" in text
    assert f"α = 1/(ετ*) = {fmt(1 / (es['lr'] * tau))}" in text
    last = int(np.argmax(l1["alphas"]))
    assert (
        f"{l1['n_zero_predicted'][last]:,} zeros were predicted and "
        f"{l1['n_zero_measured'][last]:,} measured"
    ) in text
    eig = results["curvature"]["eigenvalues"]
    above_smallest = sum(1 for lam in eig if lam > min(l2["alphas"]))
    assert f"{above_smallest:,} directions have λ > α" in text
    assert "6 eigenvalues are negative" in text
    assert text.count("did NOT hold") >= 5  # the fixture departs from the theory at large α


def test_summary_lists_each_figures_verdict_and_the_timings():
    text = _text(rendered_report())
    for title in (
        "Spectrum of the Hessian",
        "Relative error of the prediction",
        "L1: predicted against measured zeros",
        "The weight-decay picture",
    ):
        assert title in text
    assert "curvature 12.3 s" in " ".join(text.split())
    assert "TheoryWarning: H has 6 negative eigenvalues at w0" in text


# --------------------------------------------------------------------------- figure content


@pytest.mark.parametrize("trust", ["partial", "none", "all"])
def test_trust_shading_spans_exactly_the_alphas_where_the_rule_holds(trust):
    results = make_results(trust=trust)
    l2 = results["l2"]
    expected = _trust_by_loop(l2["alphas"], l2["relative_error"])
    plot = P.relative_error(read_results(results))
    ax = plot.figure.axes[0]
    spans = [p for p in ax.patches if p.get_gid() == "trust-region"]
    if expected is None:
        assert spans == []
        assert "did NOT hold at any α" in plot.caption and plot.holds is False
        return
    (span,) = spans
    x0, x1 = sorted(span.get_path().transformed(span.get_patch_transform()).vertices[:, 0][[0, 2]])
    for alpha, err in zip(l2["alphas"], l2["relative_error"], strict=True):
        inside = x0 <= alpha <= x1
        rule = all(
            e <= 0.10 for a, e in zip(l2["alphas"], l2["relative_error"], strict=True) if a <= alpha
        )
        assert inside == rule, (alpha, err)
    assert x0 <= ax.get_xlim()[0]  # from the left edge of the axis
    assert ("did NOT" in plot.caption) == (trust != "all")


def test_trust_region_against_a_cumulative_product():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 8))
        alphas = np.sort(rng.choice(np.logspace(-6, 0, 30), n, replace=False))
        errors = rng.uniform(0, 0.2, n)
        errors[rng.random(n) < 0.1] = np.nan
        ok = np.cumprod(errors <= 0.1).astype(bool)  # NaN ≤ 0.1 is False
        expected = float(alphas[ok][-1]) if ok.any() else None
        shuffle = rng.permutation(n)  # the grid's order does not matter
        assert trust_region(alphas[shuffle], errors[shuffle]) == expected


def test_spectrum_groups_count_kept_shrunk_and_negative_directions():
    results = make_results()
    eig = np.array(results["curvature"]["eigenvalues"])
    alphas = np.array(results["l2"]["alphas"])
    groups = P.spectrum_groups(eig, alphas)
    counts = [int(mask.sum()) for mask, _, _ in groups]
    tol = 1e-6 * max(abs(x) for x in eig)
    kept = sum(1 for x in eig if x > max(alphas))
    shrunk = sum(1 for x in eig if tol < x <= min(alphas))
    negative = sum(1 for x in eig if x < -tol)
    assert counts[0] == kept and counts[2] == shrunk and counts[4] == negative
    assert sum(counts) == eig.size  # every eigenvalue in exactly one group
    assert all(
        mask.sum() == 0 or label.endswith(f"({int(mask.sum()):,})") for mask, _, label in groups
    )


def test_shrink_caption_names_the_first_alpha_where_theory_fails():
    results = make_results()
    l2 = results["l2"]
    first_bad = None
    for i, alpha in enumerate(l2["alphas"]):  # the grid is ascending
        gap = max(
            abs(m - p)
            for m, p in zip(l2["shrink_measured"][i], l2["shrink_predicted"][i], strict=True)
        )
        if gap > 0.1:
            first_bad = alpha
            break
    plot = P.shrink(read_results(results))
    assert first_bad is not None and plot.holds is False
    assert f"from α = {fmt(first_bad)} on it did NOT hold" in plot.caption


def test_picture_gaps_match_distances_in_the_plane():
    results = make_results()
    pic = results["picture"]
    expected = [
        math.dist(p, m) / math.dist(m, pic["w0"])
        for p, m in zip(pic["predicted"], pic["measured"], strict=True)
    ]
    gaps = P.picture_gaps(read_results(results).get("picture"))
    np.testing.assert_allclose(gaps, expected, rtol=1e-12)


def test_early_stopping_caption_flags_converged_directions():
    results = make_results()
    es = results["early_stopping"]
    alpha = 1 / (es["lr"] * es["best_step"])
    converged = sum(1 for a in es["equivalent_alpha_per_direction"] if a <= 1e-6 * alpha)
    plot = P.early_stopping(read_results(results))
    assert converged > 0
    assert f"along {converged} directions it is below" in plot.caption
    assert "scalar rule 1/(ετ) did NOT hold" in plot.caption and plot.holds is False


# --------------------------------------------------------------------------- missing and bad


def test_missing_phases_become_notes_and_stale_figures_go(tmp_path):
    out = tmp_path / "study"
    shutil.copytree(rendered_report().parent, out)
    results = make_results(drop=("curvature", "l2", "l1", "picture"))
    page = render(results, out)
    names = sorted(p.name for p in (out / "figures").iterdir())
    assert names == [FIGURE_FILES["early_stopping"]]
    text = _text(page)
    for name in ("curvature", "l2", "l1", "picture"):
        assert f"No {name} section in results.json" in text
    assert "no trust region was measured" in text
    assert len(re.findall(r"<img ", page.read_text(encoding="utf-8"))) == 1


def test_a_results_dict_with_no_phase_still_renders(tmp_path):
    bare = {"schema_version": 1, "task": {"name": "x"}}
    text = _text(render(bare, tmp_path / "r"))
    assert "No early_stopping section" in text and "The study raised no warnings" in text
    assert list((tmp_path / "r" / "figures").iterdir()) == []


def test_contradictions_and_nulls_are_noted_not_hidden(tmp_path):
    results = make_results()
    errors = list(results["l2"]["relative_error"])
    errors[1] = None  # a retraining that did not finish
    results = modified(results, l2__relative_error=errors, l2__trust_region_alpha_max=0.1)
    study = read_results(results)
    assert any("relative_error has 1 null entry" in n for n in study.notes)
    assert any(
        "trust_region_alpha_max is 0.1, but the relative errors give 1×10⁻⁵" in n
        for n in study.notes
    )
    plot = P.relative_error(study)
    assert plot.holds is False


def test_unconverged_reference_and_hostile_text_are_shown_safely(tmp_path):
    results = make_results(drop=("curvature", "l2", "l1", "early_stopping", "picture"))
    results = modified(
        results, reference__converged=False, task__description="<script>alert(1)</script>"
    )
    source = render(results, tmp_path / "r").read_text(encoding="utf-8")
    assert "The reference did NOT converge" in source
    assert "<script>" not in source and "&lt;script&gt;alert(1)&lt;/script&gt;" in source


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: [1, 2], "results must be a dict"),
        (lambda r: r | {"schema_version": 2}, "results.schema_version must be 1"),
        (lambda r: r | {"l2": "oops"}, "results.l2 must be an object or null"),
        (
            lambda r: modified(r, l2__gamma=[1.0, 2.0]),
            "results.l2.gamma has 2 entries but results.l2.alphas has 9",
        ),
        (
            lambda r: modified(r, l1__zero_recall=["high"] * 7),
            r"results.l1.zero_recall\[0\] must be a number or null",
        ),
        (lambda r: modified(r, l2__alphas=[-1.0] * 9), "results.l2.alphas must be positive"),
        (
            lambda r: modified(r, picture__J=[[0.0] * 3] * 2),
            "results.picture.J has 2 rows, expected 41",
        ),
        (
            lambda r: modified(r, l2__shrink_measured=[[0.5]] * 9),
            "results.l2.shrink_measured has 1 columns, expected 10",
        ),
    ],
)
def test_bad_results_name_the_field_before_anything_is_written(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        render(change(make_results()), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="out_dir must be a directory"):
        render({"schema_version": 1}, blocker / "sub")


def test_load_results_reads_a_directory_and_reports_bad_files(tmp_path):
    results = make_results(drop=("picture",))
    (tmp_path / "results.json").write_text(json.dumps(results), encoding="utf-8")
    assert load_results(tmp_path) == results
    with pytest.raises(ValueError, match="does not exist"):
        load_results(tmp_path / "nothing")
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_results(tmp_path / "bad.json")


def test_trust_rule_follows_the_studys_configured_threshold():
    results = make_results()
    results["config"]["l2"]["trust_threshold"] = 0.3
    l2 = results["l2"]
    expected = _trust_by_loop(l2["alphas"], l2["relative_error"], tol=0.3)
    results["l2"]["trust_region_alpha_max"] = expected
    study = read_results(results)
    assert not any("trust_region_alpha_max" in n for n in study.notes)  # agrees at 30 %
    assert f"holds (relative error ≤ 30 %) for α ≤ {fmt(expected)}" in P.trust_words(
        study.get("l2")
    )
    with pytest.raises(ValueError, match="results.config.l2.trust_threshold must be positive"):
        read_results(modified(results, config__l2={"trust_threshold": -1}))


def test_caption_tells_a_resolved_gap_from_an_uncertain_measurement():
    results = make_results()
    l2 = results["l2"]
    retrain = [1e-6] * len(l2["alphas"])
    retrain[0] = 0.05  # gap 0.02 + retraining error 0.05 ≤ 10 %: as close as one can tell
    retrain[-1] = 0.9  # gap 1.26, retraining error 0.9: the measurement is uncertain
    caption = P.relative_error(read_results(modified(results, l2__retrain_error=retrain))).caption
    first, last = fmt(l2["alphas"][0]), fmt(l2["alphas"][-1])
    assert f"At α = {first} the measured gap is at the level of the retraining error" in caption
    assert f"At α = {last} the retraining error is more than a tenth" in caption


def test_a_real_study_output_reads_and_draws():
    """results.json of `decaylab run --task diabetes` (branch study at 625f7e3, seed 0).

    The linear task, where the quadratic theory is exact: the L2 checks must hold, and every
    figure is drawn from the study's real keys (extra keys ignored, nulls as gaps).
    """
    path = Path(__file__).parent / "data" / "report_diabetes_results.json"
    results = load_results(path)
    study = read_results(results)
    plots = {p.key: p for p in P.make_plots(study)}
    assert sorted(plots) == sorted(FIGURE_FILES)
    l2 = results["l2"]
    assert _trust_by_loop(l2["alphas"], l2["relative_error"]) == max(l2["alphas"])
    assert plots["relative_error"].holds and plots["shrink"].holds
    assert f"for α ≤ {fmt(max(l2['alphas']))}, 5 of the 5 grid values" in (
        plots["relative_error"].caption
    )
