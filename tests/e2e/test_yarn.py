"""YaRN RoPE scaling against llama.cpp (PyPI llama-cpp-python, as test_gemma3.py uses it): tiny
random F32 GGUFs with `<arch>.rope.scaling.type = yarn` (factor 4, original context 64, file
context 512), a Llama (RoPE on adjacent pairs) and a Qwen2 (on halves, with q/k/v biases, the
family that ships YaRN configs), run by both engines on prompts of 200-300 tokens, far past the
original context, so the blended frequencies and the attention factor decide the result.
- teacher-forced: greta scores llama.cpp's greedy tokens step by step (--force); every logit of
  every step is compared, and the greedy choices must be llama.cpp's but at near-ties;
- free-running: greta's own greedy tokens are llama.cpp's until a near-tie, if any;
- the same weights without the scaling metadata give logits far from llama.cpp's, so the
  comparison above can tell scaled from unscaled RoPE (docs/notes/rope-scaling.md)."""
import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from conftest import ROOT, identical_prefix, read_json, run_greta

SPM = os.path.join(ROOT, "tests", "data", "tokenizer", "spm", "spm.gguf")
DIM, LAYERS, FFN, HEADS, KV_HEADS = 128, 2, 256, 4, 2
CTX, ORIGINAL, FACTOR = 512, 64, 4.0
PROMPT_LENGTHS = (200, 300)
N_GEN = 12
# Measured 1.4e-3 over logits up to 2.5 (without the scaling the same build is bit-identical to
# llama.cpp): llama.cpp scales K by the attention factor before rounding it to the fp16 cache,
# greta scales q.k after. Leaving the attention factor out moves the logits by 0.45, a broken ramp
# by 1.2.
MAX_LOGIT_DIFF = 3e-3
# Where the greedy choices differ, both engines' margins between the two tokens must be below
# this (with 1000 logits near 1 apart by a few e-3, near-ties happen: one in 48 steps here).
NEAR_TIE = 2 * MAX_LOGIT_DIFF
UNSCALED_MIN_DIFF = 0.05  # what leaving the scaling out moves the logits by, at least


@pytest.fixture(scope="module")
def llama_cpp_installed():
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip(f"llama-cpp-python is not installed for {sys.executable} (bash tools/install_llamacpp_reference.sh)")


def write_gguf(path, arch, yarn):
    """A random-weight `arch` (llama or qwen2) of the sizes above with spm.gguf's vocabulary; the
    YaRN keys as llama.cpp's converter writes them when `yarn`."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter
    rng = np.random.default_rng(7)
    w = GGUFWriter(str(path), arch)
    w.add_name("yarn-test")
    r = GGUFReader(SPM)
    for key, f in r.fields.items():
        if key.startswith("tokenizer."):
            w.add_key_value(key, f.contents(), f.types[0], f.types[1] if f.types[0] == GGUFValueType.ARRAY else None)
    vocab = len(r.fields["tokenizer.ggml.tokens"].contents())
    w.add_context_length(CTX)
    w.add_embedding_length(DIM)
    w.add_feed_forward_length(FFN)
    w.add_block_count(LAYERS)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(DIM // HEADS)
    if yarn:
        from gguf import RopeScalingType
        w.add_rope_scaling_type(RopeScalingType.YARN)
        w.add_rope_scaling_factor(FACTOR)
        w.add_rope_scaling_orig_ctx_len(ORIGINAL)

    def mat(o, i):
        return (rng.uniform(-1, 1, size=(o, i)) / np.sqrt(i)).astype(np.float32)

    def norm():
        return (1 + 0.1 * rng.standard_normal(DIM)).astype(np.float32)

    hd = DIM // HEADS
    w.add_tensor("token_embd.weight", rng.uniform(-1, 1, size=(vocab, DIM)).astype(np.float32))
    w.add_tensor("output_norm.weight", norm())
    w.add_tensor("output.weight", mat(vocab, DIM))
    for l in range(LAYERS):
        b = f"blk.{l}."
        w.add_tensor(b + "attn_norm.weight", norm())
        # q and k weights 3x larger: sharper attention, so the rotation shows in the logits.
        w.add_tensor(b + "attn_q.weight", 3 * mat(HEADS * hd, DIM))
        w.add_tensor(b + "attn_k.weight", 3 * mat(KV_HEADS * hd, DIM))
        w.add_tensor(b + "attn_v.weight", mat(KV_HEADS * hd, DIM))
        if arch == "qwen2":
            for n, rows in (("q", HEADS * hd), ("k", KV_HEADS * hd), ("v", KV_HEADS * hd)):
                w.add_tensor(b + f"attn_{n}.bias", (0.1 * rng.standard_normal(rows)).astype(np.float32))
        w.add_tensor(b + "attn_output.weight", mat(DIM, HEADS * hd))
        w.add_tensor(b + "ffn_norm.weight", norm())
        w.add_tensor(b + "ffn_gate.weight", mat(FFN, DIM))
        w.add_tensor(b + "ffn_up.weight", mat(FFN, DIM))
        w.add_tensor(b + "ffn_down.weight", mat(DIM, FFN))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return vocab


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def models(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"yarn-{request.param}")
    vocab = write_gguf(d / "yarn.gguf", request.param, yarn=True)
    write_gguf(d / "plain.gguf", request.param, yarn=False)
    return {"yarn": str(d / "yarn.gguf"), "plain": str(d / "plain.gguf"), "vocab": vocab}


@pytest.fixture(scope="module")
def llamacpp(llama_cpp_installed, models):
    """llama.cpp's greedy tokens and the full logits of every step, per prompt."""
    from llama_cpp import Llama
    llm = Llama(model_path=models["yarn"], n_ctx=CTX, n_threads=2, n_batch=CTX, logits_all=True, verbose=False, seed=0)
    rng = np.random.default_rng(11)
    out = []
    for n in PROMPT_LENGTHS:
        ids = [int(t) for t in rng.integers(3, models["vocab"], size=n)]
        llm.reset()
        llm.eval(ids)
        gen, logits = [], []
        for _ in range(N_GEN):
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            logits.append(row)
            gen.append(int(np.argmax(row)))
            llm.eval([gen[-1]])
        out.append({"prompt_ids": ids, "generated_ids": gen, "logits": np.array(logits)})
    return out


def greta_steps(greta_bin, model, p, report, vocab, *extra):
    """greta's full logits of every step ([N_GEN, vocab]) and its report."""
    run_greta(greta_bin, "run", "-m", model, "--device", "cpu", "--prompt-ids", json.dumps(p["prompt_ids"]), "-c", CTX,
              "--temp", "0", "--ignore-eos", "--report", report, "--report-top", vocab, *extra)
    r = read_json(report)
    logits = np.full((len(r["steps"]), vocab), np.nan)
    for s, step in enumerate(r["steps"]):
        for t, v in step:
            logits[s, t] = v
    return logits, r


def test_teacher_forced_logits_against_llamacpp(greta_bin, models, llamacpp, tmp_path):
    worst = 0.0
    for i, p in enumerate(llamacpp):
        ours, r = greta_steps(greta_bin, models["yarn"], p, tmp_path / f"f{i}.json", models["vocab"], "--force",
                              json.dumps(p["generated_ids"]))
        assert r["prompt_ids"] == p["prompt_ids"]
        assert ours.shape == p["logits"].shape
        diff = np.abs(ours - p["logits"]).max()
        worst = max(worst, diff)
        assert diff < MAX_LOGIT_DIFF, f"prompt {i}: max |logit diff| {diff:.2e} over {N_GEN} steps"
        for s, (a, b) in enumerate(zip(ours.argmax(axis=1), p["generated_ids"])):
            if a != b:  # a near-tie in both engines' logits, nothing else
                assert max(ours[s, a] - ours[s, b], p["logits"][s, b] - p["logits"][s, a]) < NEAR_TIE, (
                    f"prompt {i} step {s}: greta picks {a}, llama.cpp {b}")
    print(f"\nyarn vs llama.cpp teacher-forced: max |logit diff| {worst:.2e} (logits up to "
          f"{max(np.abs(p['logits']).max() for p in llamacpp):.2f})")


def test_free_running_greedy_against_llamacpp(greta_bin, models, llamacpp, tmp_path):
    for i, p in enumerate(llamacpp):
        run_greta(greta_bin, "run", "-m", models["yarn"], "--device", "cpu", "--prompt-ids", json.dumps(p["prompt_ids"]),
                  "-c", CTX, "--temp", "0", "--ignore-eos", "-n", N_GEN, "--report", tmp_path / f"p{i}.json")
        r = read_json(tmp_path / f"p{i}.json")
        k = identical_prefix(r["generated_ids"], p["generated_ids"])
        if k < N_GEN:  # the paths part only where llama.cpp's own logits are a near-tie
            a, b = r["generated_ids"][k], p["generated_ids"][k]
            assert p["logits"][k, b] - p["logits"][k, a] < NEAR_TIE, (k, r["generated_ids"], p["generated_ids"])


def test_unscaled_rope_is_far_from_llamacpp(greta_bin, models, llamacpp, tmp_path):
    """The check above can fail: the same weights without YaRN land far outside its tolerance."""
    for i, p in enumerate(llamacpp):
        ours, _ = greta_steps(greta_bin, models["plain"], p, tmp_path / f"u{i}.json", models["vocab"], "--force",
                              json.dumps(p["generated_ids"]))
        diff = np.abs(ours - p["logits"]).max()
        assert diff > UNSCALED_MIN_DIFF, f"prompt {i}: unscaled RoPE only {diff:.2e} from llama.cpp's YaRN"
