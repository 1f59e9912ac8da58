"""The ``livingreview`` program: a rebuild with nothing to do answers before the command line is loaded.

Loading the command line (argparse, rich, the configuration's pydantic models) takes a
quarter of a second; a ``build`` run again in a project where no file changed needs
none of it (``util/uptodate.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from livingreview.util.uptodate import replay


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if replay(argv):
        return 0
    from livingreview.commands.cli import main as command_line

    return command_line(argv)


if __name__ == "__main__":
    sys.exit(main())
