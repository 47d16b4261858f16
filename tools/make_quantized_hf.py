#!/usr/bin/env python3
"""Small quantized checkpoints in Hugging Face layout, as the publishing tools write them, and an
independent numpy dequantizer for checking a loader against.

  python3 tools/make_quantized_hf.py quantize SRC FORMAT OUT [--group G] [--lm-head]
      SRC: a float HF directory (e.g. from tools/random_hf_model.py write llama3 SRC).
      FORMAT: fp8-tensor | fp8-channel  compressed-tensors FP8 ("float-quantized"), per-tensor or
                                        per-channel weight_scale, with static input_scale
              fp8-block                 quant_method "fp8", weight_scale_inv per 128x128 tile
              fbgemm-fp8                quant_method "fbgemm_fp8", weight_scale [out, 1]
              awq                       AutoAWQ GEMM packing (zero_point, group G, default 128)
              gptq | gptq-desc-act      AutoGPTQ packing (classic zeros - 1); desc-act permutes g_idx
      Every linear layer of the decoder is quantized; embeddings and norms stay float, and so
      does lm_head unless --lm-head is given (as GPTQ's lm_head option does).
  python3 tools/make_quantized_hf.py dequantize QDIR OUT
      Writes QDIR's weights dequantized to float32 (no quantization_config) to OUT, so a float
      forward (tools/random_hf_model.py logits OUT ids, or transformers) is the reference.

The layouts follow the formats' own tools: AutoAWQ packs 8 int4 values per int32 along the output
dimension in the order 0 2 4 6 1 3 5 7; AutoGPTQ packs along the input dimension in order and stores
zero points minus one; compressed-tensors and transformers' FP8 keep e4m3 weights with float
scales. Safetensors files are read and written here byte for byte (numpy has no fp8 dtype)."""
import json
import os
import shutil
import struct
import sys

import numpy as np

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj")
ST_DTYPES = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "F8_E4M3": np.uint8, "BF16": np.uint16}
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble i of a word holds output 8c + AWQ_ORDER[i]


# ---- safetensors, byte for byte -----------------------------------------------------------

def read_st(path):
    """name -> (dtype string, numpy array of the raw values; F8_E4M3 as uint8 codes)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        arr = np.frombuffer(data[b:end], dtype=ST_DTYPES[e["dtype"]]).reshape(e["shape"])
        if e["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
            e["dtype"] = "F32"
        out[name] = (e["dtype"], arr)
    return out


def write_st(path, tensors):
    """tensors: name -> (dtype string, numpy array)."""
    header, blobs, off = {}, [], 0
    for name, (dt, arr) in tensors.items():
        raw = np.ascontiguousarray(arr.astype(ST_DTYPES[dt])).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# ---- fp8 e4m3 ("fn": finite, max 448) ----------------------------------------------------------

def fp8_decode(codes):
    c = codes.astype(np.int32)
    exp, mant = (c >> 3) & 15, c & 7
    v = np.where(exp == 0, mant / 8.0 * 2.0 ** -6, (1 + mant / 8.0) * 2.0 ** (exp - 7.0))
    v = np.where((c & 0x7f) == 0x7f, np.nan, v)
    return np.where(c & 0x80, -v, v)


_POS = fp8_decode(np.arange(0x7f))  # finite non-negative values, increasing with the code


def fp8_encode(x):
    """Nearest e4m3 code (ties to the even code), saturating at +-448."""
    a = np.minimum(np.abs(x), 448.0)
    hi = np.clip(np.searchsorted(_POS, a), 1, 0x7e)
    lo = hi - 1
    dlo, dhi = a - _POS[lo], _POS[hi] - a
    code = np.where((dhi < dlo) | ((dhi == dlo) & (hi % 2 == 0)), hi, lo)
    return (code | np.where(x < 0, 0x80, 0)).astype(np.uint8)


# ---- quantizers -----------------------------------------------------------------------------

def int4_groups(w, g):
    """w [out, in] -> q [out, in] in 0..15, zeros [out, in/g] in 0..15, fp16 scales [out, in/g]."""
    o, i = w.shape
    wg = w.reshape(o, i // g, g)
    lo, hi = np.minimum(wg.min(-1), 0), np.maximum(wg.max(-1), 0)
    s = ((hi - lo) / 15).astype(np.float16)
    s = np.where(s == 0, np.float16(1), s)
    sf = s.astype(np.float32)
    z = np.clip(np.round(-lo / sf), 0, 15).astype(np.int64)
    q = np.clip(np.round(wg / sf[..., None]) + z[..., None], 0, 15).astype(np.int64)
    return q.reshape(o, i), z, s


def pack8(v, axis, order=range(8)):
    """Packs 8 int4 values per int32 along axis (nibble k holds element 8c + order[k])."""
    v = np.moveaxis(v, axis, -1)
    v = v.reshape(*v.shape[:-1], v.shape[-1] // 8, 8).astype(np.uint32)
    words = np.zeros(v.shape[:-1], dtype=np.uint32)
    for k, e in enumerate(order):
        words |= (v[..., e] & 15) << (4 * k)
    return np.moveaxis(words, -1, axis).view(np.int32)


def quantize_awq(w, g):
    q, z, s = int4_groups(w, g)
    return {"qweight": ("I32", pack8(q.T, 1, AWQ_ORDER)), "qzeros": ("I32", pack8(z.T, 1, AWQ_ORDER)),
            "scales": ("F16", s.T.copy())}


def quantize_gptq(w, g, desc_act, rng):
    o, i = w.shape
    q, z, s = int4_groups(w, g)
    g_idx = np.arange(i) // g
    if desc_act:  # act-order: groups follow a permutation of the inputs
        g_idx = g_idx[rng.permutation(i)]
        q = np.zeros_like(q)
        for col in range(i):
            gi = g_idx[col]
            q[:, col] = np.clip(np.round(w[:, col] / s[:, gi].astype(np.float32)) + z[:, gi], 0, 15)
    return {"qweight": ("I32", pack8(q.T, 0)), "qzeros": ("I32", pack8((z.T - 1) & 15, 1)),
            "scales": ("F16", s.T.copy()), "g_idx": ("I32", g_idx.astype(np.int32))}


def quantize_fp8(w, scheme):
    o, i = w.shape
    if scheme == "tensor":
        s = np.array([np.abs(w).max() / 448], dtype=np.float32)
        full = np.full_like(w, s[0])
    elif scheme == "channel":
        s = (np.abs(w).max(1, keepdims=True) / 448).astype(np.float32)
        full = np.broadcast_to(s, w.shape)
    else:  # 128 x 128 tiles; the last row of tiles may be partial (e.g. a vocabulary of 1000)
        po = -o % 128
        a = np.pad(np.abs(w), ((0, po), (0, 0)))
        s = (a.reshape(-1, 128, i // 128, 128).max((1, 3)) / 448).astype(np.float32)
        full = np.repeat(np.repeat(s, 128, 0), 128, 1)[:o]
    return fp8_encode(w / full), s


FP8_CT = {"quant_method": "compressed-tensors", "format": "float-quantized", "quantization_status": "compressed",
          "ignore": ["lm_head"]}


def quant_config(fmt, g):
    if fmt in ("fp8-tensor", "fp8-channel"):
        weights = {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": False, "strategy": fmt[4:]}
        acts = {"num_bits": 8, "type": "float", "symmetric": True, "dynamic": False, "strategy": "tensor"}
        return {**FP8_CT, "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights,
                                                        "input_activations": acts}}}
    if fmt == "fp8-block":
        return {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
    if fmt == "fbgemm-fp8":
        return {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0}
    if fmt == "awq":
        return {"quant_method": "awq", "bits": 4, "group_size": g, "zero_point": True, "version": "gemm"}
    return {"quant_method": "gptq", "bits": 4, "group_size": g, "desc_act": fmt == "gptq-desc-act", "sym": False,
            "checkpoint_format": "gptq"}


def quantize(src, fmt, out, g=128, lm_head=False):
    rng = np.random.default_rng(7)
    tensors = read_st(os.path.join(src, "model.safetensors"))
    res = {}
    for name, (dt, arr) in tensors.items():
        prefix = name[:-len(".weight")]
        if not name.endswith(".weight") or not (prefix.split(".", 3)[-1] in LINEARS or lm_head and prefix == "lm_head"):
            res[name] = (dt, arr)
            continue
        w = arr.astype(np.float32)
        if fmt == "awq":
            parts = quantize_awq(w, g)
        elif fmt.startswith("gptq"):
            parts = quantize_gptq(w, g, fmt == "gptq-desc-act", rng)
        else:
            scheme = {"fp8-tensor": "tensor", "fp8-channel": "channel", "fbgemm-fp8": "channel"}.get(fmt, "block")
            q, s = quantize_fp8(w, scheme)
            parts = {"weight": ("F8_E4M3", q), ("weight_scale_inv" if fmt == "fp8-block" else "weight_scale"): ("F32", s)}
            if fmt.startswith("fp8-") and fmt != "fp8-block":
                parts["input_scale"] = ("F32", np.array([0.05], dtype=np.float32))
        for k, v in parts.items():
            res[f"{prefix}.{k}"] = v
    os.makedirs(out, exist_ok=True)
    write_st(os.path.join(out, "model.safetensors"), res)
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg["quantization_config"] = quant_config(fmt, g)
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    for f in os.listdir(src):
        if f.startswith("tokenizer"):
            shutil.copy(os.path.join(src, f), os.path.join(out, f))


# ---- independent dequantizer ------------------------------------------------------------------

def dequantize_layer(t, prefix, qc):
    method = qc["quant_method"]
    if method in ("awq", "gptq"):
        qw, qz, s = t[prefix + ".qweight"][1].view(np.uint32), t[prefix + ".qzeros"][1].view(np.uint32), \
            t[prefix + ".scales"][1].astype(np.float32)
        if method == "awq":  # [in, out/8]: output 8c+e is nibble AWQ_ORDER.index(e)
            shifts = np.array([4 * AWQ_ORDER.index(e) for e in range(8)], dtype=np.uint32)
            q = ((qw[:, :, None] >> shifts) & 15).reshape(qw.shape[0], -1)
            z = ((qz[:, :, None] >> shifts) & 15).reshape(qz.shape[0], -1)
            g_idx = np.arange(q.shape[0]) // qc["group_size"]
        else:  # [in/8, out]: input 8r+j is nibble j; zeros stored minus one (read as AutoGPTQ does)
            shifts = np.arange(8, dtype=np.uint32) * 4
            q = ((qw[:, None, :] >> shifts[None, :, None]) & 15).reshape(-1, qw.shape[1])
            z = ((qz[:, :, None] >> shifts) & 15).reshape(qz.shape[0], -1) + 1
            g_idx = t[prefix + ".g_idx"][1]
        w_in_out = s[g_idx] * (q.astype(np.float32) - z[g_idx])
        return w_in_out.T
    q = fp8_decode(t[prefix + ".weight"][1])
    key = prefix + (".weight_scale_inv" if prefix + ".weight_scale_inv" in t else ".weight_scale")
    s = t[key][1].astype(np.float64)
    if s.size == 1:
        return q * s.reshape(())
    if s.shape in ((q.shape[0], 1), (q.shape[0],)):
        return q * s.reshape(-1, 1)
    bo, bi = qc["weight_block_size"]
    return q * np.repeat(np.repeat(s, bo, 0), bi, 1)[:q.shape[0], :q.shape[1]]


def dequantize(qdir, out):
    cfg = json.load(open(os.path.join(qdir, "config.json")))
    qc = cfg.pop("quantization_config")
    t = read_st(os.path.join(qdir, "model.safetensors"))
    res = {}
    for name, (dt, arr) in t.items():
        if name.endswith(".qweight") or dt == "F8_E4M3":
            prefix = name[:-len(".qweight")] if name.endswith(".qweight") else name[:-len(".weight")]
            res[prefix + ".weight"] = ("F32", dequantize_layer(t, prefix, qc))
        elif not name.endswith((".qzeros", ".scales", ".g_idx", "_scale", "_scale_inv")):
            res[name] = ("F32", arr.astype(np.float32))
    os.makedirs(out, exist_ok=True)
    write_st(os.path.join(out, "model.safetensors"), res)
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    for f in os.listdir(qdir):
        if f.startswith("tokenizer"):
            shutil.copy(os.path.join(qdir, f), os.path.join(out, f))


def main():
    a = sys.argv[1:]
    if len(a) >= 4 and a[0] == "quantize":
        g = int(a[a.index("--group") + 1]) if "--group" in a else 128
        quantize(a[1], a[2], a[3], g, "--lm-head" in a)
    elif len(a) == 3 and a[0] == "dequantize":
        dequantize(a[1], a[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
