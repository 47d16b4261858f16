#!/usr/bin/env bash
# Installs llama-cpp-python (the llama.cpp reference for tests/e2e/test_llamacpp_parity.py,
# tools/make_llamacpp_reference.py and bench/cpu_vs_llamacpp.py) into the project's virtual
# environment (.venv, made by scripts/setup.sh). The package compiles llama.cpp from source.
# A plain install dies with SIGILL or a segfault on these machines: a fixed recipe of SIMD levels
# (AVX-VNNI on, say) does not hold on every CPU (AMD EPYC Zen 4 has AVX-512 VNNI but not the VEX
# AVX-VNNI), and a native build enables AMX where the VM does not grant it. So each SIMD level
# is switched on exactly when /proc/cpuinfo lists it, and AMX stays off. The multimodal library
# (mtmd, LLAVA_BUILD) is left out: nothing here loads images, and it is ~10% of the compile;
# llama_cpp imports it only for vision chat handlers.
# Takes about ten minutes on two cores (a C++ build); re-running with the package present and
# built for this CPU does nothing. LLAMACPP_CMAKE_ARGS overrides the detected flags.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.3.36
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  echo "install_llamacpp_reference: no .venv here; run scripts/setup.sh first" >&2
  exit 1
fi

# GGML option -> the /proc/cpuinfo flags it needs.
cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
has() { for f in "$@"; do [[ "$cpu_flags" == *" $f "* ]] || return 1; done; }
on_if() { local opt=$1; shift; if has "$@"; then echo "-D$opt=ON"; else echo "-D$opt=OFF"; fi; }
detected="-DGGML_NATIVE=OFF $(on_if GGML_AVX avx) $(on_if GGML_AVX2 avx2) $(on_if GGML_FMA fma)
  $(on_if GGML_F16C f16c) $(on_if GGML_AVX512 avx512f avx512cd avx512vl avx512dq avx512bw)
  $(on_if GGML_AVX512_VNNI avx512_vnni) $(on_if GGML_AVX512_VBMI avx512vbmi) $(on_if GGML_AVX512_BF16 avx512_bf16)
  $(on_if GGML_AVX_VNNI avx_vnni) -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
  -DLLAVA_BUILD=OFF"
LLAMACPP_CMAKE_ARGS=${LLAMACPP_CMAKE_ARGS:-$(echo $detected)}

# A copy built with other flags (a plain install, or one made on another CPU) must not count:
# the flags of the installed copy are recorded next to it.
STAMP=.venv/llamacpp-reference.cmake-args
WANT="$VERSION $LLAMACPP_CMAKE_ARGS"
if [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ] && "$PY" -c "import llama_cpp" 2>/dev/null; then
  echo "install_llamacpp_reference: llama-cpp-python $VERSION already installed for this CPU"
  exit 0
fi
echo "install_llamacpp_reference: building llama-cpp-python $VERSION with $LLAMACPP_CMAKE_ARGS"
# --no-cache-dir and --force-reinstall: never reuse a wheel pip built earlier with other flags.
CMAKE_ARGS="$LLAMACPP_CMAKE_ARGS" "$PY" -m pip install -q --no-cache-dir --force-reinstall --no-deps \
  "llama-cpp-python==$VERSION"
# Its pure-Python dependencies, leaving numpy and the rest as they are when already there.
"$PY" -m pip install -q "llama-cpp-python==$VERSION"
echo "$WANT" > "$STAMP"
"$PY" -c "import llama_cpp; print('install_llamacpp_reference: llama-cpp-python', llama_cpp.__version__)"
