"""Every data-dependent switch in the review's text is a recorded fact that the test re-derives.

The sections (``content/*.md``, Appendix A aside) choose their wording with
``{% if meta_analysis.NAME.raw %}``. Each NAME must be a boolean that ``analyses/meta_analysis.py``
records, and this file computes it again, independently of the notebook's own code, from the CSV
(parsed by ``meta_stats``) and the numeric records: ``FACTS`` maps each name to its
re-derivation. A switch in the text without an entry in ``FACTS`` fails the test, so a new
sentence cannot depend on the data without its condition being checked.
``tests/test_meta_robustness.py`` applies the same derivations to a table with synthetic rows.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "analyses"))

import meta_stats as ms  # noqa: E402

from test_meta_stats import reduced_project  # noqa: E402

NAMESPACE = "meta_analysis"
OWN_BASE = "continued-pretraining-of-base"
ADAPTED = ("linear-probe", "frozen-probe", "fine-tuned")
SEQUENCE_AND_RECORDS = {"EHR", "genomics", "proteins", "molecules"}  # analyses/data/README.md
TAG = re.compile(r"\{%-?\s*(if|elif)\s+(.*?)\s*-?%\}", re.S)
RAW = re.compile(rf"\b{NAMESPACE}\.(\w+)\.raw\b")
ANY = re.compile(rf"\b{NAMESPACE}\.(\w+)((?:\.\w+)?)")
PRINTED_RAW = re.compile(rf"\{{\{{-?\s*{NAMESPACE}\.(\w+)\.raw\s*-?\}}\}}")


# ------------------------------------------------------------------------------------------
# Reading the switches out of the text
# ------------------------------------------------------------------------------------------


def sections(content: Path) -> list[Path]:
    return sorted(p for p in content.glob("*.md") if not p.name.startswith("91."))


def switches(content: Path) -> dict[str, list[str]]:
    """NAME -> the places (file:line) of every ``{% if/elif ... meta_analysis.NAME.raw ... %}``."""
    found: dict[str, list[str]] = {}
    for path in sections(content):
        text = path.read_text(encoding="utf-8")
        for match in TAG.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            for name in RAW.findall(match.group(2)):
                found.setdefault(name, []).append(f"{path.name}:{line}")
    return found


def conditions_without_raw(content: Path) -> list[str]:
    """Conditions that test a record object instead of its value (always true: a bug)."""
    bad = []
    for path in sections(content):
        text = path.read_text(encoding="utf-8")
        for match in TAG.finditer(text):
            for name, attribute in ANY.findall(match.group(2)):
                if attribute != ".raw":
                    bad.append(f"{path.name}: {{% {match.group(1)} {match.group(2)} %}} tests {name} without .raw")
    return bad


def printed_raw(content: Path) -> set[str]:
    """Names printed with ``{{ meta_analysis.NAME.raw }}`` (unformatted: the citation strings)."""
    return {name for path in sections(content) for name in PRINTED_RAW.findall(path.read_text(encoding="utf-8"))}


# ------------------------------------------------------------------------------------------
# Independent re-derivation
# ------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What a derivation may use: the recorded values and the table read again from the CSV."""

    values: dict
    table: list[ms.Comparison]
    effects: list[ms.Effect]

    @classmethod
    def load(cls, records: dict, csv_path: Path) -> Context:
        table = ms.load_table(csv_path)
        values = {key: entry.get("value") for key, entry in records.items() if entry.get("kind") == "value"}
        return cls(values, table, ms.effects(table))

    @property
    def known(self) -> list[ms.Effect]:
        return [e for e in self.effects if e.se is not None]

    def count(self, verdict: str) -> int:
        return sum(1 for e in self.effects if e.verdict == verdict)

    def pool(self, items) -> ms.Pooled | None:
        items = [e for e in items if e.se is not None]
        return ms.dersimonian_laird([e.d for e in items], [e.se for e in items]) if items else None

    @property
    def overall(self) -> ms.Pooled:
        return self.pool(self.effects)

    def groups(self, attribute: str) -> dict[str, ms.Pooled | None]:
        """Pooled estimate per group, None below min_group_k rows of known SE."""
        members: dict[str, list[ms.Effect]] = {}
        for e in self.effects:
            members.setdefault(getattr(e, attribute), []).append(e)
        k_min = self.values["min_group_k"]
        return {
            g: (self.pool(items) if sum(1 for e in items if e.se is not None) >= k_min else None)
            for g, items in members.items()
        }

    def subgroup_p(self, attribute: str) -> float | None:
        """p of Q_between over the pooled groups (plain arithmetic and an independent chi-square tail)."""
        pooled = [p for p in self.groups(attribute).values() if p is not None]
        if len(pooled) < 2:
            return None
        weights = [1 / p.se**2 for p in pooled]
        mean = sum(w * p.d for w, p in zip(weights, pooled, strict=True)) / sum(weights)
        q = sum(w * (p.d - mean) ** 2 for w, p in zip(weights, pooled, strict=True))
        return chi2_tail(q, len(pooled) - 1)

    def differ(self, attribute: str) -> bool:
        p = self.subgroup_p(attribute)
        return p is not None and p < self.values["alpha"]

    @property
    def sign_only(self) -> list[tuple[ms.Comparison, ms.Effect]]:
        return [(row, e) for row, e in zip(self.table, self.effects, strict=True) if e.se is None]

    @property
    def imaging_sign_only(self) -> list[tuple[ms.Comparison, ms.Effect]]:
        return [(r, e) for r, e in self.sign_only if r.modality == "pathology" or r.modality.startswith("imaging-")]

    def pct(self, verdict: str) -> float:
        return 100 * self.count(verdict) / len(self.known)


def chi2_tail(x: float, df: int) -> float:
    """P(chi-square_df > x) from the series of the lower incomplete gamma function."""
    if x <= 0:
        return 1.0
    a, z = df / 2, x / 2
    term = total = 1 / a
    n = 0
    while term > 1e-17 * total:
        n += 1
        term *= z / (a + n)
        total += term
    lower = math.exp(a * math.log(z) - z - math.lgamma(a)) * total
    return max(0.0, 1.0 - lower)


def max_sd_of_three(mean: float, low: float, high: float) -> float:
    """Largest sample SD of three values in [low, high] with this mean: the SD is convex, so its
    maximum is at a vertex of the feasible set, where two of the values are at a bound."""
    best = 0.0
    for values in (
        (low, low, 3 * mean - 2 * low),
        (low, 3 * mean - low - high, high),
        (3 * mean - 2 * high, high, high),
    ):
        if all(low - 1e-9 <= v <= high + 1e-9 for v in values):
            best = max(best, sum((v - mean) ** 2 for v in values) / 2)
    return math.sqrt(best)


def infeasible_sds(ctx: Context) -> list[tuple[int, str]]:
    out = []
    for row in ctx.table:
        top = 100.0 if row.scale == "percent" else 1.0
        low = 0.0 if "accuracy" in row.metric.lower() else -top
        for side in ("domain", "general"):
            sd = getattr(row, f"{side}_sd")
            if sd is not None and sd > max_sd_of_three(getattr(row, f"{side}_score"), low, top) + 1e-9:
                out.append((row.line, side))
    return out


def _zero_shot_vs_adapted(ctx: Context) -> tuple[ms.Pooled | None, list[ms.Pooled]]:
    pooled = ctx.groups("setting")
    return pooled.get("zero-shot"), [pooled[s] for s in ADAPTED if pooled.get(s) is not None]


def _loso_by_source(ctx: Context) -> dict[str, float]:
    """Pooled d without each source that has rows of known SE."""
    sources = dict.fromkeys(e.source for e in ctx.known)
    if len(sources) < 2:
        return {}
    return {s: ctx.pool([e for e in ctx.effects if e.source != s]).d for s in sources}


def _loso(ctx: Context) -> list[float]:
    return list(_loso_by_source(ctx).values())


def _sequence_and_records_fewest(ctx: Context) -> bool:
    rows: dict[str, int] = {}
    for row in ctx.table:
        rows[row.modality] = rows.get(row.modality, 0) + 1
    thin = sum(n for m, n in rows.items() if m in SEQUENCE_AND_RECORDS)
    others = [n for m, n in rows.items() if m not in SEQUENCE_AND_RECORDS]
    return bool(others) and thin < min(others)


def _own_base(ctx: Context) -> ms.Pooled:
    return ctx.pool([e for e in ctx.effects if e.relation == OWN_BASE])


FACTS: dict[str, Callable[[Context], bool]] = {
    "ties_are_majority": lambda c: c.count("tie") > c.count("win") + c.count("loss"),
    "pooled_ci_includes_zero": lambda c: c.overall.ci_low <= 0 <= c.overall.ci_high,
    "pooled_ci_above_zero": lambda c: c.overall.ci_low > 0,
    "heterogeneity_dominates": lambda c: math.sqrt(c.overall.tau2) > abs(c.overall.d),
    "boot_ci_includes_zero": lambda c: c.values["pooled_d_boot_lo"] <= 0 <= c.values["pooled_d_boot_hi"],
    "boot_sources_few": lambda c: len({e.source for e in c.known}) < c.values["few_sources"],
    "own_base_close": lambda c: abs(_own_base(c).d - c.overall.d) < 1.0,
    "loso_all_small": lambda c: max(abs(d) for d in _loso(c)) < 2.0,
    "modality_test_possible": lambda c: c.subgroup_p("modality") is not None,
    "setting_test_possible": lambda c: c.subgroup_p("setting") is not None,
    "relation_test_possible": lambda c: c.subgroup_p("relation") is not None,
    "modality_groups_differ": lambda c: c.differ("modality"),
    "setting_groups_differ": lambda c: c.differ("setting"),
    "relation_groups_differ": lambda c: c.differ("relation"),
    "any_factor_differs": lambda c: any(c.differ(a) for a in ("modality", "setting", "relation")),
    "some_modality_too_small": lambda c: any(p is None for p in c.groups("modality").values()),
    "zero_shot_and_adapted_pooled": lambda c: (
        _zero_shot_vs_adapted(c)[0] is not None and bool(_zero_shot_vs_adapted(c)[1])
    ),
    "zero_shot_ahead_of_adapted": lambda c: (
        (z := _zero_shot_vs_adapted(c))[0] is not None and bool(z[1]) and all(z[0].d > p.d for p in z[1])
    ),
    "sign_only_mostly_better": lambda c: c.count("better") > 2 * (c.count("worse") + c.count("equal")),
    "has_imaging_sign_only": lambda c: bool(c.imaging_sign_only),
    "imaging_sign_only_mostly_better": lambda c: (
        bool(c.imaging_sign_only)
        and 3 * sum(1 for _, e in c.imaging_sign_only if e.d > 0) > 2 * len(c.imaging_sign_only)
    ),
    "imaging_sign_only_imagenet": lambda c: (
        bool(c.imaging_sign_only) and all("imagenet" in r.general_model.lower() for r, _ in c.imaging_sign_only)
    ),
    "sequence_and_records_fewest": _sequence_and_records_fewest,
    "any_infeasible_sd": lambda c: bool(infeasible_sds(c)),
    "one_infeasible_sd": lambda c: len(infeasible_sds(c)) == 1,
    "win_share_close_to_seed": lambda c: abs(c.pct("win") - c.values["seed_pct_win"]) < 5.0,
    "more_ties_than_seed": lambda c: c.pct("tie") > c.values["seed_pct_tie"],
    "fewer_losses_than_seed": lambda c: c.pct("loss") < c.values["seed_pct_loss"],
}


def derive(records: dict, csv_path: Path) -> dict[str, bool]:
    ctx = Context.load(records, csv_path)
    return {name: bool(fn(ctx)) for name, fn in FACTS.items()}


def citation_keys(text: str) -> list[str]:
    """The keys of a generated ``[@{a}; @{b}]``; fails on anything else."""
    match = re.fullmatch(r"\[(@\{[^{}\s]+\}(?:; @\{[^{}\s]+\})*)\]", text)
    assert match, f"not a citation list: {text!r}"
    return re.findall(r"@\{([^{}]+)\}", text)


def printed_citations(records: dict, csv_path: Path) -> dict[str, set[str]]:
    """What each ``.raw``-printed citation string must cite, from the CSV."""
    ctx = Context.load(records, csv_path)
    loso = _loso_by_source(ctx)
    most = max(loso, key=lambda s: abs(loso[s] - ctx.overall.d))
    return {
        "source_citations": {ms.reference_id(r.source) for r in ctx.table},
        "sign_only_citations": {ms.reference_id(r.source) for r, _ in ctx.sign_only},
        "loso_max_source_citation": {ms.reference_id(most)},
    }


# ------------------------------------------------------------------------------------------
# The notebook on the repository's own table
# ------------------------------------------------------------------------------------------


def run_notebook(root: Path) -> dict:
    """Run meta_analysis under ci in a copy holding only it; return the manifest's records."""
    reduced_project(root)
    done = subprocess.run(
        [sys.executable, "-m", "livingreview", "-C", str(root), "run", NAMESPACE, "--profile", "ci"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((root / "output" / "analyses" / NAMESPACE / "manifest.json").read_text())["records"]


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_notebook(tmp_path_factory.mktemp("prose"))


def test_the_text_has_switches_and_each_tests_a_value():
    found = switches(REPO / "content")
    assert len(found) >= 15, found
    assert conditions_without_raw(REPO / "content") == []


def test_every_switch_has_a_re_derivation():
    missing = {name: places for name, places in switches(REPO / "content").items() if name not in FACTS}
    assert not missing, f"switches in the text with no re-derivation in FACTS: {missing}"


def test_every_switch_is_a_recorded_boolean(records):
    for name, places in switches(REPO / "content").items():
        assert name in records, f"{name} ({', '.join(places)}) is not recorded"
        assert records[name]["kind"] == "value" and records[name]["type"] == "bool", (name, records[name])


def test_every_switch_equals_its_re_derivation(records):
    derived = derive(records, REPO / "analyses" / "data" / "h2h_comparisons.csv")
    wrong = {
        name: (records[name]["value"], derived[name])
        for name in switches(REPO / "content")
        if records[name]["value"] != derived[name]
    }
    assert not wrong, f"recorded != re-derived (recorded, derived): {wrong}"


def test_printed_citations_cite_exactly_the_sources(records):
    printed = printed_raw(REPO / "content")
    expected = printed_citations(records, REPO / "analyses" / "data" / "h2h_comparisons.csv")
    assert printed <= set(expected), printed - set(expected)
    assert "source_citations" in printed
    for name in printed:
        assert set(citation_keys(records[name]["value"])) == expected[name], name


def test_the_numbers_behind_the_switches_match(records):
    """The counts and estimates the sentences print agree with the same re-derivation."""
    ctx = Context.load(records, REPO / "analyses" / "data" / "h2h_comparisons.csv")
    v = ctx.values
    assert (v["n_win"], v["n_tie"], v["n_loss"]) == (ctx.count("win"), ctx.count("tie"), ctx.count("loss"))
    assert v["pooled_d"] == pytest.approx(ctx.overall.d, abs=1e-9)
    assert v["pooled_d_own_base"] == pytest.approx(_own_base(ctx).d, abs=1e-9)
    assert v["k_own_base"] == _own_base(ctx).k
    for attribute in ("modality", "setting", "relation"):
        p = ctx.subgroup_p(attribute)
        assert v[f"{attribute}_p"] == pytest.approx(1.0 if p is None else p, rel=1e-6, abs=1e-12)
    infeasible = infeasible_sds(ctx)
    assert v["n_infeasible_sd"] == len(infeasible)
    if not infeasible:
        assert v["infeasible_sd_rows"] == "none"
    for line, side in infeasible:
        assert f"{line} ({side} model)" in v["infeasible_sd_rows"]


def test_chi2_tail_and_max_sd_helpers():
    # The test's own helpers, against closed forms: P(chi2_2 > x) = exp(-x/2), P(chi2_1 > x) = erfc(sqrt(x/2)).
    assert chi2_tail(3.0, 2) == pytest.approx(math.exp(-1.5), rel=1e-12)
    assert chi2_tail(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-9)
    assert chi2_tail(8.0, 1) == pytest.approx(math.erfc(2.0), rel=1e-9)
    # Three values in [0, 100] with mean 49.1: at most (0, 47.3, 100), SD 50.02.
    assert max_sd_of_three(49.1, 0, 100) == pytest.approx(math.sqrt((49.1**2 + 1.8**2 + 50.9**2) / 2))
    assert max_sd_of_three(50.0, 0, 100) == pytest.approx(50.0)


def test_a_switch_without_a_derivation_is_caught(tmp_path: Path):
    (tmp_path / "01.x.md").write_text(
        "{% if meta_analysis.ties_are_majority.raw and meta_analysis.brand_new_fact.raw %}a{% endif %}\n"
        "{% if meta_analysis.pooled_d %}always true{% endif %}\n"
    )
    (tmp_path / "91.appendix-a.md").write_text("{% if meta_analysis.ignored.raw %}x{% endif %}\n")
    found = switches(tmp_path)
    assert set(found) == {"ties_are_majority", "brand_new_fact"} and found["brand_new_fact"] == ["01.x.md:1"]
    assert [name for name in found if name not in FACTS] == ["brand_new_fact"]
    assert len(conditions_without_raw(tmp_path)) == 1
