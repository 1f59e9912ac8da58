# %% [markdown]
# # Meta-analysis: domain-specific against general foundation models
#
# Each row of `data/h2h_comparisons.csv` puts a biomedical (domain-specific) model next to a
# general-purpose model on one benchmark, with the numbers as the source printed them. This
# notebook turns every row into an effect on a common 0–100 point scale, classifies it as a win,
# tie or loss for the domain model, pools the effects with a random-effects model, and measures
# how much the conclusions depend on individual sources. The statistics live in `meta_stats.py`,
# where `tests/test_meta_stats.py` checks them on cases small enough to work out by hand.
# `data/README.md` documents the table's columns and the decisions taken about its rows.

# %% tags=["parameters"]
n_resamples: int = 2000  # cluster-bootstrap resamples (ci: 2,000; full: 100,000)
seed: int = 0  # seed of the bootstrap's random generator
device: str = "auto"  # torch device of the bootstrap: auto (CUDA when available), cpu or cuda
min_group_k: int = 3  # fewest rows with a known SE for a group to be pooled
data: str = "data/h2h_comparisons.csv"  # the head-to-head table, relative to analyses/
references: str = "../content/manual-references.json"  # CSL JSON items every source must have, relative to analyses/
alpha: float = 0.05  # level of the tests of subgroup differences
few_sources: int = 10  # below this many resampled sources, the text calls the bootstrap coarse

# %%
# ruff: noqa: E402 -- a notebook: imports follow the parameters cell, and pyplot follows the backend choice
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import meta_stats as ms
from matplotlib.patches import Patch, Polygon

from livingreview import record


def project_path(path: str) -> str:
    """A path as the project sees it (Papermill runs this notebook from inside analyses/)."""
    return path if Path(path).is_absolute() else os.path.normpath(Path(Path.cwd().name) / path)


# A row that breaks the schema raises ms.DataError naming the line and column; it is not
# caught, so the build fails and says where.
label = project_path(data)
table = ms.load_table(data, label=label)
# Every source must be citable: a CSL item whose id is the source's citation key
# (ms.reference_id: arXiv, DOI, or a repository file at a commit). A source without one fails
# the build here, naming its first CSV row, the source and the id to add.
if not Path(references).is_file():
    raise FileNotFoundError(
        f"{project_path(references)} (the parameter 'references') does not exist: the sources "
        "of the table must be checked against the manuscript's references; on a cluster, list it "
        "under the analysis's inputs in manuscript.yaml so that it is shipped"
    )
refs = ms.load_references(references)
ms.check_references(table, refs, label, references_label=project_path(references))
rows = ms.effects(table)
known = [r for r in rows if r.known_se]
counts = ms.count_verdicts(rows)
print(f"{len(table)} rows from {len({r.source for r in table})} sources; verdicts {counts}")


def names(items):
    """Items as prose: "a", "a and b", "a, b and c"; "none" when there are none."""
    items = list(items)
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else (items[0] if items else "none")


def fact(key, value, description):
    """A boolean the text switches on with {% if meta_analysis.KEY.raw %}; tests/test_meta_prose.py re-derives it."""
    record.value(key, bool(value), description=description)


# %% [markdown]
# ## Sources
#
# One row per source, in the order the sources enter the table, with its reference as a
# citation: the build resolves `@{key}` inside a recorded table's cells, so the table itself
# cites every source and puts it in the bibliography. A key with a character that the table
# renderer escapes cannot be cited from a cell; `source_citations` (printed with `.raw` in the
# text) cites every source in any case.

# %%
by_source = {}
for row, eff in zip(table, rows, strict=True):
    by_source.setdefault(row.source, []).append((row, eff))
source_rows = []
for source, members in by_source.items():
    key = ms.reference_id(source)
    item = refs[key]
    source_rows.append(
        {
            "source": item.get("title") or ms.source_label(source),
            "reference": ms.cell_citation(key) or key,
            "modalities": names(dict.fromkeys(r.modality for r, _ in members)),
            "comparisons": len(members),
            "with SE": sum(1 for _, e in members if e.known_se),
        }
    )
record.table(
    "sources",
    source_rows,
    columns=["source", "reference", "modalities", "comparisons", "with SE"],
    caption=(
        "Sources of the head-to-head table, in the order they enter it: each source with its reference, the "
        "modalities of its comparisons, the number of comparisons, and how many of those have a standard "
        "error and enter the pooling. A repository is cited at the commit whose file was read."
    ),
)
record.value(
    "source_citations",
    ms.citations(ms.reference_id(s) for s in by_source),
    description="a Markdown citation of every source (printed with .raw)",
)
modalities = list(dict.fromkeys(r.modality for r in table))
settings = sorted({r.setting for r in table}, key=ms.setting_order)
relations = list(dict.fromkeys(r.relation for r in table))
record.value("modalities_list", names(modalities), description="every modality in the table")
record.value("settings_list", names(settings), description="every setting in the table, least adaptation first")
record.value("relations_list", names(relations), description="every relation of the two models in the table")
record.value("n_settings", len(settings), description="distinct settings")
for row in source_rows:
    print(row)

# %% [markdown]
# ## Effects and verdicts
#
# The effect of a row is d = domain score − general score in points (scores on a 0–1 scale are
# multiplied by 100), with the sign flipped where lower is better, so d > 0 always favours the
# domain model. The standard error of each score comes, by the first rule that applies, from its
# 95% CI; else, for an accuracy with a known test-set size, from the binomial approximation, to
# which the between-seed variance sd²/3 is added when the source reports a mean ± sd over seeds
# (the two measure different things: which test items were drawn, and which seed was used);
# else from the between-seed SD alone; else it is unknown. A between-seed SD that no three
# scores with the printed mean can have is left out (`ms.max_seed_sd`) and reported. The SE of
# d adds the two variances as if the scores were independent, which overstates it when both
# models saw the same test set. A row is a *win* when its 95% interval lies above zero, a
# *loss* when it lies below, and a *tie* otherwise. Rows without an SE only have a sign.

# %%
n_known = len(known)
record.value("n_rows", len(table), description="rows of the head-to-head table")
record.value("n_sources", len({r.source for r in table}), description="distinct sources (papers or leaderboards)")
record.value("n_modalities", len({r.modality for r in table}), description="distinct modalities")
record.value("n_known_se", n_known, description="rows whose effect has a known standard error")
record.value("n_sign_only", len(rows) - n_known, description="rows without a standard error (sign only)")
record.value("min_group_k", min_group_k, description="fewest rows with a known SE for a group to be pooled")
for name in ms.VERDICTS:
    record.value(f"n_{name}", counts[name], description=f"rows classified as a {name} for the domain model")
for name, how in (("better", "scored higher"), ("worse", "scored lower"), ("equal", "scored the same")):
    record.value(f"n_sign_{name}", counts[name], description=f"sign-only rows where the domain model {how}")
scores_by_rule = {rule: 0 for rule in (*ms.SE_RULES, "unknown")}
for r in rows:
    for rule in (r.rule_domain, r.rule_general):
        scores_by_rule[rule or "unknown"] += 1
for rule, n in scores_by_rule.items():
    record.value(f"n_scores_{rule.replace('+', '_')}", n, description=f"scores whose SE comes from the rule {rule!r}")
print("SE rules in use (scores):", scores_by_rule)

# Between-seed SDs that cannot be right: larger than any SD of 3 scores with the printed mean.
infeasible = [(r.line, side) for r in rows for side in r.infeasible_sd]
record.value("n_infeasible_sd", len(infeasible), description="between-seed SDs left out as infeasible")
record.value(
    "infeasible_sd_rows",
    names(f"{line} ({side} model)" for line, side in infeasible),
    description="CSV rows (and sides) whose between-seed SD was left out",
)
fact("any_infeasible_sd", infeasible, "some between-seed SD was left out as infeasible")
fact("one_infeasible_sd", len(infeasible) == 1, "exactly one between-seed SD was left out as infeasible")
for r in rows:
    if r.infeasible_sd:
        print(
            f"row {r.line}: SD of the {' and '.join(r.infeasible_sd)} score left out; d = {r.d:+.2f}, "
            f"SE = {r.se}, verdict {r.verdict}"
        )

# %% [markdown]
# ## Random-effects pooling
#
# DerSimonian–Laird pooling of d over the rows with a known SE: overall, and per modality,
# setting and relation of the two models. Groups with fewer than `min_group_k` such rows are
# listed but not pooled. For each grouping, a test of subgroup differences asks whether the
# pooled estimates of its groups differ by more than their standard errors explain
# (Q_between on G − 1 degrees of freedom, over every group that could be pooled; see
# `ms.subgroup_difference`). It compares all groups at once, however many there are, so it
# does not depend on there being two kinds of relation or any particular modality.

# %%
overall = ms.pool(rows)
assert overall is not None, "no row has a known standard error"
POINT = dict(tolerance=1e-9)
record.value("pooled_k", overall.k, description="rows in the overall DerSimonian-Laird pooling")
record.value("pooled_d", overall.d, fmt="{:+.2f}", description="pooled d, points on a 0-100 scale", **POINT)
record.value("pooled_d_lo", overall.ci_low, fmt="{:.2f}", description="lower bound of the DL 95% CI", **POINT)
record.value("pooled_d_hi", overall.ci_high, fmt="{:.2f}", description="upper bound of the DL 95% CI", **POINT)
record.value("tau2", overall.tau2, fmt="{:.2f}", description="between-row variance tau^2 (points^2)", **POINT)
record.value("i2", 100 * overall.i2, fmt="{:.1f}", unit="%", description="I^2 heterogeneity", **POINT)

groups = {
    "modality": ms.pool_groups(rows, "modality", min_group_k),
    "setting": ms.pool_groups(rows, "setting", min_group_k, order=ms.setting_order),
    "relation": ms.pool_groups(rows, "relation", min_group_k),
}


def pooled_cells(pooled):
    """Display cells of a pooled estimate; dashes where a group is too small to pool."""
    if pooled is None:
        return {"d": "–", "ci_low": "–", "ci_high": "–", "tau2": "–", "i2": "–"}
    return {
        "d": f"{pooled.d:+.2f}",
        "ci_low": f"{pooled.ci_low:.2f}",
        "ci_high": f"{pooled.ci_high:.2f}",
        "tau2": f"{pooled.tau2:.2f}",
        "i2": f"{100 * pooled.i2:.1f}",
    }


table_rows = [{"grouping": "overall", "group": "all rows", "k": overall.k, **pooled_cells(overall), "note": ""}]
for grouping, results in groups.items():
    for g in results:
        table_rows.append({"grouping": grouping, "group": g.group, "k": g.k, **pooled_cells(g.pooled), "note": g.note})
record.table(
    "pooled_by_group",
    table_rows,
    columns=["grouping", "group", "k", "d", "ci_low", "ci_high", "tau2", "i2", "note"],
    caption=(
        f"DerSimonian–Laird pooled effect d (points on a 0–100 scale; positive favours the domain-specific "
        f"model) with its 95% CI, τ² and I² (%), overall and by group; k counts rows with a known standard "
        f"error. Groups with k < {min_group_k} are not pooled."
    ),
)
for row in table_rows:
    print(row)

FACTOR_WORDS = {"modality": "the modality", "setting": "the adaptation setting", "relation": "the baseline"}
differ = []
for grouping, results in groups.items():
    test = ms.subgroup_difference(results)
    possible = test is not None
    fact(f"{grouping}_test_possible", possible, f"at least two {grouping} groups could be pooled and compared")
    record.value(
        f"{grouping}_groups_tested",
        names(test.groups) if possible else "none",
        description=f"the {grouping} groups in the test of subgroup differences",
    )
    record.value(
        f"{grouping}_q",
        test.q if possible else 0.0,
        fmt="{:.2f}",
        tolerance=1e-9,
        description=f"Q_between across {grouping} groups (0 when there is no test)",
    )
    record.value(f"{grouping}_df", test.df if possible else 0, description="its degrees of freedom")
    record.value(
        f"{grouping}_p",
        test.p if possible else 1.0,
        fmt="{:.2g}",
        tolerance=1e-9,
        description="its p-value (1 when there is no test)",
    )
    fact(
        f"{grouping}_groups_differ",
        possible and test.p < alpha,
        f"the pooled d differs between {grouping} groups (test of subgroup differences, p < alpha)",
    )
    if possible and test.p < alpha:
        differ.append(FACTOR_WORDS[grouping])
    print(grouping, test)
record.value("alpha", alpha, fmt="{:g}", tolerance=0.0, description="level of the tests of subgroup differences")
record.value(
    "factors_that_differ", names(differ), description="groupings whose test of subgroup differences is significant"
)
fact("any_factor_differs", differ, "some grouping's test of subgroup differences is significant")

# %% [markdown]
# ## Dependence between rows: a cluster bootstrap over sources
#
# Rows from one source share baselines, test sets and protocols, so they are not independent
# draws. The bootstrap resamples whole sources with replacement (only sources with at least one
# row of known SE take part) and recomputes the win, tie and loss fractions and the pooled d;
# the 2.5th and 97.5th percentiles give the intervals. With few sources the resampling
# distribution is coarse: the intervals then mostly say how much the answer depends on which
# sources happen to be in the table.

# %%
boot = ms.cluster_bootstrap(
    [r.d for r in known],
    [r.se for r in known],
    [r.verdict for r in known],
    [r.source for r in known],
    n_resamples=n_resamples,
    seed=seed,
    device=device,
)
record.value("n_resamples", boot.n_resamples, description="cluster-bootstrap resamples")
record.value("n_boot_sources", boot.n_clusters, description="sources resampled by the bootstrap (clusters)")
record.value("bootstrap_device", boot.device, description="torch device that ran the bootstrap")
# Bootstrap bounds carry Monte Carlo error: a re-run with another device or resample count may
# move them slightly, hence a looser tolerance than the exact point estimates.
BOOT = dict(tolerance=1.0)
for name, samples in (("win", boot.frac_win), ("tie", boot.frac_tie), ("loss", boot.frac_loss)):
    low, high = ms.percentile_ci(100 * samples)
    pct = 100 * counts[name] / n_known
    record.value(
        f"pct_{name}", pct, fmt="{:.1f}", unit="%", description=f"share of rows with known SE: {name}", **POINT
    )
    record.value(
        f"pct_{name}_lo", low, fmt="{:.1f}", unit="%", description="cluster-bootstrap 2.5th percentile", **BOOT
    )
    record.value(
        f"pct_{name}_hi", high, fmt="{:.1f}", unit="%", description="cluster-bootstrap 97.5th percentile", **BOOT
    )
    print(f"{name}: {pct:.1f}% [{low:.1f}, {high:.1f}]")
boot_low, boot_high = ms.percentile_ci(boot.pooled_d)
record.value("pooled_d_boot_lo", boot_low, fmt="{:.2f}", description="cluster-bootstrap 2.5th percentile of d", **BOOT)
record.value(
    "pooled_d_boot_hi", boot_high, fmt="{:.2f}", description="cluster-bootstrap 97.5th percentile of d", **BOOT
)
print(
    f"pooled d {overall.d:+.2f}: DL [{overall.ci_low:.2f}, {overall.ci_high:.2f}], "
    f"bootstrap [{boot_low:.2f}, {boot_high:.2f}] on {boot.device}"
)

# %% [markdown]
# ## Sensitivity
#
# The pooled d again without each source in turn, and over the matched comparisons alone: those
# whose general model is the very base the domain model was continued from
# (`continued-pretraining-of-base`). Domain models trained from scratch and unrelated general
# baselines are left out of that subset, whatever other relations the table comes to hold.

# %%
analyses = ms.sensitivity_analyses(rows)
record.table(
    "sensitivity",
    [
        {
            "analysis": a.analysis,
            "k": a.pooled.k,
            "d": a.pooled.d,
            "ci_low": a.pooled.ci_low,
            "ci_high": a.pooled.ci_high,
        }
        for a in analyses
    ],
    columns=["analysis", "k", "d", "ci_low", "ci_high"],
    fmt={"d": "{:+.2f}", "ci_low": "{:.2f}", "ci_high": "{:.2f}"},
    caption="Sensitivity of the pooled effect d (points; DerSimonian–Laird, 95% CI) to the rows included.",
    tolerance=1e-9,
)
matched = ms.pool(ms.own_base(rows))
assert matched is not None, f"no row with a known SE has the relation {ms.OWN_BASE}: the text needs one"
record.value("k_own_base", matched.k, description=f"rows with a known SE and the relation {ms.OWN_BASE}")
record.value(
    "pooled_d_own_base", matched.d, fmt="{:+.2f}", description=f"pooled d over {ms.OWN_BASE} rows only", **POINT
)
record.value("pooled_d_own_base_lo", matched.ci_low, fmt="{:.2f}", description="its DL 95% CI, lower", **POINT)
record.value("pooled_d_own_base_hi", matched.ci_high, fmt="{:.2f}", description="its DL 95% CI, upper", **POINT)
loso = ms.leave_one_source_out(rows)
assert loso, "leaving one source out needs at least two sources with rows of known SE"
loso_d = [pooled.d for _, pooled in loso]
record.value("loso_min", min(loso_d), fmt="{:+.2f}", description="smallest leave-one-source-out pooled d", **POINT)
record.value("loso_max", max(loso_d), fmt="{:+.2f}", description="largest leave-one-source-out pooled d", **POINT)
most = max(loso, key=lambda item: abs(item[1].d - overall.d))[0]
record.value("loso_max_source", ms.source_label(most), description="source whose removal moves the pooled d the most")
record.value(
    "loso_max_source_citation", ms.citations([ms.reference_id(most)]), description="its citation (printed with .raw)"
)
for a in analyses:
    print(f"{a.analysis:60s} k={a.pooled.k:4d} d={a.pooled.d:+.2f} [{a.pooled.ci_low:.2f}, {a.pooled.ci_high:.2f}]")

# %% [markdown]
# ## What the text may say
#
# The review's wording depends on the direction of these results ("most comparisons are ties",
# "the interval includes zero", which modalities differ). Each such statement is recorded here
# as a fact that computes exactly what the sentence says, and the Markdown switches on it with
# `{% if meta_analysis.KEY.raw %}`; names and counts are injected. When the living table
# changes, the sentences change with it instead of going stale. `tests/test_meta_prose.py`
# re-derives every fact the text switches on.

# %%
fact(
    "ties_are_majority",
    counts["tie"] > counts["win"] + counts["loss"],
    "more ties than wins and losses together (rows with a known SE)",
)
fact("pooled_ci_includes_zero", overall.ci_low <= 0 <= overall.ci_high, "the overall DL 95% CI includes zero")
fact("pooled_ci_above_zero", overall.ci_low > 0, "the overall DL 95% CI lies above zero")
fact(
    "heterogeneity_dominates",
    math.sqrt(overall.tau2) > abs(overall.d),
    "the between-row SD (tau) exceeds the size of the pooled d",
)
fact("boot_ci_includes_zero", boot_low <= 0 <= boot_high, "the cluster-bootstrap 95% CI of the pooled d includes zero")
record.value("few_sources", few_sources, description="below this many resampled sources the bootstrap is called coarse")
fact("boot_sources_few", boot.n_clusters < few_sources, "fewer sources are resampled than few_sources")
fact(
    "own_base_close",
    abs(matched.d - overall.d) < 1.0,
    f"the pooled d over {ms.OWN_BASE} rows is within 1 point of the overall pooled d",
)
fact(
    "loso_all_small", max(abs(v) for v in loso_d) < 2.0, "every leave-one-source-out pooled d is below 2 points in size"
)

by_modality = [g for g in groups["modality"] if g.pooled is not None]
above = [g.group for g in by_modality if g.pooled.ci_low > 0]
below = [g.group for g in by_modality if g.pooled.ci_high < 0]
straddle = [g.group for g in by_modality if g.pooled.ci_low <= 0 <= g.pooled.ci_high]
too_small = [g.group for g in groups["modality"] if g.pooled is None]
for key, items, what in (
    ("above_zero", above, "whose pooled CI lies above zero"),
    ("below_zero", below, "whose pooled CI lies below zero"),
    ("including_zero", straddle, "whose pooled CI includes zero"),
    ("too_small", too_small, "with too few rows of known SE to pool"),
):
    record.value(f"modalities_{key}", names(items), description=f"modalities {what}")
fact("some_modality_too_small", too_small, "some modality has too few rows of known SE to pool")

by_setting = {g.group: g.pooled for g in groups["setting"] if g.pooled is not None}
record.value(
    "settings_excluding_zero",
    names(k for k, v in by_setting.items() if v.ci_low > 0 or v.ci_high < 0),
    description="settings whose pooled CI excludes zero",
)
ADAPTED = ("linear-probe", "frozen-probe", "fine-tuned")  # the weights or a head are trained
adapted = [k for k in ADAPTED if k in by_setting]
record.value("adapted_settings_compared", names(adapted), description="pooled settings with trained weights or heads")
fact(
    "zero_shot_and_adapted_pooled",
    "zero-shot" in by_setting and bool(adapted),
    "zero-shot and at least one probe or fine-tuning setting are pooled",
)
fact(
    "zero_shot_ahead_of_adapted",
    "zero-shot" in by_setting and bool(adapted) and all(by_setting["zero-shot"].d > by_setting[k].d for k in adapted),
    "the zero-shot pooled d is larger than that of every pooled probe and fine-tuning setting",
)

# Rows without an SE: all of them, and those that compare image encoders.
sign_only = [(row, eff) for row, eff in zip(table, rows, strict=True) if not eff.known_se]
fact(
    "sign_only_mostly_better",
    counts["better"] > 2 * (counts["worse"] + counts["equal"]),
    "more than two thirds of the sign-only rows favour the domain model",
)
record.value("n_sign_only_sources", len({row.source for row, _ in sign_only}), description="sources of sign-only rows")
record.value(
    "sign_only_citations",
    ms.citations(ms.reference_id(row.source) for row, _ in sign_only),
    description="a citation of every source of sign-only rows (printed with .raw)",
)
record.value(
    "sign_only_modalities",
    names(dict.fromkeys(row.modality for row, _ in sign_only)),
    description="modalities of the sign-only rows",
)
imaging = [(row, eff) for row, eff in sign_only if ms.is_image_modality(row.modality)]
n_img_better = sum(1 for _, eff in imaging if eff.verdict == "better")
record.value("n_imaging_sign_only", len(imaging), description="sign-only rows of image modalities")
record.value("n_imaging_sign_only_better", n_img_better, description="... where the domain encoder scored higher")
record.value(
    "imaging_sign_only_modalities",
    names(dict.fromkeys(row.modality for row, _ in imaging)),
    description="image modalities of sign-only rows",
)
fact("has_imaging_sign_only", imaging, "some sign-only row compares image encoders")
fact(
    "imaging_sign_only_mostly_better",
    imaging and 3 * n_img_better > 2 * len(imaging),
    "in more than two thirds of the sign-only image rows the domain encoder scored higher",
)
fact(
    "imaging_sign_only_imagenet",
    imaging and all("imagenet" in row.general_model.lower() for row, _ in imaging),
    "every general model of the sign-only image rows is named as ImageNet-pretrained",
)

# Where the evidence is thinnest: comparisons per modality.
n_by_modality = {m: sum(1 for r in table if r.modality == m) for m in modalities}
ranked = sorted(n_by_modality.items(), key=lambda item: (-item[1], modalities.index(item[0])))
record.value(
    "rows_by_modality", ", ".join(f"{m} ({n})" for m, n in ranked), description="rows per modality, most first"
)
thin = [m for m in modalities if m in ms.SEQUENCE_AND_RECORD_MODALITIES]
n_thin = sum(n_by_modality[m] for m in thin)
others = [n for m, n in n_by_modality.items() if m not in ms.SEQUENCE_AND_RECORD_MODALITIES]
record.value("n_rows_sequence_records", n_thin, description="rows on health records or sequence data")
record.value("sequence_records_modalities", names(thin), description="health-record and sequence modalities present")
fact(
    "sequence_and_records_fewest",
    bool(others) and n_thin < min(others),
    "health records and sequence data together have fewer rows than any other modality",
)

# %% [markdown]
# ## The reference point from the literature
#
# Under 3-shot prompting, Jeong et al. found medical LLMs better than their base model in 22.7%
# of task–model pairs, tied in 36.8% and worse in 40.5% (arXiv:2411.08870). Recorded here once so
# that the text never types them by hand.

# %%
SEED_PAPER = (
    "Jeong et al., 'The Limited Impact of Medical Adaptation of Large Language and Vision-Language "
    "Models' (arXiv:2411.08870), medical vs base LLMs, 3-shot prompting"
)
SEED_PCT = {"win": 22.7, "tie": 36.8, "loss": 40.5}
for name, pct in SEED_PCT.items():
    record.value(
        f"seed_pct_{name}",
        pct,
        fmt="{:.1f}",
        unit="%",
        description=f"{name} share reported by {SEED_PAPER}",
        tolerance=0.0,
    )
ours = {name: 100 * counts[name] / n_known for name in SEED_PCT}
record.value(
    "win_share_close_to_seed",
    abs(ours["win"] - SEED_PCT["win"]) < 5.0,
    description="our win share is within 5 points of the controlled study's",
)
record.value("more_ties_than_seed", ours["tie"] > SEED_PCT["tie"], description="our tie share is the larger")
record.value("fewer_losses_than_seed", ours["loss"] < SEED_PCT["loss"], description="our loss share is the smaller")

# %% [markdown]
# ## Figures

# %%
BLUE, GREY, ORANGE = "#1f5fa8", "#8c8c8c", "#d9731a"

# Forest plot: pooled d per modality (most rows first), groups too small to pool drawn hollow.
by_modality = sorted(groups["modality"], key=lambda g: (g.pooled is None, -g.k, g.group))
fig, ax = plt.subplots(figsize=(7.2, 0.48 * (len(by_modality) + 2) + 0.9))
labels = []
for y, g in enumerate(by_modality):
    members = [r for r in rows if r.modality == g.group]
    estimate = g.pooled or ms.pool(members)  # too small: drawn hollow from whatever rows it has
    labels.append(f"{g.group}  (k = {g.k} of {g.n_rows})")
    if estimate is None:
        ax.text(0, y, "no rows with a known SE", ha="center", va="center", fontsize=8, color=GREY)
        continue
    hollow = g.pooled is None
    ax.plot([estimate.ci_low, estimate.ci_high], [y, y], color=GREY if hollow else BLUE, lw=1.6)
    ax.plot(estimate.d, y, "s", ms=7, mfc="white" if hollow else BLUE, mec=GREY if hollow else BLUE)
    text = "too small" if hollow else f"{estimate.d:+.2f} [{estimate.ci_low:.2f}, {estimate.ci_high:.2f}]"
    ax.annotate(text, (1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=8)
y = len(by_modality) + 0.4
ax.add_patch(
    Polygon(
        [[overall.ci_low, y], [overall.d, y + 0.3], [overall.ci_high, y], [overall.d, y - 0.3]],
        closed=True,
        color="black",
    )
)
labels.append(f"overall (k = {overall.k})")
ax.annotate(
    f"{overall.d:+.2f} [{overall.ci_low:.2f}, {overall.ci_high:.2f}]",
    (1.01, y),
    xycoords=("axes fraction", "data"),
    va="center",
    fontsize=8,
    weight="bold",
)
ax.axvline(0, color="black", lw=0.8, ls=":")
ax.set_yticks(list(range(len(by_modality))) + [y], labels, fontsize=8.5)
ax.set_ylim(y + 0.8, -0.8)
ax.set_xlabel("d, points on a 0–100 scale (> 0: the domain-specific model is better)")
ax.spines[["top", "right"]].set_visible(False)
record.figure(
    "forest_modality",
    fig,
    caption=(
        f"Random-effects (DerSimonian–Laird) pooled difference between domain-specific and general models "
        f"by modality, with 95% confidence intervals; k counts the rows with a known standard error out of "
        f"all rows of the modality. Hollow markers: fewer than {min_group_k} rows, not pooled. The diamond "
        f"is the overall pooled effect."
    ),
)

# %%
# Win/tie/loss counts per setting, with the sign-only rows (no SE) stacked after them, hatched.
settings = sorted({r.setting for r in rows}, key=ms.setting_order)
segments = [
    ("win", BLUE, ""),
    ("tie", GREY, ""),
    ("loss", ORANGE, ""),
    ("better", BLUE, "///"),
    ("equal", GREY, "///"),
    ("worse", ORANGE, "///"),
]
fig, ax = plt.subplots(figsize=(7.2, 0.42 * len(settings) + 1.0))
left = [0] * len(settings)
for name, colour, hatch in segments:
    widths = [sum(1 for r in rows if r.setting == s and r.verdict == name) for s in settings]
    ax.barh(
        range(len(settings)),
        widths,
        left=left,
        color=colour if not hatch else "white",
        edgecolor=colour,
        hatch=hatch,
        lw=0.8,
    )
    for i, w in enumerate(widths):
        if w >= 3:
            box = dict(facecolor="white", edgecolor="none", pad=0.6) if hatch else None
            ax.text(
                left[i] + w / 2,
                i,
                str(w),
                ha="center",
                va="center",
                fontsize=7.5,
                color="black" if hatch else "white",
                bbox=box,
            )
    left = [a + b for a, b in zip(left, widths, strict=True)]
ax.set_yticks(range(len(settings)), settings, fontsize=8.5)
ax.invert_yaxis()
ax.set_xlabel("rows (comparisons)")
ax.legend(
    handles=[
        Patch(facecolor=c if not h else "white", edgecolor=c, hatch=h, label=n if not h else f"{n} (sign only)")
        for n, c, h in segments
    ],
    fontsize=7.5,
    loc="center left",
    bbox_to_anchor=(1.01, 0.5),
    frameon=False,
)
ax.spines[["top", "right"]].set_visible(False)
record.figure(
    "wtl_by_setting",
    fig,
    caption=(
        "Verdicts for the domain-specific model by evaluation setting: win, tie or loss at the 95% level "
        "where both scores have a standard error; hatched, the sign of the difference where they do not."
    ),
)
