#!/usr/bin/env bash
# Installs llama-cpp-python (the llama.cpp reference for tests/e2e/test_llamacpp_parity.py,
# tools/make_llamacpp_reference.py and bench/cpu_vs_llamacpp.py) into the project's virtual
# environment (.venv, made by scripts/setup.sh). The package compiles llama.cpp from source;
# its default native build enables AMX on recent Xeons, and that build dies (SIGILL or a
# segfault in decode) where the CPU or the VM does not grant AMX. So the SIMD levels are named:
# every path llama.cpp has for an AVX-512 x86 CPU stays on, AMX stays off. On a CPU without
# AVX-512, set GGML_AVX512=OFF (and its VNNI/VBMI/BF16 companions) in LLAMACPP_CMAKE_ARGS.
# Takes several minutes (a C++ build); re-running with the package present does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.3.36
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  echo "install_llamacpp_reference: no .venv here; run scripts/setup.sh first" >&2
  exit 1
fi
: "${LLAMACPP_CMAKE_ARGS:=-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON \
-DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON \
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF}"
# A plain install of the same version (built natively, the one that crashes) must not count:
# the build flags of the installed copy are recorded next to it.
STAMP=.venv/llamacpp-reference.cmake-args
WANT="$VERSION $LLAMACPP_CMAKE_ARGS"
if [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ] && "$PY" -c "import llama_cpp" 2>/dev/null; then
  echo "install_llamacpp_reference: llama-cpp-python $VERSION already installed with these flags"
  exit 0
fi
# --no-cache-dir and --force-reinstall: never reuse a wheel pip built earlier with other flags.
CMAKE_ARGS="$LLAMACPP_CMAKE_ARGS" "$PY" -m pip install -q --no-cache-dir --force-reinstall --no-deps \
  "llama-cpp-python==$VERSION"
# Its pure-Python dependencies, leaving numpy and the rest as they are when already there.
"$PY" -m pip install -q "llama-cpp-python==$VERSION"
echo "$WANT" > "$STAMP"
"$PY" -c "import llama_cpp; print('install_llamacpp_reference: llama-cpp-python', llama_cpp.__version__)"
