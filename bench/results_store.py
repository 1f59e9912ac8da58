"""Benchmark: a build that pulls every analysis from the results store against one that has them cached.

    python bench/results_store.py [--repeat 5] [--project .]

The project must set ``publish_profile`` and its store must hold a result for the current
code of every analysis (``livingreview run --profile full; livingreview results push``).
Each repetition clones HEAD into a temporary folder (the clone's ``origin`` is the
project, so the git store is read from the project's ``results`` branch, as CI reads its
repository's) and times ``livingreview build --format html``:

- *pull + build*: the fresh clone has nothing in ``output/``; the build clones the store's
  branch, verifies and copies each entry, then renders;
- *cached build*: ``output/`` is emptied except ``output/analyses/`` (every analysis cached
  locally, as after a previous build) and the build runs again, rendering everything.

The difference is what the store costs; medians and their ratio come from one run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(root: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "livingreview", "-C", str(root), "build", "--format", "html"],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"build failed in {root}:\n{done.stderr[-3000:]}")
    return elapsed, done.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--project", default=".")
    args = parser.parse_args()
    source = Path(args.project).resolve()
    times: dict[str, list[float]] = {"pull + build": [], "cached build": []}
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch) / "p"
            subprocess.run(["git", "clone", "-q", str(source), str(root)], check=True)
            elapsed, log = build(root)
            if "from the results store" not in log or "run (" in log:
                raise SystemExit(f"the fresh clone did not publish from the store alone:\n{log[-3000:]}")
            times["pull + build"].append(elapsed)
            for entry in (root / "output").iterdir():
                if entry.name != "analyses":
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            shutil.rmtree(root / "webpage", ignore_errors=True)
            elapsed, log = build(root)
            if "from the results store" in log or "run (" in log:
                raise SystemExit(f"the cached build pulled or ran something:\n{log[-3000:]}")
            times["cached build"].append(elapsed)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name:<13} median {medians[name]:6.2f} s   ({shown})")
    ratio = medians["pull + build"] / medians["cached build"]
    print(f"pull + build / cached build: {ratio:.2f}x (+{medians['pull + build'] - medians['cached build']:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
