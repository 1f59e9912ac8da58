"""``livingreview verify``: re-run the analyses from scratch and compare with the published values."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from livingreview.load.results import sealed
from livingreview.review.verify import (
    DEFAULT_RELATIVE,
    FAIL,
    INFO,
    PASS,
    SKIPPED,
    AnalysisCheck,
    PublishedValues,
    Report,
    compare_records,
    print_report,
)
from test_analyses import GIT, NOTEBOOK, cli, write_project

# The fixture notebook at the ci profile (n=10): total = 2 * sum(i*i for i < 10) + 3 words of data.csv.
TOTAL = 573.0


def plain(text: str) -> str:
    return " ".join(text.split())


def report(root: Path) -> dict:
    return json.loads((root / "output" / "verify" / "report.json").read_text())


def row(data: dict, name: str) -> dict:
    return next(r for r in data["rows"] if r["name"] == name)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_project(tmp_path_factory.mktemp("verify") / "p", figure=True)
    result = cli(root, "build")
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture
def project(built: Path) -> Iterator[Path]:
    """The built project; every file a test edits is put back afterwards."""
    sha = subprocess.run(["git", "-C", str(built), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    files = [
        built / "output" / "analyses" / "demo" / "manifest.json",
        built / "webpage" / "v" / sha / "values.json",
        built / "manuscript.yaml",
        built / "analyses" / "demo.py",
    ]
    saved = {path: path.read_bytes() for path in files}
    shutil.rmtree(built / "output" / "verify", ignore_errors=True)
    yield built
    for path, data in saved.items():
        path.write_bytes(data)


def edit_manifest(root: Path, change) -> str:
    path = root / "output" / "analyses" / "demo" / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    # Re-sealed, as if the build had recorded these values: a bare edit would be re-run.
    path.write_text(json.dumps(sealed(manifest), indent=2))
    return path.read_text()


def test_a_drift_within_tolerance_passes(project: Path):
    # total is recorded with an absolute tolerance of 1e-9.
    published = edit_manifest(project, lambda m: m["records"]["total"].update(value=TOTAL + 4e-10))
    result = cli(project, "verify")
    assert result.returncode == 0, result.stderr
    assert "all values agree (2 pass, 1 info)" in plain(result.stderr)
    assert "report: output/verify/report.json" in result.stderr
    data = report(project)
    assert data["ok"] is True and data["summary"] == {"pass": 2, "fail": 0, "skipped": 0, "info": 1}
    total = row(data, "demo.total")
    assert total["verdict"] == PASS and total["reason"] == "within tolerance"
    assert total["difference"] == "|Δ| = 4.00e-10 ≤ tol 1e-09 (abs); Δ = -4.00e-10, relative 6.98e-13"
    assert total["tolerance"] == "1e-09 abs"
    assert row(data, "demo.n")["verdict"] == PASS
    # Figures are reported, never judged: the same plot differs in bytes across machines.
    figure = row(data, "demo.curve_demo")
    assert figure["verdict"] == INFO and figure["difference"] == "identical"
    assert data["analyses"]["demo"]["profile"] == "ci" and data["analyses"]["demo"]["published_profile"] == "ci"
    page = (project / "output" / "verify" / "report.html").read_text()
    assert 'data-key="demo.total" data-verdict="pass"' in page and "All values agree" in page
    # The re-run happened elsewhere: the published build is untouched, the fresh notebook kept for reading.
    assert (project / "output" / "analyses" / "demo" / "manifest.json").read_text() == published
    assert (project / "output" / "verify" / "analyses" / "demo" / "demo.ipynb").is_file()


def test_a_drift_beyond_tolerance_fails_and_names_the_key(project: Path):
    def drift(manifest):
        manifest["records"]["total"]["value"] = TOTAL + 2e-9
        manifest["records"]["n"]["value"] = 11  # ints compare exactly

    edit_manifest(project, drift)
    result = cli(project, "verify")
    assert result.returncode == 6, result.stderr
    message = plain(result.stderr)
    assert "error: published values not reproduced" in message
    assert "analyses/demo.py: demo.total: differs by 2e-09, beyond the tolerance 1e-09" in message
    assert "analyses/demo.py: demo.n: differs (compared exactly) (published 11, reproduced 10)" in message
    assert "hint: full report: " in message and "report.html" in message
    data = report(project)
    assert data["ok"] is False
    assert row(data, "demo.total")["verdict"] == FAIL and row(data, "demo.total")["reproduced_value"] == TOTAL
    assert row(data, "demo.n")["verdict"] == FAIL
    assert row(data, "demo.n")["difference"] == "|Δ| = 1 > 0 (compared exactly); Δ = -1, relative 9.09e-02"
    assert 'data-key="demo.total" data-verdict="fail"' in (project / "output" / "verify" / "report.html").read_text()


def test_removed_and_extra_keys_fail_against_a_published_version(project: Path):
    sha = subprocess.run(
        ["git", "-C", str(project), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    values_path = project / "webpage" / "v" / sha / "values.json"
    values = json.loads(values_path.read_text())
    del values["demo"]["records"]["n"]  # the re-run records a key this version does not have
    values["demo"]["records"]["ghost"] = {**values["demo"]["records"]["total"], "key": "ghost"}  # and misses one
    values_path.write_text(json.dumps(values))

    result = cli(project, "verify", "--against", sha[:8])
    assert result.returncode == 6, result.stderr
    message = plain(result.stderr)
    assert f"verifying against webpage/v/{sha}/values.json" in message
    assert "demo.n: recorded by the re-run, but not published" in message
    assert "demo.ghost: published, but the re-run did not record it" in message
    data = report(project)
    assert data["published"] == {"source": f"webpage/v/{sha}/values.json", "version": sha}
    assert row(data, "demo.total")["verdict"] == PASS
    assert {row(data, "demo.n")["verdict"], row(data, "demo.ghost")["verdict"]} == {FAIL}
    # The version's manifest, next to values.json, gives the published figure hashes.
    assert row(data, "demo.curve_demo")["difference"] == "identical"


def test_without_a_gpu_a_gpu_profile_falls_back_to_ci_and_says_so(project: Path):
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has a GPU: no fallback happens")
    config = project / "manuscript.yaml"
    config.write_text(config.read_text().replace("    profiles:\n", "    gpu_profiles: [full]\n    profiles:\n", 1))
    # As if the values had been published by a full-profile build on a GPU machine.
    edit_manifest(project, lambda m: m.update(profile="full"))

    result = cli(project, "verify")
    assert result.returncode == 6, result.stderr
    message = plain(result.stderr)
    assert "no GPU on this machine: profile full wants one (gpu_profiles), so this re-run uses profile ci" in message
    assert "skipped (profile ci vs full)" in message
    assert "unless --allow-profile-fallback" in message
    data = report(project)
    assert row(data, "demo.total")["verdict"] == SKIPPED and row(data, "demo.n")["verdict"] == SKIPPED

    result = cli(project, "verify", "--allow-profile-fallback")
    assert result.returncode == 0, result.stderr
    data = report(project)
    assert data["ok"] is True and data["summary"]["skipped"] == 2  # listed, not hidden
    assert data["analyses"]["demo"]["profile"] == "ci" and data["analyses"]["demo"]["comparable"] is False
    assert any("no GPU" in note for note in data["analyses"]["demo"]["notes"])
    assert "skipped (profile ci vs full)" in (project / "output" / "verify" / "report.html").read_text()


def test_an_analysis_that_fails_to_rerun_is_exit_5_with_a_report(project: Path):
    notebook = project / "analyses" / "demo.py"
    notebook.write_text(notebook.read_text().replace("fail = False", "fail = True"))
    result = cli(project, "verify")
    assert result.returncode == 5, result.stderr
    assert "deliberate failure in demo" in result.stderr
    data = report(project)
    assert data["ok"] is False and row(data, "demo")["verdict"] == FAIL and data["errors"]


def test_unknown_versions_and_analyses_fail_before_running_anything(project: Path):
    result = cli(project, "verify", "--against", "nosuch")
    assert result.returncode == 2
    assert "--against nosuch: neither a published version under webpage/v/ nor a values file" in plain(result.stderr)
    result = cli(project, "verify", "dem")
    assert result.returncode == 2 and "did you mean 'demo'?" in result.stderr
    assert not (project / "output" / "verify").exists()


# ------------------------------------------------------------------ comparison rules, without re-running


def value(v, type_, tolerance=None, relative=False):
    return {"kind": "value", "type": type_, "value": v, "tolerance": tolerance, "relative": relative}


def verdicts(published: dict, reproduced: dict) -> dict[str, tuple[str, str]]:
    return {r.key: (r.verdict, r.reason) for r in compare_records("a", published, reproduced)}


def test_relative_tolerances_and_floats_without_one():
    found = verdicts(
        {
            "rel_ok": value(100.0, "float", 1e-3, True),
            "rel_bad": value(100.0, "float", 1e-3, True),
            "none_ok": value(1.0, "float"),
            "none_bad": value(1.0, "float"),
            "zero": value(0.0, "float", 0.1, True),
        },
        {
            "rel_ok": value(100.09, "float"),
            "rel_bad": value(100.2, "float"),
            "none_ok": value(1.0 + 1e-15, "float"),
            "none_bad": value(1.0 + 1e-9, "float"),
            "zero": value(1e-9, "float"),
        },
    )
    assert found["rel_ok"][0] == PASS and found["none_ok"][0] == PASS
    assert found["rel_bad"] == (FAIL, "differs by relative 0.002, beyond the tolerance 0.001")
    assert found["none_bad"][0] == FAIL and f"{DEFAULT_RELATIVE:g}" in found["none_bad"][1]
    assert found["zero"][0] == FAIL  # relative to a published zero: only zero agrees
    rows = compare_records("a", {"x": value(1.0, "float")}, {"x": value(1.0, "float")})
    assert rows[0].tolerance == "1e-12 rel (none recorded)"


def test_exact_types_and_type_changes():
    found = verdicts(
        {"s": value("BERT", "str"), "b": value(True, "bool"), "i": value(3, "int"), "t": value(3, "int")},
        {"s": value("BioBERT", "str"), "b": value(True, "bool"), "i": value(3, "int"), "t": value(3.0, "float")},
    )
    assert found["s"][0] == FAIL and found["b"][0] == PASS and found["i"][0] == PASS
    assert found["t"] == (FAIL, "type changed: int → float")


def test_tables_are_compared_cell_by_cell():
    def table(rows, tolerance=1e-6):
        return {"kind": "table", "type": "table", "value": rows, "columns": ["group", "k", "d"], "tolerance": tolerance}

    published = {"t": table([{"group": "text", "k": 4, "d": 0.5}, {"group": "image", "k": 3, "d": -0.25}])}
    close = {"t": table([{"group": "text", "k": 4, "d": 0.5 + 1e-8}, {"group": "image", "k": 3, "d": -0.25}])}
    far = {"t": table([{"group": "text", "k": 4, "d": 0.5}, {"group": "image", "k": 2, "d": -0.2}])}
    short = {"t": table([{"group": "text", "k": 4, "d": 0.5}])}
    assert verdicts(published, close)["t"] == (PASS, "within tolerance")
    assert verdicts(published, far)["t"] == (FAIL, "2 cells differ: row 2, k: 3 → 2; row 2, d: -0.25 → -0.2")
    assert verdicts(published, short)["t"] == (FAIL, "2 rows published, 1 reproduced")


def test_a_profile_mismatch_skips_values_but_still_checks_keys():
    rows = compare_records(
        "a",
        {"x": value(1.0, "float", 0.1), "gone": value(1, "int")},
        {"x": value(5.0, "float")},
        profiles=("ci", "full"),
    )
    found = {r.key: r for r in rows}
    assert found["x"].verdict == SKIPPED and found["x"].label == "skipped (profile ci vs full)"
    assert found["gone"].verdict == FAIL


def test_failing_numbers_say_how_far_and_against_which_tolerance():
    rows = {
        r.key: r
        for r in compare_records(
            "a",
            {
                "abs": value(1.0, "float", 1e-6),
                "rel": value(100.0, "float", 1e-3, True),
                "zero": value(0.0, "float", 0.1, True),
            },
            {"abs": value(1.00032, "float"), "rel": value(100.2, "float"), "zero": value(1e-9, "float")},
        )
    }
    assert rows["abs"].difference == "|Δ| = 3.20e-04 > tol 1e-06 (abs); Δ = +3.20e-04, relative 3.20e-04"
    assert rows["rel"].difference == "|Δ|/|published| = 2.00e-03 > tol 0.001 (rel); Δ = +2.00e-01"
    assert rows["zero"].difference == "|Δ|/|published| = ∞ > tol 0.1 (rel); Δ = +1.00e-09"
    # Shown to the last digit: a display rounded to 12 digits made these two look equal.
    assert (rows["abs"].published, rows["abs"].reproduced) == ("1.0", "1.00032")


def test_failing_non_numbers_say_differs_and_show_both_values():
    rows = {
        r.key: r
        for r in compare_records(
            "a",
            {"s": value("BERT", "str"), "b": value(True, "bool"), "t": value(3, "int")},
            {"s": value("BERT ", "str"), "b": value(False, "bool"), "t": value(3.0, "float")},
        )
    }
    assert rows["s"].verdict == FAIL and rows["s"].difference == 'differs: "BERT" → "BERT "'
    assert rows["b"].verdict == FAIL and rows["b"].difference == "differs: true → false"
    assert rows["t"].difference == "differs in type: int 3 → float 3.0"


def test_a_failing_table_never_reads_max_0():
    def table(rows):
        return {"kind": "table", "type": "table", "value": rows, "columns": ["group", "d"], "tolerance": 1e-6}

    published = table([{"group": "text", "d": 0.5}, {"group": "image", "d": 1.0}])
    # Float cells that agree exactly and a string cell that does not: once "max 0 rel".
    renamed = compare_records(
        "a", {"t": published}, {"t": table([{"group": "text", "d": 0.5}, {"group": "img", "d": 1.0}])}
    )
    assert renamed[0].verdict == FAIL and renamed[0].difference == "1 other cell differs (compared exactly)"
    moved = compare_records(
        "a", {"t": published}, {"t": table([{"group": "text", "d": 0.5}, {"group": "image", "d": 1.1}])}
    )
    assert moved[0].difference == "float cells: max |Δ| = 1.00e-01 > tol 1e-06 (abs)"
    # A NaN is never within a tolerance (NaN > tol is false too): this cell once passed.
    lost = compare_records(
        "a", {"t": published}, {"t": table([{"group": "text", "d": 0.5}, {"group": "image", "d": float("nan")}])}
    )
    assert lost[0].verdict == FAIL and lost[0].difference == "float cells: max |Δ| = nan > tol 1e-06 (abs)"
    same = compare_records(
        "a", {"t": published}, {"t": table([{"group": "text", "d": 0.5}, {"group": "image", "d": 1.0}])}
    )
    assert same[0].verdict == PASS and same[0].difference == "0"


# ------------------------------------------------------------------ the reviewer's output, at scale

# Appended to the fixture notebook: enough values that a table of all of them is noise,
# a long string without spaces (a layout's worst case) and a table.
MANY = """
# %%
for i in range(300):
    record.value(f"v{i:03d}", i / 7, tolerance=1e-12)
record.value("sequence", "ACGT" * 60)
record.table("groups", [{"group": "text", "k": 4}, {"group": "image", "k": 3}])
"""
SEQUENCE = "ACGT" * 59 + "ACGA"
VALUES = 306  # total, n, curve_demo, 300 floats, sequence, groups, and the published-only ghost


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A project of 305 records, run once, then verified with four of them made to fail."""
    root = write_project(tmp_path_factory.mktemp("many") / "p")
    (root / "analyses" / "demo.py").write_text(NOTEBOOK.format(name="demo") + MANY)
    subprocess.run([*GIT, "-C", str(root), "commit", "-qam", "many values"], check=True)
    result = cli(root, "run")
    assert result.returncode == 0, result.stderr

    def drift(manifest):
        records = manifest["records"]
        records["v007"]["value"] = 1.000001
        records["sequence"]["value"] = SEQUENCE
        records["groups"]["value"][1]["group"] = "images"
        records["ghost"] = {**records["v001"], "key": "ghost"}

    edit_manifest(root, drift)
    # As cli() runs it: output captured, so neither stdout nor stderr is a terminal.
    return root, cli(root, "verify")


def test_off_a_terminal_verify_prints_counts_and_only_the_failing_rows_in_full(many):
    root, result = many
    assert result.returncode == 6, result.stderr
    lines = result.stderr.splitlines()
    assert "306 values compared: 301 pass, 1 info, 3 FAIL, 1 missing" in lines
    assert "  demo (profile ci, as published): 306 values: 301 pass, 1 info, 3 FAIL, 1 missing" in lines
    assert "4 records do not agree:" in lines
    start = lines.index("FAIL demo.v007 (float)")
    assert lines[start : start + 6] == [
        "FAIL demo.v007 (float)",
        "  published:  1.000001",
        "  re-run:     1.0",
        "  difference: |Δ| = 1.00e-06 > tol 1e-12 (abs); Δ = -1.00e-06, relative 1.00e-06",
        "  tolerance:  1e-12 abs",
        "  verdict:    FAIL: differs by 1e-06, beyond the tolerance 1e-12",
    ]
    # Long values whole, on one line, whatever width rich assumes off a terminal.
    assert f'  published:  "{SEQUENCE}"' in lines and f'  re-run:     "{"ACGT" * 60}"' in lines
    assert '    row 2, group: "images" → "image"' in lines
    assert 'differs from character 240 on (length 240 → 240): "…TACGTACGTACGA" → "…TACGTACGTACGT"' in result.stderr
    assert "missing demo.ghost (float)" in lines
    # Passing rows are counted, not listed; the whole output is shorter than the list of values.
    assert "demo.v008" not in result.stderr and "demo.total" not in result.stderr
    assert len(lines) < VALUES


def test_figures_are_shown_side_by_side_with_their_hashes(many):
    root, _ = many
    folder = root / "output" / "verify"
    page = (folder / "report.html").read_text()
    section = re.search(r'<section class="figure-pair"[^>]*data-figure="demo.curve_demo".*?</section>', page, re.S)
    assert section, page
    sources = re.findall(r'<img src="([^"]+)"', section.group(0))
    assert sources == ["published/demo/figures/curve_demo.svg", "analyses/demo/figures/curve_demo.svg"]
    for source in sources:
        assert (folder / source).is_file()
    # The published copy is the published file, the re-run's the re-run's; each captioned by its hash.
    published = root / "output" / "analyses" / "demo" / "figures" / "curve_demo.svg"
    assert (folder / sources[0]).read_bytes() == published.read_bytes()
    figure = row(report(root), "demo.curve_demo")
    assert figure["published_value"] in section.group(0) and figure["reproduced_value"] in section.group(0)


@pytest.mark.parametrize("size", [(1920, 1080), (1280, 800)])
def test_the_html_report_fits_the_window_with_the_verdict_in_view(many, size):
    from playwright.sync_api import sync_playwright

    root, _ = many
    executable = shutil.which("chromium")
    assert executable, "the browser tests need Debian's chromium (apt-get install chromium)"
    width, height = size
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto((root / "output" / "verify" / "report.html").as_uri())
            page.wait_for_load_state("load")
            inner = page.evaluate("window.innerWidth")
            assert page.evaluate("document.documentElement.scrollWidth") <= inner
            verdicts = page.locator("table.values td.verdict")
            assert verdicts.count() == VALUES + 4  # every row, and the failing ones again at the top
            for key in ("demo.sequence", "demo.groups", "demo.v007", "demo.ghost"):
                box = page.locator(f'table.values tr[data-key="{key}"] td.verdict').first.bounding_box()
                assert box and box["x"] >= 0 and box["x"] + box["width"] <= inner, (key, box)
            header = page.locator("table.values th").first
            assert header.inner_text().lower() == "verdict"
            # Both figures load from the report's own folder.
            loaded = page.eval_on_selector_all(".figure-pair img", "images => images.map(i => i.naturalWidth > 0)")
            assert loaded == [True, True]
        finally:
            browser.close()


def test_on_a_terminal_the_table_lists_failing_rows_unbroken_and_v_lists_all():
    rows = compare_records(
        "meta_analysis",
        {"a_rather_long_key_for_a_pooled_estimate": value(573.0000000020002, "float", 1e-9), "ok": value(2, "int")},
        {"a_rather_long_key_for_a_pooled_estimate": value(573.0, "float"), "ok": value(2, "int")},
    )
    published = PublishedValues("output/analyses (current build)", None, {}, {})
    checks = [AnalysisCheck("meta_analysis", "analyses/meta.py", "ci", "ci", ran=True)]
    result = Report(published, checks, rows, False, {"class": "cpu", "name": "cpu"}, "now")

    def printed(width: int, verbose: bool = False, terminal: bool = True) -> str:
        out = io.StringIO()
        console = Console(file=out, width=width, force_terminal=terminal, color_system=None, soft_wrap=True)
        print_report(result, console, verbose=verbose, terminal=terminal)
        return out.getvalue()

    for width in (80, 120):
        text = printed(width)
        assert "records that do not agree: 1 of 2 (-v lists all)" in text, text
        assert "573.0000000020002" in text, text  # the value whole, not folded into slivers
        assert "meta_analysis.ok" not in text
        assert max(len(line) for line in text.splitlines()) <= width
    assert "meta_analysis.ok" in printed(120, verbose=True)
    # Too narrow for every number whole: the record on lines of its own instead.
    narrow = printed(50).splitlines()
    assert "1 record does not agree:" in narrow and "  published:  573.0000000020002" in narrow
    # Off a terminal with -v: every record, one line each.
    assert "pass    meta_analysis.ok: 2 → 2" in printed(80, verbose=True, terminal=False).splitlines()
