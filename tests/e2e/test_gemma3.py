"""Gemma 3 (GGUF gemma3) on the CPU against llama.cpp (PyPI llama-cpp-python, as in
test_llamacpp_parity.py and test_quant_perplexity.py), on the real Gemma 3 270M Q4_K_M
(conftest.gemma3_model):
- the same prompt token ids;
- teacher-forced: greta scores llama.cpp's own greedy tokens step by step (--force); its greedy
  choice is llama.cpp's at every step but near-ties in both engines, and its logits are close;
- free-running: both engines' greedy decodes start with the same tokens;
- perplexity over positions past the 512-token sliding window within 1% of llama.cpp's: the
  interleaved local (windowed, RoPE base 10k) and global (RoPE base 1M) layers.

Close, not bit-identical as the default model is: llama.cpp quantizes the activations of Q4_K and
Q6_K matmuls to Q8_K (one scale per 256 values) where greta's CPU backend uses 32-value blocks.
Every op before the first K-quant matmul is bit-identical (docs/notes/gemma3.md)."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, compare_forced_steps, cpu_has_avx512, identical_prefix, read_json, run_greta

PROMPTS = [
    ("The capital of France is", False),
    ("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n", False),
    ("<start_of_turn>user\nWhat is the boiling point of water in Celsius?<end_of_turn>\n<start_of_turn>model\n", True),
    ("Les trois couleurs du drapeau français sont", False),
]
N_GEN = 32
TOP = 20
NEAR_TIE = 0.5  # a step where the engines pick different tokens must be a near-tie in both
# Over llama.cpp's top 20 at every step (logits up to ~40). Measured: at most 2.0; against the
# float forward of the same weights (greta's exact-matmul mode) greta's quantized logits are
# 0.5-1.4 off and llama.cpp's 0.9-2.4, so the gap is llama.cpp's coarser activation rounding.
# Without AVX-512 (an AVX2-only AMD EPYC) measured 3.02: the difference comes with the CPU's SIMD
# level (test_moe.py), not traced further.
MAX_LOGIT_DIFF = 3.0 if cpu_has_avx512() else 3.5
MIN_FREE_RUNNING = 4  # identical greedy tokens before the first divergence (near-ties part them), every prompt
TEXT = os.path.join(ROOT, "tests", "data", "perplexity_text.txt")
PPL_CTX = 1024  # scores positions 512 .. 1022: every local layer's window is full


@pytest.fixture(scope="session")  # session, as gemma3_model: fixtures are set up widest scope first
def llama_cpp_installed():
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip(f"llama-cpp-python is not installed for {sys.executable} (bash tools/install_llamacpp_reference.sh)")


@pytest.fixture(scope="module")
def llamacpp(llama_cpp_installed, gemma3_model):
    """llama.cpp's prompt ids and greedy tokens, with the top logits of every step. (Without
    llama-cpp-python the tests skip before the model is fetched.)"""
    import numpy as np
    from llama_cpp import Llama
    # n_ctx covers the longest prompt and its tokens: llama-cpp-python keeps n_ctx rows of 262144 logits.
    llm = Llama(model_path=gemma3_model, n_ctx=128, n_threads=2, n_batch=128, logits_all=True, verbose=False, seed=0)
    out = []
    for text, special in PROMPTS:
        llm.reset()
        ids = llm.tokenize(text.encode(), add_bos=True, special=special)
        llm.eval(ids)
        gen, steps = [], []
        for _ in range(N_GEN):
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            top = np.lexsort((np.arange(len(row)), -row))[:TOP]
            steps.append([[int(t), float(row[t])] for t in top])
            gen.append(int(top[0]))
            llm.eval([gen[-1]])
        out.append({"text": text, "special": special, "prompt_ids": ids, "generated_ids": gen, "steps": steps})
    return out


def greta_run(greta_bin, model, p, report, *extra):
    args = ["run", "-m", model, "--device", "cpu", "-p", p["text"], "--temp", "0", "--ignore-eos", "--report", report,
            *extra]
    if p["special"]:
        args.append("--special")
    run_greta(greta_bin, *args)
    return read_json(report)


def test_teacher_forced_greedy_and_logits_against_llamacpp(greta_bin, llamacpp, gemma3_model, tmp_path):
    agree, total, worst, ties = 0, 0, 0.0, []
    for i, p in enumerate(llamacpp):
        got = greta_run(greta_bin, gemma3_model, p, tmp_path / f"f{i}.json", "--force", json.dumps(p["generated_ids"]),
                        "--report-top", TOP)
        assert got["prompt_ids"] == p["prompt_ids"], f"prompt {i}: token ids differ from llama.cpp"
        assert len(got["steps"]) == N_GEN
        a, w, t = compare_forced_steps(f"prompt {i}", got["steps"], p["steps"], NEAR_TIE)
        agree, total, worst, ties = agree + a, total + N_GEN, max(worst, w), ties + t
    print(f"\ngemma3 vs llama.cpp teacher-forced: greedy choice identical at {agree}/{total} steps, near-ties "
          f"(prompt, step, greta margin, llama.cpp margin) {ties}; max |logit diff| top-{TOP} {worst:.3f}")
    assert agree >= 0.95 * total
    assert worst < MAX_LOGIT_DIFF


def test_free_running_greedy_decode_against_llamacpp(greta_bin, llamacpp, gemma3_model, tmp_path):
    matched = []
    for i, p in enumerate(llamacpp):
        got = greta_run(greta_bin, gemma3_model, p, tmp_path / f"p{i}.json", "-n", N_GEN)
        matched.append(identical_prefix(got["generated_ids"], p["generated_ids"]))
    print(f"\ngemma3 vs llama.cpp free-running greedy: identical tokens before the first divergence {matched} of {N_GEN}")
    assert min(matched) >= MIN_FREE_RUNNING, matched


def test_perplexity_past_the_sliding_window_within_one_percent_of_llamacpp(greta_bin, llamacpp, gemma3_model):
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "llamacpp_perplexity.py"), "-m", gemma3_model, "-f",
                        TEXT, "-c", str(PPL_CTX)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    ref = json.loads(p.stdout.strip().splitlines()[-1])
    got = json.loads(run_greta(greta_bin, "perplexity", "-m", gemma3_model, "--device", "cpu", "-f", TEXT, "-c",
                               PPL_CTX).stdout.strip().splitlines()[-1])
    assert got["tokens"] == ref["tokens"], "tokenization of the text differs from llama.cpp"
    assert (got["chunks"], got["scored"]) == (ref["chunks"], ref["scored"]) == (1, PPL_CTX // 2 - 1)
    rel = abs(got["perplexity"] - ref["perplexity"]) / ref["perplexity"]
    print(f"\ngemma3 perplexity (ctx {PPL_CTX}): greta {got['perplexity']:.4f} llama.cpp {ref['perplexity']:.4f} "
          f"(rel diff {rel:.4%})")
    assert rel < 0.01


def test_info_shows_windows_and_geglu(greta_bin, gemma3_model):
    """greta info names what sets Gemma 3 apart: 5 of every 6 layers windowed (512 positions, their
    own RoPE base), GeGLU, post norms."""
    p = subprocess.run([greta_bin, "info", "-m", gemma3_model, "--json"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert (j["sliding_window"], j["windowed_layers"], j["layers"]) == (512, 15, 18)
    assert j["rope_local_theta"] == 10000 and j["ffn_activation"] == "gelu_tanh" and j["post_norms"] is True
    assert "experts" not in j and "attn_softcap" not in j
