#!/usr/bin/env python3
"""Writes a copy of a GGUF with every tensor dequantized to F32 (gguf-py's dequantizers),
metadata unchanged. With tools/export_hf.py this gives the same weights in both formats, so
the GGUF and the safetensors loaders can be checked against each other exactly.

Usage: python3 tools/dequantize_gguf.py IN.gguf OUT.gguf
"""
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter
from gguf.quants import dequantize


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    r = GGUFReader(sys.argv[1])
    arch = r.fields["general.architecture"].contents()
    w = GGUFWriter(sys.argv[2], arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key == "general.file_type":
            w.add_key_value(key, 0, GGUFValueType.UINT32)  # ALL_F32
            continue
        vtype = f.types[0]
        sub = f.types[1] if vtype == GGUFValueType.ARRAY else None
        if vtype == GGUFValueType.ARRAY and len(f.types) > 2:
            sys.exit(f"dequantize_gguf: nested array {key} not supported")
        w.add_key_value(key, f.contents(), vtype, sub)
    for t in r.tensors:
        a = dequantize(t.data, t.tensor_type).astype(np.float32)
        w.add_tensor(t.name, a.reshape([int(x) for x in reversed(t.shape)]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"dequantize_gguf: wrote {sys.argv[2]}")


if __name__ == "__main__":
    main()
