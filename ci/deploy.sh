#!/usr/bin/env bash
# Publish webpage/ to the gh-pages branch of origin, keeping every earlier version.
#   ./ci/deploy.sh [--remote NAME] [--branch NAME]
# Run after ./ci/quickstart.sh build on a clean checkout; CI does this on every push to main.
set -euo pipefail
cd "$(dirname "$0")/.."
exec ./ci/quickstart.sh lr deploy "$@"
