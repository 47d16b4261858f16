#!/usr/bin/env bash
# Packs the build dependencies the device machine lacks into .gpu-deps/ (git-ignored through
# .git/info/exclude), so a device run can carry it: `run(carry=[".gpu-deps"], ...)`.
# The device image has nvcc, cmake and ninja but no nlohmann-json, CLI11 or GoogleTest;
# scripts/gpu-check.sh finds them here (headers + CMake package files, GoogleTest sources).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu-deps/' .git/info/exclude 2>/dev/null || echo '/.gpu-deps/' >> .git/info/exclude
rm -rf .gpu-deps
mkdir -p .gpu-deps/include .gpu-deps/share/cmake
cp -r /usr/include/nlohmann .gpu-deps/include/
cp -r /usr/include/CLI .gpu-deps/include/
cp -r /usr/share/cmake/nlohmann_json /usr/share/cmake/CLI11 .gpu-deps/share/cmake/
cp -r /usr/src/googletest .gpu-deps/googletest
du -sh .gpu-deps
