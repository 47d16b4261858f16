#!/usr/bin/env python3
"""Tiny random-weight checkpoints in Hugging Face layout for the architectures greta supports,
and a float64 numpy forward of the HF definitions (LlamaForCausalLM / MistralForCausalLM /
Qwen2ForCausalLM: RMSNorm, rotate-half RoPE with optional llama3/linear scaling, grouped-query
attention, SwiGLU, QKV bias for Qwen2, tied or separate output).

  python3 tools/random_hf_model.py write KIND OUT_DIR     KIND: llama3 | llama3.2 | qwen2 | mistral | mistral-swa | llama2-tied
  python3 tools/random_hf_model.py logits DIR '[ids]'     prints the last position's logits as JSON

The tokenizer is the small SentencePiece vocabulary of tests/data/tokenizer/spm (1000 pieces)."""
import json
import math
import os
import shutil
import sys

import numpy as np
from safetensors.numpy import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KINDS = {
    # GQA 8/2 with Llama 3.1 rope scaling
    "llama3": dict(arch="LlamaForCausalLM", model_type="llama", heads=8, kv=2, tie=False, bias=False,
                   rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "qwen2": dict(arch="Qwen2ForCausalLM", model_type="qwen2", heads=8, kv=2, tie=True, bias=True,
                  rope_theta=1000000.0, rope_scaling=None),
    "mistral": dict(arch="MistralForCausalLM", model_type="mistral", heads=8, kv=4, tie=False, bias=False,
                    rope_theta=10000.0, rope_scaling=None),
    # Mistral v0.1's sliding-window attention, with a window shorter than the test prompt
    "mistral-swa": dict(arch="MistralForCausalLM", model_type="mistral", heads=8, kv=4, tie=False, bias=False,
                        rope_theta=10000.0, rope_scaling=None, window=5),
    # Llama 3.2 1B/3B: GQA, llama3 RoPE scaling (factor 32), tied embeddings
    "llama3.2": dict(arch="LlamaForCausalLM", model_type="llama", heads=8, kv=2, tie=True, bias=False,
                     rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                                        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "llama2-tied": dict(arch="LlamaForCausalLM", model_type="llama", heads=8, kv=8, tie=True, bias=False,
                        rope_theta=10000.0, rope_scaling={"type": "linear", "factor": 2.0}),
}
DIM, LAYERS, FFN, VOCAB, HEAD_DIM = 512, 2, 1024, 1000, 64


def write(kind, out):
    k = KINDS[kind]
    rng = np.random.default_rng(sum(map(ord, kind)))  # fixed per kind
    def mat(o, i):
        return (rng.uniform(-1, 1, size=(o, i)) / math.sqrt(i)).astype(np.float32)
    t = {"model.embed_tokens.weight": rng.uniform(-1, 1, size=(VOCAB, DIM)).astype(np.float32),
         "model.norm.weight": (1 + 0.1 * rng.standard_normal(DIM)).astype(np.float32)}
    if not k["tie"]:
        t["lm_head.weight"] = mat(VOCAB, DIM)
    q, kvd = k["heads"] * HEAD_DIM, k["kv"] * HEAD_DIM
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(DIM)).astype(np.float32)
        t[p + "post_attention_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(DIM)).astype(np.float32)
        t[p + "self_attn.q_proj.weight"] = mat(q, DIM)
        t[p + "self_attn.k_proj.weight"] = mat(kvd, DIM)
        t[p + "self_attn.v_proj.weight"] = mat(kvd, DIM)
        t[p + "self_attn.o_proj.weight"] = mat(DIM, q)
        if k["bias"]:
            for n, d in (("q", q), ("k", kvd), ("v", kvd)):
                t[p + f"self_attn.{n}_proj.bias"] = (0.5 * rng.standard_normal(d)).astype(np.float32)
        t[p + "mlp.gate_proj.weight"] = mat(FFN, DIM)
        t[p + "mlp.up_proj.weight"] = mat(FFN, DIM)
        t[p + "mlp.down_proj.weight"] = mat(DIM, FFN)
    os.makedirs(out, exist_ok=True)
    save_file(t, os.path.join(out, "model.safetensors"))
    cfg = {"architectures": [k["arch"]], "model_type": k["model_type"], "hidden_size": DIM,
           "intermediate_size": FFN, "num_hidden_layers": LAYERS, "num_attention_heads": k["heads"],
           "num_key_value_heads": k["kv"], "rms_norm_eps": 1e-6, "rope_theta": k["rope_theta"],
           "max_position_embeddings": 2048, "vocab_size": VOCAB, "tie_word_embeddings": k["tie"],
           "hidden_act": "silu", "torch_dtype": "float32"}
    if k["rope_scaling"]:
        cfg["rope_scaling"] = k["rope_scaling"]
    if k.get("window"):
        cfg["sliding_window"] = k["window"]
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(ROOT, "tests", "data", "tokenizer", "spm", name), os.path.join(out, name))


def inv_freq(cfg):
    hd = cfg["hidden_size"] // cfg["num_attention_heads"]
    inv = 1.0 / cfg["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    rs = cfg.get("rope_scaling")
    if rs:
        typ = rs.get("rope_type", rs.get("type"))
        if typ == "linear":
            inv = inv / rs["factor"]
        elif typ == "llama3":  # as transformers' _compute_llama3_parameters
            f, lo, hi, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
            wl = 2 * math.pi / inv
            lo_wl, hi_wl = old / lo, old / hi
            out = np.where(wl > lo_wl, inv / f, inv)
            smooth = (old / wl - lo) / (hi - lo)
            mid = (1 - smooth) * out / f + smooth * out
            is_mid = (wl >= hi_wl) & (wl <= lo_wl)
            inv = np.where(is_mid, mid, out)
    return inv


def logits(d, ids):
    cfg = json.load(open(os.path.join(d, "config.json")))
    W = {k: v.astype(np.float64) for k, v in load_file(os.path.join(d, "model.safetensors")).items()}
    H, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps, T = H // nh, cfg["rms_norm_eps"], len(ids)
    rms = lambda x, w: x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w
    ang = np.arange(T)[:, None] * inv_freq(cfg)[None]
    cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]
    rope = lambda q: np.concatenate([q[..., :hd // 2] * cos - q[..., hd // 2:] * sin,
                                     q[..., :hd // 2] * sin + q[..., hd // 2:] * cos], -1)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    if cfg.get("sliding_window"):  # transformers' sliding-window mask: key j seen by query i when j > i - window
        mask += np.tril(np.full((T, T), -np.inf), -cfg["sliding_window"])
    x = W["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, W[p + "input_layernorm.weight"])
        proj = lambda n: h @ W[p + f"self_attn.{n}_proj.weight"].T + W.get(p + f"self_attn.{n}_proj.bias", 0)
        q, k, v = proj("q").reshape(T, nh, hd), proj("k").reshape(T, nkv, hd), proj("v").reshape(T, nkv, hd)
        q, k = rope(q), rope(k)
        o = np.zeros((T, nh, hd))
        for hh in range(nh):
            s = q[:, hh] @ k[:, hh // (nh // nkv)].T / math.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            o[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, hh // (nh // nkv)]
        x = x + o.reshape(T, H) @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        g, u = h @ W[p + "mlp.gate_proj.weight"].T, h @ W[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ W[p + "mlp.down_proj.weight"].T
    x = rms(x, W["model.norm.weight"])
    out = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    return x[-1] @ out.T


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "logits":
        print(json.dumps(logits(sys.argv[2], json.loads(sys.argv[3])).tolist()))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
