"""What ``livingreview new`` does and says: the repository, the migration, the next steps."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from livingreview.scaffold.new import Options, create
from livingreview.util import gitinfo


def new(
    directory: str,
    title: str | None,
    authors: Sequence[str] | None,
    repository: str | None,
    rootstock: str | None,
    console: Console,
) -> int:
    started = time.monotonic()
    target = Path(directory)
    if not authors:
        name = (gitinfo.git_output(Path.cwd(), "config", "user.name") or "").strip()
        authors = [name or "Your Name"]
    if rootstock:
        from livingreview.scaffold.rootstock import migrate  # deferred: only the migration reads Manubot's files

        created = migrate(Path(rootstock), target, title, repository, console)
    else:
        created = create(target, Options(title=title or "A living review", authors=authors, repository=repository))
    for note in created.notes:
        # An indented note continues the one before it (a list of keys).
        line = escape(note) if note.startswith("  ") else f"[yellow]note:[/] {escape(note)}"
        console.print(line, highlight=False)
    console.print(
        f"[green]✓[/] created {created.root} ({len(created.files)} files, plus livingreview vendored in build/) "
        f"in {time.monotonic() - started:.1f} s",
        highlight=False,
    )
    console.print(
        "next steps:\n"
        f"  cd {directory}\n"
        "  git init && git add . && git commit -m 'Start the review'\n"
        "  ./ci/quickstart.sh build    # output/manuscript.html and .pdf\n"
        "  ./ci/quickstart.sh check    # check, build, and verify the analyses",
        highlight=False,
        markup=False,
    )
    return 0
