#!/usr/bin/env python3
"""Writes a Phi-3 checkpoint in Hugging Face layout (Phi3ForCausalLM, F32 safetensors, as
tools/random_hf_model.py writes them) as a GGUF laid out the way llama.cpp's converter lays out
Phi-3: fused blk.N.attn_qkv ([q; k; v] rows) and blk.N.ffn_up ([gate; up] rows, no ffn_gate),
rope_factors_short / rope_factors_long tensors, phi3.rope.scaling.original_context_length and
phi3.rope.scaling.attn_factor. The tokenizer is tests/data/tokenizer/spm/spm.gguf's vocabulary.

  python3 tools/phi3_to_gguf.py HF_DIR OUT.gguf [--type f32|q8_0] [--ref REF_DIR]

--type q8_0 stores the layers' matrices as Q8_0; --ref then writes REF_DIR, a copy of HF_DIR whose
matrices are those Q8_0 values dequantized: the float reference the quantized file must match."""
import argparse
import json
import math
import os
import shutil

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
from gguf.quants import dequantize, quantize
from safetensors.numpy import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPM = os.path.join(ROOT, "tests", "data", "tokenizer", "spm", "spm.gguf")
# HF name within a layer -> GGUF name within blk.N
LAYER = {"input_layernorm.weight": "attn_norm.weight", "self_attn.qkv_proj.weight": "attn_qkv.weight",
         "self_attn.o_proj.weight": "attn_output.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
         "mlp.gate_up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight"}


def add_config(w, cfg):
    hd = int(cfg["hidden_size"] // cfg["num_attention_heads"] * cfg.get("partial_rotary_factor", 1.0))  # rotated
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(cfg["rope_theta"])
    rs = cfg.get("rope_scaling")
    if rs:  # as convert_hf_to_gguf.py's Phi3MiniModel
        orig = cfg["original_max_position_embeddings"]
        scale = cfg["max_position_embeddings"] / orig
        w.add_rope_scaling_orig_ctx_len(orig)
        w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1 else 1.0)
        w.add_tensor("rope_factors_long.weight", np.array(rs["long_factor"], dtype=np.float32))
        w.add_tensor("rope_factors_short.weight", np.array(rs["short_factor"], dtype=np.float32))


def copy_tokenizer(w):
    r = GGUFReader(SPM)
    for key, f in r.fields.items():
        if key.startswith("tokenizer."):
            sub = f.types[1] if f.types[0] == GGUFValueType.ARRAY else None
            w.add_key_value(key, f.contents(), f.types[0], sub)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("hf_dir")
    ap.add_argument("out")
    ap.add_argument("--type", default="f32", choices=["f32", "q8_0"])
    ap.add_argument("--ref")
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(a.hf_dir, "config.json")))
    if cfg.get("model_type") != "phi3":
        raise SystemExit("phi3_to_gguf: not a Phi-3 checkpoint (model_type != phi3)")
    W = load_file(os.path.join(a.hf_dir, "model.safetensors"))
    w = GGUFWriter(a.out, "phi3")
    w.add_name(os.path.basename(os.path.normpath(a.hf_dir)))
    add_config(w, cfg)
    copy_tokenizer(w)
    w.add_tensor("token_embd.weight", W["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", W["model.norm.weight"])
    if "lm_head.weight" in W:
        w.add_tensor("output.weight", W["lm_head.weight"])
    ref = dict(W)
    for l in range(cfg["num_hidden_layers"]):
        for hf, gg in LAYER.items():
            name, t = f"model.layers.{l}.{hf}", W[f"model.layers.{l}.{hf}"]
            if a.type == "q8_0" and t.ndim == 2:
                q = quantize(t, GGMLQuantizationType.Q8_0)
                w.add_tensor(f"blk.{l}.{gg}", q, raw_dtype=GGMLQuantizationType.Q8_0)
                ref[name] = dequantize(q, GGMLQuantizationType.Q8_0).astype(np.float32).reshape(t.shape)
            else:
                w.add_tensor(f"blk.{l}.{gg}", t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    if a.ref:
        shutil.copytree(a.hf_dir, a.ref, dirs_exist_ok=True)
        save_file(ref, os.path.join(a.ref, "model.safetensors"))


if __name__ == "__main__":
    main()
