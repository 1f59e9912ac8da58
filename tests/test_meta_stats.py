"""Tests of the meta-analysis statistics (``analyses/meta_stats.py``) and of its notebook.

The statistics are checked on cases small enough to compute by hand, with the arithmetic
written out next to each expected value; the notebook is run end to end through the real CLI
on a copy of the project reduced to this one analysis.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "analyses"))

import meta_stats as ms  # noqa: E402

HEADER = list(ms.COLUMNS)
LABEL = "analyses/data/h2h_comparisons.csv"


def make_row(**changes: str) -> dict[str, str]:
    """A valid row (AUROC on the unit scale, with CIs); keyword arguments replace cells."""
    row = {column: "" for column in HEADER}
    row.update(
        source="arXiv:0000.00001",
        table_or_figure="Table 1",
        modality="pathology",
        domain_model="PathModel",
        general_model="BaseModel",
        relation="continued-pretraining-of-base",
        task="Task A",
        metric="AUROC",
        higher_is_better="TRUE",
        domain_score="0.80",
        general_score="0.75",
        n_test="",
        setting="zero-shot",
        scale="unit",
        domain_ci_low="0.78",
        domain_ci_high="0.82",
        general_ci_low="0.72",
        general_ci_high="0.78",
        notes="made up",
    )
    row.update(changes)
    return row


def csv_text(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=HEADER, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def parse(rows: list[dict[str, str]]) -> list[ms.Comparison]:
    return ms.parse_rows(io.StringIO(csv_text(rows)), LABEL)


def one(**changes: str) -> ms.Comparison:
    return parse([make_row(**changes)])[0]


NO_CI = dict(domain_ci_low="", domain_ci_high="", general_ci_low="", general_ci_high="")


# ------------------------------------------------------------------------------------------
# Effects: scale and sign
# ------------------------------------------------------------------------------------------


def test_effect_in_points_on_both_scales():
    # unit: (0.80 - 0.75) x 100 = 5 points; percent: 80 - 75 = 5 points.
    unit = ms.effect(one())
    percent = ms.effect(
        one(
            scale="percent",
            domain_score="80",
            general_score="75",
            domain_ci_low="78",
            domain_ci_high="82",
            general_ci_low="72",
            general_ci_high="78",
        )
    )
    assert unit.d == pytest.approx(5.0, abs=1e-12)
    assert percent.d == pytest.approx(5.0, abs=1e-12)
    assert unit.se == pytest.approx(percent.se, abs=1e-12)  # the CIs are converted like the scores


def test_lower_is_better_flips_the_sign_but_not_the_se():
    better = ms.effect(one())
    flipped = ms.effect(one(higher_is_better="FALSE"))
    assert flipped.d == pytest.approx(-better.d)
    # CI widths carry no sign: (82 - 78) / 3.92 and (78 - 72) / 3.92 either way.
    expected_se = math.hypot(4 / 3.92, 6 / 3.92)
    assert better.se == pytest.approx(expected_se) and flipped.se == pytest.approx(expected_se)
    # d = 5 > 1.96 x 1.84 = 3.60, so a win; lower-is-better makes the same numbers a loss.
    assert (better.verdict, flipped.verdict) == ("win", "loss")


# ------------------------------------------------------------------------------------------
# Standard errors: each rule, and their order
# ------------------------------------------------------------------------------------------


def test_se_from_ci():
    # unit CI [0.70, 0.90] = 20 points wide: 20 / (2 x 1.96) = 5.10204...
    se, rule = ms.score_se(0.8, scale="unit", metric="AUROC", n_test=None, ci=(0.70, 0.90))
    assert rule == "ci" and se == pytest.approx(20 / 3.92)


@pytest.mark.parametrize("scale, score", [("percent", 80.0), ("unit", 0.8)])
def test_binomial_se_uses_the_score_as_a_proportion(scale, score):
    # p = 0.8 on either scale, n = 100: 100 x sqrt(0.8 x 0.2 / 100) = 100 x 0.04 = 4 points.
    se, rule = ms.score_se(score, scale=scale, metric="accuracy (%)", n_test=100)
    assert rule == "binomial" and se == pytest.approx(4.0)


@pytest.mark.parametrize("scale, sd", [("percent", 3.0), ("unit", 0.03)])
def test_se_from_between_seed_sd(scale, sd):
    # 3 points / sqrt(3 seeds) = sqrt(3) = 1.7320508...
    se, rule = ms.score_se(1.0, scale=scale, metric="F1", n_test=None, sd=sd)
    assert rule == "sd" and se == pytest.approx(math.sqrt(3))


def test_se_unknown_without_any_rule():
    assert ms.score_se(0.5, scale="unit", metric="Dice", n_test=None) == (None, None)


def test_rule_order():
    common = dict(scale="percent", n_test=100)
    assert ms.SE_RULES == ("ci", "binomial+sd", "binomial", "sd")
    # A CI wins over everything; an accuracy with n_test and an SD combines the two variances.
    assert ms.score_se(80, metric="accuracy", ci=(70, 90), sd=3.0, **common)[1] == "ci"
    assert ms.score_se(80, metric="accuracy", sd=3.0, **common)[1] == "binomial+sd"
    assert ms.score_se(80, metric="accuracy", **common)[1] == "binomial"
    # n_test alone does not make a binomial SE: the metric must name an accuracy.
    assert ms.score_se(80, metric="AUROC", sd=3.0, **common)[1] == "sd"
    assert ms.score_se(80, metric="AUROC", **common) == (None, None)
    # The match is case-insensitive and also covers e.g. balanced accuracy.
    assert ms.score_se(80, metric="Balanced Accuracy", **common)[1] == "binomial"
    # Without n_test an accuracy falls through to the SD rule alone.
    assert ms.score_se(80, metric="accuracy", scale="percent", n_test=None, sd=3.0)[1] == "sd"


@pytest.mark.parametrize("scale, score, sd", [("percent", 80.0, 3.0), ("unit", 0.8, 0.03)])
def test_binomial_and_seed_variances_add(scale, score, sd):
    # Binomial: 100 x sqrt(0.8 x 0.2 / 100) = 4 points; seeds: 3 / sqrt(3) = sqrt(3) points;
    # together sqrt(16 + 3) = sqrt(19) = 4.3589 -- larger than either, never replaced by the SD.
    se, rule = ms.score_se(score, scale=scale, metric="accuracy", n_test=100, sd=sd)
    assert rule == "binomial+sd" and se == pytest.approx(math.sqrt(19.0))
    alone, _ = ms.score_se(score, scale=scale, metric="accuracy", n_test=100)
    assert se > alone == pytest.approx(4.0)


def test_a_tiny_seed_sd_does_not_shrink_the_se():
    # MEDITRON-70B vs Llama-2-70B on MedMCQA (row 130): sd 0.51 and 0.21 on 4,183 items. With the
    # SD taking precedence the SE of d would be sqrt(0.51^2 + 0.21^2) / sqrt(3) = 0.32 and d = 0.9
    # a "win"; with the variances added it stays about the binomial 1.1 and a tie.
    row = one(
        scale="percent",
        metric="accuracy (%)",
        domain_score="53.3",
        general_score="52.4",
        n_test="4183",
        domain_sd="0.51",
        general_sd="0.21",
        **NO_CI,
    )
    e = ms.effect(row)
    binomial = math.hypot(100 * math.sqrt(0.533 * 0.467 / 4183), 100 * math.sqrt(0.524 * 0.476 / 4183))
    seeds = math.hypot(0.51, 0.21) / math.sqrt(3)
    assert (e.rule_domain, e.rule_general) == ("binomial+sd", "binomial+sd")
    assert e.se == pytest.approx(math.hypot(binomial, seeds)) and e.verdict == "tie"


def test_max_seed_sd():
    # Three accuracies in [0, 100] with mean 49.1: the widest are (0, 47.3, 100), sample SD
    # sqrt((49.1^2 + 1.8^2 + 50.9^2) / 2) = 50.02; so an SD of 51.1 (row 124) is impossible.
    expected = math.sqrt((49.1**2 + 1.8**2 + 50.9**2) / 2)
    assert ms.max_seed_sd(49.1, scale="percent", metric="accuracy (%)") == pytest.approx(expected)
    assert not ms.feasible_sd(51.1, 49.1, scale="percent", metric="accuracy (%)")
    assert ms.feasible_sd(15.1, 69.3, scale="percent", metric="accuracy (%)") and ms.feasible_sd(
        None, 0.0, scale="unit", metric="x"
    )
    # Mean 50: (0, 50, 100), SD 50; at a bound nothing can vary; the unit scale is 100 times smaller.
    assert ms.max_seed_sd(50.0, scale="percent", metric="accuracy") == pytest.approx(50.0)
    assert ms.max_seed_sd(100.0, scale="percent", metric="accuracy") == pytest.approx(0.0, abs=1e-9)
    assert ms.max_seed_sd(0.5, scale="unit", metric="accuracy") == pytest.approx(0.5)
    # Not an accuracy: the scale's whole range, [-1, 1] on the unit scale (kappa, MCC ...).
    assert ms.max_seed_sd(0.0, scale="unit", metric="kappa") == pytest.approx(1.0)


def test_an_infeasible_sd_is_left_out_and_named():
    row = one(
        scale="percent",
        metric="accuracy (%)",
        domain_score="69.3",
        general_score="49.1",
        n_test="500",
        domain_sd="15.1",
        general_sd="51.1",
        **NO_CI,
    )
    e = ms.effect(row)
    assert e.infeasible_sd == ("general",) and (e.rule_domain, e.rule_general) == ("binomial+sd", "binomial")
    domain = math.hypot(100 * math.sqrt(0.693 * 0.307 / 500), 15.1 / math.sqrt(3))
    general = 100 * math.sqrt(0.491 * 0.509 / 500)
    assert e.se == pytest.approx(math.hypot(domain, general)) and e.verdict == "win"  # 20.2 - 1.96 x 9.23 > 0
    assert ms.effect(one()).infeasible_sd == ()


def test_rules_apply_to_each_score_independently():
    # The domain score has a CI; the general score, an accuracy with n_test, gets the binomial rule.
    row = one(metric="accuracy", n_test="100", general_ci_low="", general_ci_high="", general_score="0.5")
    e = ms.effect(row)
    # domain: (82 - 78) / 3.92 = 1.0204; general: 100 x sqrt(0.25 / 100) = 5.
    assert (e.rule_domain, e.rule_general) == ("ci", "binomial")
    assert e.se == pytest.approx(math.hypot(4 / 3.92, 5.0))


def test_ci_for_one_score_only_leaves_the_se_unknown():
    e = ms.effect(one(general_ci_low="", general_ci_high=""))
    assert (e.rule_domain, e.rule_general) == ("ci", None)
    assert e.se is None and not e.known_se and e.verdict == "better"


def test_sd_only_row():
    e = ms.effect(
        one(
            scale="percent",
            metric="accuracy (%)",
            domain_score="60",
            general_score="50",
            domain_sd="3",
            general_sd="4",
            **NO_CI,
        )
    )
    # No n_test, so the SD rule alone: sqrt(3^2 + 4^2) / sqrt(3) = 5 / 1.732 = 2.887; d = 10 > 1.96 x 2.887 = 5.66.
    assert (e.rule_domain, e.rule_general) == ("sd", "sd")
    assert e.se == pytest.approx(5 / math.sqrt(3)) and e.verdict == "win"


def test_d_exactly_zero():
    tie = ms.effect(one(general_score="0.80", general_ci_low="0.78", general_ci_high="0.82"))
    assert tie.d == 0.0 and tie.verdict == "tie"
    equal = ms.effect(one(general_score="0.80", **NO_CI))
    assert equal.d == 0.0 and equal.se is None and equal.verdict == "equal"


def test_a_zero_se_counts_as_unknown():
    # Degenerate CIs [0.8, 0.8] and [0.75, 0.75]: no information about sampling error.
    e = ms.effect(one(domain_ci_low="0.80", domain_ci_high="0.80", general_ci_low="0.75", general_ci_high="0.75"))
    assert e.se is None and e.verdict == "better"


# ------------------------------------------------------------------------------------------
# Verdicts at the boundary
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "d, se, expected",
    [
        (1.96, 1.0, "tie"),  # lower bound exactly 0: not above 0
        (1.9600001, 1.0, "win"),
        (-1.96, 1.0, "tie"),  # upper bound exactly 0
        (-1.9600001, 1.0, "loss"),
        (0.0, 1.0, "tie"),
        (3.0, 2.0, "tie"),  # 3 - 3.92 < 0 < 3 + 3.92
        (0.5, None, "better"),
        (-0.5, None, "worse"),
        (0.0, None, "equal"),
    ],
)
def test_verdict(d, se, expected):
    assert ms.verdict(d, se) == expected


def test_count_verdicts_lists_every_category():
    counts = ms.count_verdicts([ms.effect(one())])
    assert counts == {"win": 1, "tie": 0, "loss": 0, "better": 0, "worse": 0, "equal": 0}


# ------------------------------------------------------------------------------------------
# DerSimonian-Laird
# ------------------------------------------------------------------------------------------


def test_dl_without_heterogeneity():
    # d = (1, 2), se = (1, 1): w = (1, 1), fixed mean 1.5, Q = 0.25 + 0.25 = 0.5 < k - 1 = 1,
    # so tau^2 = 0 and I^2 = 0; pooled 1.5 with SE sqrt(1/2), CI 1.5 -+ 1.96 x 0.70711.
    p = ms.dersimonian_laird([1.0, 2.0], [1.0, 1.0])
    assert p.k == 2 and p.q == pytest.approx(0.5)
    assert p.tau2 == 0.0 and p.i2 == 0.0
    assert p.d == pytest.approx(1.5) and p.se == pytest.approx(math.sqrt(0.5))
    assert (p.ci_low, p.ci_high) == pytest.approx((1.5 - 1.96 * math.sqrt(0.5), 1.5 + 1.96 * math.sqrt(0.5)))


def test_dl_with_heterogeneity():
    # d = (0, 4, 10), se = (1, 2, 2), worked in exact fractions:
    d = [Fraction(0), Fraction(4), Fraction(10)]
    w = [Fraction(1), Fraction(1, 4), Fraction(1, 4)]  # 1 / se^2
    sum_w = sum(w)  # 3/2
    fixed = sum(wi * di for wi, di in zip(w, d, strict=False)) / sum_w  # (0 + 1 + 5/2) / (3/2) = 7/3
    q = sum(wi * (di - fixed) ** 2 for wi, di in zip(w, d, strict=False))  # 49/9 + 25/36 + 529/36 = 375/18 = 20.833
    assert fixed == Fraction(7, 3) and q == Fraction(375, 18)
    c = sum_w - sum(wi**2 for wi in w) / sum_w  # 3/2 - (9/8)/(3/2) = 3/4
    tau2 = (q - 2) / c  # (375/18 - 2) / (3/4) = 226/9 = 25.11
    i2 = (q - 2) / q  # (339/18) / (375/18) = 113/125 = 0.904
    assert c == Fraction(3, 4) and tau2 == Fraction(226, 9) and i2 == Fraction(113, 125)
    w_star = [1 / (Fraction(1) + tau2), 1 / (Fraction(4) + tau2), 1 / (Fraction(4) + tau2)]  # 9/235, 9/262, 9/262
    pooled = sum(wi * di for wi, di in zip(w_star, d, strict=False)) / sum(w_star)
    se = math.sqrt(1 / sum(w_star))

    p = ms.dersimonian_laird([0.0, 4.0, 10.0], [1.0, 2.0, 2.0])
    assert p.q == pytest.approx(float(q)) and p.tau2 == pytest.approx(float(tau2)) and p.i2 == pytest.approx(0.904)
    assert p.d == pytest.approx(float(pooled)) and p.se == pytest.approx(se)
    assert p.d == pytest.approx(126 / 262 / (9 / 235 + 18 / 262))  # = 4.4945...
    assert p.ci_low == pytest.approx(p.d - 1.96 * se) and p.ci_high == pytest.approx(p.d + 1.96 * se)


def test_dl_single_study_and_identical_effects():
    single = ms.dersimonian_laird([3.0], [2.0])
    assert (single.d, single.se, single.tau2, single.i2) == (3.0, 2.0, 0.0, 0.0)
    same = ms.dersimonian_laird([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])  # Q = 0: I^2 defined as 0
    assert same.q == 0.0 and same.i2 == 0.0 and same.d == pytest.approx(1.0)


def test_dl_rejects_non_positive_se():
    with pytest.raises(ValueError, match="positive"):
        ms.dersimonian_laird([1.0, 2.0], [1.0, 0.0])


def test_groups_below_min_k_are_too_small():
    rows = ms.effects(parse([make_row(modality="pathology")] * 3 + [make_row(modality="EHR")] * 2))
    by = {g.group: g for g in ms.pool_groups(rows, "modality", min_k=3)}
    assert by["pathology"].pooled is not None and by["pathology"].k == 3
    assert by["EHR"].pooled is None and by["EHR"].note == "too small (k < 3)" and by["EHR"].k == 2


def test_chi2_sf_matches_closed_forms():
    # df = 2: exp(-x/2); df = 1: erfc(sqrt(x/2)); the 95% point of chi2_1 is 3.8415.
    assert ms.chi2_sf(3.0, 2) == pytest.approx(math.exp(-1.5), rel=1e-12)
    assert ms.chi2_sf(8.0, 1) == pytest.approx(math.erfc(2.0), rel=1e-9)
    assert ms.chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-9)
    assert ms.chi2_sf(0.0, 3) == 1.0
    with pytest.raises(ValueError):
        ms.chi2_sf(1.0, 0)


def group(name: str, d: float, se: float, k: int = 3) -> ms.GroupPool:
    return ms.GroupPool("relation", name, k, k, ms.Pooled(k, d, se, d - 1.96 * se, d + 1.96 * se, 0.0, 0.0, 0.0))


def test_subgroup_difference_compares_every_pooled_group():
    # Two groups d = (0, 4), se = (1, 1): mean 2, Q = 2^2 + 2^2 = 8 on 1 df, p = erfc(2) = 0.00468.
    test = ms.subgroup_difference([group("a", 0.0, 1.0), group("b", 4.0, 1.0)])
    assert (test.groups, test.q, test.df) == (("a", "b"), pytest.approx(8.0), 1)
    assert test.p == pytest.approx(math.erfc(2.0))
    # Three groups d = (0, 1, 5), se = (1, 1, 2): w = (1, 1, 1/4), weighted mean (0 + 1 + 5/4) / 2.25 = 1,
    # Q = 1 x 1 + 0 + (1/4) x 16 = 5 on 2 df, p = exp(-2.5). A group too small to pool is left out.
    too_small = ms.GroupPool("relation", "d", 2, 2, None, "too small (k < 3)")
    test = ms.subgroup_difference([group("a", 0.0, 1.0), group("b", 1.0, 1.0), group("c", 5.0, 2.0), too_small])
    assert test.groups == ("a", "b", "c") and test.df == 2
    assert test.q == pytest.approx(5.0) and test.p == pytest.approx(math.exp(-2.5))
    # Fewer than two pooled groups: nothing to compare.
    assert ms.subgroup_difference([group("a", 0.0, 1.0), too_small]) is None
    assert ms.subgroup_difference([]) is None


def test_subgroup_difference_on_pooled_groups():
    rows = ms.effects(
        parse(
            [make_row(relation="continued-pretraining-of-base")] * 3
            + [
                make_row(
                    relation="from-scratch-domain", domain_score="0.90", domain_ci_low="0.88", domain_ci_high="0.92"
                )
            ]
            * 3
            + [make_row(relation="unrelated-general-baseline")] * 2
        )
    )
    groups = ms.pool_groups(rows, "relation", min_k=3)
    test = ms.subgroup_difference(groups)
    assert test.groups == ("continued-pretraining-of-base", "from-scratch-domain") and test.p < 1e-6


# ------------------------------------------------------------------------------------------
# Sources and references
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, key",
    [
        ("arXiv:2311.16079", "arxiv:2311.16079"),
        ("arxiv:2311.16079v2", "arxiv:2311.16079v2"),
        ("DOI:10.1038/S41591-024-02857-3", "doi:10.1038/s41591-024-02857-3"),
        (
            "kaiko-ai/eva leaderboard (docs/leaderboards.md @61dc22f8)",
            "url:https://github.com/kaiko-ai/eva/blob/61dc22f8/docs/leaderboards.md",
        ),
        (
            "kaiko-ai/eva leaderboard (tools/data/leaderboards/radiology.csv @73b61a79)",
            "url:https://github.com/kaiko-ai/eva/blob/73b61a79/tools/data/leaderboards/radiology.csv",
        ),
        ("some leaderboard", None),
        ("kaiko-ai/eva leaderboard (docs/leaderboards.md)", None),  # no commit: not reproducible
    ],
)
def test_reference_id(source, key):
    assert ms.reference_id(source) == key


def test_the_shipped_sources_all_have_references():
    table = ms.load_table(REPO / "analyses" / "data" / "h2h_comparisons.csv")
    refs = ms.load_references(REPO / "content" / "manual-references.json")
    ms.check_references(table, refs, LABEL, "content/manual-references.json")
    assert all(ms.reference_id(row.source) in refs for row in table)


def test_a_source_without_a_reference_is_named_by_its_first_row(tmp_path: Path):
    references = tmp_path / "refs.json"
    references.write_text(
        json.dumps([{"id": "arxiv:0000.00001", "type": "article"}, {"id": "DOI:10.1/AB", "type": "x"}])
    )
    refs = ms.load_references(references)
    assert set(refs) == {"arxiv:0000.00001", "doi:10.1/ab"}  # DOIs compared in lower case
    table = parse(
        [make_row(), make_row(source="DOI:10.1/ab")]
        + [make_row(source="arXiv:2999.99999")] * 2
        + [make_row(source="a leaderboard somewhere")]
    )
    with pytest.raises(ms.DataError) as info:
        ms.check_references(table, refs, LABEL, "content/manual-references.json")
    assert str(info.value).splitlines() == [
        f"{LABEL} row 4, column \"source\": 'arXiv:2999.99999' (and 1 more row(s) of this source) has no reference: "
        'add a CSL JSON item with "id": "arxiv:2999.99999" to content/manual-references.json',
        f"{LABEL} row 6, column \"source\": 'a leaderboard somewhere' cannot be cited: write the source as "
        + ms.SOURCE_FORMS,
    ]


def test_source_labels_and_cell_citations_never_make_stray_citations():
    label = ms.source_label("kaiko-ai/eva leaderboard (docs/leaderboards.md @61dc22f8)")
    assert label == "kaiko-ai/eva leaderboard (docs/leaderboards.md, commit 61dc22f8)"
    assert "@" not in ms.source_label("someone@example.org")
    assert ms.cell_citation("arxiv:2311.16079") == "@{arxiv:2311.16079}"
    assert (
        ms.cell_citation("url:https://github.com/a/b/blob/c0ffee1/x.md")
        == "@{url:https://github.com/a/b/blob/c0ffee1/x.md}"
    )
    # The table renderer escapes "_" (and other Markdown characters): such a key cannot be cited from a cell.
    assert ms.cell_citation("doi:10.1000/a_b") is None
    assert ms.citations(["a", "b", "a"]) == "[@{a}; @{b}]" and ms.citations([]) == ""


def test_modality_classes():
    assert ms.is_image_modality("pathology") and ms.is_image_modality("imaging-endoscopy")
    assert not ms.is_image_modality("multimodal") and not ms.is_image_modality("EHR")
    assert "EHR" in ms.SEQUENCE_AND_RECORD_MODALITIES and "genomics" in ms.SEQUENCE_AND_RECORD_MODALITIES


# ------------------------------------------------------------------------------------------
# Schema: bad rows are named by CSV line and column
# ------------------------------------------------------------------------------------------


def test_the_shipped_table_is_valid():
    table = ms.load_table(REPO / "analyses" / "data" / "h2h_comparisons.csv")
    assert len(table) == 211 and table[0].line == 2 and table[-1].line == 212


def bad(rows: list[dict[str, str]]) -> str:
    with pytest.raises(ms.DataError) as info:
        parse(rows)
    return str(info.value)


def test_bad_scale_is_reported_with_line_and_column():
    message = bad([make_row(), make_row(scale="percnt")])
    assert message == f"{LABEL} row 3, column \"scale\": 'percnt' is not one of percent, unit"


@pytest.mark.parametrize(
    "changes, column, reason",
    [
        ({"relation": "fine-tuned-base"}, "relation", "'fine-tuned-base' is not one of continued-pretraining"),
        ({"setting": "few-shot"}, "setting", "'few-shot' is not one of zero-shot, few-shot <k>"),
        ({"setting": "few-shot 0"}, "setting", "is not one of"),
        ({"higher_is_better": "yes"}, "higher_is_better", "'yes' is not one of TRUE, FALSE"),
        ({"domain_score": "0.8o"}, "domain_score", "'0.8o' is not a number"),
        ({"general_score": ""}, "general_score", "is empty"),
        ({"source": " "}, "source", "is empty"),
        ({"n_test": "12.5"}, "n_test", "'12.5' is not a positive whole number"),
        ({"domain_ci_high": ""}, "domain_ci_high", "is empty while domain_ci_low is given"),
        ({"general_ci_low": "0.79", "general_ci_high": "0.77"}, "general_ci_low", "0.79 is above general_ci_high"),
        ({"general_score": "0.70"}, "general_score", "0.7 lies outside its 95% CI [0.72, 0.78]"),
        ({"domain_score": "80", **NO_CI}, "domain_score", "80 is outside [-1, 1], the range of scale 'unit'"),
        ({"domain_sd": "-1", **NO_CI}, "domain_sd", "-1 is negative"),
        ({"metric": "accuracy", "general_score": "-0.1", **NO_CI}, "general_score", "is not an accuracy"),
    ],
)
def test_bad_cells(changes, column, reason):
    message = bad([make_row(), make_row(), make_row(**changes)])
    assert message.startswith(f'{LABEL} row 4, column "{column}": ')
    assert reason in message


def test_every_problem_is_listed_in_line_and_column_order():
    message = bad([make_row(scale="percnt", relation="x"), make_row(), make_row(setting="many-shot")])
    assert message.splitlines() == [
        f"{LABEL} row 2, column \"relation\": 'x' is not one of continued-pretraining-of-base, from-scratch-domain, "
        "unrelated-general-baseline",
        f"{LABEL} row 2, column \"scale\": 'percnt' is not one of percent, unit",
        f"{LABEL} row 4, column \"setting\": 'many-shot' is not one of zero-shot, few-shot <k>, fine-tuned, "
        "linear-probe, frozen-probe",
    ]


def test_line_numbers_follow_multi_line_fields():
    # A note spanning three lines: the next record starts on line 5, not 3.
    message = bad([make_row(notes="first\nsecond\nthird"), make_row(scale="percnt")])
    assert 'row 5, column "scale"' in message
    # A bad record that itself spans lines 3-4 is named by the line it starts on.
    message = bad([make_row(), make_row(scale="percnt", notes="first\nsecond")])
    assert 'row 3, column "scale"' in message


def test_missing_column_is_reported_on_the_header():
    text = csv_text([make_row()]).replace(",notes", "", 1)
    with pytest.raises(ms.DataError, match=r'row 1, column "notes": missing from the header'):
        ms.parse_rows(io.StringIO(text), LABEL)


def test_new_modality_source_and_setting_flow_through():
    rows = parse(
        [make_row()] * 3
        + [
            make_row(
                modality="genomics",
                source="arXiv:2999.99999",
                setting="few-shot 10",
                domain_score="0.90",
                general_score="0.60",
                domain_ci_low="0.88",
                domain_ci_high="0.92",
                general_ci_low="0.58",
                general_ci_high="0.62",
            )
        ]
        * 3
    )
    effects = ms.effects(rows)
    by_modality = {g.group: g for g in ms.pool_groups(effects, "modality")}
    assert by_modality["genomics"].k == 3 and by_modality["genomics"].pooled.d == pytest.approx(30.0)
    settings = [g.group for g in ms.pool_groups(effects, "setting", order=ms.setting_order)]
    assert settings == ["zero-shot", "few-shot 10"]
    assert sorted(["fine-tuned", "few-shot 10", "few-shot 3", "zero-shot"], key=ms.setting_order) == [
        "zero-shot",
        "few-shot 3",
        "few-shot 10",
        "fine-tuned",
    ]


# ------------------------------------------------------------------------------------------
# Cluster bootstrap
# ------------------------------------------------------------------------------------------

D = [2.0, -1.0, 4.0, 0.5, 3.0, -2.5]
SE = [1.0, 0.5, 1.5, 0.4, 1.0, 2.0]
VERDICTS = [ms.verdict(d, se) for d, se in zip(D, SE, strict=False)]  # win, loss, win, tie, win, tie
SOURCES = ["a", "a", "b", "b", "c", "d"]


def test_one_source_gives_identical_resamples_equal_to_the_point_estimate():
    boot = ms.cluster_bootstrap(D, SE, VERDICTS, ["only"] * len(D), n_resamples=64, seed=3, device="cpu")
    point = ms.dersimonian_laird(D, SE).d
    assert boot.n_resamples == 64 and boot.n_clusters == 1 and boot.device == "cpu"
    assert np.all(boot.pooled_d == boot.pooled_d[0]) and boot.pooled_d[0] == pytest.approx(point, abs=1e-12)
    assert np.all(boot.frac_win == 3 / 6) and np.all(boot.frac_tie == 2 / 6) and np.all(boot.frac_loss == 1 / 6)


def test_bootstrap_is_deterministic_for_a_seed():
    first = ms.cluster_bootstrap(D, SE, VERDICTS, SOURCES, n_resamples=500, seed=7, device="cpu")
    again = ms.cluster_bootstrap(D, SE, VERDICTS, SOURCES, n_resamples=500, seed=7, device="cpu")
    other = ms.cluster_bootstrap(D, SE, VERDICTS, SOURCES, n_resamples=500, seed=8, device="cpu")
    assert np.array_equal(first.pooled_d, again.pooled_d) and np.array_equal(first.frac_win, again.frac_win)
    assert not np.array_equal(first.pooled_d, other.pooled_d)
    total = first.frac_win + first.frac_tie + first.frac_loss
    assert np.allclose(total, 1.0)
    assert first.frac_win.min() >= 0 and first.frac_win.max() <= 1


def test_chunked_resamples_are_the_same_resamples():
    # Chunking bounds memory; it must not change which statistic each resample gets.
    whole = ms.cluster_bootstrap(D, SE, VERDICTS, SOURCES, n_resamples=300, seed=1, device="cpu")
    chunked = ms.cluster_bootstrap(
        D, SE, VERDICTS, SOURCES, n_resamples=300, seed=1, device="cpu", chunk_elements=6 * 7
    )  # 7 resamples per chunk
    assert chunked.pooled_d.shape == (300,)
    # Both draw from one generator in order, so the first chunk's resamples match exactly.
    assert np.allclose(whole.pooled_d[:7], chunked.pooled_d[:7], rtol=0, atol=1e-12)


def test_weighted_dl_equals_dl_on_the_repeated_rows():
    counts = torch.tensor([[2.0, 1.0, 0.0, 3.0, 1.0, 0.0], [1.0] * 6], dtype=torch.float64)
    got = ms.weighted_dersimonian_laird(
        counts, torch.tensor(D, dtype=torch.float64), torch.tensor(SE, dtype=torch.float64)
    )
    repeated = [i for i, c in enumerate([2, 1, 0, 3, 1, 0]) for _ in range(c)]
    expected = ms.dersimonian_laird([D[i] for i in repeated], [SE[i] for i in repeated]).d
    assert got[0].item() == pytest.approx(expected, abs=1e-12)
    assert got[1].item() == pytest.approx(ms.dersimonian_laird(D, SE).d, abs=1e-12)


def test_bootstrap_takes_only_rows_with_a_verdict():
    with pytest.raises(ValueError, match="known SE"):
        ms.cluster_bootstrap([1.0], [1.0], ["better"], ["a"], n_resamples=10, seed=0, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_requested_without_cuda_is_an_error():
    assert ms.resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        ms.resolve_device("cuda")


def test_percentile_ci():
    assert ms.percentile_ci(np.arange(101.0)) == pytest.approx((2.5, 97.5))


# ------------------------------------------------------------------------------------------
# Sensitivity
# ------------------------------------------------------------------------------------------


def test_leave_one_source_out_and_own_base_subset():
    rows = parse(
        [make_row(source="s1")] * 2
        + [make_row(source="s2", domain_score="0.70", domain_ci_low="0.68", domain_ci_high="0.72")] * 2
        + [
            make_row(
                source="s3",
                relation="unrelated-general-baseline",
                domain_score="0.95",
                domain_ci_low="0.93",
                domain_ci_high="0.97",
            )
        ]
        + [
            make_row(
                source="s5",
                relation="from-scratch-domain",
                domain_score="0.60",
                domain_ci_low="0.58",
                domain_ci_high="0.62",
            )
        ]
        + [make_row(source="s4", **NO_CI)]  # sign only: cannot move the pooled d
    )
    effects = ms.effects(rows)
    loso = dict(ms.leave_one_source_out(effects))
    assert set(loso) == {"s1", "s2", "s3", "s5"}
    without_s2 = ms.pool([e for e in effects if e.source != "s2"])
    assert loso["s2"].d == pytest.approx(without_s2.d) and loso["s2"].k == 4
    analyses = {a.analysis: a.pooled for a in ms.sensitivity_analyses(effects)}
    assert analyses["all rows with a known SE"].k == 6
    # Own base = continued-pretraining-of-base only: the from-scratch row is not a matched comparison,
    # although it is not an unrelated baseline either.
    own = analyses["only continued-pretraining-of-base rows (own base)"]
    assert own.k == 4 and [e.source for e in ms.own_base(effects)] == ["s1", "s1", "s2", "s2", "s4"]
    assert own.d == pytest.approx(ms.pool([e for e in effects if e.source in ("s1", "s2")]).d)
    assert own.d != pytest.approx(ms.pool([e for e in effects if e.relation != "unrelated-general-baseline"]).d)
    # Sources are shown without "@" (pandoc would read it as a citation).
    repo = ms.effects(parse([make_row(source="o/r board (x.csv @abcdef1)")] * 2 + [make_row()] * 2))
    assert "without o/r board (x.csv, commit abcdef1)" in {a.analysis for a in ms.sensitivity_analyses(repo)}


# ------------------------------------------------------------------------------------------
# The notebook, end to end through the CLI
# ------------------------------------------------------------------------------------------

RECORD_KEYS = {
    "n_rows",
    "n_sources",
    "n_modalities",
    "n_known_se",
    "n_sign_only",
    "n_win",
    "n_tie",
    "n_loss",
    "n_sign_better",
    "n_sign_worse",
    "n_sign_equal",
    "n_resamples",
    "pct_win",
    "pct_tie",
    "pct_loss",
    "pct_win_lo",
    "pct_win_hi",
    "pct_tie_lo",
    "pct_tie_hi",
    "pct_loss_lo",
    "pct_loss_hi",
    "pooled_d",
    "pooled_d_lo",
    "pooled_d_hi",
    "pooled_d_boot_lo",
    "pooled_d_boot_hi",
    "tau2",
    "i2",
    "pooled_k",
    "pooled_d_own_base",
    "pooled_d_own_base_lo",
    "pooled_d_own_base_hi",
    "k_own_base",
    "sources",
    "source_citations",
    "n_infeasible_sd",
    "loso_min",
    "loso_max",
    "loso_max_source",
    "seed_pct_win",
    "seed_pct_tie",
    "seed_pct_loss",
    "pooled_by_group",
    "sensitivity",
    "forest_modality",
    "wtl_by_setting",
}


def reduced_project(root: Path) -> Path:
    """The repository's meta_analysis alone: registry entry, notebook, module and data."""
    (root / "analyses" / "data").mkdir(parents=True)
    (root / "content").mkdir()
    (root / "content" / "metadata.yaml").write_text("title: Meta-analysis fixture\n")
    for name in (
        "analyses/meta_analysis.py",
        "analyses/meta_stats.py",
        "analyses/data/h2h_comparisons.csv",
        "content/manual-references.json",
    ):
        shutil.copyfile(REPO / name, root / name)
    lines = (REPO / "manuscript.yaml").read_text(encoding="utf-8").splitlines(keepends=True)
    start = lines.index("  meta_analysis:\n")
    end = start + 1
    while end < len(lines) and lines[end].startswith("    "):  # the entry's own, deeper-indented lines
        end += 1
    block = "".join(lines[start:end])
    (root / "manuscript.yaml").write_text(f"repository: owner/repo\nformats: [html]\nanalyses:\n{block}")
    return root


def run_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "livingreview", "-C", str(root), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_notebook_runs_under_the_ci_profile(tmp_path: Path):
    root = reduced_project(tmp_path / "p")
    assert (
        "meta_analysis:" in (root / "manuscript.yaml").read_text()
        and "appendix_a" not in (root / "manuscript.yaml").read_text()
    )
    result = run_cli(root, "run", "meta_analysis", "--profile", "ci")
    assert result.returncode == 0, result.stdout + result.stderr
    folder = root / "output" / "analyses" / "meta_analysis"
    manifest = json.loads((folder / "manifest.json").read_text())
    records = manifest["records"]
    assert set(records) >= RECORD_KEYS
    v = {key: entry.get("value") for key, entry in records.items()}

    assert manifest["parameters"]["n_resamples"] == 2000 == v["n_resamples"]
    assert v["n_rows"] == 211 and v["n_sources"] == 8 and v["n_modalities"] == 7
    assert v["n_known_se"] + v["n_sign_only"] == v["n_rows"]
    assert v["n_win"] + v["n_tie"] + v["n_loss"] == v["n_known_se"] == v["pooled_k"]
    assert v["n_sign_better"] + v["n_sign_worse"] + v["n_sign_equal"] == v["n_sign_only"]
    assert v["pct_win"] + v["pct_tie"] + v["pct_loss"] == pytest.approx(100.0)
    assert v["pct_win"] == pytest.approx(100 * v["n_win"] / v["n_known_se"])
    for name in ("win", "tie", "loss"):
        assert 0 <= v[f"pct_{name}_lo"] <= v[f"pct_{name}_hi"] <= 100
    assert v["pooled_d_lo"] < v["pooled_d"] < v["pooled_d_hi"]
    assert v["pooled_d_boot_lo"] <= v["pooled_d_boot_hi"]
    assert v["loso_min"] <= v["pooled_d"] <= v["loso_max"]
    assert v["pooled_d_own_base_lo"] < v["pooled_d_own_base"] < v["pooled_d_own_base_hi"]
    assert v["n_infeasible_sd"] == 1 and v["infeasible_sd_rows"] == "124 (general model)"
    assert (v["seed_pct_win"], v["seed_pct_tie"], v["seed_pct_loss"]) == (22.7, 36.8, 40.5)
    assert records["pct_win"]["fmt"] == "{:.1f}" and records["pct_win"]["unit"] == "%"
    assert records["pooled_d"]["fmt"] == "{:+.2f}" and records["n_win"]["type"] == "int"

    by_group = records["pooled_by_group"]
    assert by_group["columns"] == ["grouping", "group", "k", "d", "ci_low", "ci_high", "tau2", "i2", "note"]
    modality_k = {r["group"]: r["k"] for r in by_group["value"] if r["grouping"] == "modality"}
    assert len(modality_k) == v["n_modalities"] and sum(modality_k.values()) == v["n_known_se"]
    assert records["sensitivity"]["columns"] == ["analysis", "k", "d", "ci_low", "ci_high"]
    for key in ("forest_modality", "wtl_by_setting"):
        assert (folder / records[key]["files"]["svg"]).is_file()
    # The references are read too; manuscript.yaml should list them as an input (so that an edit re-runs it).
    assert "analyses/data/h2h_comparisons.csv" in manifest["inputs"]
    assert set(manifest["inputs"]) <= {"analyses/data/h2h_comparisons.csv", "content/manual-references.json"}
    sources = records["sources"]
    assert sources["columns"] == ["source", "reference", "modalities", "comparisons", "with SE"]
    assert len(sources["value"]) == v["n_sources"] and sum(r["comparisons"] for r in sources["value"]) == v["n_rows"]
    assert all(r["reference"].startswith("@{") for r in sources["value"])
    assert "analyses/meta_stats.py" in manifest["modules"]


def test_a_broken_csv_fails_the_run_naming_row_and_column(tmp_path: Path):
    root = reduced_project(tmp_path / "p")
    data = root / "analyses" / "data" / "h2h_comparisons.csv"
    lines = data.read_text(encoding="utf-8").splitlines(keepends=True)
    assert lines[16].count(",unit,") == 1  # CSV line 17
    lines[16] = lines[16].replace(",unit,", ",percnt,")
    data.write_text("".join(lines), encoding="utf-8")
    result = run_cli(root, "run", "meta_analysis", "--profile", "ci")
    assert result.returncode == 5
    output = " ".join((result.stdout + result.stderr).split())
    assert "DataError" in output
    assert "analyses/data/h2h_comparisons.csv row 17, column \"scale\": 'percnt' is not one of percent, unit" in output
    assert not (root / "output" / "analyses" / "meta_analysis" / "manifest.json").exists()
