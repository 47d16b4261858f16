#!/usr/bin/env python3
"""Golden data for greta's dequantize_row, made by the `gguf` package's numpy dequantizers.

Writes tests/data/dequant_golden.bin: records of random blocks of every quantized type we
read (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) and, when the default model is present,
real rows of its token_embd (Q8_0) and blk.0.attn_q / ffn_down (Q4_1), each with the floats
gguf.quants produces. --quantized FILE (repeatable) adds two rows of the first tensor of each
type in another GGUF, so real rows of the formats the default model lacks are covered too. The
committed file takes them from llama.cpp's Q4_K_M and Q5_K_M of the default model
(llama_cpp.llama_model_quantize on the Q4_1 file with allow_requantize, llama-cpp-python 0.3.36). tests/unit/test_core_quant.cpp reads the file and compares dequantize_row with it
bit for bit, so our block layouts are checked against an independent implementation without
needing Python or the model at test time.

Record format (little endian): u32 dtype (greta::DType value), u32 n (values), u32 nbytes,
nbytes of blocks, n float32.

usage: tools/check_dequant.py [--model models/SmolLM2-135M-Instruct.Q4_1.gguf] [--quantized FILE]... [--out FILE]
"""
import argparse
import os
import struct

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader
from gguf.quants import dequantize

# greta::DType values (src/core/dtype.h)
GRETA_DTYPE = {Q.Q8_0: 3, Q.Q4_0: 4, Q.Q4_1: 5, Q.Q4_K: 6, Q.Q6_K: 7, Q.Q5_0: 9, Q.Q5_1: 10, Q.Q5_K: 11}
BLOCK = {Q.Q8_0: (32, 34), Q.Q4_0: (32, 18), Q.Q4_1: (32, 20), Q.Q4_K: (256, 144), Q.Q6_K: (256, 210),
         Q.Q5_0: (32, 22), Q.Q5_1: (32, 24), Q.Q5_K: (256, 176)}
# Byte offsets of the fp16 fields in each block: random bytes there could be inf/NaN.
FP16_FIELDS = {Q.Q8_0: [0], Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q4_K: [0, 2], Q.Q6_K: [208],
               Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q5_K: [0, 2]}


def random_blocks(qt, n_blocks, rng):
    _, size = BLOCK[qt]
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in FP16_FIELDS[qt]:
        # include negative, tiny (subnormal) and large scales
        vals = rng.normal(0.0, 0.05, size=n_blocks).astype(np.float16)
        vals[0] = np.float16(6.0e-6)  # subnormal half
        raw[:, off:off + 2] = vals.view(np.uint8).reshape(n_blocks, 2)
    return raw


def record(qt, raw):
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    vals = dequantize(raw, qt).astype(np.float32).reshape(-1)
    return struct.pack("<III", GRETA_DTYPE[qt], vals.size, raw.size) + raw.tobytes() + vals.tobytes()


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(root, "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--quantized", action="append", default=[], help="another GGUF to take rows from")
    ap.add_argument("--out", default=os.path.join(root, "tests/data/dequant_golden.bin"))
    args = ap.parse_args()

    rng = np.random.default_rng(1234)
    out = b""
    count = 0
    for qt in BLOCK:
        for n_blocks in (1, 3):
            out += record(qt, random_blocks(qt, n_blocks, rng))
            count += 1
    if os.path.exists(args.model):
        reader = GGUFReader(args.model)
        want = {"token_embd.weight": [0, 1, 49151], "blk.0.attn_q.weight": [0, 575], "blk.0.ffn_down.weight": [7]}
        for t in reader.tensors:
            if t.name in want:
                for row in want[t.name]:
                    out += record(t.tensor_type, t.data[row])
                    count += 1
                print(f"{t.name}: {t.tensor_type.name} rows {want[t.name]}")
    else:
        print(f"model {args.model} not found: random blocks only")
    for path in args.quantized:
        seen = set()
        for t in GGUFReader(path).tensors:
            if t.tensor_type in GRETA_DTYPE and t.tensor_type not in seen:
                seen.add(t.tensor_type)
                rows = [0, len(t.data) - 1] if t.data.ndim > 1 else [None]
                for row in rows:
                    out += record(t.tensor_type, t.data if row is None else t.data[row])
                    count += 1
                print(f"{os.path.basename(path)} {t.name}: {t.tensor_type.name} rows {rows}")
    with open(args.out, "wb") as f:
        f.write(out)
    print(f"wrote {count} records, {len(out)} bytes to {args.out}")


if __name__ == "__main__":
    main()
