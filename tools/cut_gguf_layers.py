#!/usr/bin/env python3
"""Writes a GGUF with only the first L layers of another (block_count set to L), its matrices and
embedding requantized by gguf-py to Q4_0 or Q8_0; 1-D tensors (norms, biases) stay F32.

Why: the GPU machines take at most 64 MiB of files a call, and the default model does not fit.
Its first 18 layers in Q4_0 do (~54 MB), so tools/compare_devices.py can run CPU against CUDA on
real weights there (the text they produce is poor, the comparison is of the two backends). The
persistent decode step reads Q4_0, Q8_0 and bf16 weights, so the cut model runs through it too.

Usage: python3 tools/cut_gguf_layers.py IN.gguf OUT.gguf LAYERS [--type q4_0|q8_0]
"""
import argparse
import os
import re
import sys

from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, LlamaFileType

from dequantize_gguf import add_tensor, copy_metadata, finish

TYPES = {"q4_0": (GGMLQuantizationType.Q4_0, LlamaFileType.MOSTLY_Q4_0),
         "q8_0": (GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0)}


def cut(src, dest, layers, type_name):
    matrix_type, file_type = TYPES[type_name]
    r = GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    have = int(r.fields[f"{arch}.block_count"].contents())
    if not 1 <= layers <= have:
        sys.exit(f"cut_gguf_layers: {src} has {have} layers, asked for {layers}")
    part = dest + ".part"
    w = GGUFWriter(part, arch)
    copy_metadata(r, w, file_type, {f"{arch}.block_count": layers})
    for t in r.tensors:
        m = re.match(r"blk\.(\d+)\.", t.name)
        if not m or int(m.group(1)) < layers:
            add_tensor(w, t, matrix_type)
    finish(w, part, dest)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("dest")
    ap.add_argument("layers", type=int)
    ap.add_argument("--type", default="q4_0", choices=list(TYPES))
    a = ap.parse_args()
    cut(a.src, a.dest, a.layers, a.type)
    print(f"cut_gguf_layers: wrote {a.dest} ({os.path.getsize(a.dest)} bytes)")


if __name__ == "__main__":
    main()
