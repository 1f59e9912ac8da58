"""Command line: parse arguments, load the project, call one library function.

``main`` is the single boundary that turns ``LivingReviewError`` into a message and
an exit code.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from rich.console import Console

from livingreview import __version__
from livingreview.util import children
from livingreview.util.errors import LivingReviewError
from livingreview.util.progress import Progress
from livingreview.load.project import Project

# Commands that write output/ or webpage/: one at a time per project (lock.py).
LOCKED = ("build", "run", "serve", "verify", "site")


class Terminated(KeyboardInterrupt):
    """SIGTERM, unwound like Ctrl-C: what stops on KeyboardInterrupt (subprocess.run, the executors) stops on it too."""


def _on_signal(signum: int, frame) -> None:
    # A second signal must not cut short the clean-up that the first one started.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _no_wait_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-wait", action="store_true",
        help="if another livingreview command is using this project, stop at once (exit 7) instead of waiting for it",
    )


def _executor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executor", choices=["local", "dask"],
        help="where analyses run: worker processes here, or a Dask cluster (default: executor.kind in manuscript.yaml)",
    )
    parser.add_argument(
        "--scheduler", metavar="ADDRESS",
        help="Dask scheduler to run the analyses on, e.g. tcp://host:8786 (implies --executor dask; "
             "without it, dask starts a LocalCluster here)",
    )


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
    build.add_argument("--profile", help="parameter profile of the analyses (default: 'profile' in manuscript.yaml)")
    build.add_argument("--force", action="store_true", help="re-run every analysis, ignoring the cache")
    _executor_arguments(build)
    _no_wait_argument(build)
    commands.add_parser("check", help="validate manuscript.yaml and content/ without building")
    site = commands.add_parser(
        "site", help="publish the last complete build into webpage/v/<commit>/ (also the last stage of build)"
    )
    _no_wait_argument(site)
    serve = commands.add_parser("serve", help="preview: build, serve output/ locally, rebuild and reload on every save")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--format", dest="formats", action="append", choices=["html", "pdf"],
                       help="formats rebuilt on each save (default: html)")
    _no_wait_argument(serve)
    deploy = commands.add_parser(
        "deploy", help="push webpage/ to the gh-pages branch, keeping every earlier version (the one command that writes to git)"
    )
    deploy.add_argument("--remote", default="origin", help="git remote to push to (default: origin)")
    deploy.add_argument("--branch", default="gh-pages", help="branch of the site (default: gh-pages)")
    run = commands.add_parser("run", help="execute analyses (only the stale ones unless --force)")
    run.add_argument("names", nargs="*", metavar="NAME", help="analyses to run (default: all)")
    run.add_argument(
        "-p", "--parameter", dest="parameters", action="append", default=[], metavar="KEY=VALUE",
        help="override a parameter; write NAME.KEY=VALUE when several analyses are selected",
    )
    run.add_argument("--profile", help="parameter profile (default: 'profile' in manuscript.yaml)")
    run.add_argument("--force", action="store_true", help="re-run even if the cache is up to date")
    run.add_argument("-j", "--jobs", type=int, help="analyses run at once (default: CPU cores)")
    _executor_arguments(run)
    _no_wait_argument(run)
    params = commands.add_parser("params", help="list an analysis's parameters, types, defaults and profiles")
    params.add_argument("name", metavar="NAME")
    verify = commands.add_parser(
        "verify", help="re-run analyses from scratch and compare every recorded value with the published one"
    )
    verify.add_argument("names", nargs="*", metavar="NAME", help="analyses to verify (default: all)")
    verify.add_argument("--profile", help="profile to re-run with (default: the one each analysis was published with)")
    verify.add_argument(
        "--against", metavar="VERSION|PATH",
        help="published values: a version under webpage/v/ (commit, unique prefix, latest, local) or a values.json "
             "or manifest.json (default: the current build in output/)",
    )
    verify.add_argument(
        "--allow-profile-fallback", action="store_true",
        help="accept values re-run with another profile than the published one (e.g. ci without a GPU) as skipped",
    )
    verify.add_argument("-j", "--jobs", type=int, help="analyses run at once (default: CPU cores)")
    _executor_arguments(verify)
    _no_wait_argument(verify)
    diff = commands.add_parser(
        "diff", help="compare two versions: prose word by word, values, figures and references"
    )
    diff.add_argument("old", metavar="A", help="older version: a commit, or a version under webpage/v/ (or local)")
    diff.add_argument("new", metavar="B", help="newer version, named the same way")
    return parser


def _overrides(project: Project, names: list[str], texts: list[str]) -> dict[str, dict]:
    from livingreview.util.errors import ConfigError, Location, Problem
    from livingreview.execution.plan import parse_override

    selected = names or list(project.config.analyses)
    overrides: dict[str, dict] = {}
    for text in texts:
        key, value = parse_override(text)
        if "." in key:
            name, key = key.split(".", 1)
        elif len(selected) == 1:
            name = selected[0]
        else:
            raise ConfigError(Problem(Location("command line", key=f"-p {text}"),
                                      "several analyses are selected", "write -p NAME.KEY=VALUE"))
        overrides.setdefault(name, {})[key] = value
    return overrides


def _params(project: Project, name: str, console: Console) -> int:
    from rich.table import Table

    from livingreview.execution import notebook as nb
    from livingreview.execution.plan import plan

    plan(project, [name])  # validates the name, the notebook and every profile's overrides
    config = project.config.analyses[name]
    path = project.root / config.notebook
    declared = nb.summarize(path, project.output_dir / ".cache" / "notebooks").parameters
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


def _run(args: argparse.Namespace, console: Console) -> int:
    project = Project.load(args.project)
    if getattr(args, "executor", None) or getattr(args, "scheduler", None):
        from livingreview.execution.executors import override

        executor = override(project.config.executor, args.executor, args.scheduler)
        project.config = project.config.model_copy(update={"executor": executor})
    if args.command not in LOCKED:
        return _command(args, project, console)
    from livingreview.util.lock import held

    with held(project, args.command, not args.no_wait, lambda line: console.print(line, highlight=False, markup=False)):
        return _command(args, project, console)


def _command(args: argparse.Namespace, project: Project, console: Console) -> int:
    if args.command == "check":
        from livingreview.pipeline import check

        sections = check(project)
        console.print(f"[green]✓[/] configuration and {sections} sections are valid")
        return 0

    if args.command == "params":
        return _params(project, args.name, console)

    if args.command == "serve":
        from livingreview.commands.serve import serve

        serve(project, console, args.host, args.port, args.formats)
        return 0

    if args.command == "deploy":
        from livingreview.publish.deploy import deploy

        done = deploy(project, args.remote, args.branch)
        for name in done.added:
            console.print(f"[green]+[/] v/{name}", highlight=False)
        for name, files in done.conflicts.items():
            console.print(f"[yellow]warning:[/] v/{name} is already published and was kept; this build differs in: {', '.join(files[:8])}")
        state = f"pushed to {done.remote} {done.branch}" if done.pushed else f"{done.remote} {done.branch} is up to date"
        console.print(f"{state} ({len(done.added)} new, {len(done.kept)} kept)", highlight=False)
        return 0

    if args.command == "verify":
        from livingreview.review.verify import print_report, raise_if_failed, verify, write_reports

        report = verify(project, Progress(console), args.names, args.profile, args.against,
                        args.allow_profile_fallback, args.jobs)
        print_report(report, console)
        for path in write_reports(project, report):
            console.print(f"  report: {path.relative_to(project.root)}", highlight=False)
        raise_if_failed(project, report, project.output_dir / "verify" / "report.html")
        return 0

    if args.command == "diff":
        from livingreview.review.diff import diff, print_diff, write_pages

        changes = diff(project, args.old, args.new)
        print_diff(changes, Console(highlight=False, soft_wrap=True))
        for path in write_pages(project, changes):
            console.print(f"  page: {path.relative_to(project.root)}", highlight=False)
        return 0

    from livingreview.pipeline import build, run_analyses, site

    progress = Progress(console)
    if args.command == "run":
        overrides = _overrides(project, args.names, args.parameters)
        run_analyses(project, progress, args.names, args.profile, overrides, args.force, args.jobs)
        progress.summary()
        return 0
    if args.command == "site":
        result = site(project, progress)
    else:
        result = build(project, progress, args.formats, args.profile, args.force)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    progress.summary()
    for kind, path in result.outputs.items():
        console.print(f"{kind:>8}: {path.relative_to(project.root)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # soft_wrap: never break a file:line or a path across lines, whatever the width.
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    previous = {signum: signal.signal(signum, _on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(args, console)
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
