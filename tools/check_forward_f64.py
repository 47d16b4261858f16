#!/usr/bin/env python3
"""Float64 reference forward of a GGUF Llama model (weights dequantized by the gguf package, no
activation quantization, f64 everywhere), to judge how far greta's CPU logits and llama.cpp's
reference logits (tests/data/reference) each are from the exact answer of the quantized model.

For each reference prompt it compares the first generated step over the whole vocabulary:
max |logit - exact| for greta (`greta run --report`) and for llama.cpp (the stored npz).
Both engines quantize activations to int8 for their quantized matmuls (llama.cpp also keeps K/V
and the attention operands in fp16), so neither matches exactly; a kernel bug shows up as errors
of whole units.

With --exact greta runs its reference matmul (no activation quantization), so its logits must
match the float64 forward to float32 rounding: a check of every CPU op of the whole model.

usage: tools/check_forward_f64.py [--greta build/greta] [--model models/...Q4_1.gguf] [--exact]
"""
import argparse
import json
import os
import subprocess
import tempfile

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(path):
    r = GGUFReader(path)
    meta = {f.name: f for f in r.fields.values()}

    def scalar(name):
        f = meta[name]
        return f.parts[f.data[0]][0]

    cfg = dict(n_layers=int(scalar("llama.block_count")), n_heads=int(scalar("llama.attention.head_count")),
               n_kv=int(scalar("llama.attention.head_count_kv")), dim=int(scalar("llama.embedding_length")),
               eps=float(scalar("llama.attention.layer_norm_rms_epsilon")), theta=float(scalar("llama.rope.freq_base")))
    w = {}
    for t in r.tensors:
        a = np.array(t.data) if t.tensor_type.name == "F32" else dequantize(t.data, t.tensor_type)
        w[t.name] = np.asarray(a, dtype=np.float64)
    return cfg, w


def forward(cfg, w, ids):
    """Logits of the last position, float64. GGUF Llama: RoPE on adjacent pairs."""
    nh, nkv, dim = cfg["n_heads"], cfg["n_kv"], cfg["dim"]
    hd = dim // nh
    inv = cfg["theta"] ** (-np.arange(0, hd, 2) / hd)

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg["eps"]) * g

    def rope(x, pos):
        ang = pos[:, None] * inv[None, :]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * c - b * s
        out[..., 1::2] = a * s + b * c
        return out

    T = len(ids)
    pos = np.arange(T, dtype=np.float64)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    x = w["token_embd.weight"][ids]
    for l in range(cfg["n_layers"]):
        g = lambda n: w[f"blk.{l}.{n}.weight"]  # noqa: E731
        h = rms(x, g("attn_norm"))
        q = rope((h @ g("attn_q").T).reshape(T, nh, hd), pos)
        k = rope((h @ g("attn_k").T).reshape(T, nkv, hd), pos)
        v = (h @ g("attn_v").T).reshape(T, nkv, hd)
        out = np.empty((T, nh, hd))
        for hh in range(nh):
            kv = hh // (nh // nkv)
            sc = q[:, hh] @ k[:, kv].T / np.sqrt(hd) + mask
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            sc /= sc.sum(-1, keepdims=True)
            out[:, hh] = sc @ v[:, kv]
        x = x + out.reshape(T, -1) @ g("attn_output").T
        h = rms(x, g("ffn_norm"))
        gt = h @ g("ffn_gate").T
        x = x + ((gt / (1 + np.exp(-gt))) * (h @ g("ffn_up").T)) @ g("ffn_down").T
    out_w = w.get("output.weight", w["token_embd.weight"])
    return rms(x[-1], w["output_norm.weight"]) @ out_w.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--greta", default=os.path.join(ROOT, "build", "greta"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--exact", action="store_true",
                    help="run greta with GRETA_CPU_EXACT_MATMUL=1 (float activations): should match to ~1e-3")
    args = ap.parse_args()
    env = dict(os.environ)
    if args.exact:
        env["GRETA_CPU_EXACT_MATMUL"] = "1"
    ref_dir = os.path.join(ROOT, "tests", "data", "reference")
    ref = json.load(open(os.path.join(ref_dir, "llamacpp_smollm2.json")))
    full = np.load(os.path.join(ref_dir, "llamacpp_smollm2_logits.npz"))
    cfg, w = load(args.model)
    for i, p in enumerate(ref["prompts"]):
        exact = forward(cfg, w, p["prompt_ids"])
        with tempfile.TemporaryDirectory() as d:
            rep = os.path.join(d, "r.json")
            cmd = [args.greta, "run", "-m", args.model, "--device", "cpu", "-p", p["text"], "-n", "1", "--temp", "0",
                   "--report", rep, "--report-top", str(1 << 20)]
            if p["special"]:
                cmd.append("--special")
            subprocess.run(cmd, check=True, capture_output=True, env=env)
            ours = np.zeros_like(exact)
            for tid, v in json.load(open(rep))["steps"][0]:
                ours[tid] = v
        llama = full[f"p{i}"].astype(np.float64)
        print(f"prompt {i}: max |logit - exact|  greta {np.abs(ours - exact).max():.2e}  "
              f"llama.cpp {np.abs(llama - exact).max():.4f}   (|greta - llama.cpp| {np.abs(ours - llama).max():.4f}); "
              f"argmax exact {int(exact.argmax())} greta {int(ours.argmax())} llama.cpp {int(llama.argmax())}")


if __name__ == "__main__":
    main()
