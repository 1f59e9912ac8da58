"""Benchmark: rebuild times of a project with analyses, and parallel vs serial execution.

    python bench/analyses_rebuild.py [--repeat 3] [--project .]

Part 1 copies the project (git clone of HEAD into a temp folder, so content/ is never
touched) and times `livingreview build --format html`: cold, no-op (answered from the
build's record), no-op with a file touched (every stage checked), prose edit, and an
edit to one analysis's notebook. The prose-edit rebuild is compared with bare rootstock
(`manubot process` + rootstock's pandoc chain) on the same content (target: <= 0.45x),
and the no-op rebuild with the prose edit (target: <= 0.15x).

Part 2 times `livingreview run --force` with --jobs 1 against --jobs 2 (target: >= 1.6x
faster with two analyses on 2 cores), twice: on a scratch project with two CPU-bound
notebooks of about 5 s each, and on the project's own analyses (ci profile), which are
a mix of numpy/torch work and Python-level code.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from build_overhead import bare_chain
from livingreview.load.project import Project

GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.org"]

CPU_NOTEBOOK = """\
# %% tags=["parameters"]
size: int = 320
repeats: int = 120

# %%
import numpy as np
from livingreview import record
rng = np.random.default_rng(0)
total = 0.0
for _ in range(repeats):
    a = rng.standard_normal((size, size))
    total += float(np.linalg.svd(a, compute_uv=False)[0])
record.value("total", total)
"""


def livingreview(root: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "livingreview", "-C", str(root), *args], check=True, capture_output=True)
    return time.perf_counter() - start


def rebuilds(source: Path, repeat: int) -> dict[str, list[float]]:
    kinds = ("cold", "no-op", "no-op, full", "prose edit", "analysis edit", "bare")
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch) / "p"
            subprocess.run(["git", "clone", "-q", str(source), str(root)], check=True)
            project = Project.load(root)
            times["cold"].append(livingreview(root, "build", "--format", "html"))
            times["no-op"].append(livingreview(root, "build", "--format", "html"))
            # Touched, not changed: the full check of every stage instead of the record (util/uptodate.py).
            (root / "manuscript.yaml").touch()
            times["no-op, full"].append(livingreview(root, "build", "--format", "html"))
            section = sorted(project.content_dir.glob("[0-9]*.md"))[-1]
            section.write_text(section.read_text() + "\nOne more sentence of prose.\n")
            times["prose edit"].append(livingreview(root, "build", "--format", "html"))
            if project.config.analyses:
                notebook = root / next(iter(project.config.analyses.values())).notebook
                notebook.write_text(notebook.read_text() + "\n# %%\n_bench_edit = 1\n")
                # No stored publication result matches the edited code: the build runs its ci profile.
                edit = ["--fallback", "ci"] if project.config.publish_profile else []
                times["analysis edit"].append(livingreview(root, "build", "--format", "html", *edit))
            out = Path(scratch) / "bare"
            out.mkdir()
            bare = bare_chain(project, out, pdf=False)
            times["bare"].append(bare["process"] + bare["html"])
    return times


def serial_vs_parallel(root: Path, repeat: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"jobs 1": [], "jobs 2": []}
    livingreview(root, "run")  # warm up kernels and caches
    for _ in range(repeat):
        times["jobs 1"].append(livingreview(root, "run", "--force", "--jobs", "1"))
        # Each notebook's own wall time in the serial run bounds what parallelism can give:
        # two analyses finish no sooner than the longer one.
        walls = [
            json.loads(m.read_text())["wall_time_s"] for m in (root / "output" / "analyses").glob("*/manifest.json")
        ]
        times.setdefault("bound", []).append(sum(walls) / max(walls))
        times["jobs 2"].append(livingreview(root, "run", "--force", "--jobs", "2"))
    return times


def parallel_synthetic(repeat: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "analyses").mkdir()
        registry = "analyses:\n"
        for name in ("first", "second"):
            (root / "analyses" / f"{name}.py").write_text(CPU_NOTEBOOK)
            registry += f"  {name}:\n    notebook: analyses/{name}.py\n"
        (root / "manuscript.yaml").write_text(registry)
        return serial_vs_parallel(root, repeat)


def parallel_project(source: Path, repeat: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "p"
        subprocess.run(["git", "clone", "-q", str(source), str(root)], check=True)
        return serial_vs_parallel(root, repeat)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--project", default=".")
    parser.add_argument("--only", choices=["rebuilds", "parallel"], help="run one part only")
    args = parser.parse_args()
    source = Path(args.project).resolve()

    def med(values: list[float]) -> float:
        return statistics.median(values) if values else float("nan")

    if args.only != "parallel":
        report_rebuilds(source, args.repeat, med)
    if args.only != "rebuilds":
        report_parallel(source, args.repeat, med)
    return 0


def report_rebuilds(source: Path, repeat: int, med) -> None:
    times = rebuilds(source, repeat)
    print(f"Rebuilds of {source.name} (HTML), medians of {repeat} runs (seconds)")
    for name, values in times.items():
        print(f"  {name:<14} {med(values):6.2f}")
    ratio = med(times["prose edit"]) / med(times["bare"])
    print(f"  prose edit / bare rootstock (manubot process + its pandoc chain) = {ratio:.2f}x (target <= 0.45x)")
    noop = med(times["no-op"]) / med(times["prose edit"])
    print(f"  no-op / prose edit = {noop:.2f}x (target <= 0.15x)")
    full = med(times["no-op, full"]) / med(times["prose edit"])
    print(f"  no-op with a file touched (every stage checked) / prose edit = {full:.2f}x")


def report_parallel(source: Path, repeat: int, med) -> None:
    runs = [("Two synthetic CPU-bound analyses", parallel_synthetic(repeat))]
    if len(Project.load(source).config.analyses) >= 2:
        runs.append((f"The analyses of {source.name} (ci profile)", parallel_project(source, repeat)))
    for label, times in runs:
        print(f"\n{label}, medians of {repeat} runs (seconds)")
        for name in ("jobs 1", "jobs 2"):
            print(f"  {name:<14} {med(times[name]):6.2f}")
        print(
            f"  speed-up jobs 2 vs jobs 1 = {med(times['jobs 1']) / med(times['jobs 2']):.2f}x (target >= 1.6x; "
            f"at most {med(times['bound']):.2f}x for these two notebooks' serial wall times)"
        )


if __name__ == "__main__":
    sys.exit(main())
