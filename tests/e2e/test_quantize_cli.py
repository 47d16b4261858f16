"""Quantize on load from the command line, on the CPU: `--quantize TYPE` on the default model's
float form (its weights dequantized to an F32 GGUF by tools/dequantize_gguf.py) and on a Hugging
Face safetensors checkpoint; the load log (types, fallbacks, bytes); refusals; and `greta bench`
on synthetic weights of a block type, whose bytes per token must count the quantized bytes."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, read_json, run_greta

PROMPT = "The capital of France is"
# GGUF block sizes: (values per block, bytes per block)
BLOCKS = {"F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q8_0": (32, 34), "Q4_0": (32, 18), "Q4_1": (32, 20),
          "Q5_0": (32, 22), "Q5_1": (32, 24), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210)}
# llama.cpp's type for rows a K-quant's 256-value blocks do not divide
FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
WEIGHTS = re.compile(r"^greta: weights (.*): ([0-9.]+) MiB on the host$", re.M)


@pytest.fixture(scope="module")
def f32_model(default_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("f32") / "default-f32.gguf"
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "dequantize_gguf.py"), default_model, str(out)],
                   check=True, capture_output=True)
    return out


def weight_types(stderr):
    m = WEIGHTS.search(stderr)
    assert m, stderr
    return {t: int(n) for t, n in re.findall(r"(\w+) x(\d+)", m.group(1))}


def run_cpu(greta_bin, model, *args, **kw):
    return run_greta(greta_bin, "run", "-m", model, "--device", "cpu", "-t", "2", "--temp", "0", "--ignore-eos",
                     *args, timeout=120, **kw)


def test_q8_0_on_load_runs_close_to_the_float_model(greta_bin, f32_model, tmp_path):
    ref = tmp_path / "f32.json"
    p = run_cpu(greta_bin, f32_model, "-p", PROMPT, "-n", 6, "--report", ref, "--report-top", 50)
    assert weight_types(p.stderr) == {"F32": 272}
    r = read_json(ref)
    q = tmp_path / "q8.json"
    p = run_cpu(greta_bin, f32_model, "--quantize", "q8_0", "--prompt-ids", json.dumps(r["prompt_ids"]), "--force",
                json.dumps(r["generated_ids"]), "--report", q, "--report-top", 50)
    assert p.stdout.strip(), "no text generated"
    # SmolLM2's 211 matrices (the tied embedding, its output projection, among them) are Q8_0;
    # its 61 norms stay F32.
    assert weight_types(p.stderr) == {"F32": 61, "Q8_0": 211}, p.stderr
    assert "instead of" not in p.stderr  # 576 and 1536 are multiples of 32: no fallback
    s = read_json(q)
    assert s["steps"][0][0][0] == r["steps"][0][0][0]  # " Paris"
    # Teacher-forced, each step's top logits stay within 5% of the largest. The CPU backend runs
    # quantized weights against 8-bit quantized activations, which alone moves these logits by
    # up to ~2-3% (the default Q4_1 file against its own F32 form); a wrong block is far off.
    for step_ref, step_q in zip(r["steps"], s["steps"]):
        ref_logits, q_logits = dict(step_ref), dict(step_q)
        diff = max(abs(ref_logits[t] - q_logits[t]) for t in ref_logits if t in q_logits)
        assert diff < 0.05 * max(abs(v) for v in ref_logits.values()), diff


def test_k_quant_fallback_is_said_once_per_type(greta_bin, f32_model):
    p = run_cpu(greta_bin, f32_model, "--quantize", "q4_k", "-p", PROMPT, "-n", 4)
    assert p.stdout.strip(), "no text generated"
    notes = [line for line in p.stderr.splitlines() if "instead of" in line]
    # Rows of 576 values (every matrix but ffn_down) are not a multiple of 256. The tied embedding
    # is the output projection: Q8_0, as llama.cpp's quantizer keeps it where Q6_K does not fit.
    assert notes == ["greta: 180 tensors stored as Q5_0 instead of Q4_K: rows of 576 values (blk.0.attn_q.weight "
                     "and others) are not a multiple of Q4_K's 256-value blocks"], p.stderr
    assert "greta: output projection 'token_embd.weight' stored as Q8_0" in p.stderr, p.stderr
    assert weight_types(p.stderr) == {"F32": 61, "Q5_0": 180, "Q4_K": 30, "Q8_0": 1}, p.stderr


def test_info_shows_the_model_as_quantized_on_load(greta_bin, f32_model):
    j = json.loads(run_greta(greta_bin, "info", "-m", f32_model, "--quantize", "q6_k", "--json", timeout=60).stdout)
    types = {t: v["count"] for t, v in j["tensor_types"].items()}
    assert types == {"F32": 61, "Q8_0": 181, "Q6_K": 30}
    assert j["bytes"] == sum(v["bytes"] for v in j["tensor_types"].values())
    assert j["quantized_on_load"] == "Q6_K" and len(j["load_notes"]) == 2  # the fallback, the output projection


def test_safetensors_checkpoint_is_quantized_on_load(greta_bin, tmp_path):
    d = tmp_path / "hf"
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "random_hf_model.py"), "write", "llama3", str(d)],
                   check=True)
    p = run_cpu(greta_bin, d, "--quantize", "q4_0", "-p", PROMPT, "-n", 4)
    assert p.stdout.strip()
    # 2 layers x 7 projections and the embedding in Q4_0, lm_head in Q6_K (llama.cpp's choice for
    # the output projection); the 5 norms stay F32.
    assert weight_types(p.stderr) == {"F32": 5, "Q4_0": 15, "Q6_K": 1}, p.stderr


def test_already_quantized_model_is_refused(greta_bin, default_model):
    p = run_cpu(greta_bin, default_model, "--quantize", "q4_0", "-p", PROMPT, "-n", 4, check=False)
    assert p.returncode == 1
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("greta: error: "), p.stderr
    assert "cannot quantize to Q4_0 on load: tensor 'token_embd.weight' is already Q8_0" in lines[0]
    assert p.stdout == ""


@pytest.mark.parametrize("args,reason", [
    (["run", "--quantize", "q3_k"], "--quantize: unknown quantization type 'q3_k' (choices: q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, fp8, int4)"),
    (["info", "--quantize", "int3"], "--quantize: unknown quantization type 'int3' (choices: q8_0, q4_0, q4_1, q5_0"),
    (["bench", "--synthetic", "tiny", "--dtype", "q9"],
     "--dtype: unknown weight type 'q9' (choices: bf16, f16, f32, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, fp8, int4)")])
def test_unknown_type_is_one_error_line_with_the_choices(greta_bin, args, reason):
    p = run_greta(greta_bin, *args, check=False, timeout=30)
    lines = p.stderr.splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert reason in lines[0], lines[0]


def test_dtype_and_quantize_both_block_types_is_refused(greta_bin):
    p = run_greta(greta_bin, "bench", "--synthetic", "tiny", "--dtype", "q4_0", "--quantize", "q8_0", "--device",
                  "cpu", check=False, timeout=30)
    assert p.returncode == 1 and "both name a block type" in p.stderr, p.stderr


def tiny_weight_bytes(matrix_type):
    """Bytes a decode step reads from synthetic `tiny` (4 layers, dim 512, 8/2 heads of 64, ffn 1376,
    vocab 1000, separate output) with matrices of `matrix_type`: every layer tensor, the output
    projection and its norm; K-quant rows of 1376 values fall back (FALLBACK)."""
    def matrix(rows, cols):
        t = matrix_type
        if cols % BLOCKS[t][0]:
            t = FALLBACK[t]
        return rows * cols // BLOCKS[t][0] * BLOCKS[t][1]
    dim, q, kv, ffn = 512, 512, 128, 1376
    layer = (matrix(q, dim) + 2 * matrix(kv, dim) + matrix(dim, q) + 2 * matrix(ffn, dim) + matrix(dim, ffn)
             + 2 * dim * 4)
    return 4 * layer + matrix(1000, dim) + dim * 4


@pytest.mark.parametrize("dtype", ["q4_k", "q8_0", "q6_k", "bf16"])
def test_bench_on_synthetic_block_type_counts_the_quantized_bytes(greta_bin, dtype):
    p = run_greta(greta_bin, "bench", "--synthetic", "tiny", "--dtype", dtype, "--device", "cpu", "-t", "2", "-n",
                  4, "-r", 1, timeout=120)
    lines = [json.loads(line) for line in p.stdout.splitlines()]
    assert len(lines) == 1, p.stdout
    j = lines[0]
    assert j["measure"] == "decode" and j["check"] == "pass" and j["tokens_per_s"] > 0
    assert j["weight_bytes"] == tiny_weight_bytes(dtype.upper())
    # plus K and V of 4 layers x 2 heads x 64 at the mean position of the measured tokens (16 + 4 / 2)
    kv = j["bytes_per_token"] - j["weight_bytes"]
    assert kv > 0 and kv % (2 * 4 * 2 * 64 * (16 + 2)) == 0, kv
    if dtype == "q4_k":
        assert "4 tensors stored as Q5_0 instead of Q4_K: rows of 1376 values" in p.stderr, p.stderr
