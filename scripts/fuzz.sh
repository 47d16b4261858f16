#!/usr/bin/env bash
# Fuzz the model-file readers, the chat template engine and the grammar engine with libFuzzer +
# ASan/UBSan.
#   scripts/fuzz.sh [SECONDS]   (default 60 seconds per fuzzer)
# Builds build-fuzz/ with clang, writes a seed corpus of small valid files into
# fuzz-corpus/<target>/ (git-ignored), and runs fuzz_gguf, fuzz_safetensors, fuzz_jinja (seeded
# with the chat templates of tests/data/chat_templates/), then fuzz_grammar (seeded with
# llama.cpp's grammars of tests/data/gbnf/, a few JSON Schemas and regexes).
# Crash reproducers land in fuzz-corpus/crashes/; rerun one with build-fuzz/<target> <file>.
set -euo pipefail
SECONDS_PER_TARGET="${1:-60}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
JOBS="${JOBS:-2}"

CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DGRETA_FUZZ=ON -DGRETA_TESTS=OFF -DGRETA_CUDA=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz --target fuzz_gguf fuzz_safetensors fuzz_jinja fuzz_grammar -j"$JOBS"

mkdir -p fuzz-corpus/gguf fuzz-corpus/safetensors fuzz-corpus/jinja fuzz-corpus/grammar fuzz-corpus/crashes
cp tests/data/chat_templates/*.jinja fuzz-corpus/jinja/
# fuzz_grammar's first byte picks the language: 0 GBNF, 1 JSON Schema, 2 regex.
for g in tests/data/gbnf/*.gbnf; do { printf '\000'; cat "$g"; } > "fuzz-corpus/grammar/$(basename "$g")"; done
printf '\001{"type":"object","properties":{"a":{"type":"integer","minimum":-5,"maximum":300},"b":{"type":"array","items":{"enum":["x",1,null]},"maxItems":3}},"required":["a"]}' > fuzz-corpus/grammar/schema_object.json
printf '\001{"$defs":{"n":{"anyOf":[{"type":"string","pattern":"^[a-z]{2,4}$"},{"$ref":"#/$defs/n"}]}},"$ref":"#/$defs/n"}' > fuzz-corpus/grammar/schema_ref.json
printf '\002(ab|c[0-9]+)*x?\\d{2,3}' > fuzz-corpus/grammar/regex.txt
# Seeds come from the reference writers (gguf and safetensors PyPI packages, tools/requirements.txt),
# so the fuzzer starts from files other tools produce, not only from our own idea of the format.
python3 - "$ROOT/fuzz-corpus" <<'PY'
import sys, numpy as np, gguf
from safetensors.numpy import save_file
out = sys.argv[1]

def write_gguf(path, alignment=None, quant=True):
    w = gguf.GGUFWriter(path, "llama")
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_block_count(2)
    w.add_context_length(128)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("flag", True)
    w.add_string("general.name", "seed")
    w.add_array("tokenizer.ggml.tokens", ["a", "b", "<s>"])
    w.add_array("tokenizer.ggml.scores", [0.5, -1.0, 2.0])
    w.add_array("ints", [1, 2, 3])
    w.add_tensor("norm.weight", np.arange(8, dtype=np.float32))
    w.add_tensor("h.weight", np.ones((2, 4), dtype=np.float16))
    if quant:
        # Two Q8_0 rows of 32 values, one 34-byte block each; the writer takes the byte shape.
        w.add_tensor("q.weight", np.zeros((2, 34), dtype=np.uint8), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

write_gguf(f"{out}/gguf/seed_basic.gguf")
write_gguf(f"{out}/gguf/seed_align64.gguf", alignment=64)
write_gguf(f"{out}/gguf/seed_plain.gguf", quant=False)
w = gguf.GGUFWriter(f"{out}/gguf/seed_empty.gguf", "llama")
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, dtype=np.float16)},
          f"{out}/safetensors/seed_basic.safetensors", metadata={"format": "pt"})
save_file({"s": np.zeros((), dtype=np.float32)}, f"{out}/safetensors/seed_scalar.safetensors")
save_file({"e": np.zeros((0, 3), dtype=np.float16), "x": np.ones((3, 1), dtype=np.float32)},
          f"{out}/safetensors/seed_empty_dim.safetensors")
PY
# A truncated copy of the real model's header (metadata + tokenizer) when it is present.
if [ -f models/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
  head -c 65536 models/SmolLM2-135M-Instruct.Q4_1.gguf > fuzz-corpus/gguf/seed_smollm2_head.gguf
fi

run() {  # run TARGET CORPUS MAX_LEN
  echo "== $1 for ${SECONDS_PER_TARGET}s"
  nice -n 10 "build-fuzz/$1" "fuzz-corpus/$2" -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 \
    -max_len="$3" -timeout=10 -print_final_stats=1 -artifact_prefix=fuzz-corpus/crashes/"$1"- 2>&1 |
    sed -E '/^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)/d; /NEW_FUNC/d; /Recommended dictionary/,/End of recommended dictionary/d'
  return "${PIPESTATUS[0]}"
}
status=0
run fuzz_gguf gguf 131072 || status=$?
run fuzz_safetensors safetensors 65536 || status=$?
run fuzz_jinja jinja 16384 || status=$?
run fuzz_grammar grammar 8192 || status=$?
if [ "$status" -ne 0 ]; then echo "fuzzing found a problem: see fuzz-corpus/crashes/" >&2; fi
exit "$status"
