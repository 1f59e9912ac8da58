"""``livingreview verify``: re-run the analyses from scratch and compare with the published values."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from livingreview.load.results import sealed
from livingreview.review.verify import DEFAULT_RELATIVE, FAIL, INFO, PASS, SKIPPED, compare_records
from test_analyses import cli, write_project

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
    root = write_project(tmp_path_factory.mktemp("verify") / "p")
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
    assert total["difference"] == "-4e-10" and total["tolerance"] == "1e-09 abs"
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
    assert row(data, "demo.n")["verdict"] == FAIL and row(data, "demo.n")["difference"] == "-1"
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
