"""The default model against llama.cpp (reference dumps made by tools/make_llamacpp_reference.py
with the PyPI package llama-cpp-python): same prompt tokens, greedy choices along llama.cpp's 64
tokens, logits close, and perplexity within 1%."""
import json
import os

import numpy as np
import pytest

from conftest import ROOT, compare_forced_steps, read_json, run_greta

REF_DIR = os.path.join(ROOT, "tests", "data", "reference")
REF = os.path.join(REF_DIR, "llamacpp_smollm2.json")


@pytest.fixture(scope="module")
def ref():
    if not os.path.exists(REF):
        pytest.skip(f"reference dump missing: {REF} (bash tools/install_llamacpp_reference.sh, then "
                    ".venv/bin/python tools/make_llamacpp_reference.py)")
    return read_json(REF)


def simd_build(greta_bin):
    """True when greta was built with -march=native (GRETA_NATIVE, the default) on a CPU with
    AVX2/FMA/F16C: the kernels that round like ggml's. The scalar fallbacks (GRETA_NATIVE=OFF) sum
    the quantized matmuls in another order, as a scalar llama.cpp build would."""
    cache = os.path.join(os.path.dirname(str(greta_bin)), "CMakeCache.txt")
    if os.path.exists(cache) and "GRETA_NATIVE:BOOL=OFF" in open(cache).read():
        return False
    flags = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else []
    return all(f in flags for f in ("avx2", "fma", "f16c"))


def run_prompt(greta_bin, model, p, out, *extra):
    args = ["run", "-m", model, "--device", "cpu", "-p", p["text"], "--temp", "0", "--report", out, *extra]
    if p["special"]:
        args.append("--special")
    run_greta(greta_bin, *args)
    return read_json(out)


def test_free_running_greedy_decode_against_llamacpp(greta_bin, default_model, ref, tmp_path):
    """Both engines decode greedily on their own for 64 tokens. Greedy paths part at the first
    near-tie unless the arithmetic is the same, op by op: the CPU backend follows ggml's rounding
    (8-bit activations as Q8_1/Q8_0, F16 KV cache and fp16 attention, ggml's exp, rms_norm and
    rope; docs/notes/cpu-numerics.md "Op by op against llama.cpp"), so at least 5 of the 6
    prompts must give llama.cpp's 64 tokens exactly (on the build the dumps came from: x86 with
    AVX-512, AMX off), and every prompt its first token."""
    matched = []
    for i, p in enumerate(ref["prompts"]):
        got = run_prompt(greta_bin, default_model, p, tmp_path / f"p{i}.json", "-n", ref["n_gen"], "--ignore-eos")
        assert got["prompt_ids"] == p["prompt_ids"], f"prompt {i}: token ids differ from llama.cpp"
        n_same = 0
        for a, b in zip(got["generated_ids"], p["generated_ids"]):
            if a != b:
                break
            n_same += 1
        matched.append(n_same)
        assert n_same >= 1, f"prompt {i}: first greedy token differs from llama.cpp"
    print(f"\nllama.cpp free-running greedy: tokens identical before the first divergence {matched} of {ref['n_gen']}")
    full = sum(n == ref["n_gen"] for n in matched)
    if not simd_build(greta_bin):
        # Prompt ids and first tokens were checked above; the 64-token identity needs ggml's
        # rounding, which only the SIMD kernels reproduce, so say "skipped", never "passed".
        pytest.skip(f"64-token identity not asserted: greta built without its x86 SIMD kernels ({matched})")
    assert full >= 5, f"only {full} of {len(matched)} prompts match llama.cpp for all {ref['n_gen']} tokens: {matched}"


def test_teacher_forced_64_steps_against_llamacpp(greta_bin, default_model, ref, tmp_path):
    """greta scores llama.cpp's own 64 greedy tokens step by step (--force): at every step its
    greedy choice must be llama.cpp's, or the two candidates must be a near-tie in BOTH engines'
    logits (within NEAR_TIE); most steps must agree exactly. Also reports the logit differences."""
    NEAR_TIE = 0.5
    full = np.load(os.path.join(REF_DIR, "llamacpp_smollm2_logits.npz"))
    agree, total, worst, ties = 0, 0, 0.0, []
    for i, p in enumerate(ref["prompts"]):
        got = run_prompt(greta_bin, default_model, p, tmp_path / f"f{i}.json", "--force", json.dumps(p["generated_ids"]),
                         "--report-top", ref["top"])
        assert len(got["steps"]) == ref["n_gen"]
        a, w, t = compare_forced_steps(f"prompt {i}", got["steps"], p["steps"], NEAR_TIE)
        agree, total, worst, ties = agree + a, total + ref["n_gen"], max(worst, w), ties + t
    full_worst = 0.0
    for i, p in enumerate(ref["prompts"]):
        got = run_prompt(greta_bin, default_model, p, tmp_path / f"full{i}.json", "-n", 1, "--report-top", 1 << 20)
        ours = np.zeros(len(full[f"p{i}"]), dtype=np.float32)
        for tid, v in got["steps"][0]:
            ours[tid] = v
        full_worst = max(full_worst, float(np.abs(ours - full[f"p{i}"]).max()))
    print(f"\nllama.cpp teacher-forced: greedy choice identical at {agree}/{total} steps; the rest are near-ties "
          f"(prompt, step, greta margin, llama.cpp margin) {ties}; max |logit diff| top-{ref['top']} {worst:.3f}, "
          f"full vocabulary first step {full_worst:.3f}")
    assert agree >= 0.95 * total
    # llama.cpp's own logits are up to ~3.7 from the exact float64 forward on these prompts.
    assert worst < 3.0 and full_worst < 5.0


def test_perplexity_within_one_percent_of_llamacpp(greta_bin, default_model, ref):
    r = ref["perplexity"]
    if not os.path.exists(r["file"]):
        pytest.skip(f"{r['file']} missing")
    p = run_greta(greta_bin, "perplexity", "-m", default_model, "--device", "cpu", "-f", r["file"],
                  "-c", r["ctx"], "--chunks", r["chunks"])
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["tokens"] == r["tokens"], "tokenization of the text differs from llama.cpp"
    rel = abs(got["perplexity"] - r["perplexity"]) / r["perplexity"]
    print(f"\nperplexity: greta {got['perplexity']:.4f} llama.cpp {r['perplexity']:.4f} (rel diff {rel:.4%})")
    assert rel < 0.01
