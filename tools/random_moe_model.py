#!/usr/bin/env python3
"""Tiny random-weight mixture-of-experts checkpoints: Qwen3MoeForCausalLM and MixtralForCausalLM in
Hugging Face layout (per-expert tensors, as transformers saves them), and the same F32 weights as a
GGUF laid out as llama.cpp's converter writes it (arch qwen3moe, or llama for Mixtral with its Q/K
rows permuted for adjacent-pair RoPE; each layer's experts stacked into ffn_{gate,up,down}_exps
[n_expert, rows, cols] and the router as ffn_gate_inp).

  python3 tools/random_moe_model.py write KIND OUT_DIR [--no-norm-topk]   KIND: qwen3moe | mixtral
  python3 tools/random_moe_model.py gguf DIR OUT.gguf

Shapes: hidden 256, 2 layers, 8 experts of 256 (multiples of 256, so llama.cpp's K-quants take
every expert matrix), 4 heads over 2 KV heads; Qwen3-MoE with head_dim 128 (not hidden / heads),
q/k norms and 3 experts per token, Mixtral with 2. The router's logits have a spread of a few
units, so tokens pick different experts and the top-k choice is rarely a near-tie.
--no-norm-topk writes Qwen3-MoE's norm_topk_prob false (transformers' default; the released
models set it true). The tokenizer is the small SentencePiece vocabulary of
tests/data/tokenizer/spm (1000 pieces)."""
import json
import math
import os
import shutil
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPM = os.path.join(ROOT, "tests", "data", "tokenizer", "spm")
DIM, LAYERS, EXPERTS, FFN, VOCAB, HEADS, KV_HEADS = 256, 2, 8, 256, 1000, 4, 2
KINDS = {
    "qwen3moe": dict(arch="Qwen3MoeForCausalLM", model_type="qwen3_moe", head_dim=128, used=3, theta=1000000.0),
    "mixtral": dict(arch="MixtralForCausalLM", model_type="mixtral", head_dim=DIM // HEADS, used=2, theta=10000.0),
}
# The names each layout gives an expert's gate, up and down matrices and the router.
EXPERT_NAMES = {"qwen3moe": ("mlp", ("gate_proj", "up_proj", "down_proj")),
                "mixtral": ("block_sparse_moe", ("w1", "w3", "w2"))}


def write(kind, out, norm_topk=True):
    k = KINDS[kind]
    rng = np.random.default_rng(sum(map(ord, kind)))  # fixed per kind

    def mat(o, i, scale=1.0):
        return (scale * rng.uniform(-1, 1, size=(o, i)) / math.sqrt(i)).astype(np.float32)

    def norm(n):
        return (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    hd = k["head_dim"]
    t = {"model.embed_tokens.weight": rng.uniform(-1, 1, size=(VOCAB, DIM)).astype(np.float32),
         "model.norm.weight": norm(DIM), "lm_head.weight": mat(VOCAB, DIM)}
    block, (gate, up, down) = EXPERT_NAMES[kind]
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = norm(DIM)
        t[p + "post_attention_layernorm.weight"] = norm(DIM)
        t[p + "self_attn.q_proj.weight"] = mat(HEADS * hd, DIM)
        t[p + "self_attn.k_proj.weight"] = mat(KV_HEADS * hd, DIM)
        t[p + "self_attn.v_proj.weight"] = mat(KV_HEADS * hd, DIM)
        t[p + "self_attn.o_proj.weight"] = mat(DIM, HEADS * hd)
        if kind == "qwen3moe":
            for n in ("q", "k"):
                t[p + f"self_attn.{n}_norm.weight"] = (1 + 0.3 * rng.standard_normal(hd)).astype(np.float32)
        t[p + f"{block}.gate.weight"] = mat(EXPERTS, DIM, scale=4.0)  # logits of std ~2
        for e in range(EXPERTS):
            q = p + f"{block}.experts.{e}."
            t[q + f"{gate}.weight"] = mat(FFN, DIM)
            t[q + f"{up}.weight"] = mat(FFN, DIM)
            t[q + f"{down}.weight"] = mat(DIM, FFN)
    os.makedirs(out, exist_ok=True)
    save_file(t, os.path.join(out, "model.safetensors"))
    cfg = {"architectures": [k["arch"]], "model_type": k["model_type"], "hidden_size": DIM,
           "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
           "head_dim": hd, "rms_norm_eps": 1e-6, "rope_theta": k["theta"], "max_position_embeddings": 2048,
           "vocab_size": VOCAB, "tie_word_embeddings": False, "hidden_act": "silu", "torch_dtype": "float32",
           "num_experts_per_tok": k["used"]}
    if kind == "qwen3moe":
        cfg.update(num_experts=EXPERTS, moe_intermediate_size=FFN, intermediate_size=3 * FFN,
                   norm_topk_prob=norm_topk, decoder_sparse_step=1, mlp_only_layers=[], attention_bias=False,
                   use_sliding_window=False)
    else:
        cfg.update(num_local_experts=EXPERTS, intermediate_size=FFN, sliding_window=None)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(SPM, name), os.path.join(out, name))


def permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf LlamaModel.permute: rotate-half rows to adjacent pairs."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(d, out):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from gguf import GGUFReader, GGUFWriter, LlamaFileType
    from dequantize_gguf import copy_metadata
    cfg = json.load(open(os.path.join(d, "config.json")))
    kind = "qwen3moe" if cfg["model_type"] == "qwen3_moe" else "mixtral"
    arch = "qwen3moe" if kind == "qwen3moe" else "llama"
    n_exp = cfg["num_experts"] if kind == "qwen3moe" else cfg["num_local_experts"]
    ffn = cfg["moe_intermediate_size"] if kind == "qwen3moe" else cfg["intermediate_size"]
    w = GGUFWriter(out, arch)
    copy_metadata(GGUFReader(os.path.join(SPM, "spm.gguf")), w, LlamaFileType.ALL_F32)
    hd = cfg["head_dim"]
    for key, v in (("block_count", cfg["num_hidden_layers"]), ("context_length", cfg["max_position_embeddings"]),
                   ("embedding_length", cfg["hidden_size"]), ("feed_forward_length", cfg["intermediate_size"]),
                   ("attention.head_count", cfg["num_attention_heads"]),
                   ("attention.head_count_kv", cfg["num_key_value_heads"]), ("attention.key_length", hd),
                   ("attention.value_length", hd), ("rope.dimension_count", hd), ("expert_count", n_exp),
                   ("expert_used_count", cfg["num_experts_per_tok"])):
        w.add_uint32(f"{arch}.{key}", v)
    if kind == "qwen3moe":
        w.add_uint32(f"{arch}.expert_feed_forward_length", ffn)
    w.add_float32(f"{arch}.rope.freq_base", cfg["rope_theta"])
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"])
    t = load_file(os.path.join(d, "model.safetensors"))
    w.add_tensor("token_embd.weight", t["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", t["model.norm.weight"])
    w.add_tensor("output.weight", t["lm_head.weight"])
    block, names = EXPERT_NAMES[kind]
    for l in range(cfg["num_hidden_layers"]):
        p, b = f"model.layers.{l}.", f"blk.{l}."
        q, k = t[p + "self_attn.q_proj.weight"], t[p + "self_attn.k_proj.weight"]
        if arch == "llama":
            q, k = permute(q, cfg["num_attention_heads"]), permute(k, cfg["num_key_value_heads"])
        for name, a in (("attn_norm", t[p + "input_layernorm.weight"]), ("attn_q", q), ("attn_k", k),
                        ("attn_v", t[p + "self_attn.v_proj.weight"]), ("attn_output", t[p + "self_attn.o_proj.weight"]),
                        ("ffn_norm", t[p + "post_attention_layernorm.weight"]),
                        ("ffn_gate_inp", t[p + f"{block}.gate.weight"])):
            w.add_tensor(b + name + ".weight", np.ascontiguousarray(a))
        if kind == "qwen3moe":
            w.add_tensor(b + "attn_q_norm.weight", t[p + "self_attn.q_norm.weight"])
            w.add_tensor(b + "attn_k_norm.weight", t[p + "self_attn.k_norm.weight"])
        for gguf_name, hf_name in zip(("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"), names):
            stacked = np.stack([t[p + f"{block}.experts.{e}.{hf_name}.weight"] for e in range(n_exp)])
            w.add_tensor(b + gguf_name + ".weight", stacked)  # numpy [n_expert, rows, cols]
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    args = [a for a in sys.argv[1:] if a != "--no-norm-topk"]
    if len(args) == 3 and args[0] == "write" and args[1] in KINDS:
        write(args[1], args[2], norm_topk="--no-norm-topk" not in sys.argv)
    elif len(args) == 3 and args[0] == "gguf":
        write_gguf(args[1], args[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
