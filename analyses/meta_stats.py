"""Statistics of the review's meta-analysis: domain-specific against general foundation models.

The input is the living table ``analyses/data/h2h_comparisons.csv``: one row per comparison of
a domain-specific model with a general model on one task, as printed by the source. This module
holds everything the notebook ``meta_analysis.py`` computes, as plain functions that
``tests/test_meta_stats.py`` checks on small cases worked out by hand:

- **schema** -- :func:`load_table` validates every row; a bad row raises :class:`DataError`
  naming the CSV line, the column and the reason. Modalities and sources are open
  vocabularies, so new rows need no code change.
- **references** -- :func:`check_references`: every source must have a CSL item whose id is
  :func:`reference_id` of the source (arXiv id, DOI, or a repository file at a commit); a
  source without one raises :class:`DataError` naming its first CSV line.
- **effects** -- :func:`effect`: d = domain - general in points on a 0-100 scale, signed so
  that d > 0 means the domain model did better, with its standard error (:func:`score_se`;
  the rule order is :data:`SE_RULES`; a between-seed SD that no three scores with the printed
  mean can have, :func:`max_seed_sd`, is left out).
- **verdicts** -- :func:`verdict`: win / tie / loss at the 95% level, or better / worse /
  equal ("sign only") when the standard error is unknown.
- **pooling** -- :func:`dersimonian_laird`, overall and per group (:func:`pool_groups`), and
  the test of subgroup differences across all pooled groups of a grouping
  (:func:`subgroup_difference`).
- **dependence** -- :func:`cluster_bootstrap`: sources resampled with replacement, written in
  torch and vectorised over resamples (CUDA when available).
- **sensitivity** -- :func:`leave_one_source_out`, the comparisons with the domain model's own
  base (:func:`own_base`) and :func:`sensitivity_analyses`.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

Z95 = 1.96  # two-sided 95% normal quantile, as fixed by the method
SEEDS_PER_SD = 3  # the between-seed SDs in the table are over 3 seeds (MEDITRON rows)

# ---------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------

COLUMNS = (
    "source",
    "table_or_figure",
    "modality",
    "domain_model",
    "general_model",
    "relation",
    "task",
    "metric",
    "higher_is_better",
    "domain_score",
    "general_score",
    "n_test",
    "setting",
    "scale",
    "domain_ci_low",
    "domain_ci_high",
    "general_ci_low",
    "general_ci_high",
    "domain_sd",
    "general_sd",
    "notes",
)
RELATIONS = ("continued-pretraining-of-base", "from-scratch-domain", "unrelated-general-baseline")
FIXED_SETTINGS = ("zero-shot", "fine-tuned", "linear-probe", "frozen-probe")
FEW_SHOT = re.compile(r"few-shot ([1-9][0-9]*)")
SCALES = ("percent", "unit")
BOOLEANS = {"TRUE": True, "FALSE": False}
# Values a score (or CI bound) may take on each scale. Negative values are allowed because some
# metrics (kappa, MCC) go below zero; the bounds exist to catch a percent score marked "unit".
SCALE_RANGE = {"percent": (-100.0, 100.0), "unit": (-1.0, 1.0)}
POINTS_PER_UNIT = {"percent": 1.0, "unit": 100.0}


@dataclass(frozen=True)
class Problem:
    """One reason a row was rejected; ``line`` is the CSV line (the header is line 1)."""

    line: int
    column: str
    reason: str


class DataError(ValueError):
    """The table does not match its schema. The message has one line per problem, like
    ``analyses/data/h2h_comparisons.csv row 17, column "scale": 'percnt' is not one of percent, unit``."""

    def __init__(self, path: str, problems: Sequence[Problem]):
        self.path = path
        self.problems = list(problems)
        lines = [f'{path} row {p.line}, column "{p.column}": {p.reason}' for p in self.problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Comparison:
    """One validated row, numbers still on the source's scale."""

    line: int
    source: str
    table_or_figure: str
    modality: str
    domain_model: str
    general_model: str
    relation: str
    task: str
    metric: str
    higher_is_better: bool
    domain_score: float
    general_score: float
    n_test: int | None
    setting: str
    scale: str
    domain_ci: tuple[float, float] | None
    general_ci: tuple[float, float] | None
    domain_sd: float | None
    general_sd: float | None
    notes: str


class _Row:
    """Reads the cells of one CSV record, collecting a :class:`Problem` for each bad one."""

    def __init__(self, line: int, cells: dict[str, str], problems: list[Problem]):
        self.line = line
        self.cells = cells
        self.problems = problems

    def fail(self, column: str, reason: str) -> None:
        self.problems.append(Problem(self.line, column, reason))

    def text(self, column: str, required: bool = True) -> str:
        value = (self.cells.get(column) or "").strip()
        if required and not value:
            self.fail(column, "is empty")
        return value

    def choice(self, column: str, allowed: Sequence[str], shown: str | None = None) -> str:
        value = self.text(column)
        if value and value not in allowed:
            self.fail(column, f"{value!r} is not one of {shown or ', '.join(allowed)}")
        return value

    def number(self, column: str, required: bool = True) -> float | None:
        raw = self.text(column, required)
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            self.fail(column, f"{raw!r} is not a number")
            return None
        if not math.isfinite(value):
            self.fail(column, f"{raw!r} is not a finite number")
            return None
        return value

    def count(self, column: str) -> int | None:
        raw = self.text(column, required=False)
        if not raw:
            return None
        if not re.fullmatch(r"[0-9]+", raw) or int(raw) == 0:
            self.fail(column, f"{raw!r} is not a positive whole number")
            return None
        return int(raw)


def _setting(row: _Row) -> str:
    value = row.text("setting")
    if value and value not in FIXED_SETTINGS and not FEW_SHOT.fullmatch(value):
        shown = "zero-shot, few-shot <k>, fine-tuned, linear-probe, frozen-probe"
        row.fail("setting", f"{value!r} is not one of {shown}")
    return value


def _interval(row: _Row, side: str, score: float | None, scale: str) -> tuple[float, float] | None:
    """The 95% CI of one score: both bounds or neither, low <= score <= high."""
    low_col, high_col = f"{side}_ci_low", f"{side}_ci_high"
    low, high = row.number(low_col, required=False), row.number(high_col, required=False)
    if (low is None) != (high is None):
        given, missing = (low_col, high_col) if high is None else (high_col, low_col)
        if row.text(missing, required=False) == "":  # not already reported as malformed
            row.fail(missing, f"is empty while {given} is given (a CI needs both bounds)")
        return None
    if low is None or high is None:
        return None
    if low > high:
        row.fail(low_col, f"{low:g} is above {high_col} {high:g}")
        return None
    for column, value in ((low_col, low), (high_col, high)):
        _check_range(row, column, value, scale)
    if score is not None and not low <= score <= high:
        row.fail(f"{side}_score", f"{score:g} lies outside its 95% CI [{low:g}, {high:g}]")
    return low, high


def _check_range(row: _Row, column: str, value: float | None, scale: str) -> None:
    if value is None or scale not in SCALE_RANGE:
        return
    low, high = SCALE_RANGE[scale]
    if not low <= value <= high:
        row.fail(column, f"{value:g} is outside [{low:g}, {high:g}], the range of scale {scale!r}")


def _sd(row: _Row, column: str) -> float | None:
    value = row.number(column, required=False)
    if value is not None and value < 0:
        row.fail(column, f"{value:g} is negative")
        return None
    return value


def _comparison(row: _Row) -> Comparison | None:
    before = len(row.problems)
    scale = row.choice("scale", SCALES)
    hib = row.choice("higher_is_better", tuple(BOOLEANS))
    domain_score, general_score = row.number("domain_score"), row.number("general_score")
    _check_range(row, "domain_score", domain_score, scale)
    _check_range(row, "general_score", general_score, scale)
    metric = row.text("metric")
    if "accuracy" in metric.lower() and scale in POINTS_PER_UNIT:
        # An accuracy is a proportion: the binomial SE rule needs it in [0, 1].
        top = 100.0 / POINTS_PER_UNIT[scale]
        for column, value in (("domain_score", domain_score), ("general_score", general_score)):
            if value is not None and not 0.0 <= value <= top:
                row.fail(column, f"{value:g} is not an accuracy on scale {scale!r} (0 to {top:g})")
    comparison = Comparison(
        line=row.line,
        source=row.text("source"),
        table_or_figure=row.text("table_or_figure"),
        modality=row.text("modality"),
        domain_model=row.text("domain_model"),
        general_model=row.text("general_model"),
        relation=row.choice("relation", RELATIONS),
        task=row.text("task"),
        metric=metric,
        higher_is_better=BOOLEANS.get(hib, True),
        domain_score=domain_score if domain_score is not None else math.nan,
        general_score=general_score if general_score is not None else math.nan,
        n_test=row.count("n_test"),
        setting=_setting(row),
        scale=scale,
        domain_ci=_interval(row, "domain", domain_score, scale),
        general_ci=_interval(row, "general", general_score, scale),
        domain_sd=_sd(row, "domain_sd"),
        general_sd=_sd(row, "general_sd"),
        notes=row.text("notes", required=False),
    )
    return comparison if len(row.problems) == before else None


def parse_rows(lines: Iterable[str], label: str) -> list[Comparison]:
    """Validate CSV text (an iterable of lines, header first); raise DataError listing every problem."""
    reader = csv.DictReader(lines)
    problems: list[Problem] = []
    header = reader.fieldnames or []
    missing = [c for c in COLUMNS if c not in header]
    for column in missing:
        problems.append(Problem(1, column, "missing from the header"))
    if missing:
        raise DataError(label, problems)
    table = []
    last_line = reader.line_num  # 1 after the header: the next record starts on line 2
    for cells in reader:
        # A quoted field may span lines, so a record starts on the line after the previous one ended.
        line, last_line = last_line + 1, reader.line_num
        if None in cells:  # DictReader puts surplus fields under the key None
            problems.append(Problem(line, "notes", f"{len(cells[None])} more field(s) than the header has columns"))
            continue
        if all(not (v or "").strip() for v in cells.values()):
            continue  # a blank line is not a row
        short = [c for c in COLUMNS if cells.get(c) is None]
        if short:
            problems.append(Problem(line, short[0], "missing: the row has fewer fields than the header"))
            continue
        comparison = _comparison(_Row(line, cells, problems))
        if comparison is not None:
            table.append(comparison)
    if problems:
        order = {column: i for i, column in enumerate(COLUMNS)}
        raise DataError(label, sorted(problems, key=lambda p: (p.line, order.get(p.column, len(order)))))
    if not table:
        raise DataError(label, [Problem(2, COLUMNS[0], "the table has no rows")])
    return table


def load_table(path: str | Path, label: str | None = None) -> list[Comparison]:
    """Read and validate the head-to-head table. ``label`` names the file in error messages."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return parse_rows(handle, label or str(path))


# ---------------------------------------------------------------------------------------------
# Effects, standard errors, verdicts
# ---------------------------------------------------------------------------------------------


def to_points(value: float, scale: str) -> float:
    """A score, CI bound or SD on the 0-100 point scale (``unit`` values are multiplied by 100)."""
    return value * POINTS_PER_UNIT[scale]


SE_RULES = ("ci", "binomial+sd", "binomial", "sd")
"""The rules of :func:`score_se`, in the order in which they are tried (``binomial+sd`` and
``binomial`` are one step: the binomial SE, with the seed term added when an SD is given)."""


def max_seed_sd(mean: float, *, scale: str, metric: str, seeds: int = SEEDS_PER_SD) -> float:
    """The largest sample SD (n - 1 denominator) that ``seeds`` scores with this mean can have.

    The scores lie in the metric's range on its scale: [0, 1] or [0, 100] for an accuracy,
    else the scale's range (:data:`SCALE_RANGE`). The sum of squared deviations is convex in
    the scores, so its maximum over the box is at a vertex of the set with the given mean: j
    scores at the top, the others at the bottom, and at most one in between.
    """
    low, high = SCALE_RANGE[scale]
    if "accuracy" in metric.lower():
        low = 0.0
    total = seeds * mean
    best = 0.0
    for at_top in range(seeds):
        rest = total - at_top * high - (seeds - at_top - 1) * low  # the one score in between
        if low - 1e-12 <= rest <= high + 1e-12:
            values = [high] * at_top + [low] * (seeds - at_top - 1) + [rest]
            best = max(best, sum((v - mean) ** 2 for v in values))
    return math.sqrt(best / (seeds - 1))


def feasible_sd(sd: float | None, mean: float, *, scale: str, metric: str) -> bool:
    """Whether a between-seed SD could come from :data:`SEEDS_PER_SD` scores with this mean."""
    return sd is None or sd <= max_seed_sd(mean, scale=scale, metric=metric) + 1e-9


def score_se(
    score: float,
    *,
    scale: str,
    metric: str,
    n_test: int | None,
    ci: tuple[float, float] | None = None,
    sd: float | None = None,
) -> tuple[float | None, str | None]:
    """Standard error of one score in points, and the name of the rule that gave it.

    The first rule that applies wins:

    1. ``"ci"``: from a 95% CI, (high - low) / (2 x 1.96);
    2. when the metric names an accuracy and n_test is known, the binomial SE
       100 sqrt(p (1 - p) / n) with p the score as a proportion (the printed value for
       ``unit`` rows, the printed value / 100 for ``percent`` rows): ``"binomial"``; when a
       between-seed SD is also given, the score is a mean over seeds on one test set and has
       both sources of variance, so ``"binomial+sd"``: sqrt(binomial^2 + sd^2 / 3);
    3. ``"sd"``: from a between-seed SD alone, sd / sqrt(3);
    4. otherwise unknown: ``(None, None)``.

    The binomial term is test-set sampling (which items were drawn), the seed term is the
    spread over seeds (which demonstrations or initialisations); neither measures the other,
    so rule 2 adds them instead of letting one replace the other. The CI and SD are on the
    score's scale and are converted to points like the score.
    """
    if ci is not None:
        low, high = ci
        return (to_points(high, scale) - to_points(low, scale)) / (2 * Z95), "ci"
    seed_se = to_points(sd, scale) / math.sqrt(SEEDS_PER_SD) if sd is not None else None
    if "accuracy" in metric.lower() and n_test:
        p = to_points(score, scale) / 100.0
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"accuracy {score!r} on scale {scale!r} is not a proportion")
        binomial = 100.0 * math.sqrt(p * (1.0 - p) / n_test)
        if seed_se is not None:
            return math.hypot(binomial, seed_se), "binomial+sd"
        return binomial, "binomial"
    if seed_se is not None:
        return seed_se, "sd"
    return None, None


def verdict(d: float, se: float | None) -> str:
    """``win``/``tie``/``loss`` from the 95% interval d +- 1.96 se (a bound touching 0 is a tie);
    with no SE, the sign only: ``better``/``worse``/``equal``."""
    if se is None:
        return "better" if d > 0 else "worse" if d < 0 else "equal"
    if d - Z95 * se > 0:
        return "win"
    if d + Z95 * se < 0:
        return "loss"
    return "tie"


@dataclass(frozen=True)
class Effect:
    """d in points (positive: the domain model did better) and its SE (None when unknown).

    ``infeasible_sd`` names the sides (``"domain"``, ``"general"``) whose between-seed SD was
    left out because no :data:`SEEDS_PER_SD` scores with the printed mean can have it."""

    line: int
    source: str
    modality: str
    setting: str
    relation: str
    d: float
    se: float | None
    rule_domain: str | None
    rule_general: str | None
    verdict: str
    infeasible_sd: tuple[str, ...] = ()

    @property
    def known_se(self) -> bool:
        return self.se is not None


def effect(row: Comparison) -> Effect:
    """The effect of one comparison.

    d = domain - general in points, negated when lower is better. The SE of d treats the two
    scores as independent, sqrt(se_d^2 + se_g^2), which overstates it when they share a test set
    (a conservative choice). It is unknown when either score's SE is unknown, and also when it
    comes out as exactly 0 (a degenerate interval carries no information about sampling error,
    and an inverse-variance weight would be infinite).

    A between-seed SD larger than :func:`max_seed_sd` allows for the printed mean cannot be the
    SD of three such scores (a transcription or printing error): it is treated as not given,
    and the side is listed in ``infeasible_sd``.
    """
    sign = 1.0 if row.higher_is_better else -1.0
    d = sign * (to_points(row.domain_score, row.scale) - to_points(row.general_score, row.scale))
    common = {"scale": row.scale, "metric": row.metric, "n_test": row.n_test}
    dropped = []
    sds = {}
    for side, sd, score in (
        ("domain", row.domain_sd, row.domain_score),
        ("general", row.general_sd, row.general_score),
    ):
        if feasible_sd(sd, score, scale=row.scale, metric=row.metric):
            sds[side] = sd
        else:
            sds[side] = None
            dropped.append(side)
    se_dom, rule_dom = score_se(row.domain_score, ci=row.domain_ci, sd=sds["domain"], **common)
    se_gen, rule_gen = score_se(row.general_score, ci=row.general_ci, sd=sds["general"], **common)
    se = math.hypot(se_dom, se_gen) if se_dom is not None and se_gen is not None else None
    if se == 0.0:
        se = None
    return Effect(
        row.line,
        row.source,
        row.modality,
        row.setting,
        row.relation,
        d,
        se,
        rule_dom,
        rule_gen,
        verdict(d, se),
        tuple(dropped),
    )


def effects(table: Iterable[Comparison]) -> list[Effect]:
    return [effect(row) for row in table]


VERDICTS = ("win", "tie", "loss")
SIGN_ONLY = ("better", "worse", "equal")


def count_verdicts(items: Iterable[Effect]) -> dict[str, int]:
    """Counts of every verdict (zeros included), so that the keys never depend on the data."""
    counts = {name: 0 for name in (*VERDICTS, *SIGN_ONLY)}
    for item in items:
        counts[item.verdict] += 1
    return counts


# ---------------------------------------------------------------------------------------------
# DerSimonian-Laird random-effects pooling
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pooled:
    k: int
    d: float
    se: float
    ci_low: float
    ci_high: float
    tau2: float
    i2: float  # as a fraction in [0, 1]
    q: float


def dersimonian_laird(d: Sequence[float], se: Sequence[float]) -> Pooled:
    """Random-effects pooled mean of ``d`` with within-study SEs ``se``.

    Fixed-effect weights w = 1/se^2 give Q = sum w (d - d_fixed)^2; then
    tau^2 = max(0, (Q - (k-1)) / (sum w - sum w^2 / sum w)) (0 when k = 1),
    I^2 = max(0, (Q - (k-1)) / Q) (0 when Q = 0); random-effects weights 1/(se^2 + tau^2) give
    the pooled d with SE = sqrt(1 / sum w*) and the CI d +- 1.96 SE.
    """
    d_arr = np.asarray(d, dtype=np.float64)
    se_arr = np.asarray(se, dtype=np.float64)
    if d_arr.ndim != 1 or d_arr.shape != se_arr.shape or d_arr.size == 0:
        raise ValueError("d and se must be non-empty 1-D sequences of the same length")
    if not np.all(se_arr > 0):
        raise ValueError("every standard error must be positive")
    k = int(d_arr.size)
    w = 1.0 / se_arr**2
    sum_w = float(w.sum())
    fixed = float((w * d_arr).sum() / sum_w)
    q = float((w * (d_arr - fixed) ** 2).sum())
    excess = q - (k - 1)
    tau2 = max(0.0, excess / (sum_w - float((w**2).sum()) / sum_w)) if k > 1 else 0.0
    i2 = max(0.0, excess / q) if q > 0 else 0.0
    w_star = 1.0 / (se_arr**2 + tau2)
    pooled = float((w_star * d_arr).sum() / w_star.sum())
    se_pooled = math.sqrt(1.0 / float(w_star.sum()))
    return Pooled(k, pooled, se_pooled, pooled - Z95 * se_pooled, pooled + Z95 * se_pooled, tau2, i2, q)


def pool(items: Sequence[Effect]) -> Pooled | None:
    """DL over the items with a known SE; None when there are none."""
    known = [e for e in items if e.known_se]
    if not known:
        return None
    return dersimonian_laird([e.d for e in known], [e.se for e in known])  # type: ignore[misc]


@dataclass(frozen=True)
class GroupPool:
    grouping: str
    group: str
    k: int  # rows with a known SE in the group
    n_rows: int  # all rows in the group, sign-only ones included
    pooled: Pooled | None  # None when k < min_k
    note: str = ""


def pool_groups(
    items: Sequence[Effect], grouping: str, min_k: int = 3, order: Callable[[str], Any] | None = None
) -> list[GroupPool]:
    """DL per value of the attribute ``grouping`` (modality, setting, relation ...).

    Every group present in the table is listed, in first-appearance order unless ``order`` is
    given; groups with fewer than ``min_k`` rows of known SE are reported as too small."""
    groups: dict[str, list[Effect]] = {}
    for item in items:
        groups.setdefault(getattr(item, grouping), []).append(item)
    names = sorted(groups, key=order) if order else list(groups)
    out = []
    for name in names:
        members = groups[name]
        k = sum(1 for e in members if e.known_se)
        if k < min_k:
            out.append(GroupPool(grouping, name, k, len(members), None, f"too small (k < {min_k})"))
        else:
            out.append(GroupPool(grouping, name, k, len(members), pool(members)))
    return out


def setting_order(setting: str) -> tuple[int, int, str]:
    """Least to most adaptation: zero-shot, few-shot by k, probes, fine-tuned; unknown ones last."""
    few = FEW_SHOT.fullmatch(setting)
    if few:
        return 1, int(few.group(1)), setting
    rank = {"zero-shot": 0, "linear-probe": 2, "frozen-probe": 3, "fine-tuned": 4}
    return rank.get(setting, 5), 0, setting


def chi2_sf(x: float, df: int) -> float:
    """P(X > x) for X ~ chi-square with ``df`` degrees of freedom (the regularised upper
    incomplete gamma function Q(df/2, x/2))."""
    if df < 1:
        raise ValueError("a chi-square distribution needs at least 1 degree of freedom")
    if x <= 0:
        return 1.0
    half = torch.tensor(df / 2.0, dtype=torch.float64)
    return float(torch.special.gammaincc(half, torch.tensor(x / 2.0, dtype=torch.float64)))


@dataclass(frozen=True)
class SubgroupTest:
    """Test of subgroup differences: do the pooled estimates of the groups differ by more than
    their standard errors explain?"""

    groups: tuple[str, ...]
    q: float  # Q_between
    df: int  # number of groups - 1
    p: float


def subgroup_difference(groups: Sequence[GroupPool], alpha: float = 0.05) -> SubgroupTest | None:
    """Q-test of subgroup differences over the groups that could be pooled (random effects,
    a separate tau^2 in each group, as :func:`pool_groups` estimates them).

    With the groups' pooled estimates d_g and standard errors s_g, weights w_g = 1 / s_g^2 and
    their weighted mean d_bar, Q_between = sum_g w_g (d_g - d_bar)^2 is chi-square with G - 1
    degrees of freedom when all groups share one mean. None when fewer than two groups were
    pooled (there is nothing to compare)."""
    pooled = [(g.group, g.pooled) for g in groups if g.pooled is not None]
    if len(pooled) < 2:
        return None
    d = np.array([p.d for _, p in pooled])
    w = 1.0 / np.array([p.se for _, p in pooled]) ** 2
    mean = float((w * d).sum() / w.sum())
    q = float((w * (d - mean) ** 2).sum())
    df = len(pooled) - 1
    return SubgroupTest(tuple(name for name, _ in pooled), q, df, chi2_sf(q, df))


# ---------------------------------------------------------------------------------------------
# Cluster bootstrap (torch, vectorised over resamples)
# ---------------------------------------------------------------------------------------------


def resolve_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU. Asking for CUDA without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available")
    return resolved


def weighted_dersimonian_laird(counts: torch.Tensor, d: torch.Tensor, se: torch.Tensor) -> torch.Tensor:
    """DL pooled d for each row of ``counts`` (B x n multiplicities of the n effects).

    Row b is the data set in which effect i appears counts[b, i] times; the closed form is the
    same as :func:`dersimonian_laird` with every sum weighted by the multiplicity.
    """
    w = 1.0 / se**2
    k = counts.sum(dim=1)
    cw = counts * w
    sum_w = cw.sum(dim=1)
    fixed = (cw * d).sum(dim=1) / sum_w
    q = (cw * (d - fixed[:, None]) ** 2).sum(dim=1)  # centred form: no cancellation
    c = sum_w - (cw * w).sum(dim=1) / sum_w
    safe_c = torch.where(c > 0, c, torch.ones_like(c))
    tau2 = torch.where(c > 0, torch.clamp((q - (k - 1)) / safe_c, min=0.0), torch.zeros_like(c))
    w_star = counts / (se**2 + tau2[:, None])
    return (w_star * d).sum(dim=1) / w_star.sum(dim=1)


@dataclass
class BootstrapResult:
    """Per-resample statistics (numpy arrays of length n_resamples) and where they were computed."""

    n_resamples: int
    device: str
    seed: int
    frac_win: np.ndarray
    frac_tie: np.ndarray
    frac_loss: np.ndarray
    pooled_d: np.ndarray
    n_clusters: int


def cluster_bootstrap(
    d: Sequence[float],
    se: Sequence[float],
    verdicts: Sequence[str],
    clusters: Sequence[str],
    *,
    n_resamples: int,
    seed: int,
    device: str = "auto",
    chunk_elements: int = 4_000_000,
) -> BootstrapResult:
    """Resample clusters (sources) with replacement; per resample, the win/tie/loss fractions and the
    DL pooled d of the rows drawn (a cluster drawn twice contributes its rows twice).

    A (B x n_clusters) matrix of drawn cluster indices becomes per-cluster counts, then per-row
    multiplicities (B x n_rows); every statistic is then a weighted sum over rows, with no Python
    loop over resamples. Resamples are processed in chunks of about ``chunk_elements`` matrix
    entries; the chunk size depends only on the data, so a seed and a device give the same numbers.
    """
    if n_resamples < 1:
        raise ValueError("n_resamples must be at least 1")
    if not (len(d) == len(se) == len(verdicts) == len(clusters)) or not d:
        raise ValueError("d, se, verdicts and clusters must be non-empty and of the same length")
    unknown = sorted(set(verdicts) - set(VERDICTS))
    if unknown:
        raise ValueError(f"the bootstrap takes rows with a known SE only, got verdicts {unknown}")
    dev = resolve_device(device)
    names = list(dict.fromkeys(clusters))  # first-appearance order, stable across runs
    index = {name: i for i, name in enumerate(names)}
    row_cluster = torch.tensor([index[c] for c in clusters], device=dev)
    as_tensor = lambda values: torch.tensor(values, dtype=torch.float64, device=dev)  # noqa: E731
    d_t, se_t = as_tensor(list(d)), as_tensor(list(se))
    is_verdict = {v: as_tensor([1.0 if x == v else 0.0 for x in verdicts]) for v in VERDICTS}
    n_rows, n_clusters = len(d), len(names)

    generator = torch.Generator(device=dev)
    generator.manual_seed(seed)
    chunk = max(1, chunk_elements // max(n_rows, n_clusters))
    out: dict[str, list[torch.Tensor]] = {name: [] for name in (*VERDICTS, "d")}
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        drawn = torch.randint(n_clusters, (size, n_clusters), generator=generator, device=dev)
        per_cluster = torch.zeros((size, n_clusters), dtype=torch.float64, device=dev)
        per_cluster.scatter_add_(1, drawn, torch.ones_like(per_cluster))
        counts = per_cluster[:, row_cluster]  # B x n_rows multiplicities
        total = counts.sum(dim=1)
        for name in VERDICTS:
            out[name].append(counts @ is_verdict[name] / total)
        out["d"].append(weighted_dersimonian_laird(counts, d_t, se_t))
    result = {name: torch.cat(parts).cpu().numpy() for name, parts in out.items()}
    return BootstrapResult(
        n_resamples, str(dev), seed, result["win"], result["tie"], result["loss"], result["d"], n_clusters
    )


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval (linear interpolation between order statistics)."""
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(np.asarray(samples, dtype=np.float64), [tail, 100.0 - tail])
    return float(low), float(high)


# ---------------------------------------------------------------------------------------------
# Sensitivity
# ---------------------------------------------------------------------------------------------


def leave_one_source_out(items: Sequence[Effect]) -> list[tuple[str, Pooled]]:
    """DL without each source that has rows of known SE (a source without any cannot move d)."""
    sources = list(dict.fromkeys(e.source for e in items if e.known_se))
    out = []
    for source in sources:
        pooled = pool([e for e in items if e.source != source])
        if pooled is not None:
            out.append((source, pooled))
    return out


@dataclass(frozen=True)
class SensitivityRow:
    analysis: str
    pooled: Pooled


OWN_BASE = "continued-pretraining-of-base"
"""The relation of a domain model compared with the very model it was continued from."""


def own_base(items: Sequence[Effect]) -> list[Effect]:
    """The comparisons of a domain model with its own base model (relation :data:`OWN_BASE`)."""
    return [e for e in items if e.relation == OWN_BASE]


def sensitivity_analyses(items: Sequence[Effect]) -> list[SensitivityRow]:
    """All rows, then only the comparisons with the domain model's own base, then without each
    source in turn (leave-one-source-out)."""
    rows = []
    overall = pool(items)
    if overall is not None:
        rows.append(SensitivityRow("all rows with a known SE", overall))
    matched = pool(own_base(items))
    if matched is not None:
        rows.append(SensitivityRow(f"only {OWN_BASE} rows (own base)", matched))
    for source, pooled in leave_one_source_out(items):
        rows.append(SensitivityRow(f"without {source_label(source)}", pooled))
    return rows


# ---------------------------------------------------------------------------------------------
# Sources and their references
# ---------------------------------------------------------------------------------------------

_ARXIV = re.compile(r"arxiv:(\S+)", re.IGNORECASE)
_DOI = re.compile(r"doi:(10\.\S+)", re.IGNORECASE)
# "owner/name <anything> (path @commit)", e.g. "kaiko-ai/eva leaderboard (docs/leaderboards.md @61dc22f8)".
_REPO = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)\b[^()]*\((?P<path>[^()\s@]+) @(?P<commit>[0-9a-f]{7,40})\)")
SOURCE_FORMS = (
    "an arXiv id (arXiv:2311.16079), a DOI (DOI:10.1038/s41591-024-02857-3) or a repository file "
    "at a commit ('kaiko-ai/eva leaderboard (docs/leaderboards.md @61dc22f8)')"
)


def reference_id(source: str) -> str | None:
    """The citation key (Manubot's standard id) under which a source must be in the references.

    ``arXiv:X`` -> ``arxiv:X``; ``DOI:10.x/y`` -> ``doi:10.x/y`` in lower case (Manubot's
    standard form of a DOI); ``owner/name ... (path @commit)`` ->
    ``url:https://github.com/owner/name/blob/commit/path``, the file as it was read. Any other
    form: None (it cannot be cited)."""
    source = source.strip()
    if match := _ARXIV.fullmatch(source):
        return f"arxiv:{match.group(1)}"
    if match := _DOI.fullmatch(source):
        return f"doi:{match.group(1).lower()}"
    if match := _REPO.fullmatch(source):
        return f"url:https://github.com/{match['repo']}/blob/{match['commit']}/{match['path']}"
    return None


def load_references(path: str | Path) -> dict[str, dict]:
    """The CSL JSON items of a references file, by id (DOI ids in lower case, as Manubot reads them)."""
    with open(path, encoding="utf-8") as handle:
        items = json.load(handle)
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of CSL items")
    out = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            key = item["id"]
            out[key.lower() if key.lower().startswith("doi:") else key] = item
    return out


def check_references(
    table: Sequence[Comparison], references: dict[str, dict], label: str, references_label: str
) -> None:
    """Raise :class:`DataError` naming the first row of every source that has no reference."""
    first: dict[str, list[int]] = {}
    for row in table:
        first.setdefault(row.source, []).append(row.line)
    problems = []
    for source, lines in first.items():
        key = reference_id(source)
        more = f" (and {len(lines) - 1} more row(s) of this source)" if len(lines) > 1 else ""
        if key is None:
            problems.append(
                Problem(lines[0], "source", f"{source!r}{more} cannot be cited: write the source as {SOURCE_FORMS}")
            )
        elif key not in references:
            problems.append(
                Problem(
                    lines[0],
                    "source",
                    f'{source!r}{more} has no reference: add a CSL JSON item with "id": "{key}" to {references_label}',
                )
            )
    if problems:
        raise DataError(label, problems)


def source_label(source: str) -> str:
    """A source as the text shows it: never with an "@", which pandoc would read as a citation."""
    if match := _REPO.fullmatch(source.strip()):
        source = source.replace(f" @{match['commit']})", f", commit {match['commit']})")
    return source.replace("@", "\uff20")  # a full-width at sign: shown, never a citation


# Characters the build escapes in table cells; a key containing one cannot be cited from a cell.
_CELL_UNSAFE = set("\\`*_[]<>#|~^${} ")


def cell_citation(key: str) -> str | None:
    """``@{key}``, which pandoc reads as a citation inside a recorded table's cell, or None when the
    key holds a character that the table renderer escapes (cite it in the text instead)."""
    return None if _CELL_UNSAFE & set(key) else f"@{{{key}}}"


def citations(keys: Iterable[str]) -> str:
    """``[@a; @b]``, a Markdown citation of every key, for text printed with ``.raw``."""
    keys = list(dict.fromkeys(keys))
    return "[" + "; ".join(f"@{{{k}}}" for k in keys) + "]" if keys else ""


# ---------------------------------------------------------------------------------------------
# Modalities
# ---------------------------------------------------------------------------------------------

SEQUENCE_AND_RECORD_MODALITIES = ("EHR", "genomics", "proteins", "molecules")
"""Modalities that general models cannot read natively: health records and sequence data
(analyses/data/README.md names the values to use for sequence data)."""


def is_image_modality(modality: str) -> bool:
    """Pathology and every ``imaging-*`` modality: comparisons of image encoders."""
    return modality == "pathology" or modality.startswith("imaging-")
