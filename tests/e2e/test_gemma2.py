"""Gemma 2 (GGUF gemma2) on the CPU against llama.cpp (PyPI llama-cpp-python, as test_gemma3.py),
on a tiny random-weight F32 checkpoint written here in llama.cpp's Gemma 2 layout (its
vocabulary: tests/data/tokenizer/spm). The weights make both soft caps bite:
- q and k are large, so the attention scores reach a few hundred and tanh(s / 50) saturates;
- the output norm is large, so many logits pass the final cap of 30;
and the prompt is longer than the 8-token window of the even layers (0 and 2).

- teacher-forced: greta scores llama.cpp's greedy tokens (--force); every logit of every step is
  compared, and the greedy choices agree but at near-ties;
- free-running: both engines' greedy tokens are the same;
- each cap and the window change greta's logits by far more than the tolerance (the same file
  with a cap of 1e6, or a window past the prompt), so the comparison above tests them."""
import json
import os
import sys

import pytest

from conftest import ROOT, compare_forced_steps, identical_prefix, read_json, run_greta
from llamacpp_greedy import greedy_steps

SPM_GGUF = os.path.join(ROOT, "tests", "data", "tokenizer", "spm", "spm.gguf")
VOCAB, DIM, LAYERS, HEADS, KV_HEADS, HEAD_DIM, FFN = 1000, 64, 4, 4, 2, 32, 128
WINDOW = 8
PROMPT = ("The quick brown fox jumps over the lazy dog while the cat sleeps by the warm fire and the "
          "rain falls on the old roof of the house")
N_GEN = 16
NEAR_TIE = 0.05  # a step where the engines pick different tokens must be a near-tie in both
# Max |logit difference| over all 1000 logits (capped to +-30). Both engines round the same way
# (F32 weights; q, K, V and the softmax weights through fp16), so what is left is float summation
# order in the F32 matmuls. Measured 1.8e-3; q rounded to fp16 before its scale instead of after
# (llama.cpp's Gemma 2 order) gives 1.1e-2, a cap 10% off 1.4 (attention) and 2.6 (final).
MAX_LOGIT_DIFF = 5e-3
MIN_EFFECT = 1.0  # what removing a cap or the window must change, at least


def write_gemma2_gguf(path, attn_cap=50.0, final_cap=30.0, window=WINDOW, seed=0):
    """A random Gemma 2 GGUF as llama.cpp's converter lays it out (norm weights stored as 1 + w)."""
    np = pytest.importorskip("numpy")
    gguf = pytest.importorskip("gguf")
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from dequantize_gguf import copy_metadata
    rng = np.random.default_rng(seed)

    def mat(n_out, n_in, std):
        return (rng.standard_normal((n_out, n_in)) * std).astype(np.float32)

    def norm(n, mean=1.0):
        return (mean + 0.2 * rng.standard_normal(n)).astype(np.float32)

    w = gguf.GGUFWriter(str(path), "gemma2")
    copy_metadata(gguf.GGUFReader(SPM_GGUF), w, gguf.LlamaFileType.ALL_F32)
    for key, v in (("context_length", 256), ("embedding_length", DIM), ("block_count", LAYERS),
                   ("feed_forward_length", FFN), ("attention.head_count", HEADS),
                   ("attention.head_count_kv", KV_HEADS), ("attention.key_length", HEAD_DIM),
                   ("attention.value_length", HEAD_DIM), ("attention.sliding_window", window)):
        w.add_uint32(f"gemma2.{key}", v)
    w.add_float32("gemma2.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_float32("gemma2.attn_logit_softcapping", attn_cap)
    w.add_float32("gemma2.final_logit_softcapping", final_cap)
    w.add_tensor("token_embd.weight", mat(VOCAB, DIM, 1.0))
    w.add_tensor("output_norm.weight", norm(DIM))  # logits up to ~60: the largest ones past the cap
    for l in range(LAYERS):
        b = f"blk.{l}."
        w.add_tensor(b + "attn_norm.weight", norm(DIM))
        # q and k entries of std ~10: scores q.k / sqrt(head_dim) of std ~100, far past the cap of 50
        w.add_tensor(b + "attn_q.weight", mat(HEADS * HEAD_DIM, DIM, 10.0 / DIM ** 0.5))
        w.add_tensor(b + "attn_k.weight", mat(KV_HEADS * HEAD_DIM, DIM, 10.0 / DIM ** 0.5))
        w.add_tensor(b + "attn_v.weight", mat(KV_HEADS * HEAD_DIM, DIM, 1.0 / DIM ** 0.5))
        w.add_tensor(b + "attn_output.weight", mat(DIM, HEADS * HEAD_DIM, 1.0 / (HEADS * HEAD_DIM) ** 0.5))
        w.add_tensor(b + "post_attention_norm.weight", norm(DIM))
        w.add_tensor(b + "ffn_norm.weight", norm(DIM))
        w.add_tensor(b + "ffn_gate.weight", mat(FFN, DIM, 1.0 / DIM ** 0.5))
        w.add_tensor(b + "ffn_up.weight", mat(FFN, DIM, 1.0 / DIM ** 0.5))
        w.add_tensor(b + "ffn_down.weight", mat(DIM, FFN, 1.0 / FFN ** 0.5))
        w.add_tensor(b + "post_ffw_norm.weight", norm(DIM))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def gemma2_model(tmp_path_factory):
    return write_gemma2_gguf(tmp_path_factory.mktemp("gemma2") / "gemma2.gguf")


@pytest.fixture(scope="module")
def llamacpp(gemma2_model):
    """llama.cpp's prompt ids, greedy tokens and every logit of every step."""
    ref = greedy_steps(gemma2_model, PROMPT, N_GEN)
    assert len(ref["prompt_ids"]) > 2 * WINDOW, "the prompt must cross the window"
    return ref


def greta_forced(greta_bin, model, forced, report):
    run_greta(greta_bin, "run", "-m", model, "--device", "cpu", "-p", PROMPT, "--temp", "0", "--ignore-eos", "--report",
              report, "--force", json.dumps(forced), "--report-top", VOCAB)
    return read_json(report)


def max_diff(a_steps, b_steps):
    return max(abs(dict(a)[t] - v) for a, b in zip(a_steps, b_steps) for t, v in b)


def test_teacher_forced_logits_against_llamacpp(greta_bin, gemma2_model, llamacpp, tmp_path):
    got = greta_forced(greta_bin, gemma2_model, llamacpp["generated_ids"], tmp_path / "f.json")
    assert got["prompt_ids"] == llamacpp["prompt_ids"], "token ids differ from llama.cpp"
    assert len(got["steps"]) == N_GEN
    top = max(abs(v) for s in llamacpp["steps"] for _, v in s)
    assert 29.0 < top <= 30.0, f"the final cap must bite: largest logit {top}"
    agree, worst, ties = compare_forced_steps("gemma2", got["steps"], llamacpp["steps"], NEAR_TIE)
    print(f"\ngemma2 vs llama.cpp teacher-forced: greedy choice identical at {agree}/{N_GEN} steps, near-ties {ties}; "
          f"max |logit diff| over all logits {worst:.2e}")
    assert agree >= N_GEN - 1
    assert worst < MAX_LOGIT_DIFF


def test_free_running_greedy_decode_against_llamacpp(greta_bin, gemma2_model, llamacpp, tmp_path):
    run_greta(greta_bin, "run", "-m", gemma2_model, "--device", "cpu", "-p", PROMPT, "-n", N_GEN, "--temp", "0",
              "--ignore-eos", "--report", tmp_path / "r.json")
    got = read_json(tmp_path / "r.json")["generated_ids"]
    matched = identical_prefix(got, llamacpp["generated_ids"])
    print(f"\ngemma2 vs llama.cpp free-running greedy: {matched}/{N_GEN} identical tokens")
    assert matched >= N_GEN // 2, (got, llamacpp["generated_ids"])


@pytest.mark.parametrize("variant", [dict(attn_cap=1e6), dict(final_cap=1e6), dict(window=4096)],
                         ids=["no-attention-cap", "no-final-cap", "no-window"])
def test_caps_and_window_change_the_logits(greta_bin, gemma2_model, tmp_path, variant):
    """Without it, greta's logits on the same tokens move by more than MIN_EFFECT, far past
    MAX_LOGIT_DIFF: the comparison with llama.cpp checks each of them. (greta only: runs without
    llama-cpp-python.)"""
    forced = list(range(10, 10 + N_GEN))
    base = greta_forced(greta_bin, gemma2_model, forced, tmp_path / "base.json")["steps"]
    other = write_gemma2_gguf(tmp_path / "variant.gguf", **variant)
    changed = greta_forced(greta_bin, other, forced, tmp_path / "variant.json")["steps"]
    effect = max_diff(base, changed)
    print(f"\ngemma2 {variant}: max |logit change| {effect:.3f}")
    assert effect > MIN_EFFECT
