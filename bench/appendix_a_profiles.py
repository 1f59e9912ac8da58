"""Benchmark: the Appendix A analysis under its ci and full profiles on this machine.

    python bench/appendix_a_profiles.py [--repeat 3] [--profiles ci full] [-p cpu_max_width=1024]

Runs `livingreview run appendix_a --profile P --force` in a clone of HEAD (so neither
analyses/ nor output/ of the checkout is touched) and prints medians of the whole run
and of the notebook's own wall time, the device, and the NTK widths and head counts the
profile actually ran. On a CPU the full profile skips total widths above cpu_max_width
(manuscript.yaml); what it skipped is what needs a GPU.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profiles", nargs="+", default=["ci", "full"])
    parser.add_argument("-p", dest="overrides", action="append", default=[], help="extra -p KEY=VALUE")
    parser.add_argument("--project", default=".")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "p"
        subprocess.run(["git", "clone", "-q", str(Path(args.project).resolve()), str(root)], check=True)
        overrides = [x for o in args.overrides for x in ("-p", o)]
        for profile in args.profiles:
            total, notebook = [], []
            for _ in range(args.repeat):
                start = time.perf_counter()
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "livingreview",
                        "-C",
                        str(root),
                        "run",
                        "appendix_a",
                        "--profile",
                        profile,
                        "--force",
                        *overrides,
                    ],
                    check=True,
                    capture_output=True,
                )
                total.append(time.perf_counter() - start)
                manifest = json.loads((root / "output/analyses/appendix_a/manifest.json").read_text())
                notebook.append(manifest["wall_time_s"])
            records = manifest["records"]
            ran = {k: records[k]["value"] for k in ("device", "b2_widths", "b2_heads") if k in records}
            print(
                f"{profile:>5}: run {statistics.median(total):7.1f} s, notebook {statistics.median(notebook):7.1f} s "
                f"(medians of {args.repeat}); device {manifest['device']['name']}; ran {ran}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
