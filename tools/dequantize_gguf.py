#!/usr/bin/env python3
"""Writes a copy of a GGUF with every tensor dequantized to a float type (gguf-py's
dequantizers), metadata unchanged but general.file_type. With tools/export_hf.py this gives the
same weights in both formats, so the GGUF and the safetensors loaders can be checked against
each other exactly; with --type bf16 or f16 it is the float model a published quantized file
stands for, to quantize on load from.

--type f32 (the default) stores every tensor as F32. --type bf16 / f16 store the matrices in
that type and keep 1-D tensors (norms, biases) F32, as llama.cpp's converter does for
--outtype bf16 / f16.

The file is written as OUT.part and renamed to OUT when complete, so an interrupted run never
leaves a truncated OUT behind.

Usage: python3 tools/dequantize_gguf.py IN.gguf OUT.gguf [--type f32|f16|bf16]
"""
import argparse
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType
from gguf.quants import dequantize, quantize

# --type -> (tensor type of the matrices, general.file_type)
TYPES = {
    "f32": (GGMLQuantizationType.F32, LlamaFileType.ALL_F32),
    "f16": (GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
    "bf16": (GGMLQuantizationType.BF16, LlamaFileType.MOSTLY_BF16),
}


def copy_metadata(r, w, file_type, overrides=None):
    """Every key of r into w but general.file_type (set to file_type) and those in overrides
    (key -> value, written with the key's own type)."""
    overrides = overrides or {}
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key == "general.file_type":
            w.add_key_value(key, int(file_type), GGUFValueType.UINT32)
            continue
        vtype = f.types[0]
        sub = f.types[1] if vtype == GGUFValueType.ARRAY else None
        if vtype == GGUFValueType.ARRAY and len(f.types) > 2:
            sys.exit(f"dequantize_gguf: nested array {key} not supported")
        w.add_key_value(key, overrides.get(key, f.contents()), vtype, sub)


def add_tensor(w, t, matrix_type):
    a = dequantize(t.data, t.tensor_type).astype(np.float32)
    a = a.reshape([int(x) for x in reversed(t.shape)])  # outermost first
    if a.ndim < 2 or matrix_type == GGMLQuantizationType.F32:
        w.add_tensor(t.name, a)
    elif matrix_type == GGMLQuantizationType.F16:
        w.add_tensor(t.name, a.astype(np.float16))
    else:
        # gguf-py's BF16 quantizer rounds to nearest even; the bytes keep the row shape.
        w.add_tensor(t.name, quantize(a, matrix_type), raw_dtype=matrix_type)


def dequantize_file(src, dest, type_name="f32"):
    matrix_type, file_type = TYPES[type_name]
    r = GGUFReader(src)
    part = dest + ".part"
    w = GGUFWriter(part, r.fields["general.architecture"].contents())
    copy_metadata(r, w, file_type)
    for t in r.tensors:
        add_tensor(w, t, matrix_type)
    finish(w, part, dest)


def finish(w, part, dest):
    """Writes w's file (at part) and renames it to dest."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(part, dest)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dest")
    ap.add_argument("--type", default="f32", choices=list(TYPES))
    a = ap.parse_args()
    dequantize_file(a.src, a.dest, a.type)
    print(f"dequantize_gguf: wrote {a.dest}")


if __name__ == "__main__":
    main()
