"""Qwen3 (dense) on the CPU: a tiny random-weight checkpoint (tools/random_hf_model.py `qwen3`: per-head
q/k RMSNorm, head_dim 128 while hidden / heads is 64, tied embeddings) through the GGUF loader, with
the config.json transformers itself writes, and against transformers' own Qwen3ForCausalLM forward
in float32 where torch is installed. The HF-layout run against the float64 reference is in
test_architectures.py."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, linked_copy, logits_error, logits_error_vs_reference, run_greta, torch_logits

TOOL = os.path.join(ROOT, "tools", "random_hf_model.py")


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("qwen3") / "hf"
    subprocess.run([sys.executable, TOOL, "write", "qwen3", str(d)], check=True)
    return d


def assert_close_to_reference(greta_bin, model, ref_dir, tmp_path, label):
    for step, err, ours, ref in logits_error_vs_reference(greta_bin, model, ref_dir, tmp_path / "r.json", (0, 3)):
        print(f"\nqwen3 {label} step {step}: max |diff| / max |logit| = {err:.2e}")
        # As test_architectures.py: the F16 CPU KV cache costs ~1e-4; a wrong or missing q/k norm is ~3e-2.
        assert err < 3e-4
        assert int(ours.argmax()) == int(ref.argmax())


def test_qwen3_gguf_matches_float64_reference(greta_bin, qwen3_dir, tmp_path):
    gguf = tmp_path / "qwen3.gguf"
    subprocess.run([sys.executable, TOOL, "gguf", str(qwen3_dir), str(gguf)], check=True)
    info = json.loads(run_greta(greta_bin, "info", "-m", gguf, "--json").stdout)
    assert info["architecture"] == "qwen3" and info["qk_norm"] and info["head_dim"] == 128
    assert_close_to_reference(greta_bin, gguf, qwen3_dir, tmp_path, "gguf")


def test_qwen3_config_written_by_transformers(greta_bin, qwen3_dir, tmp_path):
    # transformers writes rope_parameters, layer_types, sliding_window null, ...: the loader reads
    # that form, not only the hand-written one.
    transformers = pytest.importorskip("transformers")
    cfg = json.load(open(qwen3_dir / "config.json"))
    d = linked_copy(qwen3_dir, tmp_path / "tf-config", "config.json")
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "vocab_size", "tie_word_embeddings", "rope_theta", "rms_norm_eps", "max_position_embeddings")
    transformers.Qwen3Config(**{k: cfg[k] for k in keys}, architectures=["Qwen3ForCausalLM"]).save_pretrained(d)
    assert "rope_parameters" in json.load(open(d / "config.json"))  # the form this test is about
    assert_close_to_reference(greta_bin, d, qwen3_dir, tmp_path, "transformers config")


def test_qwen3_matches_transformers_forward(greta_bin, qwen3_dir, tmp_path):
    pytest.importorskip("torch")
    from transformers import Qwen3ForCausalLM
    model = Qwen3ForCausalLM.from_pretrained(str(qwen3_dir)).float().eval()
    for step, err, ours, want in logits_error(greta_bin, qwen3_dir, tmp_path / "r.json", (0, 3), torch_logits(model)):
        print(f"\nqwen3 vs transformers step {step}: max |diff| / max |logit| = {err:.2e}")
        assert err < 3e-4
        assert int(ours.argmax()) == int(want.argmax())


def test_qwen3_missing_k_norm_is_refused(greta_bin, qwen3_dir, tmp_path):
    from safetensors.numpy import load_file, save_file
    d = linked_copy(qwen3_dir, tmp_path / "no-k-norm", "model.safetensors")
    t = load_file(str(qwen3_dir / "model.safetensors"))
    del t["model.layers.1.self_attn.k_norm.weight"]
    save_file(t, str(d / "model.safetensors"))
    p = run_greta(greta_bin, "info", "-m", d, check=False)
    assert p.returncode != 0
    assert "missing tensor" in p.stderr and "layer 1 k norm" in p.stderr, p.stderr


def test_qwen3_sliding_window_is_refused(greta_bin, qwen3_dir, tmp_path):
    d = linked_copy(qwen3_dir, tmp_path / "windowed", "config.json")
    cfg = json.load(open(qwen3_dir / "config.json"))
    cfg.update(use_sliding_window=True, sliding_window=64)
    json.dump(cfg, open(d / "config.json", "w"))
    p = run_greta(greta_bin, "info", "-m", d, check=False)
    assert p.returncode != 0
    assert "use_sliding_window" in p.stderr and "qwen3" in p.stderr, p.stderr
