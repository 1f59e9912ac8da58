"""The review's text stays true when the living table grows in ways it has not seen yet.

A copy of the flagship (content/ without Appendix A, the meta-analysis and its data, and
manuscript.yaml reduced to that analysis) gets synthetic rows appended to its CSV -- kept here,
never in analyses/data: new sources (an arXiv paper, a DOI with characters a table cell cannot
cite, a repository file at a commit), new modalities (one of sequence data, one of images), the
relation ``from-scratch-domain``, a new setting, an infeasible between-seed SD and, in one
scenario, a source with no reference. The copy is built with the real CLI under the ci profile:

(a) with the unreferenced source the build fails, naming that source's CSV row;
(b) without it the build passes, every fact the text switches on equals the re-derivation of
    ``tests/test_meta_prose.py`` on the grown table, and the page shows the new modalities,
    relation and setting, and cites every new source.

Appendix A is left out of the copy: it is another analysis, with its own tests, and leaving
it out keeps each build to seconds.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "analyses"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import meta_stats as ms  # noqa: E402

from test_meta_prose import derive, printed_citations, printed_raw, switches  # noqa: E402

CSV = "analyses/data/h2h_comparisons.csv"
REFERENCES = "content/manual-references.json"

GENOMICS = "arXiv:2999.00001"  # a new modality of sequence data, the relation from-scratch-domain, a new setting
ENDOSCOPY = "DOI:10.9999/Synthetic_Bench.2"  # a new image modality, sign only; "_" cannot be cited from a cell
PROTEINS = "example-org/bench leaderboard (results/table.csv @0123abcd)"  # a repository file; seed SDs, one infeasible
UNREFERENCED = "arXiv:2999.09999"

NEW_REFERENCES = [
    {
        "id": "arxiv:2999.00001",
        "type": "article",
        "title": "A Synthetic Genomic Language Model Pretrained from Scratch",
        "issued": {"date-parts": [[2099]]},
    },
    {
        "id": "doi:10.9999/synthetic_bench.2",
        "type": "article-journal",
        "title": "A Synthetic Endoscopy Encoder Benchmark",
        "issued": {"date-parts": [[2099]]},
    },
    {
        "id": "url:https://github.com/example-org/bench/blob/0123abcd/results/table.csv",
        "type": "dataset",
        "title": "A Synthetic Protein Leaderboard",
        "author": [{"literal": "example-org"}],
    },
]


def row(**cells: str) -> dict[str, str]:
    out = dict.fromkeys(ms.COLUMNS, "")
    out.update(table_or_figure="Table 1", task="synthetic task", higher_is_better="TRUE", notes="synthetic test row")
    out.update(cells)
    return out


def genomics(i: int, domain: float, general: float) -> dict[str, str]:
    return row(
        source=GENOMICS, modality="genomics", domain_model="GenoLM", general_model="GeneralLM-7B",
        relation="from-scratch-domain", task=f"variant effect {i}", metric="AUROC", setting="few-shot 8", scale="unit",
        domain_score=f"{domain:.2f}", general_score=f"{general:.2f}",
        domain_ci_low=f"{domain - 0.02:.2f}", domain_ci_high=f"{domain + 0.02:.2f}",
        general_ci_low=f"{general - 0.02:.2f}", general_ci_high=f"{general + 0.02:.2f}",
    )  # fmt: skip


def endoscopy(i: int, domain: float, general: float) -> dict[str, str]:
    return row(
        source=ENDOSCOPY, modality="imaging-endoscopy", domain_model="EndoEncoder", general_model="ViT-B/16 (ImageNet)",
        relation="continued-pretraining-of-base", task=f"polyp task {i}", metric="balanced accuracy",
        setting="linear-probe", scale="percent", domain_score=f"{domain}", general_score=f"{general}",
    )  # fmt: skip


def proteins(i: int, domain: float, general: float, general_sd: float) -> dict[str, str]:
    return row(
        source=PROTEINS, modality="proteins", domain_model="ProtLM", general_model="GeneralLM-70B",
        relation="unrelated-general-baseline", task=f"protein QA {i}", metric="accuracy (%)", setting="fine-tuned",
        scale="percent", n_test="800", domain_score=f"{domain}", general_score=f"{general}",
        domain_sd="1.5", general_sd=f"{general_sd}",
    )  # fmt: skip


SYNTHETIC = [
    genomics(1, 0.80, 0.70),
    genomics(2, 0.75, 0.74),
    genomics(3, 0.90, 0.60),
    genomics(4, 0.66, 0.71),
    endoscopy(1, 81.0, 77.0),
    endoscopy(2, 70.0, 72.5),
    endoscopy(3, 90.0, 84.0),
    proteins(1, 62.0, 60.0, 2.0),
    proteins(2, 90.0, 91.0, 20.0),  # no three accuracies with mean 91 have an SD of 20 (at most 15.6)
    proteins(3, 55.0, 58.0, 1.0),
]
UNREFERENCED_ROW = genomics(5, 0.85, 0.80) | {"source": UNREFERENCED}


def flagship_copy(root: Path, extra_rows: list[dict[str, str]]) -> Path:
    """The flagship with the meta-analysis only, the synthetic rows and references for the new sources."""
    shutil.copytree(REPO / "content", root / "content", ignore=shutil.ignore_patterns("91.*"))
    (root / "analyses" / "data").mkdir(parents=True)
    for name in ("analyses/meta_analysis.py", "analyses/meta_stats.py", CSV):
        shutil.copyfile(REPO / name, root / name)
    config = yaml.safe_load((REPO / "manuscript.yaml").read_text(encoding="utf-8"))
    entry = config["analyses"]["meta_analysis"]
    # The notebook reads the references; as an input they are part of its cache key.
    entry["inputs"] = list(dict.fromkeys([*entry.get("inputs", []), REFERENCES]))
    config["analyses"] = {"meta_analysis": entry}
    (root / "manuscript.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    (root / CSV).write_text(grown_csv(extra_rows), encoding="utf-8")
    references = json.loads((root / REFERENCES).read_text(encoding="utf-8"))
    (root / REFERENCES).write_text(json.dumps(references + NEW_REFERENCES, indent=2), encoding="utf-8")
    return root


def build(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "livingreview", "-C", str(root), "build", "--profile", "ci", "--format", "html"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip


def grown_csv(extra_rows: list[dict[str, str]]) -> str:
    """The shipped CSV with rows appended, as flagship_copy writes it."""
    text = (REPO / CSV).read_text(encoding="utf-8")
    out = io.StringIO()
    csv.DictWriter(out, fieldnames=list(ms.COLUMNS), lineterminator="\n").writerows(extra_rows)
    return text + ("" if text.endswith("\n") else "\n") + out.getvalue()


def test_the_synthetic_rows_are_valid_and_new():
    shipped = ms.load_table(REPO / CSV)
    grown = ms.parse_rows(io.StringIO(grown_csv(SYNTHETIC)), CSV)
    assert len(grown) == len(shipped) + len(SYNTHETIC)
    assert {"genomics", "imaging-endoscopy", "proteins"}.isdisjoint(r.modality for r in shipped)
    assert "from-scratch-domain" not in {r.relation for r in shipped}
    assert "few-shot 8" not in {r.setting for r in shipped}
    infeasible = [(e.line, e.infeasible_sd) for e in ms.effects(grown) if e.infeasible_sd]
    assert infeasible == [(124, ("general",)), (len(shipped) + 1 + 9, ("general",))]  # header, 211 rows, 9th new row


def test_an_unreferenced_source_fails_the_build_naming_its_row(tmp_path: Path):
    rows = [*SYNTHETIC[:4], UNREFERENCED_ROW, *SYNTHETIC[4:]]
    root = flagship_copy(tmp_path / "copy", rows)
    line = next(r.line for r in ms.load_table(root / CSV) if r.source == UNREFERENCED)
    result = build(root)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output[-2000:]
    assert "DataError" in output
    assert (
        f"{CSV} row {line}, column \"source\": '{UNREFERENCED}' has no reference: add a CSL JSON item with "
        f'"id": "arxiv:2999.09999" to {REFERENCES}'
    ) in output
    assert not (root / "output" / "manuscript.html").exists()


@pytest.fixture(scope="module")
def grown(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = flagship_copy(tmp_path_factory.mktemp("robust") / "copy", SYNTHETIC)
    result = build(root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root


def records_of(root: Path) -> dict:
    return json.loads((root / "output" / "analyses" / "meta_analysis" / "manifest.json").read_text())["records"]


def test_every_switch_holds_on_the_grown_table(grown: Path):
    records = records_of(grown)
    found = switches(grown / "content")
    derived = derive(records, grown / CSV)
    assert set(found) <= set(derived), set(found) - set(derived)
    wrong = {name: (records[name]["value"], derived[name]) for name in found if records[name]["value"] != derived[name]}
    assert not wrong, f"recorded != re-derived on the grown table (recorded, derived): {wrong}"
    expected = printed_citations(records, grown / CSV)
    for name in printed_raw(grown / "content"):
        keys = set(re.findall(r"@\{([^{}]+)\}", records[name]["value"]))
        assert keys == expected[name], name


def test_the_grown_table_is_counted_and_compared_over_all_relations(grown: Path):
    records = records_of(grown)
    v = {key: entry.get("value") for key, entry in records.items()}
    table = ms.load_table(grown / CSV)
    effects = ms.effects(table)
    assert v["n_rows"] == 211 + len(SYNTHETIC) == len(table)
    assert v["n_sources"] == len({r.source for r in table}) == 11
    assert v["n_modalities"] == len({r.modality for r in table}) == 10
    # Three relations now: the test of subgroup differences compares all of them.
    assert v["relation_groups_tested"] == (
        "unrelated-general-baseline, continued-pretraining-of-base and from-scratch-domain"
    )
    assert v["relation_df"] == 2
    # "Against its own base" is continued pretraining of that base, not "anything but an unrelated baseline".
    known = [e for e in effects if e.se is not None]
    own = [e for e in known if e.relation == "continued-pretraining-of-base"]
    not_unrelated = [e for e in known if e.relation != "unrelated-general-baseline"]
    assert v["k_own_base"] == len(own) < len(not_unrelated)
    assert v["pooled_d_own_base"] == pytest.approx(ms.dersimonian_laird([e.d for e in own], [e.se for e in own]).d)
    # Rows 124 and the second protein row have SDs no three scores with their means can have.
    protein_line = next(r.line for r in table if r.task == "protein QA 2")
    assert (
        v["n_infeasible_sd"] == 2
        and v["infeasible_sd_rows"] == f"124 (general model) and {protein_line} (general model)"
    )
    sources = {r["source"]: r for r in records["sources"]["value"]}
    assert sources["A Synthetic Genomic Language Model Pretrained from Scratch"]["reference"] == "@{arxiv:2999.00001}"
    # A key with "_" cannot be cited from a cell: the cell shows it, the introducing sentence cites it.
    assert sources["A Synthetic Endoscopy Encoder Benchmark"]["reference"] == "doi:10.9999/synthetic_bench.2"
    assert "@{doi:10.9999/synthetic_bench.2}" in v["source_citations"]


def test_the_page_shows_and_cites_what_is_new(grown: Path):
    page = (grown / "output" / "manuscript.html").read_text(encoding="utf-8")
    text = re.sub(r"<[^>]+>", " ", page)
    for word in ("genomics", "imaging-endoscopy", "proteins", "from-scratch-domain", "few-shot 8"):
        assert word in text, word
    sources = page[page.index('id="tbl:sources"') :]
    sources = sources[: sources.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", sources, re.S)
    genomic = next(r for r in rows if "A Synthetic Genomic Language Model" in r)
    assert 'class="citation"' in genomic and "genomics" in genomic
    bibliography = page[page.index('id="refs"') :]
    # Every source of the grown table is in the bibliography: the new ones and the eight shipped ones.
    titles = {item["id"]: item["title"] for item in json.loads((grown / REFERENCES).read_text(encoding="utf-8"))}
    for source in dict.fromkeys(r.source for r in ms.load_table(grown / CSV)):
        title = titles[ms.reference_id(source)]
        assert html.escape(title, quote=False) in bibliography, (source, title)


def test_a_relation_of_a_kind_the_analysis_does_not_know_fails_naming_its_row(tmp_path: Path):
    # "Against its own base" and the other relation words have meanings the text relies on: a new
    # kind must be described (analyses/data/README.md) and added to the code, not guessed at.
    odd = row(
        source=GENOMICS, modality="genomics", domain_model="Distilled-DNA", general_model="General-LM",
        relation="distilled-from-general", task="variant effect 99", metric="AUROC", setting="zero-shot",
        scale="unit", domain_score="0.71", general_score="0.70",
    )  # fmt: skip
    root = flagship_copy(tmp_path / "copy", [*SYNTHETIC, odd])
    line = len((root / CSV).read_text(encoding="utf-8").splitlines())  # the last row, counting the header as 1
    result = build(root)
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0, output[-2000:]
    assert f"{CSV} row {line}" in output and "relation" in output and "distilled-from-general" in output
