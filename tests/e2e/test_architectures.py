"""Every supported architecture through the Hugging Face loader, against a float64 numpy forward
of the HF model definitions (tools/random_hf_model.py): Llama 3 (GQA + llama3 RoPE scaling),
Llama 3.2 (the same with tied embeddings), Qwen2 (QKV bias, tied embeddings), Mistral (GQA; and
with a sliding window of 5 positions, which the prompt crosses), Llama 2 (tied, linear RoPE
scaling), Qwen3 (q/k norm per head, head_dim 128 != hidden / heads), Phi-3 (fused qkv / gate_up,
LongRoPE on its long and on its short factors; also through GGUF), Phi-4-mini (partial rotary,
tied embeddings).
Tiny random-weight F32 checkpoints, CPU backend: greta's float path must match to ~1e-5."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, logits_error_vs_reference, read_json, run_greta

TOOL = os.path.join(ROOT, "tools", "random_hf_model.py")


@pytest.mark.parametrize("kind", ["llama3", "llama3.2", "qwen2", "mistral", "mistral-swa", "llama2-tied", "qwen3",
                                  "phi3", "phi3-short", "phi4-mini"])
def test_architecture_matches_float64_reference(greta_bin, kind, tmp_path):
    d = tmp_path / kind
    subprocess.run([sys.executable, TOOL, "write", kind, str(d)], check=True)
    for step, err, ours, ref in logits_error_vs_reference(greta_bin, d, d, tmp_path / "r.json", (0, 3)):
        print(f"\n{kind} step {step}: max |diff| / max |logit| = {err:.2e}")
        # 3e-4, not the float-cache 1e-4: the CPU KV cache is F16 and attention rounds q and the
        # softmax weights to fp16 as llama.cpp does (docs/notes/cpu-numerics.md "What it costs"),
        # ~1e-4 of the largest logit here (it was ~2e-7 with an F32 cache); a wrong op is ~1e-2.
        assert err < 3e-4
        assert int(ours.argmax()) == int(ref.argmax())


def test_unsupported_bias_is_refused_by_name(greta_bin, tmp_path):
    """A checkpoint with a bias the Llama-family forward would not add (o_proj) is refused at load,
    naming the tensor, instead of running without it."""
    import numpy as np
    from safetensors.numpy import load_file, save_file
    d = tmp_path / "llama3"
    subprocess.run([sys.executable, TOOL, "write", "llama3", str(d)], check=True)
    t = load_file(str(d / "model.safetensors"))
    t["model.layers.0.self_attn.o_proj.bias"] = np.zeros(t["model.layers.0.self_attn.o_proj.weight"].shape[0],
                                                         np.float32)
    save_file(t, str(d / "model.safetensors"))
    p = subprocess.run([greta_bin, "run", "-m", str(d), "--device", "cpu", "-p", "hi", "-n", "2"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    assert "tensor 'model.layers.0.self_attn.o_proj.bias': biases of the output and feed-forward" in p.stderr, p.stderr


GGUF_TOOL = os.path.join(ROOT, "tools", "phi3_to_gguf.py")


# 3e-4 for F32 as above. Q8_0 is compared with its own dequantized weights, so only greta's 8-bit
# activations (llama.cpp's Q8_0 matmul) separate them: ~7e-3 of the largest logit here; a wrong
# split or the wrong RoPE factors move them by ~1e-1.
@pytest.mark.parametrize("kind,qtype,tol", [("phi3", "f32", 3e-4), ("phi3", "q8_0", 2e-2), ("phi4-mini", "f32", 3e-4),
                                            ("phi4-mini", "q8_0", 2e-2)])
def test_phi3_gguf_matches_float64_reference(greta_bin, kind, qtype, tol, tmp_path):
    """Phi-3 through the GGUF loader: llama.cpp's layout (attn_qkv, ffn_up holding gate and up,
    rope_factors_long/short tensors), LongRoPE on its long factors (the prompt is longer than the
    original context of 4); Phi-4-mini's partial rotary through phi3.rope.dimension_count."""
    d, ref, gg = tmp_path / kind, tmp_path / "ref", tmp_path / f"{kind}-{qtype}.gguf"
    subprocess.run([sys.executable, TOOL, "write", kind, str(d)], check=True)
    subprocess.run([sys.executable, GGUF_TOOL, str(d), str(gg), "--type", qtype, "--ref", str(ref)], check=True)
    for step, err, ours, want in logits_error_vs_reference(greta_bin, gg, ref, tmp_path / "r.json", (0, 3)):
        print(f"\n{kind} GGUF {qtype} step {step}: max |diff| / max |logit| = {err:.2e}")
        assert err < tol
        assert int(ours.argmax()) == int(want.argmax())


def test_phi3_long_prompt_in_several_steps_uses_the_long_factors(greta_bin, tmp_path):
    """A 700-token prompt over an original context of 600, which `greta run` evaluates in steps
    of 512: the first step must rotate with the long factors too, as transformers' one forward
    over the whole prompt does."""
    import numpy as np
    d = tmp_path / "phi3-600"
    subprocess.run([sys.executable, TOOL, "write", "phi3-600", str(d)], check=True)
    ids = [1] + [int(x) for x in np.random.default_rng(7).integers(3, 1000, 699)]
    run_greta(greta_bin, "run", "-m", d, "--device", "cpu", "--prompt-ids", json.dumps(ids), "-n", 1, "--temp", "0",
              "-c", 1024, "--report", tmp_path / "r.json", "--report-top", 1000)
    ours = np.zeros(1000)
    for t, v in read_json(tmp_path / "r.json")["steps"][0]:
        ours[t] = v
    want = np.array(json.loads(subprocess.run([sys.executable, TOOL, "logits", str(d), json.dumps(ids)], check=True,
                                              capture_output=True, text=True).stdout))
    err = np.abs(ours - want).max() / np.abs(want).max()
    print(f"\nphi3 700-token prompt in steps of 512: max |diff| / max |logit| = {err:.2e}")
    assert err < 3e-4


@pytest.mark.parametrize("kind", ["phi3", "phi3-short", "phi4-mini"])
def test_phi3_matches_transformers(greta_bin, kind, tmp_path):
    """The same checkpoints against transformers' own Phi3ForCausalLM forward in float32, which
    also checks the float64 reference above. Needs torch (the GPU machine has it)."""
    pytest.importorskip("torch")
    d = tmp_path / kind
    subprocess.run([sys.executable, TOOL, "write", kind, str(d)], check=True)
    for step, err, ours, want in logits_error_vs_reference(greta_bin, d, d, tmp_path / "r.json", (0, 3),
                                                           reference="hf-logits"):
        print(f"\n{kind} vs transformers step {step}: max |diff| / max |logit| = {err:.2e}")
        assert err < 3e-4
        assert int(ours.argmax()) == int(want.argmax())
