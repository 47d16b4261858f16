#!/usr/bin/env python3
"""Tiny random-weight checkpoints in Hugging Face layout for the architectures greta supports,
and a float64 numpy forward of the HF definitions (LlamaForCausalLM / MistralForCausalLM /
Qwen2ForCausalLM / Qwen3ForCausalLM / Phi3ForCausalLM: RMSNorm, rotate-half RoPE with optional
llama3/linear/longrope scaling, grouped-query attention, SwiGLU, QKV bias for Qwen2, per-head q/k
RMSNorm and a head_dim of its own for Qwen3, Phi-3's fused qkv_proj and gate_up_proj, tied or
separate output; Gemma2ForCausalLM: the embedding scaled by sqrt(hidden), RMSNorm by 1 + w, norms of
the attention and feed-forward outputs, GeGLU, query_pre_attn_scalar, soft caps and the window on
layers 0, 2, ...).

  python3 tools/random_hf_model.py write KIND OUT_DIR     KIND: llama3 | llama3.2 | qwen2 | qwen3 |
                                                                mistral | mistral-swa | llama2-tied |
                                                                phi3 | phi3-short | phi3-600 | phi4-mini |
                                                                gemma2
  python3 tools/random_hf_model.py logits DIR '[ids]'     prints the last position's logits as JSON
  python3 tools/random_hf_model.py hf-logits DIR '[ids]'  the same from transformers' own forward
                                                          (float32; needs torch)
  python3 tools/random_hf_model.py gguf DIR OUT.gguf      the same F32 weights as llama.cpp's converter
                                                          names them (qwen2, qwen3, gemma2: no Q/K
                                                          permutation; gemma2's norms as 1 + w)

phi3 is Phi-3.5's layout with LongRoPE scaled down: original_max_position_embeddings 4, so a
prompt of more than 4 tokens runs on the long factors; phi3-short has 64, so a short prompt runs
on the short ones (with the attention factor in both); phi4-mini rotates half of each head
(partial_rotary_factor 0.5) and ties its embeddings. gemma2's q and k are large enough that the
attention cap of 50 bites, its logits reach past the final cap of 30, its window (4) is shorter
than the test prompt and its query_pre_attn_scalar (32) is not head_dim.

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
    # head_dim 128 while hidden / heads is 64, as Qwen3-0.6B has
    "qwen3": dict(arch="Qwen3ForCausalLM", model_type="qwen3", heads=8, kv=2, tie=True, bias=False,
                  rope_theta=1000000.0, rope_scaling=None, head_dim=128, qk_norm=True),
    # GQA 8/2 (Phi-3-medium's grouping; mini has kv = heads), fused tensors, LongRoPE
    "phi3": dict(arch="Phi3ForCausalLM", model_type="phi3", heads=8, kv=2, tie=False, bias=False,
                 rope_theta=10000.0, rope_scaling="longrope", original_max=4),
    "phi3-short": dict(arch="Phi3ForCausalLM", model_type="phi3", heads=8, kv=2, tie=False, bias=False,
                       rope_theta=10000.0, rope_scaling="longrope", original_max=64),
    # original context 600: a 700-token prompt cut into steps of 512 needs the long set throughout
    "phi3-600": dict(arch="Phi3ForCausalLM", model_type="phi3", heads=8, kv=2, tie=False, bias=False,
                     rope_theta=10000.0, rope_scaling="longrope", original_max=600),
    # Phi-4-mini's layout: RoPE on part of each head, tied embeddings
    "phi4-mini": dict(arch="Phi3ForCausalLM", model_type="phi3", heads=8, kv=2, tie=True, bias=False,
                      rope_theta=10000.0, rope_scaling="longrope", original_max=4, partial_rotary=0.5),
    # Gemma 2's layout (its 2B's GQA 8/4), with the config keys a Gemma 2 checkpoint carries
    "gemma2": dict(arch="Gemma2ForCausalLM", model_type="gemma2", heads=8, kv=4, tie=True, bias=False,
                   rope_theta=10000.0, rope_scaling=None, head_dim=64, window=4, gemma2=True),
}
GEMMA2_CONFIG = {"query_pre_attn_scalar": 32, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
                 "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh"}
GEMMA2_QK_GAIN = 12.0  # q and k weights times this: scores q.k / sqrt(32) of a few hundred, past the cap
# The output norms' mean w: blocks add ~1 + w to a residual of rms ~13 (the embedding by sqrt(512)),
# so larger ones let what the layers do show in the logits.
GEMMA2_POST_NORM = 3.0
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
    hd = k.get("head_dim", HEAD_DIM)
    q, kvd = k["heads"] * hd, k["kv"] * hd
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
        if k.get("qk_norm"):
            for n in ("q", "k"):
                t[p + f"self_attn.{n}_norm.weight"] = (1 + 0.3 * rng.standard_normal(hd)).astype(np.float32)
        t[p + "mlp.gate_proj.weight"] = mat(FFN, DIM)
        t[p + "mlp.up_proj.weight"] = mat(FFN, DIM)
        t[p + "mlp.down_proj.weight"] = mat(DIM, FFN)
    if k["arch"] == "Phi3ForCausalLM":
        fuse_phi3(t)
    if k.get("gemma2"):
        gemma2_tensors(t, rng)
    os.makedirs(out, exist_ok=True)
    save_file(t, os.path.join(out, "model.safetensors"))
    cfg = {"architectures": [k["arch"]], "model_type": k["model_type"], "hidden_size": DIM,
           "intermediate_size": FFN, "num_hidden_layers": LAYERS, "num_attention_heads": k["heads"],
           "num_key_value_heads": k["kv"], "rms_norm_eps": 1e-6, "rope_theta": k["rope_theta"],
           "max_position_embeddings": 2048, "vocab_size": VOCAB, "tie_word_embeddings": k["tie"],
           "hidden_act": "silu", "torch_dtype": "float32"}
    if k["rope_scaling"] == "longrope":
        # short factors near 1, long ones up to ~40 (Phi-3.5's span), both rising with the dimension
        half = int(HEAD_DIM * k.get("partial_rotary", 1.0)) // 2
        ramp = np.linspace(0, 1, half)
        cfg["rope_scaling"] = {"type": "longrope",
                               "short_factor": (1 + 0.1 * ramp + 0.02 * rng.random(half)).tolist(),
                               "long_factor": (1 + 39 * ramp ** 2 + 0.5 * rng.random(half)).tolist()}
        if "partial_rotary" in k:
            cfg["partial_rotary_factor"] = k["partial_rotary"]
        cfg["original_max_position_embeddings"] = k["original_max"]
        cfg.update(bos_token_id=1, eos_token_id=2, pad_token_id=0, sliding_window=None)
    elif k["rope_scaling"]:
        cfg["rope_scaling"] = k["rope_scaling"]
    if k.get("window"):
        cfg["sliding_window"] = k["window"]
    if "head_dim" in k:
        cfg["head_dim"] = hd
    if k["model_type"] == "qwen3":
        cfg.update(attention_bias=False, use_sliding_window=False)
    if k.get("gemma2"):
        cfg.update(GEMMA2_CONFIG)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(ROOT, "tests", "data", "tokenizer", "spm", name), os.path.join(out, name))


def gemma2_tensors(t, rng):
    """Gemma 2's norms, stored as w (its RMSNorm multiplies by 1 + w): each layer's four and the
    final one, w of 0.3 std so that 1 + w and w differ; q and k scaled by GEMMA2_QK_GAIN."""
    def norm(mean=0.0):
        return (mean + 0.3 * rng.standard_normal(DIM)).astype(np.float32)
    t["model.norm.weight"] = norm()
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        for n in ("input_layernorm", "pre_feedforward_layernorm"):
            t[p + n + ".weight"] = norm()
        for n in ("post_attention_layernorm", "post_feedforward_layernorm"):
            t[p + n + ".weight"] = norm(GEMMA2_POST_NORM)
        for n in "qk":
            t[p + f"self_attn.{n}_proj.weight"] *= GEMMA2_QK_GAIN


def head_dim(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def fuse_phi3(t):
    """Phi3ForCausalLM's tensors: qkv_proj = [q; k; v] rows, gate_up_proj = [gate; up] rows."""
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        t[p + "self_attn.qkv_proj.weight"] = np.concatenate([t.pop(p + f"self_attn.{n}_proj.weight") for n in "qkv"])
        t[p + "mlp.gate_up_proj.weight"] = np.concatenate([t.pop(p + f"mlp.{n}_proj.weight") for n in ("gate", "up")])


def unfuse_phi3(W, cfg):
    hd = cfg["hidden_size"] // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        qkv = W.pop(p + "self_attn.qkv_proj.weight")
        for n, a, b in (("q", 0, q), ("k", q, q + kv), ("v", q + kv, q + 2 * kv)):
            W[p + f"self_attn.{n}_proj.weight"] = qkv[a:b]
        gate, up = np.split(W.pop(p + "mlp.gate_up_proj.weight"), 2)
        W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"] = gate, up


def inv_freq(cfg, seq_len):
    """(inverse frequencies, cos/sin scale) for a forward over seq_len positions; as many
    frequencies as the rotated dims have pairs (partial_rotary_factor)."""
    hd = int(head_dim(cfg) * cfg.get("partial_rotary_factor", 1.0))
    inv = 1.0 / cfg["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    rs = cfg.get("rope_scaling")
    if rs:
        typ = rs.get("rope_type", rs.get("type"))
        if typ in ("longrope", "su"):  # as transformers' _compute_longrope_parameters
            old = cfg["original_max_position_embeddings"]
            factor = rs.get("factor", cfg["max_position_embeddings"] / old)
            attn = rs.get("attention_factor", math.sqrt(1 + math.log(factor) / math.log(old)) if factor > 1 else 1.0)
            # longrope_frequency_update: one set for the whole forward
            ext = np.array(rs["long_factor"] if seq_len > old else rs["short_factor"], dtype=np.float64)
            return inv / ext, attn
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
    return inv, 1.0


def gelu_tanh(x):  # transformers' gelu_pytorch_tanh
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def softcap(x, cap):  # Gemma 2: cap * tanh(x / cap); a cap of None is none
    return cap * np.tanh(x / cap) if cap else x


def gemma2_slides(cfg, l):
    """Whether Gemma 2's layer l attends within the window: layer_types, or without it 0, 2, 4, ..."""
    return cfg["layer_types"][l] == "sliding_attention" if cfg.get("layer_types") else l % 2 == 0


def logits(d, ids):
    cfg = json.load(open(os.path.join(d, "config.json")))
    W = {k: v.astype(np.float64) for k, v in load_file(os.path.join(d, "model.safetensors")).items()}
    if "model.layers.0.self_attn.qkv_proj.weight" in W:
        unfuse_phi3(W, cfg)
    gemma = cfg["model_type"] == "gemma2"
    H, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps, T = head_dim(cfg), cfg["rms_norm_eps"], len(ids)
    norm_scale = (lambda w: 1 + w) if gemma else (lambda w: w)
    rms = lambda x, w: x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * norm_scale(w)
    scale = cfg["query_pre_attn_scalar"] ** -0.5 if gemma else 1 / math.sqrt(hd)
    inv, attn_factor = inv_freq(cfg, T)
    ang = np.arange(T)[:, None] * inv[None]
    cos, sin = attn_factor * np.cos(ang)[:, None], attn_factor * np.sin(ang)[:, None]
    rd = 2 * len(inv)  # rotated dims: the first rd of each head, pairs (i, i + rd/2); the rest pass
    rope = lambda q: np.concatenate([q[..., :rd // 2] * cos - q[..., rd // 2:rd] * sin,
                                     q[..., :rd // 2] * sin + q[..., rd // 2:rd] * cos, q[..., rd:]], -1)
    causal = np.triu(np.full((T, T), -np.inf), 1)
    window = 0
    if cfg.get("sliding_window"):  # transformers' sliding-window mask: key j seen by query i when j > i - window
        window = np.tril(np.full((T, T), -np.inf), -cfg["sliding_window"])
    x = W["model.embed_tokens.weight"][ids] * (math.sqrt(H) if gemma else 1.0)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        mask = causal + (window if not gemma or gemma2_slides(cfg, l) else 0)
        h = rms(x, W[p + "input_layernorm.weight"])
        proj = lambda n: h @ W[p + f"self_attn.{n}_proj.weight"].T + W.get(p + f"self_attn.{n}_proj.bias", 0)
        q, k, v = proj("q").reshape(T, nh, hd), proj("k").reshape(T, nkv, hd), proj("v").reshape(T, nkv, hd)
        if p + "self_attn.q_norm.weight" in W:  # Qwen3: each head normalized before RoPE
            q, k = rms(q, W[p + "self_attn.q_norm.weight"]), rms(k, W[p + "self_attn.k_norm.weight"])
        q, k = rope(q), rope(k)
        o = np.zeros((T, nh, hd))
        for hh in range(nh):
            s = softcap(q[:, hh] @ k[:, hh // (nh // nkv)].T * scale, cfg.get("attn_logit_softcapping")) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            o[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, hh // (nh // nkv)]
        a = o.reshape(T, nh * hd) @ W[p + "self_attn.o_proj.weight"].T
        x = x + (rms(a, W[p + "post_attention_layernorm.weight"]) if gemma else a)
        h = rms(x, W[p + ("pre_feedforward_layernorm.weight" if gemma else "post_attention_layernorm.weight")])
        g, u = h @ W[p + "mlp.gate_proj.weight"].T, h @ W[p + "mlp.up_proj.weight"].T
        f = ((gelu_tanh(g) if gemma else g / (1 + np.exp(-g))) * u) @ W[p + "mlp.down_proj.weight"].T
        x = x + (rms(f, W[p + "post_feedforward_layernorm.weight"]) if gemma else f)
    x = rms(x, W["model.norm.weight"])
    out = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    return softcap(x[-1] @ out.T, cfg.get("final_logit_softcapping"))


# HF tensor name suffix -> GGUF name suffix, per layer (llama.cpp's tensor names).
GGUF_LAYER = {"input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
              "self_attn.o_proj.weight": "attn_output.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
              "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
              **{f"self_attn.{n}_proj.{w}": f"attn_{n}.{w}" for n in "qkv" for w in ("weight", "bias")},
              **{f"self_attn.{n}_norm.weight": f"attn_{n}_norm.weight" for n in "qk"}}
# Gemma 2's norms as llama.cpp's converter names them (it stores each as 1 + w).
GGUF_GEMMA2_NORMS = {"input_layernorm.weight": "attn_norm.weight",
                     "post_attention_layernorm.weight": "post_attention_norm.weight",
                     "pre_feedforward_layernorm.weight": "ffn_norm.weight",
                     "post_feedforward_layernorm.weight": "post_ffw_norm.weight"}


def write_gguf(d, out):
    from gguf import GGUFReader, GGUFWriter, LlamaFileType
    from dequantize_gguf import copy_metadata
    cfg = json.load(open(os.path.join(d, "config.json")))
    arch = cfg["model_type"]
    if arch not in ("qwen2", "qwen3", "gemma2"):  # Llama's GGUF Q/K rows are permuted for adjacent-pair RoPE
        sys.exit(f"random_hf_model: gguf for {arch} not supported (qwen2, qwen3, gemma2)")
    gemma = arch == "gemma2"
    w = GGUFWriter(out, arch)
    copy_metadata(GGUFReader(os.path.join(ROOT, "tests", "data", "tokenizer", "spm", "spm.gguf")), w,
                  LlamaFileType.ALL_F32)  # the same vocabulary as the checkpoint's tokenizer.json
    for key, v in (("block_count", cfg["num_hidden_layers"]), ("context_length", cfg["max_position_embeddings"]),
                   ("embedding_length", cfg["hidden_size"]), ("feed_forward_length", cfg["intermediate_size"]),
                   ("attention.head_count", cfg["num_attention_heads"]),
                   ("attention.head_count_kv", cfg["num_key_value_heads"]),
                   ("attention.key_length", head_dim(cfg)), ("attention.value_length", head_dim(cfg))):
        w.add_uint32(f"{arch}.{key}", v)
    w.add_float32(f"{arch}.rope.freq_base", cfg["rope_theta"])
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", cfg["rms_norm_eps"])
    if gemma:  # GGUF has no query_pre_attn_scalar: llama.cpp scales by 1/sqrt(head_dim)
        if cfg["query_pre_attn_scalar"] != head_dim(cfg) or cfg.get("layer_types"):
            sys.exit("random_hf_model: gguf for gemma2 needs query_pre_attn_scalar = head_dim and no layer_types")
        w.add_uint32(f"{arch}.attention.sliding_window", cfg["sliding_window"])
        for key in ("attn_logit_softcapping", "final_logit_softcapping"):
            w.add_float32(f"{arch}.{key}", cfg[key])
    glob = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight"}
    layer_names = {**GGUF_LAYER, **GGUF_GEMMA2_NORMS} if gemma else GGUF_LAYER
    for name, t in load_file(os.path.join(d, "model.safetensors")).items():
        t = t.astype(np.float32)
        if gemma and "norm" in name:
            t = t + np.float32(1)
        if name in glob:
            w.add_tensor(glob[name], t)
        else:
            _, _, l, suffix = name.split(".", 3)
            w.add_tensor(f"blk.{l}.{layer_names[suffix]}", t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def hf_logits(d, ids):
    """The last position's logits from transformers' AutoModelForCausalLM forward in float32."""
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1].double().tolist()


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "write":
        write(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "logits":
        print(json.dumps(logits(sys.argv[2], json.loads(sys.argv[3])).tolist()))
    elif len(sys.argv) == 4 and sys.argv[1] == "gguf":
        write_gguf(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "hf-logits":
        print(json.dumps(hf_logits(sys.argv[2], json.loads(sys.argv[3]))))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
