"""Command line: parse arguments, load the project, call one library function.

``main`` is the single boundary that turns ``LivingReviewError`` into a message and
an exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console

from livingreview import __version__
from livingreview.errors import LivingReviewError
from livingreview.progress import Progress
from livingreview.project import Project


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livingreview",
        description="Build a living review: Manubot Markdown + executable analyses -> HTML and PDF.",
    )
    parser.add_argument("--version", action="version", version=f"livingreview {__version__}")
    parser.add_argument(
        "-C", "--project", default=".", metavar="DIR", help="project folder (default: current folder)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    build = commands.add_parser("build", help="build output/manuscript.html and output/manuscript.pdf")
    build.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=["html", "pdf"],
        help="build only this format (repeatable; default: 'formats' in manuscript.yaml)",
    )
    commands.add_parser("check", help="validate manuscript.yaml and content/ without building")
    return parser


def _run(args: argparse.Namespace, console: Console) -> int:
    project = Project.load(args.project)
    if args.command == "check":
        from livingreview.content import read_content

        content = read_content(project.content_dir)
        console.print(f"[green]✓[/] configuration and {len(content.sections)} sections are valid")
        return 0

    from livingreview.pipeline import build

    progress = Progress(console)
    result = build(project, progress, args.formats)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    progress.summary()
    for kind, path in result.outputs.items():
        console.print(f"{kind:>8}: {path.relative_to(project.root)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(stderr=True, highlight=False)
    try:
        return _run(args, console)
    except LivingReviewError as exc:
        console.print(f"[bold red]error:[/] {exc.title}", highlight=False)
        for problem in exc.problems:
            console.print(str(problem), highlight=False, markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]: outputs were left as they were before this build")
        return 130


if __name__ == "__main__":
    sys.exit(main())
