"""Benchmark: livingreview's build against the bare Manubot commands, on the same content.

    python bench/build_overhead.py [--repeat 5] [--project .]

"Bare" is what an author would type by hand: `manubot process --skip-remote`, then
pandoc with rootstock's filter chain, then headless Chromium. The citation filter in
the bare chain is livingreview-cite-filter, i.e. Manubot's pandoc-manubot-cite with the
schema download replaced, because Manubot's own filter crashes offline. Both chains run
alternately in the same process, and medians are reported with their ratio. The
target (issue 2) is an overhead under 10%.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from livingreview.load.project import Project
from livingreview.render.html import pandoc_executable, tool_env
from livingreview.render.inject import namespaces
from livingreview.render.pdf import FLAGS, chromium_executable


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, env=tool_env(), capture_output=True)
    return time.perf_counter() - start


def bare_chain(project: Project, out: Path, pdf: bool = True) -> dict[str, float]:
    """The hand-typed commands, writing into a scratch folder."""
    bin_dir = Path(sys.executable).parent
    manuscript = out / "manuscript.md"
    html = out / "manuscript.html"
    times = {}
    # The injected analysis values, as the text livingreview substitutes, handed to
    # manubot as template variables (one namespace per analysis).
    variables = []
    for name, namespace in namespaces(project).items():
        path = out / f"{name}.json"
        recorded = namespace.keys()  # a namespace is not a mapping: it only lists its keys
        path.write_text(json.dumps({key: str(getattr(namespace, key)) for key in recorded}))
        variables.append(f"--template-variables-path={name}={path}")
    times["process"] = timed(
        [
            str(bin_dir / "manubot"),
            "process",
            f"--content-directory={project.content_dir}",
            f"--output-directory={out}",
            "--skip-citations",
            "--skip-remote",
            "--log-level=ERROR",
            *variables,
        ],
        project.root,
    )
    times["html"] = timed(
        [
            str(pandoc_executable("rootstock")),
            *(f"--defaults={p}" for p in project.pandoc_defaults),
            f"--csl={project.csl}",
            f"--include-after-body={project.html_theme}",
            f"--include-after-body={project.html_plugins}",
            f"--output={html}",
            str(manuscript),
        ],
        project.root,
    )
    if not pdf:
        return times
    # Rootstock's build also puts images beside the HTML; without them Chromium has less to load.
    if (project.content_dir / "images").is_dir():
        shutil.copytree(project.content_dir / "images", out / "images", dirs_exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        times["pdf"] = timed(
            [
                chromium_executable(None),
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--print-to-pdf={out / 'manuscript.pdf'}",
                html.as_uri(),
            ],
            project.root,
        )
    return times


def livingreview_chain(project: Project) -> dict[str, float]:
    """The whole CLI as a user runs it; per-stage times come from its own report."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "livingreview", "-C", str(project.root), "build"],
        capture_output=True,
        text=True,
        check=True,
    )
    total = time.perf_counter() - start
    times = {"total": total}
    for line in done.stderr.splitlines():
        parts = line.replace("│", " ").split()
        if len(parts) == 2 and parts[0] in {"check", "process", "html", "pdf"}:
            times[parts[0]] = float(parts[1])
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--project", default=".")
    args = parser.parse_args()
    project = Project.load(args.project)

    bare_runs, ours_runs = [], []
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        bare_chain(project, out)  # warm file caches for both chains
        for _ in range(args.repeat):
            times = bare_chain(project, out)
            times["total"] = sum(times.values())
            bare_runs.append(times)
            ours_runs.append(livingreview_chain(project))
        shutil.rmtree(out, ignore_errors=True)

    def median(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in runs)

    rows = []
    for stage in ("check", "process", "html", "pdf", "total"):
        rows.append((stage, median(bare_runs, stage), median(ours_runs, stage)))
    print(f"Flagship build, medians of {args.repeat} runs (seconds)\n")
    print(f"{'stage':<8} {'bare':>8} {'livingreview':>13}")
    for stage, bare, ours in rows:
        print(f"{stage:<8} {bare:>8.2f} {ours:>13.2f}")
    bare_total, ours_total = rows[-1][1], rows[-1][2]
    overhead = ours_total / bare_total - 1
    print(f"\noverhead: {overhead:+.1%} (target < +10%)")
    result = {"repeat": args.repeat, "bare": bare_runs, "livingreview": ours_runs, "overhead": overhead}
    target = project.output_dir / "bench" / "build_overhead.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2))
    print(f"raw timings: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
