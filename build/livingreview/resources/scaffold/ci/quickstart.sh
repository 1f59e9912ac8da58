#!/usr/bin/env bash
# One entry point for a fresh Debian/Ubuntu machine with Python 3.11:
#   ./ci/quickstart.sh build   install what is missing, then build the manuscript (output/, webpage/)
#   ./ci/quickstart.sh check   install what is missing, then check the content, build, and re-run
#                              every analysis to verify that its published numbers come out again
#   ./ci/quickstart.sh lr CMD  install what is missing, then run `livingreview CMD` (serve, deploy, ...)
# Anything after the first argument is passed on.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
LOCK=ci/requirements.lock
PACKAGE=./build  # the vendored livingreview: build/pyproject.toml, build/livingreview/
# shellcheck source=../build/livingreview/resources/shell/setup.sh
source build/livingreview/resources/shell/setup.sh

command=${1:-}
shift || true
case "$command" in
  build) ensure_system_packages; ensure_venv; exec "$VENV/bin/livingreview" build "$@" ;;
  check)
    ensure_system_packages; ensure_venv
    "$VENV/bin/livingreview" check "$@"
    # FALLBACK (ci or fail), set by the workflow: what a build does when publish_profile is set
    # and an analysis has no stored result for its current code.
    "$VENV/bin/livingreview" build ${FALLBACK:+--fallback "$FALLBACK"}
    # Only when there are analyses: verify re-runs each one from scratch and compares its records.
    if "$VENV/bin/python" -c 'import sys; from livingreview.load.project import Project; sys.exit(not Project.load().config.analyses)'; then
      exec "$VENV/bin/livingreview" verify
    fi ;;
  lr) ensure_system_packages; ensure_venv; exec "$VENV/bin/livingreview" "$@" ;;
  *) echo "usage: ./ci/quickstart.sh build|check|lr COMMAND [args...]" >&2; exit 2 ;;
esac
