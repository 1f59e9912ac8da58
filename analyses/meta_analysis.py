# %% [markdown]
# # Meta-analysis: domain-specific against general foundation models
#
# Each row of `data/h2h_comparisons.csv` puts a biomedical (domain-specific) model next to a
# general-purpose model on one benchmark, with the numbers as the source printed them. This
# notebook turns every row into an effect on a common 0–100 point scale, classifies it as a win,
# tie or loss for the domain model, pools the effects with a random-effects model, and measures
# how much the conclusions depend on individual sources. The statistics live in `meta_stats.py`,
# where `tests/test_meta_stats.py` checks them on cases small enough to work out by hand.

# %% tags=["parameters"]
n_resamples: int = 2000  # cluster-bootstrap resamples (ci: 2,000; full: 100,000)
seed: int = 0  # seed of the bootstrap's random generator
device: str = "auto"  # torch device of the bootstrap: auto (CUDA when available), cpu or cuda
min_group_k: int = 3  # fewest rows with a known SE for a group to be pooled
data: str = "data/h2h_comparisons.csv"  # the head-to-head table, relative to analyses/

# %%
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import Patch, Polygon

import meta_stats as ms
from livingreview import record

# Name the file as the project sees it, so that a bad row is reported as analyses/data/...:
# Papermill runs this notebook from inside analyses/.
label = data if Path(data).is_absolute() else (Path(Path.cwd().name) / data).as_posix()
# A row that breaks the schema raises ms.DataError naming the line and column; it is not
# caught, so the build fails and says where.
table = ms.load_table(data, label=label)
rows = ms.effects(table)
known = [r for r in rows if r.known_se]
counts = ms.count_verdicts(rows)
print(f"{len(table)} rows from {len({r.source for r in table})} sources; verdicts {counts}")

# %% [markdown]
# ## Effects and verdicts
#
# The effect of a row is d = domain score − general score in points (scores on a 0–1 scale are
# multiplied by 100), with the sign flipped where lower is better, so d > 0 always favours the
# domain model. The standard error of each score comes from its 95% CI, else from a binomial
# approximation for an accuracy with a known test-set size, else from a between-seed SD; the SE
# of d adds the two variances as if the scores were independent, which overstates it when both
# models saw the same test set. A row is a *win* when its 95% interval lies above zero, a *loss*
# when it lies below, and a *tie* otherwise. Rows without an SE only have a sign.

# %%
n_known = len(known)
record.value("n_rows", len(table), description="rows of the head-to-head table")
record.value("n_sources", len({r.source for r in table}), description="distinct sources (papers or leaderboards)")
record.value("n_modalities", len({r.modality for r in table}), description="distinct modalities")
record.value("n_known_se", n_known, description="rows whose effect has a known standard error")
record.value("n_sign_only", len(rows) - n_known, description="rows without a standard error (sign only)")
for name in ms.VERDICTS:
    record.value(f"n_{name}", counts[name], description=f"rows classified as a {name} for the domain model")
for name, how in (("better", "scored higher"), ("worse", "scored lower"), ("equal", "scored the same")):
    record.value(f"n_sign_{name}", counts[name], description=f"sign-only rows where the domain model {how}")
rules = sorted({(r.rule_domain or "unknown") for r in rows} | {(r.rule_general or "unknown") for r in rows})
print("SE rules in use:", {rule: sum((r.rule_domain or "unknown") == rule for r in rows) for rule in rules})

# %% [markdown]
# ## Random-effects pooling
#
# DerSimonian–Laird pooling of d over the rows with a known SE: overall, and per modality,
# setting and relation of the two models. Groups with fewer than `min_group_k` such rows are
# listed but not pooled.

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
    return {"d": f"{pooled.d:+.2f}", "ci_low": f"{pooled.ci_low:.2f}", "ci_high": f"{pooled.ci_high:.2f}",
            "tau2": f"{pooled.tau2:.2f}", "i2": f"{100 * pooled.i2:.1f}"}


table_rows = [{"grouping": "overall", "group": "all rows", "k": overall.k, **pooled_cells(overall), "note": ""}]
for grouping, results in groups.items():
    for g in results:
        table_rows.append({"grouping": grouping, "group": g.group, "k": g.k, **pooled_cells(g.pooled), "note": g.note})
record.table(
    "pooled_by_group", table_rows,
    columns=["grouping", "group", "k", "d", "ci_low", "ci_high", "tau2", "i2", "note"],
    caption=(f"DerSimonian–Laird pooled effect d (points on a 0–100 scale; positive favours the domain-specific "
             f"model) with its 95% CI, τ² and I² (%), overall and by group; k counts rows with a known standard "
             f"error. Groups with k < {min_group_k} are not pooled."),
)
for row in table_rows:
    print(row)

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
    [r.d for r in known], [r.se for r in known], [r.verdict for r in known], [r.source for r in known],
    n_resamples=n_resamples, seed=seed, device=device,
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
    record.value(f"pct_{name}", pct, fmt="{:.1f}", unit="%", description=f"share of rows with known SE: {name}",
                 **POINT)
    record.value(f"pct_{name}_lo", low, fmt="{:.1f}", unit="%", description="cluster-bootstrap 2.5th percentile",
                 **BOOT)
    record.value(f"pct_{name}_hi", high, fmt="{:.1f}", unit="%", description="cluster-bootstrap 97.5th percentile",
                 **BOOT)
    print(f"{name}: {pct:.1f}% [{low:.1f}, {high:.1f}]")
boot_low, boot_high = ms.percentile_ci(boot.pooled_d)
record.value("pooled_d_boot_lo", boot_low, fmt="{:.2f}", description="cluster-bootstrap 2.5th percentile of d",
             **BOOT)
record.value("pooled_d_boot_hi", boot_high, fmt="{:.2f}", description="cluster-bootstrap 97.5th percentile of d",
             **BOOT)
print(f"pooled d {overall.d:+.2f}: DL [{overall.ci_low:.2f}, {overall.ci_high:.2f}], "
      f"bootstrap [{boot_low:.2f}, {boot_high:.2f}] on {boot.device}")

# %% [markdown]
# ## Sensitivity
#
# The pooled d again without each source in turn, and without the rows whose general model is
# not the base the domain model started from (different architecture or size).

# %%
analyses = ms.sensitivity_analyses(rows)
record.table(
    "sensitivity",
    [{"analysis": a.analysis, "k": a.pooled.k, "d": a.pooled.d, "ci_low": a.pooled.ci_low,
      "ci_high": a.pooled.ci_high} for a in analyses],
    columns=["analysis", "k", "d", "ci_low", "ci_high"],
    fmt={"d": "{:+.2f}", "ci_low": "{:.2f}", "ci_high": "{:.2f}"},
    caption="Sensitivity of the pooled effect d (points; DerSimonian–Laird, 95% CI) to the rows included.",
    tolerance=1e-9,
)
related = ms.pool([r for r in rows if r.relation != "unrelated-general-baseline"])
assert related is not None, "no row with a known SE compares a domain model with its own base"
record.value("pooled_d_excl_unrelated", related.d, fmt="{:+.2f}", description="pooled d without "
             "unrelated-general-baseline rows", **POINT)
record.value("pooled_d_excl_unrelated_lo", related.ci_low, fmt="{:.2f}", description="its DL 95% CI, lower", **POINT)
record.value("pooled_d_excl_unrelated_hi", related.ci_high, fmt="{:.2f}", description="its DL 95% CI, upper", **POINT)
loso = ms.leave_one_source_out(rows)
loso_d = [pooled.d for _, pooled in loso]
record.value("loso_min", min(loso_d), fmt="{:+.2f}", description="smallest leave-one-source-out pooled d", **POINT)
record.value("loso_max", max(loso_d), fmt="{:+.2f}", description="largest leave-one-source-out pooled d", **POINT)
most = max(loso, key=lambda item: abs(item[1].d - overall.d))[0]
record.value("loso_max_source", most, description="source whose removal moves the pooled d the most")
for a in analyses:
    print(f"{a.analysis:60s} k={a.pooled.k:4d} d={a.pooled.d:+.2f} [{a.pooled.ci_low:.2f}, {a.pooled.ci_high:.2f}]")

# %% [markdown]
# ## What the text may say
#
# The review's wording depends on the direction of these results ("most comparisons are ties",
# "the interval includes zero", which modalities differ). They are recorded as facts that the
# Markdown tests with `{% if meta_analysis.KEY.raw %}` or injects, so that when the living table
# changes the sentences change with it instead of going stale.


# %%
def names(items):
    items = list(items)
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else (items[0] if items else "none")


by_modality = [g for g in groups["modality"] if g.pooled is not None]
above = [g.group for g in by_modality if g.pooled.ci_low > 0]
below = [g.group for g in by_modality if g.pooled.ci_high < 0]
straddle = [g.group for g in by_modality if g.pooled.ci_low <= 0 <= g.pooled.ci_high]
too_small = [g.group for g in groups["modality"] if g.pooled is None]
record.value("ties_are_majority", counts["tie"] > counts["win"] + counts["loss"],
             description="more ties than wins and losses together")
record.value("pooled_ci_includes_zero", overall.ci_low <= 0 <= overall.ci_high,
             description="the overall DL 95% CI includes zero")
record.value("heterogeneity_dominates", math.sqrt(overall.tau2) > abs(overall.d),
             description="between-row SD (tau) exceeds the size of the pooled d")
record.value("excl_unrelated_close", abs(related.d - overall.d) < 1.0,
             description="excluding unrelated baselines moves the pooled d by less than 1 point")
record.value("loso_all_small", max(abs(v) for v in loso_d) < 2.0,
             description="every leave-one-source-out pooled d is below 2 points in size")
record.value("modalities_above_zero", names(above), description="modalities whose pooled CI lies above zero")
record.value("modalities_below_zero", names(below), description="modalities whose pooled CI lies below zero")
record.value("modalities_including_zero", names(straddle), description="modalities whose pooled CI includes zero")
record.value("modalities_too_small", names(too_small), description="modalities with too few rows to pool")
record.value("boot_ci_includes_zero", boot_low <= 0 <= boot_high,
             description="the cluster-bootstrap 95% CI of the pooled d includes zero")
record.value("sign_only_mostly_better", counts["better"] > 2 * (counts["worse"] + counts["equal"]),
             description="sign-only rows favour the domain model more than two to one")
by_setting = {g.group: g.pooled for g in groups["setting"] if g.pooled is not None}
record.value("settings_excluding_zero", names(k for k, v in by_setting.items() if v.ci_low > 0 or v.ci_high < 0),
             description="settings whose pooled CI excludes zero")
adapted = [by_setting[k].d for k in ("linear-probe", "fine-tuned") if k in by_setting]
record.value("zero_shot_ahead_of_adapted", "zero-shot" in by_setting and bool(adapted)
             and all(by_setting["zero-shot"].d > d for d in adapted),
             description="pooled d is larger zero-shot than for linear probes and fine-tuning")

# %% [markdown]
# ## The reference point from the literature
#
# Under 3-shot prompting, Jeong et al. found medical LLMs better than their base model in 22.7%
# of task–model pairs, tied in 36.8% and worse in 40.5% (arXiv:2411.08870). Recorded here once so
# that the text never types them by hand.

# %%
SEED_PAPER = ("Jeong et al., 'The Limited Impact of Medical Adaptation of Large Language and Vision-Language "
              "Models' (arXiv:2411.08870), medical vs base LLMs, 3-shot prompting")
SEED_PCT = {"win": 22.7, "tie": 36.8, "loss": 40.5}
for name, pct in SEED_PCT.items():
    record.value(f"seed_pct_{name}", pct, fmt="{:.1f}", unit="%", description=f"{name} share reported by {SEED_PAPER}",
                 tolerance=0.0)
ours = {name: 100 * counts[name] / n_known for name in SEED_PCT}
record.value("win_share_close_to_seed", abs(ours["win"] - SEED_PCT["win"]) < 5.0,
             description="our win share is within 5 points of the controlled study's")
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
ax.add_patch(Polygon([[overall.ci_low, y], [overall.d, y + 0.3], [overall.ci_high, y], [overall.d, y - 0.3]],
                     closed=True, color="black"))
labels.append(f"overall (k = {overall.k})")
ax.annotate(f"{overall.d:+.2f} [{overall.ci_low:.2f}, {overall.ci_high:.2f}]", (1.01, y),
            xycoords=("axes fraction", "data"), va="center", fontsize=8, weight="bold")
ax.axvline(0, color="black", lw=0.8, ls=":")
ax.set_yticks(list(range(len(by_modality))) + [y], labels, fontsize=8.5)
ax.set_ylim(y + 0.8, -0.8)
ax.set_xlabel("d, points on a 0–100 scale (> 0: the domain-specific model is better)")
ax.spines[["top", "right"]].set_visible(False)
record.figure(
    "forest_modality", fig,
    caption=(f"Random-effects (DerSimonian–Laird) pooled difference between domain-specific and general models "
             f"by modality, with 95% confidence intervals; k counts the rows with a known standard error out of "
             f"all rows of the modality. Hollow markers: fewer than {min_group_k} rows, not pooled. The diamond "
             f"is the overall pooled effect."),
)

# %%
# Win/tie/loss counts per setting, with the sign-only rows (no SE) stacked after them, hatched.
settings = sorted({r.setting for r in rows}, key=ms.setting_order)
segments = [("win", BLUE, ""), ("tie", GREY, ""), ("loss", ORANGE, ""),
            ("better", BLUE, "///"), ("equal", GREY, "///"), ("worse", ORANGE, "///")]
fig, ax = plt.subplots(figsize=(7.2, 0.42 * len(settings) + 1.0))
left = [0] * len(settings)
for name, colour, hatch in segments:
    widths = [sum(1 for r in rows if r.setting == s and r.verdict == name) for s in settings]
    ax.barh(range(len(settings)), widths, left=left, color=colour if not hatch else "white",
            edgecolor=colour, hatch=hatch, lw=0.8)
    for i, w in enumerate(widths):
        if w >= 3:
            box = dict(facecolor="white", edgecolor="none", pad=0.6) if hatch else None
            ax.text(left[i] + w / 2, i, str(w), ha="center", va="center", fontsize=7.5,
                    color="black" if hatch else "white", bbox=box)
    left = [a + b for a, b in zip(left, widths)]
ax.set_yticks(range(len(settings)), settings, fontsize=8.5)
ax.invert_yaxis()
ax.set_xlabel("rows (comparisons)")
ax.legend(handles=[Patch(facecolor=c if not h else "white", edgecolor=c, hatch=h,
                         label=n if not h else f"{n} (sign only)") for n, c, h in segments],
          fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
ax.spines[["top", "right"]].set_visible(False)
record.figure(
    "wtl_by_setting", fig,
    caption=("Verdicts for the domain-specific model by evaluation setting: win, tie or loss at the 95% level "
             "where both scores have a standard error; hatched, the sign of the difference where they do not."),
)
