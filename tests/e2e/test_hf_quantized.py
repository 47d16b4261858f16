"""Hugging Face quantized checkpoints (FP8 compressed-tensors / fp8 / fbgemm_fp8, AWQ, GPTQ) through
the safetensors loader on the CPU. tools/make_quantized_hf.py writes each format from a tiny random
Llama 3 model (tools/random_hf_model.py) as the publishing tools lay it out, and dequantizes it
again with numpy, independently of greta; greta's logits on the quantized directory must match the
float64 numpy forward on those dequantized weights. Broken checkpoints must fail to load with a
message naming what is wrong, never crash."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, logits_error_vs_reference, run_greta

sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_quantized_hf as mq  # noqa: E402

RANDOM_HF = os.path.join(ROOT, "tools", "random_hf_model.py")
MAKE = os.path.join(ROOT, "tools", "make_quantized_hf.py")
LAYER0 = "model.layers.0.self_attn.q_proj"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("base") / "llama3"
    subprocess.run([sys.executable, RANDOM_HF, "write", "llama3", str(d)], check=True)
    return d


def make(base, tmp_path, fmt, *extra):
    q = tmp_path / fmt
    subprocess.run([sys.executable, MAKE, "quantize", str(base), fmt, str(q), *extra], check=True)
    return q


@pytest.mark.parametrize("fmt,extra", [("fp8-tensor", []), ("fp8-channel", []), ("fp8-block", ["--lm-head"]),
                                       ("fbgemm-fp8", []), ("awq", ["--group", "128"]), ("awq", ["--group", "64"]),
                                       ("gptq", ["--group", "128", "--lm-head"]), ("gptq", ["--group", "32"])])
def test_quantized_matches_numpy_dequantized_reference(greta_bin, base, tmp_path, fmt, extra):
    # --lm-head with GPTQ: a quantized output projection has no "lm_head.weight" in the files and
    # must not be mistaken for tied embeddings.
    q = make(base, tmp_path, fmt, *extra)
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, MAKE, "dequantize", str(q), str(ref)], check=True)
    for step, err, ours, want in logits_error_vs_reference(greta_bin, q, ref, tmp_path / "r.json", (0, 2), n=3):
        print(f"\n{fmt} {' '.join(extra)} step {step}: max |diff| / max |logit| = {err:.2e}")
        # As tests/e2e/test_architectures.py: the F16 KV cache costs ~1e-4; a wrong nibble order,
        # zero point or scale moves logits by ~1e-2 or more.
        assert err < 3e-4
        assert int(ours.argmax()) == int(want.argmax())
    # The load log says what the checkpoint became.
    notes = json.loads(run_greta(greta_bin, "info", "-m", q, "--json").stdout)["load_notes"]
    assert any("linear weights loaded as" in n for n in notes), notes


def test_info_counts_converted_weights(greta_bin, base, tmp_path):
    q = make(base, tmp_path, "awq")
    j = json.loads(run_greta(greta_bin, "info", "-m", q, "--json").stdout)
    text = json.dumps(j)
    assert "I4_G128" in text and "I32" not in text, text


def load_error(greta_bin, model):
    p = run_greta(greta_bin, "info", "-m", model, check=False)
    assert p.returncode == 1, (p.returncode, p.stderr)  # an error, not a signal
    return p.stderr


def edit_config(d, fn):
    path = d / "config.json"
    cfg = json.loads(path.read_text())
    fn(cfg)
    path.write_text(json.dumps(cfg))


def edit_tensors(d, fn):
    path = str(d / "model.safetensors")
    t = mq.read_st(path)
    fn(t)
    mq.write_st(path, t)


@pytest.mark.parametrize("change,expect", [
    (lambda c: c.__setitem__("quantization_config", "awq"), ["quantization_config", "expected an object"]),
    (lambda c: c["quantization_config"].pop("quant_method"), ["missing 'quant_method'"]),
    (lambda c: c["quantization_config"].__setitem__("quant_method", "bitsandbytes"),
     ["'bitsandbytes' is not supported", "awq, gptq, compressed-tensors, fp8, fbgemm_fp8"]),
    (lambda c: c["quantization_config"].__setitem__("bits", 8), ["bits = 8 is not supported", "supported: 4"]),
    (lambda c: c["quantization_config"].__setitem__("bits", "4"), ["'bits' is string", "expected an integer"]),
    (lambda c: c["quantization_config"].__setitem__("group_size", 256),
     ["group_size = 256 is not supported", "32, 64, 128"]),
    (lambda c: c["quantization_config"].__setitem__("version", "gemv"), ["AWQ version 'gemv' is not supported"]),
    (lambda c: c.pop("quantization_config"), ["no 'quantization_config'", "qweight"]),
])
def test_bad_awq_config_is_a_clear_error(greta_bin, base, tmp_path, change, expect):
    q = make(base, tmp_path, "awq")
    edit_config(q, change)
    err = load_error(greta_bin, q)
    for e in expect:
        assert e in err, err


def test_wrong_shaped_scales_and_zeros_name_the_tensor(greta_bin, base, tmp_path):
    q = make(base, tmp_path, "awq")
    edit_tensors(q, lambda t: t.__setitem__(LAYER0 + ".scales", ("F16", t[LAYER0 + ".scales"][1][:, :-8])))
    err = load_error(greta_bin, q)
    assert f"'{LAYER0}.scales'" in err and "expected [4, 512]" in err, err

    q = make(base, tmp_path / "z", "gptq")
    edit_tensors(q, lambda t: t.__setitem__(LAYER0 + ".qzeros", ("I32", t[LAYER0 + ".qzeros"][1][:-1])))
    err = load_error(greta_bin, q)
    assert f"'{LAYER0}.qzeros'" in err and "expected [4, 64]" in err, err

    q = make(base, tmp_path / "t", "gptq")
    edit_tensors(q, lambda t: t.__setitem__(LAYER0 + ".scales", ("F32", t[LAYER0 + ".scales"][1])))
    err = load_error(greta_bin, q)
    assert f"'{LAYER0}.scales'" in err and "is F32 (expected F16)" in err, err

    q = make(base, tmp_path / "m", "gptq")
    edit_tensors(q, lambda t: t.pop(LAYER0 + ".qzeros"))
    assert f"missing tensor '{LAYER0}.qzeros'" in load_error(greta_bin, q)


def test_gptq_act_order_is_refused(greta_bin, base, tmp_path):
    err = load_error(greta_bin, make(base, tmp_path, "gptq-desc-act"))
    assert ".g_idx'" in err and "desc_act" in err and "not supported" in err, err


def test_bad_fp8_checkpoints_name_the_problem(greta_bin, base, tmp_path):
    q = make(base, tmp_path, "fp8-channel")
    edit_tensors(q, lambda t: t.__setitem__(LAYER0 + ".weight_scale", ("F32", np.ones((4, 1), np.float32))))
    err = load_error(greta_bin, q)
    assert f"'{LAYER0}.weight_scale'" in err and "expected [512, 1]" in err, err

    q = make(base, tmp_path / "b", "fp8-block")
    edit_tensors(q, lambda t: t.__setitem__(LAYER0 + ".weight_scale_inv", ("F32", np.ones((4, 1), np.float32))))
    err = load_error(greta_bin, q)
    assert f"'{LAYER0}.weight_scale_inv'" in err and "expected [4, 4]" in err, err

    q = make(base, tmp_path / "n", "fp8-tensor")
    edit_tensors(q, lambda t: t.pop(LAYER0 + ".weight_scale"))
    err = load_error(greta_bin, q)
    assert f"'{LAYER0}.weight' is F8_E4M3 but there is no" in err, err

    q = make(base, tmp_path / "c", "fp8-tensor")
    edit_config(q, lambda c: c["quantization_config"]["config_groups"]["group_0"]["weights"].__setitem__("num_bits", 4))
    err = load_error(greta_bin, q)
    assert "config_groups.group_0.weights" in err and "num_bits 4" in err, err

    q = make(base, tmp_path / "s", "fp8-block")
    edit_config(q, lambda c: c["quantization_config"].__setitem__("weight_block_size", [128, 32]))
    assert "tiles of 32 columns are not supported" in load_error(greta_bin, q)


def perplexity(greta_bin, model, text):
    p = run_greta(greta_bin, "perplexity", "-m", model, "--device", "cpu", "-f", text, "-c", 256, "--chunks", 2)
    return json.loads(p.stdout.strip().splitlines()[-1])["perplexity"]


def test_default_model_quantized_perplexity(greta_bin, default_model, tmp_path):
    """The default model's own shapes (hidden 576: group 64, tied embeddings) in FP8 and AWQ: FP8
    costs little perplexity over the float weights, and AWQ scores as its numpy-dequantized weights
    do in float (the same numbers through two loaders, up to the CPU's 8-bit activations)."""
    hf = tmp_path / "f32"
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "export_hf.py"), default_model, str(hf)], check=True,
                   capture_output=True)
    text = os.path.join(ROOT, "tests", "data", "perplexity_text.txt")  # fixed text: README changes with the docs
    base = perplexity(greta_bin, hf, text)
    fp8 = perplexity(greta_bin, make(hf, tmp_path, "fp8-channel"), text)
    awq = make(hf, tmp_path, "awq", "--group", "64")
    ref = tmp_path / "awq-ref"
    subprocess.run([sys.executable, MAKE, "dequantize", str(awq), str(ref)], check=True)
    awq_ppl, ref_ppl = perplexity(greta_bin, awq, text), perplexity(greta_bin, ref, text)
    print(f"\nperplexity: float {base:.3f}, fp8 per-channel {fp8:.3f}, awq g64 (round to nearest) {awq_ppl:.3f}, "
          f"its dequantized float {ref_ppl:.3f}")
    # The float weights are the Q4_1 file's: e4m3 rounds each value a second time, which costs ~3%
    # on this text (docs/notes/quantized-weights.md, "Perplexity of --quantize"); a wrong scale
    # layout costs far more.
    assert fp8 < base * 1.05, (fp8, base)
    # AWQ runs against 8-bit activations on the CPU (llama.cpp's arithmetic), its float copy in
    # float: ~1e-4 apart; a wrong zero point or group is percent-level.
    assert abs(awq_ppl - ref_ppl) < 5e-4 * ref_ppl, (awq_ppl, ref_ppl)


def test_non_finite_fp8_scale_is_an_error(greta_bin, base, tmp_path):
    q = make(base, tmp_path, "fp8-channel")
    nan_row = np.ones((512, 1), np.float32)
    nan_row[7] = np.nan
    edit_tensors(q, lambda t: t.__setitem__(LAYER0 + ".weight_scale", ("F32", nan_row)))
    err = load_error(greta_bin, q)
    assert f"'{LAYER0}.weight_scale': value 7 is not finite" in err, err
