# Shell functions shared by livingreview's own ci/quickstart.sh and by the ci/quickstart.sh of
# every manuscript repository that `livingreview new` makes (which vendors this file with the
# tool, under build/livingreview/). Sourced, not run. The caller sets:
#   VENV     the virtual environment to create (.venv)
#   LOCK     the exact pins (ci/requirements.lock)
#   PACKAGE  the folder whose pyproject.toml installs livingreview (. or build)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "error: need root to run: $*  (install these packages by hand, or use the conda route: environment.yml)" >&2
    exit 1
  fi
}

# Debian/Ubuntu packages the build runs: Chromium prints the PDF, poppler's pdftotext checks it,
# git gives the permalink, and the fonts and KaTeX's CSS make the HTML and PDF need no network.
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
  # Only a project whose manuscript.yaml lists latex among its formats: a TeX engine to compile
  # (and test) the LaTeX bundle, and rsvg-convert, which makes its SVG figures PDF.
  if wants_format latex; then
    command -v pdflatex >/dev/null || missing+=(texlive-latex-base)
    kpsewhich caption.sty >/dev/null 2>&1 || missing+=(texlive-latex-recommended)
    kpsewhich lmodern.sty >/dev/null 2>&1 || missing+=(lmodern)
    command -v rsvg-convert >/dev/null || missing+=(librsvg2-bin)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# Whether manuscript.yaml (in the current folder) lists format $1 under 'formats', as
# `formats: [html, latex]` or as a block list; read before Python is set up, hence awk.
wants_format() {
  [ -f manuscript.yaml ] || return 1
  awk -v want="$1" '
    { sub(/[ \t]*#.*/, "") }
    /^formats:/ { inside = 1; line = $0; sub(/^formats:/, "", line); if (has(line)) found = 1; next }
    inside && /^[ \t]*-/ { if (has($0)) found = 1; next }
    inside && /^[^ \t]/ { inside = 0 }
    function has(text,   n, i, items) {
      gsub(/[][,\047"-]/, " ", text); n = split(text, items, /[ \t]+/)
      for (i = 1; i <= n; i++) if (items[i] == want) return 1
      return 0
    }
    END { exit !found }
  ' manuscript.yaml
}

# Installs once per content of the lock and pyproject.toml (a stamp file in the venv).
ensure_venv() {
  local stamp want
  want=$( (cat "$LOCK" "$PACKAGE/pyproject.toml"; python3.11 --version) | sha256sum | cut -c1-16)
  stamp="$VENV/.installed-$want"
  [ -f "$stamp" ] || install_venv "$stamp"
  # The tool's own modules, which change with every checkout and upgrade (up-to-date ones
  # are skipped in milliseconds). Where PYTHONDONTWRITEBYTECODE is set, as on many CI
  # machines, every command would otherwise compile each module it imports.
  [ -d build/livingreview ] && { "$VENV/bin/python" -m compileall -q build/livingreview >/dev/null 2>&1 || true; }
  return 0
}

install_venv() {
  local stamp=$1
  say "creating $VENV with the pinned dependencies ($LOCK)"
  [ -x "$VENV/bin/python" ] || python3.11 -m venv "$VENV"
  # (a machine's pip config may name local indexes that lack some packages: hide those notices)
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
  # One pip call so the resolver sees every pin at once.
  "$VENV/bin/python" -m pip install -q --no-compile -r "$LOCK" -e "$PACKAGE" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
  # Bytecode for every installed module, on all cores (pip compiles one file at a time: 35 s
  # against 20 + 11 s for a typical lock). It must exist before the first build: analysis
  # kernels never write bytecode (nothing is written next to the analyses' own modules),
  # so a module not compiled now would be compiled again in every kernel, torch included.
  # Not the packages' own test suites, pip, or the debugger debugpy vendors: a quarter of
  # the code, which no build imports.
  "$VENV/bin/python" -m compileall -q -j 0 -x '/(tests?|pip|debugpy/_vendored)/' \
    "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null 2>&1 || true
  rm -f "$VENV"/.installed-*
  touch "$stamp"
}
