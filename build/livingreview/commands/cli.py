"""Command line: parse arguments, load the project, call one library function.

Each command has a handler of its own. The command line's settings are applied once:
those that manuscript.yaml also has (renderer, executor) into the project's frozen
``Config`` as it loads, the choice of analyses (names, profile, ``-p``, force, jobs)
into a frozen ``Selection``. ``main`` is the single boundary that turns
``LivingReviewError`` into a message and an exit code.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from livingreview import __version__
from livingreview.commands import restore_pydantic_plugins
from livingreview.execution import notebook as nb
from livingreview.execution.plan import Selection, parse_override, plan
from livingreview.execution.run import run_analyses
from livingreview.load.config import (
    CONFIG_NAME,
    DEFAULT_SITE_DIR,
    FORMATS,
    RENDERER_ENV,
    RENDERERS,
    UNRESOLVED_POLICIES,
    Overrides,
)
from livingreview.load.project import Project
from livingreview.util import children, uptodate
from livingreview.util.errors import ConfigError, LivingReviewError, Location, Problem
from livingreview.util.lock import held
from livingreview.util.progress import Progress
from livingreview.util.words import counted

if TYPE_CHECKING:
    from livingreview.pipeline import BuildResult

# Every model the commands validate at start-up is built by now (see commands/__init__.py).
restore_pydantic_plugins()

# Commands that write output/ or the site folder: one at a time per project (lock.py).
LOCKED = ("build", "run", "serve", "verify", "site", "results")
UP_TO_DATE = "everything is up to date: nothing that affects an output changed since the last build"


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwound like Ctrl-C: what stops on KeyboardInterrupt (subprocess.run, the executors) stops on it too."""


def _on_signal(signum: int, frame) -> None:
    # A second signal must not cut short the clean-up that the first one started.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _no_wait_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="if another livingreview command is using this project, stop at once (exit 7) instead of waiting for it",
    )


def _executor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor",
        choices=["local", "dask"],
        help=f"where analyses run: worker processes here, or a Dask cluster (default: executor.kind in {CONFIG_NAME})",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler to run the analyses on, e.g. tcp://host:8786 (implies --executor dask; "
        "without it, dask starts a LocalCluster here)",
    )


def _renderer_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--renderer",
        choices=RENDERERS,
        help="how the HTML is made: lua (current pandoc, Lua filters) or rootstock (rootstock's chain on pandoc "
        f"2.19.2) (default: {RENDERER_ENV} if set, else pandoc.renderer in {CONFIG_NAME})",
    )


def _unresolved_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--unresolved-citations",
        choices=UNRESOLVED_POLICIES,
        help="a citation key no reference resolves: strict fails (exit 3), warn shows it as the key in bold with "
        f"'?' and lists the keys once (default: citations.unresolved in {CONFIG_NAME}, else strict)",
    )


def _verbose_argument(parser: argparse.ArgumentParser, default: object = False) -> None:
    # Also after the commands that print warnings (build -v): there with argparse.SUPPRESS,
    # so that a command's parser never resets a -v given before the command.
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="list every warning in full (e.g. each recorded value the text does not use, not their count)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livingreview",
        description="Build a living review: Manubot Markdown + executable analyses -> HTML, PDF, Word, JATS, LaTeX.",
    )
    parser.add_argument("--version", action="version", version=f"livingreview {__version__}")
    parser.add_argument("-C", "--project", default=".", metavar="DIR", help="project folder (default: current folder)")
    _verbose_argument(parser)
    # Settings that only some commands take: None where a command has no such option.
    parser.set_defaults(renderer=None, executor=None, scheduler=None, unresolved_citations=None, fallback=None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    build = commands.add_parser(
        "build", help="build the manuscript into output/: HTML, PDF, and Word, JATS or LaTeX when configured"
    )
    build.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=list(FORMATS),
        help=f"build only this format (repeatable; default: 'formats' in {CONFIG_NAME})",
    )
    build.add_argument("--profile", help=f"parameter profile of the analyses (default: 'profile' in {CONFIG_NAME})")
    build.add_argument("--force", action="store_true", help="re-run every analysis, ignoring the cache")
    build.add_argument(
        "--fallback",
        choices=["fail", "ci"],
        help="with publish_profile: when no stored result matches, fail, or publish the ci profile marked as such "
        f"(default: results.fallback in {CONFIG_NAME})",
    )
    _renderer_argument(build)
    _unresolved_argument(build)
    _executor_arguments(build)
    _no_wait_argument(build)
    _verbose_argument(build, argparse.SUPPRESS)
    build.set_defaults(handler=_build)
    check = commands.add_parser("check", help=f"validate {CONFIG_NAME} and content/ without building")
    _unresolved_argument(check)
    check.set_defaults(handler=_check)
    site = commands.add_parser(
        "site",
        help=f"publish the last complete build into {DEFAULT_SITE_DIR}/v/<commit>/ (also the last stage of build)",
    )
    _no_wait_argument(site)
    _verbose_argument(site, argparse.SUPPRESS)
    site.set_defaults(handler=_site)
    serve = commands.add_parser("serve", help="preview: build, serve output/ locally, rebuild and reload on every save")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=list(FORMATS),
        help="formats rebuilt on each save (default: html)",
    )
    _renderer_argument(serve)
    _unresolved_argument(serve)
    _no_wait_argument(serve)
    _verbose_argument(serve, argparse.SUPPRESS)
    serve.set_defaults(handler=_serve)
    deploy = commands.add_parser(
        "deploy",
        help=f"push {DEFAULT_SITE_DIR}/ to the gh-pages branch, keeping every earlier version (the one command that writes to git)",
    )
    deploy.add_argument("--remote", default="origin", help="git remote to push to (default: origin)")
    deploy.add_argument("--branch", default="gh-pages", help="branch of the site (default: gh-pages)")
    deploy.set_defaults(handler=_deploy)
    run = commands.add_parser("run", help="execute analyses (only the stale ones unless --force)")
    run.add_argument("names", nargs="*", metavar="NAME", help="analyses to run (default: all)")
    run.add_argument(
        "-p",
        "--parameter",
        dest="parameters",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter; write NAME.KEY=VALUE when several analyses are selected",
    )
    run.add_argument("--profile", help=f"parameter profile (default: 'profile' in {CONFIG_NAME})")
    run.add_argument("--force", action="store_true", help="re-run even if the cache is up to date")
    run.add_argument("-j", "--jobs", type=int, help="analyses run at once (default: CPU cores)")
    _executor_arguments(run)
    _no_wait_argument(run)
    run.set_defaults(handler=_run)
    params = commands.add_parser("params", help="list an analysis's parameters, types, defaults and profiles")
    params.add_argument("name", metavar="NAME")
    params.set_defaults(handler=_params)
    verify = commands.add_parser(
        "verify", help="re-run analyses from scratch and compare every recorded value with the published one"
    )
    verify.add_argument("names", nargs="*", metavar="NAME", help="analyses to verify (default: all)")
    verify.add_argument("--profile", help="profile to re-run with (default: the one each analysis was published with)")
    verify.add_argument(
        "--against",
        metavar="VERSION|PATH|store",
        help=f"published values: a version under {DEFAULT_SITE_DIR}/v/ (commit, unique prefix, latest, local), a values.json "
        "or manifest.json, or 'store': the results store's entries for the current code at publish_profile "
        "(default: the current build in output/)",
    )
    verify.add_argument(
        "--allow-profile-fallback",
        action="store_true",
        help="accept values re-run with another profile than the published one (e.g. ci without a GPU) as skipped",
    )
    verify.add_argument("-j", "--jobs", type=int, help="analyses run at once (default: CPU cores)")
    _executor_arguments(verify)
    _no_wait_argument(verify)
    verify.set_defaults(handler=_verify)
    results = commands.add_parser(
        "results",
        help="share complete analysis results between machines through the results store (results.store)",
    )
    actions = results.add_subparsers(dest="action", required=True, metavar="ACTION")
    push = actions.add_parser("push", help="store the current result of each analysis (after e.g. run --profile full)")
    push.add_argument("names", nargs="*", metavar="NAME", help="analyses to push (default: all)")
    push.add_argument(
        "--force", action="store_true", help="replace an entry that holds other values (append-only otherwise)"
    )
    pull = actions.add_parser("pull", help="bring the stored results that match the current tree into output/")
    pull.add_argument("names", nargs="*", metavar="NAME", help="analyses to pull (default: all)")
    pull.add_argument("--profile", help=f"profile to pull (default: publish_profile, else 'profile', in {CONFIG_NAME})")
    actions.add_parser("list", help="what is stored: analysis, key, profile, where, when and on which device")
    for action in (push, pull):
        _no_wait_argument(action)
    results.set_defaults(handler=_results, no_wait=False)
    new = commands.add_parser(
        "new",
        help="create a manuscript repository: content, an example analysis, CI, and this tool vendored under build/",
    )
    new.add_argument("directory", metavar="DIR", help="folder to create (must not exist, or be empty)")
    new.add_argument("--title", help="the manuscript's title (default: from --from-rootstock, else a placeholder)")
    new.add_argument(
        "--author",
        dest="authors",
        action="append",
        metavar="NAME",
        help="an author's name (repeatable; default: git's user.name)",
    )
    new.add_argument(
        "--repository",
        metavar="OWNER/NAME",
        help="GitHub slug of the repository it will live in, for permalinks (default: none, or the rootstock one's origin)",
    )
    new.add_argument(
        "--from-rootstock",
        metavar="PATH",
        help="migrate a Manubot rootstock repository: its content/ (kept byte-identical), citation style, "
        "resolved references and pandoc settings",
    )
    new.set_defaults(handler=_new, standalone=True)
    upgrade = commands.add_parser(
        "upgrade", help="replace the vendored livingreview of the manuscript repository -C DIR with this one"
    )
    upgrade.set_defaults(handler=_upgrade, standalone=True)
    diff = commands.add_parser("diff", help="compare two versions: prose word by word, values, figures and references")
    diff.add_argument(
        "old", metavar="A", help=f"older version: a commit, or a version under {DEFAULT_SITE_DIR}/v/ (or local)"
    )
    diff.add_argument("new", metavar="B", help="newer version, named the same way")
    diff.set_defaults(handler=_diff)
    return parser


def _overrides(args: argparse.Namespace) -> Overrides:
    """The settings this command line gives over manuscript.yaml."""
    return Overrides(
        renderer=args.renderer,
        executor=args.executor,
        scheduler=args.scheduler,
        unresolved_citations=args.unresolved_citations,
        fallback=args.fallback,
    )


def _parameters(project: Project, names: list[str], texts: list[str]) -> dict[str, dict]:
    """``-p [NAME.]KEY=VALUE`` options by analysis."""
    selected = names or list(project.config.analyses)
    overrides: dict[str, dict] = {}
    for text in texts:
        key, value = parse_override(text)
        if "." in key:
            name, key = key.split(".", 1)
        elif len(selected) == 1:
            name = selected[0]
        else:
            raise ConfigError(
                Problem(
                    Location("command line", key=f"-p {text}"),
                    "several analyses are selected",
                    "write -p NAME.KEY=VALUE",
                )
            )
        overrides.setdefault(name, {})[key] = value
    return overrides


# Each command's handler. The pipeline, the reviewer commands, serve and deploy are imported
# by the handler that uses them: they take a tenth of a second or more (pandoc, Chromium and
# Manubot glue, Jinja2, watchdog), which --help and the light commands should not pay.


def _build(args: argparse.Namespace, project: Project, console: Console) -> int:
    from livingreview.pipeline import build  # deferred: the pipeline (see above)

    project.revision  # noqa: B018 -- git status may rewrite its index: before the files are looked at
    layout = uptodate.Layout(project.root, project.output_dir, project.site_dir)
    before = uptodate.look(layout)
    progress = Progress(console)
    result = build(project, progress, args.formats, Selection(profile=args.profile, force=args.force))
    report = _report_build(result, progress, project, console, args.verbose)
    if not args.force and not result.not_publication_scale:
        # Not when results fell back to the ci profile: the store may have them by the next build.
        site = result.outputs.get("site")
        published = (site,) if site else ()
        uptodate.record(args.argv, replace(layout, published=published), before, args.started, report)
    return 0


def _site(args: argparse.Namespace, project: Project, console: Console) -> int:
    from livingreview.pipeline import site  # deferred: the pipeline (see above)

    progress = Progress(console)
    _report_build(site(project, progress), progress, project, console, args.verbose)
    return 0


def _report_build(
    result: BuildResult, progress: Progress, project: Project, console: Console, verbose: bool = False
) -> list[str]:
    """Print the warnings, the timings and the outputs; returns what a rebuild that finds all this up to date prints."""
    warnings = [f"warning: {warning}" for warning in result.warning_lines(verbose)]
    outputs = [f"{kind:>8}: {path.relative_to(project.root)}" for kind, path in result.outputs.items()]
    for line in warnings:
        console.print(f"[yellow]warning:[/]{escape(line.removeprefix('warning:'))}", highlight=False)
    if result.up_to_date:
        console.print(UP_TO_DATE, markup=False)  # not a table of stages that were all skipped
    else:
        progress.summary()
    for line in outputs:
        console.print(line, markup=False)
    return [*warnings, UP_TO_DATE, *outputs]


def _check(args: argparse.Namespace, project: Project, console: Console) -> int:
    from livingreview.pipeline import check  # deferred: the pipeline (see above)

    checked = check(project)
    for warning in checked.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    valid = "is valid" if checked.sections == 1 else "are valid"
    console.print(f"[green]✓[/] configuration and {counted(checked.sections, 'section')} {valid}")
    return 0


def _run(args: argparse.Namespace, project: Project, console: Console) -> int:
    progress = Progress(console)
    parameters = _parameters(project, args.names, args.parameters)
    run_analyses(project, progress, Selection(tuple(args.names), args.profile, parameters, args.force, args.jobs))
    progress.summary()
    return 0


def _params(args: argparse.Namespace, project: Project, console: Console) -> int:
    name = args.name
    plan(project, Selection(names=(name,)))  # validates the name, the notebook and every profile's overrides
    config = project.config.analyses[name]
    path = project.root / config.notebook
    declared = nb.summarize(path, project.output_dir / ".cache" / "notebooks").parameters
    from rich.table import Table

    table = Table(title=f"{name} ({config.notebook})", title_justify="left")
    for column in ["parameter", "type", "default", *config.profiles, "help"]:
        table.add_column(column)
    for param in declared.values():
        default = config.parameters.get(param.name, param.default)
        profile_values = [repr(p[param.name]) if param.name in p else "" for p in config.profiles.values()]
        table.add_row(param.name, param.type, repr(default), *profile_values, param.help)
    Console(highlight=False).print(table)
    if config.gpu_profiles:
        console.print(f"profiles that want a GPU: {', '.join(config.gpu_profiles)}")
    return 0


def _serve(args: argparse.Namespace, project: Project, console: Console) -> int:
    from livingreview.commands.serve import serve  # deferred: serve imports the pipeline (see above)

    serve(project, console, args.host, args.port, args.formats, _overrides(args), args.verbose)
    return 0


def _deploy(args: argparse.Namespace, project: Project, console: Console) -> int:
    from livingreview.publish.deploy import deploy  # deferred: the publish stage (see above)

    done = deploy(project, args.remote, args.branch)
    for name in done.added:
        console.print(f"[green]+[/] v/{name}", highlight=False)
    for name, files in done.conflicts.items():
        console.print(
            f"[yellow]warning:[/] v/{name} is already published and was kept; this build differs in: {', '.join(files[:8])}"
        )
    state = f"pushed to {done.remote} {done.branch}" if done.pushed else f"{done.remote} {done.branch} is up to date"
    console.print(f"{state} ({len(done.added)} new, {len(done.kept)} kept)", highlight=False)
    return 0


def _verify(args: argparse.Namespace, project: Project, console: Console) -> int:
    # Deferred: the reviewer commands (see above).
    from livingreview.review.verify import print_report, raise_if_failed, verify, write_reports

    selection = Selection(tuple(args.names), args.profile, jobs=args.jobs)
    report = verify(project, Progress(console), selection, args.against, args.allow_profile_fallback)
    print_report(report, console, args.verbose)
    for path in write_reports(project, report):
        console.print(f"  report: {path.relative_to(project.root)}", highlight=False)
    raise_if_failed(project, report, project.output_dir / "verify" / "report.html")
    return 0


def _diff(args: argparse.Namespace, project: Project, console: Console) -> int:
    from livingreview.review.diff import diff, print_diff, write_pages  # deferred: the reviewer commands (see above)

    changes = diff(project, args.old, args.new)
    print_diff(changes, Console(highlight=False, soft_wrap=True))
    for path in write_pages(project, changes):
        console.print(f"  page: {path.relative_to(project.root)}", highlight=False)
    return 0


def _results(args: argparse.Namespace, project: Project, console: Console) -> int:
    from livingreview.execution import store  # deferred: git and the store (see above)

    if args.action == "push":
        pushed = store.push(project, tuple(args.names), args.force)
        for label, names in (("stored", pushed.added), ("replaced", pushed.replaced), ("already stored", pushed.kept)):
            if names:
                console.print(f"{label}: {', '.join(names)}", highlight=False, markup=False)
        console.print(f"results store: {pushed.store}", highlight=False, markup=False)
    elif args.action == "pull":
        profile = args.profile or project.config.publish_profile
        pulled = store.pull(project, Selection(names=tuple(args.names), profile=profile))
        for name in pulled.pulled:
            console.print(f"[green]↓[/] {name}", highlight=False)
        for name in pulled.cached:
            console.print(f"  {name}: up to date here", highlight=False, markup=False)
        for name, why in pulled.missing.items():
            console.print(f"[yellow]warning:[/] {name}: {escape(why)}", highlight=False)
    else:
        _print_entries(store.entries(project), project, console)
    return 0


def _print_entries(found, project: Project, console: Console) -> None:
    if not found:
        console.print("the results store is empty", highlight=False)
        return
    rows = []
    for entry in found:
        manifest, info = entry.manifest, entry.info
        device = manifest.device if manifest else None
        rows.append(
            [
                entry.analysis,
                entry.key[:12],
                str(manifest.profile if manifest else "?"),
                (device.host if device else "") or str(info.get("pushed_from", "")),
                f"{device.class_} {device.name}".strip() if device else "",
                str(manifest.started if manifest else ""),
                str(info.get("pushed", "")),
                entry.problem or "intact",
            ]
        )
    out = Console(highlight=False, soft_wrap=True)
    columns = ["analysis", "key", "profile", "computed on", "device", "started", "pushed", "state"]
    if not out.is_terminal:
        # Off a terminal (CI logs, pipes) a table folds values into slivers: one line per entry instead.
        for row in rows:
            out.print("  ".join(f"{c}={v}" for c, v in zip(columns, row, strict=True)), markup=False)
        return
    from rich.table import Table

    table = Table(title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def _new(args: argparse.Namespace, console: Console) -> int:
    from livingreview.scaffold.commands import new  # deferred: the scaffold (see above)

    return new(args.directory, args.title, args.authors, args.repository, args.from_rootstock, console)


def _upgrade(args: argparse.Namespace, console: Console) -> int:
    from livingreview.scaffold.vendor import upgrade  # deferred: the scaffold (see above)

    for line in upgrade(Path(args.project)):
        console.print(line, highlight=False, markup=False)
    console.print("review the change (git diff --stat), then commit it", highlight=False)
    return 0


def _command(args: argparse.Namespace, console: Console) -> int:
    """Load the project with the command line's settings, once, and run the command's handler (under the lock)."""
    if getattr(args, "standalone", False):
        # new and upgrade work on a repository that is not (yet) a project livingreview can load.
        return args.handler(args, console)
    project = Project.load(args.project, _overrides(args))
    if args.command not in LOCKED:
        return args.handler(args, project, console)
    with held(project, args.command, not args.no_wait, lambda line: console.print(line, highlight=False, markup=False)):
        return args.handler(args, project, console)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    # Before anything is read: a file changed since then may have been read before or after the change.
    args.argv, args.started = argv, time.time_ns()
    # soft_wrap: never break a file:line or a path across lines, whatever the width.
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    previous = {signum: signal.signal(signum, _on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _command(args, console)
    except LivingReviewError as exc:
        console.print(f"[bold red]error:[/] {exc.title}", highlight=False)
        for problem in exc.problems:
            console.print(str(problem), highlight=False, markup=False)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        # This thread's build has stopped what it started; serve's rebuild thread may still be running one.
        children.stop_all()
        what, code = ("terminated (SIGTERM)", 143) if isinstance(exc, Terminated) else ("interrupted", 130)
        console.print(f"[red]{what}[/]: outputs were left as they were before this build")
        return code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main())
