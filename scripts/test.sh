#!/usr/bin/env bash
# The whole test suite: set up (idempotent), build, GoogleTest through ctest, then pytest.
# GPU tests report "skipped" on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
GRETA_SETUP_NO_BUILD=1 bash scripts/setup.sh
# Warnings are errors here (GRETA_WERROR), so CI fails on any new compiler warning.
GRETA_CMAKE_ARGS="${GRETA_CMAKE_ARGS:-} -DGRETA_WERROR=ON" bash scripts/build.sh
BUILD=${GRETA_BUILD_DIR:-build}
status=0
(cd "$BUILD" && ctest --output-on-failure -j"$(nproc)") || status=1
# pytest from the project venv (scripts/setup.sh); tests start Python tools with the same interpreter.
GRETA_BUILD_DIR="$PWD/$BUILD" .venv/bin/python -m pytest -q -rs tests/e2e || status=1
exit $status
