#!/usr/bin/env bash
# One entry point for a fresh Debian/Ubuntu machine with Python 3.11:
#   ./ci/quickstart.sh build   install what is missing, then build the manuscript
#   ./ci/quickstart.sh test    install what is missing, then lint, type-check, check the layers and run the tests
#   ./ci/quickstart.sh lr CMD  install what is missing, then run `livingreview CMD`
# Anything after the first argument is passed on (to `livingreview build` or pytest).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
LOCK=ci/requirements.lock
PACKAGE=.
# say, as_root, ensure_system_packages, ensure_venv: shared with the manuscript repositories
# that `livingreview new` makes.
# shellcheck source=../build/livingreview/resources/shell/setup.sh
source build/livingreview/resources/shell/setup.sh

# The build renders with the current pandoc (pypandoc-binary in the lock). Rootstock's
# filter chain, which the tests and benchmarks compare the build against, needs pandoc
# 2.19.2 (the xnos filters reject pandoc 3): it is taken from the pypandoc-binary 1.10
# wheel, from the same package index, and kept inside the venv.
REFERENCE_PANDOC="$VENV/opt/pandoc-2.19.2/pandoc"
ensure_reference_pandoc() {
  [ -x "$REFERENCE_PANDOC" ] && return
  local wheels
  wheels=$(mktemp -d)
  "$VENV/bin/python" -m pip download -q --no-deps --only-binary=:all: -d "$wheels" pypandoc-binary==1.10 2>&1 \
    | { grep -v "^WARNING: Location 'file:" || true; }
  mkdir -p "$(dirname "$REFERENCE_PANDOC")"
  "$VENV/bin/python" - "$wheels"/pypandoc_binary-1.10-*.whl "$REFERENCE_PANDOC" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, open(sys.argv[2] + ".part", "wb") as out:
    out.write(wheel.read("pypandoc/files/pandoc"))
PY
  chmod +x "$REFERENCE_PANDOC.part" && mv "$REFERENCE_PANDOC.part" "$REFERENCE_PANDOC"
  rm -rf "$wheels"
}

# Lint, formatting, types and the layer contracts (pyproject.toml), before the tests:
# each names what is wrong and exits non-zero, which stops the run.
run_checks() {
  say "ruff check, ruff format --check, mypy, lint-imports"
  "$VENV/bin/ruff" check build tests bench
  "$VENV/bin/ruff" format --check build tests bench
  "$VENV/bin/mypy"
  "$VENV/bin/lint-imports"
}

command=${1:-}
shift || true
case "$command" in
  build) ensure_system_packages; ensure_venv; ensure_reference_pandoc; exec "$VENV/bin/livingreview" build "$@" ;;
  test) ensure_system_packages; ensure_venv; ensure_reference_pandoc; run_checks; exec "$VENV/bin/python" -m pytest "$@" ;;
  # Any other livingreview command (serve, verify, diff, deploy ...), with the same setup.
  lr) ensure_system_packages; ensure_venv; ensure_reference_pandoc; exec "$VENV/bin/livingreview" "$@" ;;
  *) echo "usage: ./ci/quickstart.sh build|test|lr COMMAND [args...]" >&2; exit 2 ;;
esac
