"""Gemma 2 from a Hugging Face directory (Gemma2ForCausalLM) on the CPU: a tiny random-weight F32
checkpoint (tools/random_hf_model.py `gemma2`: 2 layers, dim 512, 8 heads / 4 kv heads of head_dim
64, query_pre_attn_scalar 32, window 4, caps 50 and 30, norms stored as w) against the float64
numpy forward of transformers' Gemma 2 definition; with the config.json transformers itself writes
(layer_types, rope_parameters); and against transformers' own Gemma2ForCausalLM, on a checkpoint it
writes, where torch is installed.

The checkpoint makes each config field matter: q and k are large, so the attention scores reach a
few hundred (the cap of 50 bites and the scale changes them); the logits pass the final cap of 30;
the 7-token prompt crosses the window of layer 0; the output norms are large, so the blocks move
the residual. Each field read wrong moves greta's logits by far more than the tolerance
(test_each_config_field_moves_the_logits), so the comparisons check them."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, linked_copy, logits_error, logits_error_vs_reference, read_json, run_greta, torch_logits

TOOL = os.path.join(ROOT, "tools", "random_hf_model.py")
# max |diff| / max |logit| against float64. Measured 2.4e-4 (step 0) and 8.2e-4 (step 3): the F16
# KV cache and fp16 softmax weights (docs/notes/cpu-numerics.md) on scores of a few hundred. A
# field read wrong moves them by 1e-1 or more (test_each_config_field_moves_the_logits).
MAX_REL_ERR = 2e-3
MIN_EFFECT = 10 * MAX_REL_ERR


@pytest.fixture(scope="module")
def gemma2_dir(tmp_path_factory):
    pytest.importorskip("safetensors")
    d = tmp_path_factory.mktemp("gemma2") / "hf"
    subprocess.run([sys.executable, TOOL, "write", "gemma2", str(d)], check=True)
    return d


def with_config(src, dst, **changes):
    d = linked_copy(src, dst, "config.json")
    cfg = json.load(open(src / "config.json"))
    cfg.update(changes)
    json.dump(cfg, open(d / "config.json", "w"))
    return d


def assert_close_to_reference(greta_bin, model, ref_dir, tmp_path, label):
    for step, err, ours, ref in logits_error_vs_reference(greta_bin, model, ref_dir, tmp_path / "r.json", (0, 3)):
        print(f"\ngemma2 HF {label} step {step}: max |diff| / max |logit| = {err:.2e}")
        assert err < MAX_REL_ERR
        assert int(ours.argmax()) == int(ref.argmax())


def test_info_maps_the_config(greta_bin, gemma2_dir):
    j = json.loads(run_greta(greta_bin, "info", "-m", gemma2_dir, "--json").stdout)
    assert (j["format"], j["architecture"]) == ("safetensors", "gemma2")
    assert (j["layers"], j["dim"], j["heads"], j["kv_heads"], j["head_dim"]) == (2, 512, 8, 4, 64)
    assert j["attn_scale"] == pytest.approx(32 ** -0.5, rel=1e-7)  # query_pre_attn_scalar, not head_dim
    assert (j["attn_softcap"], j["final_softcap"]) == (50.0, 30.0)
    assert (j["sliding_window"], j["windowed_layers"]) == (4, 1)  # layer 0 of 2
    assert j["ffn_activation"] == "gelu_tanh" and j["post_norms"] and j["tied_embeddings"]
    assert j["rope_pairs"].startswith("halves") and "rope_local_theta" not in j
    tensors = json.loads(run_greta(greta_bin, "info", "-m", gemma2_dir, "--json", "--tensors").stdout)["tensors"]
    norms = [t for t in tensors if "norm" in t["name"]]
    assert len(norms) == 1 + 2 * 4 and all(t["type"] == "F32" for t in norms)


def test_matches_float64_reference(greta_bin, gemma2_dir, tmp_path):
    assert_close_to_reference(greta_bin, gemma2_dir, gemma2_dir, tmp_path, "hand-written config")


@pytest.mark.parametrize("change", [dict(query_pre_attn_scalar=64), dict(attn_logit_softcapping=None),
                                    dict(final_logit_softcapping=None),
                                    dict(layer_types=["full_attention", "full_attention"]),
                                    dict(layer_types=["full_attention", "sliding_attention"])],
                         ids=["scale-of-head-dim", "no-attention-cap", "no-final-cap", "no-window", "odd-window"])
def test_each_config_field_moves_the_logits(greta_bin, gemma2_dir, tmp_path, change):
    """greta on the checkpoint with one field as a loader that misread it would have it, against
    the reference of the checkpoint as written: far off, so the test above checks that field."""
    other = with_config(gemma2_dir, tmp_path / "changed", **change)
    effect = max(err for _, err, _, _ in logits_error_vs_reference(greta_bin, other, gemma2_dir, tmp_path / "r.json",
                                                                   (0, 3)))
    print(f"\ngemma2 HF {change}: max |logit change| / max |logit| = {effect:.2e}")
    assert effect > MIN_EFFECT


def test_same_model_as_the_gguf_path(greta_bin, gemma2_dir, tmp_path):
    """With query_pre_attn_scalar = head_dim (GGUF carries none: llama.cpp scales by 1/sqrt(head_dim)),
    the checkpoint and the same weights as llama.cpp's converter writes them (norms as 1 + w, its
    names: tools/random_hf_model.py gguf) load to the same configuration and give identical logits:
    the HF loader maps onto the model the GGUF path makes."""
    pytest.importorskip("gguf")
    d = with_config(gemma2_dir, tmp_path / "hf", query_pre_attn_scalar=64)
    gguf = tmp_path / "gemma2.gguf"
    subprocess.run([sys.executable, TOOL, "gguf", str(d), str(gguf)], check=True)
    infos, reports = [], []
    for i, m in enumerate((d, gguf)):
        j = json.loads(run_greta(greta_bin, "info", "-m", m, "--json").stdout)
        infos.append({k: v for k, v in j.items() if k not in ("format", "name", "path")})
        run_greta(greta_bin, "run", "-m", m, "--device", "cpu", "-p", "The GNU General Public License is", "-n", 4,
                  "--temp", "0", "--ignore-eos", "--report", tmp_path / f"r{i}.json", "--report-top", 1000)
        reports.append(read_json(tmp_path / f"r{i}.json"))
    assert infos[0] == infos[1]
    hf, gg = reports
    assert (hf["prompt_ids"], hf["generated_ids"]) == (gg["prompt_ids"], gg["generated_ids"])
    assert hf["steps"] == gg["steps"]


def test_config_written_by_transformers(greta_bin, gemma2_dir, tmp_path):
    """The config.json transformers' Gemma2Config writes (layer_types, rope_parameters, no
    architectures) on the same weights. Needs transformers, not torch."""
    transformers = pytest.importorskip("transformers")
    cfg = json.load(open(gemma2_dir / "config.json"))
    d = linked_copy(gemma2_dir, tmp_path / "tf-config", "config.json")
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "vocab_size", "rms_norm_eps", "rope_theta", "max_position_embeddings", "query_pre_attn_scalar",
            "attn_logit_softcapping", "final_logit_softcapping", "sliding_window", "hidden_activation")
    transformers.Gemma2Config(**{k: cfg[k] for k in keys}).save_pretrained(d)
    written = json.load(open(d / "config.json"))
    assert written["layer_types"] == ["sliding_attention", "full_attention"] and "rope_parameters" in written
    assert_close_to_reference(greta_bin, d, gemma2_dir, tmp_path, "transformers config")


def test_checkpoint_written_by_transformers_matches_its_forward(greta_bin, gemma2_dir, tmp_path):
    """transformers' Gemma2ForCausalLM, built from Gemma2Config with the test checkpoint's weights
    and saved by save_pretrained, against its own forward in float32 (eager attention: the one
    with the soft cap). This also checks the float64 reference above. Needs torch."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from safetensors.numpy import load_file
    cfg = json.load(open(gemma2_dir / "config.json"))
    config = transformers.Gemma2Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "torch_dtype")},
                                       attn_implementation="eager")
    model = transformers.Gemma2ForCausalLM(config).float().eval()
    weights = load_file(str(gemma2_dir / "model.safetensors"))
    model.model.load_state_dict({k.removeprefix("model."): torch.from_numpy(v) for k, v in weights.items()})
    d = tmp_path / "transformers"
    model.save_pretrained(str(d))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        os.symlink(gemma2_dir / f, d / f)
    for step, err, ours, want in logits_error(greta_bin, d, tmp_path / "r.json", (0, 3), torch_logits(model)):
        print(f"\ngemma2 HF vs transformers step {step}: max |diff| / max |logit| = {err:.2e}")
        assert err < MAX_REL_ERR
        assert int(ours.argmax()) == int(want.argmax())


def test_unsupported_activation_is_refused(greta_bin, gemma2_dir, tmp_path):
    d = with_config(gemma2_dir, tmp_path / "gelu", hidden_activation="gelu")
    p = run_greta(greta_bin, "run", "-m", d, "--device", "cpu", "-p", "hi", "-n", 1, check=False)
    assert p.returncode == 1, p.stderr
    assert "hidden_activation = \"gelu\" is not implemented for gemma2 (supported: gelu_pytorch_tanh)" in p.stderr
