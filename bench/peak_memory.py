"""Benchmark: peak memory of a full build (ci profile, every analysis re-run, HTML + PDF + site).

    python bench/peak_memory.py [--project .] [--profile ci]

Clones HEAD into a temporary folder and runs `livingreview build --force` there, sampling
every 0.1 s the summed resident memory (VmRSS) of the whole process tree: the CLI, the
analysis workers and their kernels, pandoc and its filters, Chromium. Summing the tree
is stricter than getrusage's max RSS, which reports only the largest single process.
Target: under 4 GB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def tree_rss(root: int) -> int:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except OSError:
                pass
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
        stack.extend(children.get(pid, []))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=".")
    parser.add_argument("--profile", default="ci")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "p"
        subprocess.run(["git", "clone", "-q", str(Path(args.project).resolve()), str(root)], check=True)
        start = time.perf_counter()
        build = subprocess.Popen(
            [sys.executable, "-m", "livingreview", "-C", str(root), "build", "--force", "--profile", args.profile],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        peak = 0
        while build.poll() is None:
            peak = max(peak, tree_rss(build.pid))
            time.sleep(0.1)
        seconds = time.perf_counter() - start
        if build.returncode:
            print(build.stderr.read().decode()[-2000:], file=sys.stderr)
            return build.returncode
    print(
        f"full build, profile {args.profile}: {seconds:.1f} s, peak memory of the process tree "
        f"{peak / 2**30:.2f} GiB (target < 4 GB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
