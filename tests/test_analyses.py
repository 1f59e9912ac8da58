"""End-to-end tests of the analyses engine: Papermill runs, records, injection, cache."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from livingreview.load.results import dump, load_manifest

GIT = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.org"]

# The fixture analysis. Only the tests that look at figures draw one: matplotlib costs a
# kernel about 0.8 s of CPU, and the suite runs over a hundred kernels on two cores.
PLAIN_NOTEBOOK = """\
# %% [markdown]
# # {name}

# %% tags=["parameters"]
n: int = 100  # number of terms
scale = 2.0  # multiplier
fail = False

# %%
from helper import square
from livingreview import record

with open("data.csv") as handle:
    offset = len(handle.read().split())
total = sum(square(i) for i in range(n)) * scale + offset
record.value("total", total, fmt="{{:,.1f}}", tolerance=1e-9)
record.value("n", n)

# %%
if fail:
    raise RuntimeError("deliberate failure in {name}")
"""
FIGURE_CELL = """\
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

fig, ax = plt.subplots()
ax.plot(range(n), [square(i) for i in range(n)])
record.figure("curve_{name}", fig, caption="Squares up to n.")
"""
NOTEBOOK = PLAIN_NOTEBOOK + FIGURE_CELL  # with the figure curve_<name>


def write_project(
    root: Path, names=("demo",), text: str | None = None, notebook_pages: bool = False, figure: bool = False
) -> Path:
    """A committed project with analyses ``names`` (the notebook above) and one section.

    With ``figure``, each analysis also draws ``curve_<name>``, and the default section shows it.

    Without ``notebook_pages``, builds skip Jupyter Book (``notebook_pages: false``): it costs
    about 2.5 s of CPU a build, and only the tests that look at the pages need them.
    """
    (root / "content").mkdir(parents=True)
    (root / "analyses").mkdir()
    registry = ""
    for name in names:
        registry += textwrap.dedent(
            f"""\
              {name}:
                notebook: analyses/{name}.py
                inputs: [analyses/data.csv]
                profiles:
                  ci: {{n: 10}}
                  full: {{n: 1000}}
            """
        ).replace("\n", "\n  ")
        (root / "analyses" / f"{name}.py").write_text((NOTEBOOK if figure else PLAIN_NOTEBOOK).format(name=name))
    pages = "" if notebook_pages else "notebook_pages: false\n"
    (root / "manuscript.yaml").write_text(f"repository: owner/repo\nformats: [html]\n{pages}analyses:\n  {registry}\n")
    (root / "analyses" / "data.csv").write_text("x\n1\n2\n")
    (root / "analyses" / "helper.py").write_text("def square(x):\n    return x * x\n")
    (root / "content" / "metadata.yaml").write_text("title: Analyses fixture\n")
    shown = "\n\n{{ demo.curve_demo }}\n\nSee @fig:curve_demo." if figure else ""
    body = text or f"## Results\n\nThe total is {{{{ demo.total }}}} for n = {{{{ demo.n }}}}.{shown}\n"
    (root / "content" / "01.results.md").write_text(body)
    (root / ".gitignore").write_text("/output/\n/webpage/\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run([*GIT, "-C", str(root), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(root), "commit", "-qm", "fixture"], check=True)
    return root


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "livingreview", "-C", str(root), *args], capture_output=True, text=True
    )


def states(result: subprocess.CompletedProcess) -> dict[str, str]:
    """'demo [ci]: run (code changed)' lines -> {'demo': 'run (code changed)'}."""
    found = {}
    for line in result.stderr.splitlines():
        line = line.strip()
        if "]: " in line and not line.startswith(("✓", "✗")):
            name, state = line.split("]: ", 1)
            found[name.split(" [")[0]] = state
    return found


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "p")


def test_values_and_figures_are_injected_with_provenance(tmp_path: Path):
    project = write_project(tmp_path / "p", notebook_pages=True, figure=True)
    result = cli(project, "build")
    assert result.returncode == 0, result.stderr
    html = (project / "output" / "manuscript.html").read_text()
    # ci profile: n=10 -> sum of squares 0..9 = 285, *2 + 2 data rows + header word = 573
    assert ">573.0</a>" in html
    assert 'data-key="demo.total"' in html
    head = subprocess.run(["git", "-C", str(project), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert f"commit {head[:12]}" in html
    assert 'href="notebooks/demo.html#cell-' in html
    assert re.search(r"<figcaption[^>]*><span>Figure\s1:</span> Squares up to n.</figcaption>", html)
    assert '<a href="#fig:curve_demo">1</a>' in html
    assert (project / "output" / "analyses" / "demo" / "figures" / "curve_demo.svg").is_file()
    assert (project / "output" / "analyses" / "demo" / "figures" / "curve_demo.png").is_file()
    manifest = json.loads((project / "output" / "analyses" / "demo" / "manifest.json").read_text())
    total = manifest["records"]["total"]
    assert total["value"] == 573.0 and total["type"] == "float" and total["tolerance"] == 1e-9
    assert manifest["records"]["n"]["type"] == "int"
    assert isinstance(total["cell"], int) and total["cell_id"]
    assert manifest["parameters"] == {"n": 10, "scale": 2.0, "fail": False}
    assert manifest["inputs"]["analyses/data.csv"] and manifest["modules"]["analyses/helper.py"]
    assert manifest["git"]["commit"] == head.strip()
    assert {"python", "papermill", "numpy", "matplotlib"} <= set(manifest["packages"])
    assert manifest["device"]["class"] == "cpu" and manifest["device"]["name"]
    assert manifest["wall_time_s"] > 0
    # Written from the typed model in the order of its fields, and read back through it as written,
    # key for key and number for number (an int tolerance stays an int), so seals and values.json hold.
    assert list(manifest) == [
        "analysis",
        "notebook",
        "executed_notebook",
        "key",
        "profile",
        "parameters",
        "inputs",
        "modules",
        "key_parts",
        "git",
        "packages",
        "device",
        "executor",
        "started",
        "wall_time_s",
        "records",
        "files",
        "seal",
    ]
    assert list(total) == [
        "kind",
        "key",
        "type",
        "value",
        "fmt",
        "formatted",
        "unit",
        "tolerance",
        "relative",
        "description",
        "cell",
        "cell_id",
    ]
    assert manifest["executor"] == {"kind": "local"} and type(manifest["records"]["n"]["tolerance"]) is int
    folder = project / "output" / "analyses" / "demo"
    text = (folder / "manifest.json").read_text()
    assert json.dumps(dump(load_manifest(folder)), indent=2, ensure_ascii=False) + "\n" == text
    # Importing analyses/helper.py left no bytecode in the sources.
    assert not list((project / "analyses").rglob("__pycache__"))


def test_cache_invalidation(project: Path):
    assert cli(project, "run").returncode == 0
    assert states(cli(project, "run")) == {"demo": "cached"}

    section = project / "content" / "01.results.md"
    section.write_text(section.read_text() + "\nMore prose.\n")
    assert states(cli(project, "build")) == {"demo": "cached"}

    (project / "analyses" / "data.csv").write_text("x\n1\n2\n3\n")
    assert states(cli(project, "run")) == {"demo": "run (input changed: analyses/data.csv)"}
    assert states(cli(project, "run")) == {"demo": "cached"}

    config = project / "manuscript.yaml"
    config.write_text(config.read_text().replace("ci: {n: 10}", "ci: {n: 11}"))
    assert states(cli(project, "run")) == {"demo": "run (parameters changed: n 10 → 11)"}

    (project / "analyses" / "helper.py").write_text("def square(x):\n    return x ** 2\n")
    assert states(cli(project, "run")) == {"demo": "run (module changed: analyses/helper.py)"}

    notebook = project / "analyses" / "demo.py"
    notebook.write_text(notebook.read_text().replace("# # demo", "# # demo, with a reworded title"))
    assert states(cli(project, "run")) == {"demo": "cached"}  # notebook prose is not code

    # A damaged notebook summary (planning's cache of the parsed notebook) is re-derived, not trusted.
    summaries = list((project / "output" / ".cache" / "notebooks").glob("*.json"))
    assert summaries
    for summary in summaries:
        summary.write_text('{"code_digest": "0", "parameters": {}, "imports"')
    assert states(cli(project, "run")) == {"demo": "cached"}

    notebook.write_text(notebook.read_text().replace("* scale + offset", "* scale + offset + 1"))
    assert states(cli(project, "run")) == {"demo": "run (code changed)"}
    manifest = json.loads((project / "output" / "analyses" / "demo" / "manifest.json").read_text())
    assert manifest["records"]["total"]["value"] == sum(i * i for i in range(11)) * 2 + 4 + 1

    assert states(cli(project, "run", "--force")) == {"demo": "run (forced)"}


def test_corrupt_cache_entry_is_rerun(tmp_path: Path):
    project = write_project(tmp_path / "p", figure=True)
    assert cli(project, "run").returncode == 0
    svg = project / "output" / "analyses" / "demo" / "figures" / "curve_demo.svg"
    svg.write_text("<svg/>")
    result = cli(project, "run")
    assert states(result) == {"demo": "run (corrupt cache entry: figures/curve_demo.svg was modified)"}
    assert svg.read_text() != "<svg/>"


def test_failing_notebook_names_cell_and_keeps_other_results(tmp_path: Path):
    root = write_project(tmp_path / "p", names=("demo", "other"))
    config = root / "manuscript.yaml"
    config.write_text(config.read_text().replace("  other:\n", "  other:\n    parameters: {fail: true}\n", 1))
    result = cli(root, "run", "--jobs", "2")
    assert result.returncode == 5
    message = " ".join(result.stderr.split())
    assert "analysis 'other' raised RuntimeError: deliberate failure in other" in message
    assert "analyses/other.py: cell " in message
    assert "partial notebook with the traceback: output/analyses/other.failed.ipynb" in message
    assert (root / "output" / "analyses" / "other.failed.ipynb").is_file()
    assert not (root / "output" / "analyses" / "other").exists()
    assert (root / "output" / "analyses" / "demo" / "manifest.json").is_file()


def test_parallel_runs_both_analyses(tmp_path: Path):
    root = write_project(tmp_path / "p", names=("demo", "other"))
    result = cli(root, "run", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    assert states(result) == {"demo": "run (never run)", "other": "run (never run)"}
    for name in ("demo", "other"):
        assert json.loads((root / "output" / "analyses" / name / "manifest.json").read_text())["records"]


THREADS_NOTEBOOK = """\
# %% tags=["parameters"]
n: int = 1

# %%
import os
from livingreview import record
record.value("threads", int(os.environ["OMP_NUM_THREADS"]))
record.value("wait", os.environ["OMP_WAIT_POLICY"])
record.value("plugins", os.environ.get("PYDANTIC_DISABLE_PLUGINS", "unset"))
"""


def test_kernels_get_the_cores_this_process_may_use_and_wait_without_spinning(tmp_path: Path):
    """Threads follow the CPU affinity (taskset, a container's cpuset), not the machine's core count,
    and OpenMP threads wait passively unless the user says otherwise: spinning ones take the cores
    of everything else on a busy machine. Pydantic's plugins, which the command line skips for
    its own models, are the kernel's as the user set them."""
    root = write_project(tmp_path / "p", text="## Results\n\n{{ demo.threads }} {{ demo.wait }}\n")
    (root / "analyses" / "demo.py").write_text(THREADS_NOTEBOOK)
    records = root / "output" / "analyses" / "demo" / "manifest.json"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "PYDANTIC_DISABLE_PLUGINS")}
    done = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-m", "livingreview", "-C", str(root), "run"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(records.read_text())["records"]
    assert (got["threads"]["value"], got["wait"]["value"], got["plugins"]["value"]) == (1, "PASSIVE", "unset")

    done = subprocess.run(
        [sys.executable, "-m", "livingreview", "-C", str(root), "run", "--force"],
        capture_output=True,
        text=True,
        env={**env, "OMP_WAIT_POLICY": "ACTIVE", "PYDANTIC_DISABLE_PLUGINS": "logfire"},
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(records.read_text())["records"]
    cores = len(os.sched_getaffinity(0))
    assert (got["threads"]["value"], got["wait"]["value"], got["plugins"]["value"]) == (cores, "ACTIVE", "logfire")


KERNEL_NOTEBOOK = """\
# %% tags=["parameters"]
n = 100

# %%
import sys
from helper import square
from livingreview import record

record.value("debugger", sys.modules.get("debugpy") is not None)
record.value("helper", square(3))
"""


def test_the_kernel_starts_without_a_debugger_and_nothing_beside_the_notebook_stands_in_for_it(tmp_path: Path):
    """Analyses' kernels are ipykernel's without debugpy (half of a kernel's start-up), and, as
    with ipykernel's own launcher, a module beside the notebook cannot replace ipykernel, though
    the notebook still imports its own modules from there."""
    root = write_project(tmp_path / "p", text="## Results\n\n{{ demo.debugger }} {{ demo.helper }}\n")
    (root / "analyses" / "demo.py").write_text(KERNEL_NOTEBOOK)
    marker = tmp_path / "shadowed"
    (root / "analyses" / "ipykernel.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    done = subprocess.run(
        [sys.executable, "-m", "livingreview", "-C", str(root), "run"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    got = json.loads((root / "output" / "analyses" / "demo" / "manifest.json").read_text())["records"]
    assert (got["debugger"]["value"], got["helper"]["value"]) == (False, 9)
    assert not marker.exists()


def test_unknown_and_ill_typed_parameters_fail_before_any_kernel(project: Path):
    result = cli(project, "run", "-p", "nn=3")
    assert result.returncode == 2
    assert "unknown parameter 'nn' of analysis 'demo'" in result.stderr
    assert "did you mean 'n'?" in result.stderr
    result = cli(project, "run", "-p", "n=many")
    assert result.returncode == 2
    assert "parameter 'n' must be int, got str 'many'" in " ".join(result.stderr.split())
    assert not (project / "output" / "analyses").exists()


def test_undefined_key_names_file_line_and_suggests(tmp_path: Path):
    root = write_project(tmp_path / "p", text="## Results\n\nTotal: {{ demo.totl }}.\n")
    result = cli(root, "build")
    assert result.returncode == 3
    message = " ".join(result.stderr.split())
    assert "content/01.results.md:3: undefined template variable 'totl' in {{ demo.totl }}" in message
    assert "did you mean 'total'?" in message


def test_unused_record_is_a_warning(tmp_path: Path):
    root = write_project(tmp_path / "p", text="## Results\n\nTotal: {{ demo.total }}.\n", figure=True)
    result = cli(root, "build")
    assert result.returncode == 0, result.stderr
    assert "demo: 2 recorded values are not used in the text (-v lists them)" in result.stderr
    result = cli(root, "-v", "build")
    assert "recorded but not used in the text: demo.n" in result.stderr
    assert "recorded but not used in the text: demo.curve_demo" in result.stderr


def test_params_lists_types_defaults_and_profiles(project: Path):
    result = cli(project, "params", "demo")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if " n " in line)
    assert "int" in row and "100" in row and "10" in row and "1000" in row and "number of terms" in row


def test_killed_run_leaves_nothing_trusted(project: Path):
    notebook = project / "analyses" / "demo.py"
    notebook.write_text(notebook.read_text().replace("if fail:", "import time\ntime.sleep(30)\nif fail:"))
    process = subprocess.Popen(
        [sys.executable, "-m", "livingreview", "-C", str(project), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    staging = project / "output" / "analyses"
    deadline = time.time() + 60
    while time.time() < deadline and not list(staging.glob(".staging-demo-*/records.jsonl")):
        time.sleep(0.2)
    assert list(staging.glob(".staging-demo-*/records.jsonl")), "the run never reached the first record"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (staging / "demo" / "manifest.json").exists()
    notebook.write_text(notebook.read_text().replace("time.sleep(30)", "time.sleep(0)"))
    result = cli(project, "run")
    assert result.returncode == 0, result.stderr
    assert states(result) == {"demo": "run (never run)"}
    assert not list(staging.glob(".staging-*"))
