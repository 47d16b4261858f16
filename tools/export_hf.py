#!/usr/bin/env python3
"""Exports a Llama-architecture GGUF as a Hugging Face model directory (config.json,
model.safetensors with dequantized weights, tokenizer.json), using only code nobody here wrote
for the hard parts: gguf-py dequantizes the blocks and transformers converts the tokenizer.

Q/K rows are un-permuted (llama.cpp's converter interleaves them for adjacent-pair RoPE;
HF checkpoints rotate halves), so the directory is a real HF-layout checkpoint.

Usage: python3 tools/export_hf.py MODEL.gguf OUT_DIR [--dtype float32|float16|bfloat16]
"""
import argparse
import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    return f.contents()


def unpermute(w, n_head):
    # inverse of llama.cpp convert's permute(): (n_head, 2, d/2, k) <- (n_head, d/2, 2, k)
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("out")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    a = ap.parse_args()
    r = GGUFReader(a.gguf)
    arch = field(r, "general.architecture")
    if arch != "llama":
        sys.exit(f"export_hf: only llama-architecture GGUFs are supported, got {arch}")
    n_layers = int(field(r, "llama.block_count"))
    n_head = int(field(r, "llama.attention.head_count"))
    n_kv = int(field(r, "llama.attention.head_count_kv", n_head))
    dim = int(field(r, "llama.embedding_length"))
    tensors = {}
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    per_layer = {"attn_norm.weight": "input_layernorm.weight", "attn_q.weight": "self_attn.q_proj.weight",
                 "attn_k.weight": "self_attn.k_proj.weight", "attn_v.weight": "self_attn.v_proj.weight",
                 "attn_output.weight": "self_attn.o_proj.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
                 "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
                 "ffn_down.weight": "mlp.down_proj.weight"}
    for t in r.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        w = w.reshape([int(x) for x in reversed(t.shape)])  # outermost first
        name = t.name
        if name in names:
            hf = names[name]
        elif name.startswith("blk."):
            _, l, rest = name.split(".", 2)
            if rest not in per_layer:
                sys.exit(f"export_hf: unexpected tensor {name}")
            hf = f"model.layers.{l}.{per_layer[rest]}"
            if rest == "attn_q.weight":
                w = unpermute(w, n_head)
            elif rest == "attn_k.weight":
                w = unpermute(w, n_kv)
        else:
            sys.exit(f"export_hf: unexpected tensor {name}")
        tensors[hf] = w
    tied = "lm_head.weight" not in tensors
    os.makedirs(a.out, exist_ok=True)
    from safetensors.numpy import save_file
    if a.dtype == "bfloat16":
        import torch
        from safetensors.torch import save_file as save_torch
        save_torch({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in tensors.items()},
                   os.path.join(a.out, "model.safetensors"))
    else:
        save_file({k: v.astype(a.dtype) for k, v in tensors.items()}, os.path.join(a.out, "model.safetensors"))
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": dim,
        "intermediate_size": int(field(r, "llama.feed_forward_length")), "num_hidden_layers": n_layers,
        "num_attention_heads": n_head, "num_key_value_heads": n_kv,
        "head_dim": dim // n_head,
        "rms_norm_eps": float(field(r, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(field(r, "llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(field(r, "llama.context_length", 4096)),
        "vocab_size": int(tensors["model.embed_tokens.weight"].shape[0]), "tie_word_embeddings": tied,
        "bos_token_id": int(field(r, "tokenizer.ggml.bos_token_id", 1)),
        "eos_token_id": int(field(r, "tokenizer.ggml.eos_token_id", 2)), "torch_dtype": a.dtype,
        "hidden_act": "silu",
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    # Tokenizer: transformers' GGUF converter builds the `tokenizers` tokenizer from the vocabulary.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from hf_tokenizer_from_gguf import build
    tokenizer, tok_config = build(a.gguf)
    tokenizer.save(os.path.join(a.out, "tokenizer.json"))
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
        json.dump(tok_config, f, indent=2)
    print(f"export_hf: wrote {a.out} ({len(tensors)} tensors, {a.dtype})")


if __name__ == "__main__":
    main()
