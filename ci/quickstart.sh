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

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "error: need root to run: $*  (install these packages by hand, or use the conda route: environment.yml)" >&2
    exit 1
  fi
}

ensure_system_packages() {
  local missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  command -v pdftotext >/dev/null || missing+=(poppler-utils)
  command -v git >/dev/null || missing+=(git)
  [ -d /usr/share/fonts/truetype/dejavu ] || missing+=(fonts-dejavu-core)
  # The math font the theme asks for: MathML in the HTML and the PDF.
  [ -f /usr/share/fonts/truetype/dejavu/DejaVuMathTeXGyre.ttf ] || missing+=(fonts-dejavu-extra)
  [ -f /usr/share/javascript/katex/katex.min.css ] || missing+=(libjs-katex)
  python3.11 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3.11-venv)
  if [ ${#missing[@]} -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

ensure_venv() {
  local stamp want
  want=$( (cat "$LOCK" pyproject.toml; python3.11 --version) | sha256sum | cut -c1-16)
  stamp="$VENV/.installed-$want"
  [ -f "$stamp" ] && { ensure_reference_pandoc; return; }
  say "creating $VENV with the pinned dependencies ($LOCK)"
  [ -x "$VENV/bin/python" ] || python3.11 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
  # One pip call so the resolver sees every pin at once.
  # (this machine's pip config names local indexes that lack some packages: hide those notices)
  "$VENV/bin/python" -m pip install -q -r "$LOCK" -e . 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
  ensure_reference_pandoc
  rm -f "$VENV"/.installed-*
  touch "$stamp"
}

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
  build) ensure_system_packages; ensure_venv; exec "$VENV/bin/livingreview" build "$@" ;;
  test) ensure_system_packages; ensure_venv; run_checks; exec "$VENV/bin/python" -m pytest "$@" ;;
  # Any other livingreview command (serve, verify, diff, deploy ...), with the same setup.
  lr) ensure_system_packages; ensure_venv; exec "$VENV/bin/livingreview" "$@" ;;
  *) echo "usage: ./ci/quickstart.sh build|test|lr COMMAND [args...]" >&2; exit 2 ;;
esac
