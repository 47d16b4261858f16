#!/usr/bin/env bash
# Configures and builds into build/ (Release). The CUDA backend is compiled when nvcc is found.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${GRETA_BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release ${GRETA_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD" -j"$JOBS"
