"""Perplexity of `--quantize TYPE` against the float model it quantizes, on the CPU backend: the
8-bit formats may add at most 1% to the float model's perplexity, the 4- to 6-bit ones at most 5%.

The float model is a BF16 copy of the default model (tools/dequantize_gguf.py --type bf16:
matrices BF16, norms F32, as llama.cpp's converter writes --outtype bf16), made once into the
git-ignored models/quantized/. No float copy of the default model is published, so its weights
are the Q4_1 file's, dequantized: every 32-value block lies on a grid of 16 levels. That is not
what a float checkpoint looks like, and it decides what these runs can show:
- q8_0, q6_k (whose rows of 576 values fall back to Q8_0) and q4_1 (which gives the Q4_1 grid
  back) are held to the bounds above.
- Every other format rounds the values onto a grid of its own that does not contain the Q4_1
  grid, so each weight is rounded a second time, with errors about as large as the first
  rounding's (llama.cpp's own quantizer, requantizing the Q4_1 file, loses about as much); fp8's
  three mantissa bits do the same on a smaller scale. These formats are held to a ceiling some
  points over what they measure here: it catches a broken format (a wrong block gives
  perplexities in the hundreds), but it is not the bound a real float model is held to.
The tied embedding is the output projection, which --quantize keeps finer, as llama.cpp's
quantizer (Q8_0 here) and Hugging Face FP8 / int4 checkpoints (BF16) do.
docs/notes/quantized-weights.md has the numbers.

Each run must also have stored its matrices in the type asked (the load log names the types and
the bytes), so a run that silently stayed in float cannot pass."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, run_greta

TEXT = os.path.join(ROOT, "tests", "data", "perplexity_text.txt")
FLOAT_MODEL = os.path.join(ROOT, "models", "quantized", "SmolLM2-135M-Instruct.BF16.gguf")
# The text, chunk length and scoring of tests/e2e/test_quant_perplexity.py: 6 chunks, 762 scored
# tokens; the 11 runs take ~50 s on 2 cores. Fewer tokens would be too few: over 2, 3 or all 6
# chunks the measured change of one format moves by up to 7 points (q5_1), of q8_0 by 0.3.
CTX = 256
CHUNKS = 6  # all of the text
EIGHT_BIT, FEWER_BITS = 0.01, 0.05  # the bounds on the relative increase in perplexity
# Ceilings: a few points over what each format measures here (docs/notes/quantized-weights.md).
CEIL_FP8, CEIL_Q4_0, CEIL_Q5_0, CEIL_Q5_1, CEIL_Q4_K, CEIL_Q5_K, CEIL_INT4 = 0.04, 0.25, 0.13, 0.20, 0.11, 0.20, 0.28
# SmolLM2-135M: 211 matrices, 181 with rows of 576 values (the tied embedding, q/k/v/o, gate, up),
# 30 with rows of 1536 (ffn_down); 61 norms stay F32. 576 is not a multiple of 256 or 128, so the
# K-quants and int4 store those rows in their fallback type. The tied embedding is the output
# projection: Q8_0 for the GGUF types (llama.cpp's choice where Q6_K does not fit its rows), BF16
# for fp8 and int4 (as Hugging Face checkpoints keep it).
MATRICES, ROWS_576, ROWS_1536 = 211, 181, 30
LAYER_576 = ROWS_576 - 1  # without the output projection
# --quantize choice -> (stored matrix types, bound, ceiling): a ceiling, where given, replaces the
# bound for a format that rounds the Q4_1 grid a second time (docstring).
FORMATS = {
    "q8_0": ({"Q8_0": MATRICES}, EIGHT_BIT, None),
    "fp8": ({"F8_B64": MATRICES - 1, "BF16": 1}, EIGHT_BIT, CEIL_FP8),
    "q6_k": ({"Q6_K": ROWS_1536, "Q8_0": ROWS_576}, FEWER_BITS, None),
    "q4_1": ({"Q4_1": MATRICES - 1, "Q8_0": 1}, FEWER_BITS, None),
    "q4_0": ({"Q4_0": MATRICES - 1, "Q8_0": 1}, FEWER_BITS, CEIL_Q4_0),
    "q5_0": ({"Q5_0": MATRICES - 1, "Q8_0": 1}, FEWER_BITS, CEIL_Q5_0),
    "q5_1": ({"Q5_1": MATRICES - 1, "Q8_0": 1}, FEWER_BITS, CEIL_Q5_1),
    "q4_k": ({"Q4_K": ROWS_1536, "Q5_0": LAYER_576, "Q8_0": 1}, FEWER_BITS, CEIL_Q4_K),
    "q5_k": ({"Q5_K": ROWS_1536, "Q5_1": LAYER_576, "Q8_0": 1}, FEWER_BITS, CEIL_Q5_K),
    "int4": ({"I4_G128": ROWS_1536, "I4_G32": LAYER_576, "BF16": 1}, FEWER_BITS, CEIL_INT4),
}
NORMS = 61
WEIGHTS = re.compile(r"^greta: weights (.*): ([0-9.]+) MiB on the host$", re.M)


def stored_weights(stderr):
    """The load log's weight types ({type: tensors}) and MiB."""
    m = WEIGHTS.search(stderr)
    assert m, f"no weights line in the load log:\n{stderr}"
    return {t: int(n) for t, n in re.findall(r"(\w+) x(\d+)", m.group(1))}, float(m.group(2))


def perplexity(greta_bin, model, *args):
    p = run_greta(greta_bin, "perplexity", "-m", model, "--device", "cpu", "-t", 2, "-f", TEXT, "-c", CTX,
                  "--chunks", CHUNKS, *args, timeout=120)
    j = json.loads(p.stdout.strip().splitlines()[-1])
    assert (j["chunks"], j["scored"]) == (CHUNKS, CHUNKS * (CTX // 2 - 1)), j
    return j, stored_weights(p.stderr)


@pytest.fixture(scope="module")
def float_model(default_model):
    if not os.path.exists(FLOAT_MODEL):  # about ten seconds, once
        os.makedirs(os.path.dirname(FLOAT_MODEL), exist_ok=True)
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "dequantize_gguf.py"), default_model, FLOAT_MODEL,
                        "--type", "bf16"], check=True, capture_output=True, timeout=300)
    return FLOAT_MODEL


@pytest.fixture(scope="module")
def reference(greta_bin, float_model):
    j, (types, mib) = perplexity(greta_bin, float_model)
    assert types == {"F32": NORMS, "BF16": MATRICES}, types
    return j["perplexity"], mib


@pytest.mark.parametrize("choice", FORMATS)
def test_quantized_perplexity_within_bound_of_the_float_model(greta_bin, float_model, reference, choice):
    matrix_types, bound, ceiling = FORMATS[choice]
    ref_ppl, ref_mib = reference
    j, (types, mib) = perplexity(greta_bin, float_model, "--quantize", choice)
    assert types == {"F32": NORMS, **matrix_types}, f"{choice} stored its weights as {types}"
    assert mib < 0.7 * ref_mib, f"{choice}: {mib} MiB of weights against {ref_mib} MiB in BF16"
    rel = j["perplexity"] / ref_ppl - 1
    limit = bound if ceiling is None else ceiling
    print(f"\n{choice}: perplexity {j['perplexity']:.4f} against BF16 {ref_ppl:.4f} ({rel:+.2%}; bound {bound:.0%}"
          f"{'' if ceiling is None else f', ceiling {ceiling:.0%}'}; {mib} MiB; {j['seconds']:.1f} s)")
    assert rel <= limit
