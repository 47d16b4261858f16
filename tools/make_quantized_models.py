#!/usr/bin/env python3
"""Quantized copies of the default model written by llama.cpp's own quantizer
(llama_cpp.llama_model_quantize from PyPI llama-cpp-python, installed by
tools/install_llamacpp_reference.sh), checked by tests/e2e/test_quant_perplexity.py.

No float copy of the default model is published on PyPI, so the source is the Q4_1 file itself,
requantized (llama.cpp dequantizes each tensor to F32 and quantizes it again). The K-quant
types keep their llama.cpp mixes: tensors whose rows are not a multiple of 256 (576-wide in this
model) fall back to Q5_0, Q5_1 or Q8_0, as in any real Q4_K_M / Q5_K_M file of such a model.

Each file is written once into the output folder (git-ignored models/quantized/ by default);
a file already there is kept. A run that dies leaves only a .part file behind.

Usage:
  .venv/bin/python tools/make_quantized_models.py [--types Q8_0,Q6_K] [--out DIR]
Prints one JSON object: type -> path.
"""
import argparse
import ctypes
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT_DIR = os.path.join(ROOT, "models", "quantized")
# Type name -> llama.cpp's LLAMA_FTYPE_* constant name.
FTYPES = {
    "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K",
}


def output_path(source, qtype, out_dir):
    stem = os.path.basename(source)
    for suffix in (".gguf", ".Q4_1"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    return os.path.join(out_dir, f"{stem}.{qtype}.gguf")


def quantize(source, dest, qtype, threads):
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FTYPES[qtype])
    params.allow_requantize = True
    params.nthread = threads
    part = dest + ".part"
    rc = llama_cpp.llama_model_quantize(source.encode(), part.encode(), ctypes.byref(params))
    if rc != 0 or not os.path.exists(part):
        raise RuntimeError(f"llama_model_quantize {source} -> {qtype} failed (return code {rc})")
    os.replace(part, dest)


def ensure_models(types=tuple(FTYPES), source=SOURCE, out_dir=OUT_DIR, threads=2):
    """Returns {type: path}, quantizing only the files not already in out_dir."""
    unknown = [t for t in types if t not in FTYPES]
    if unknown:
        raise ValueError(f"unknown quantization type(s) {unknown}; known: {list(FTYPES)}")
    if not os.path.exists(source):
        raise FileNotFoundError(f"source model missing: {source} (run scripts/fetch-default-model.sh)")
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for t in types:
        paths[t] = output_path(source, t, out_dir)
        if not os.path.exists(paths[t]):
            print(f"make_quantized_models: {t} -> {paths[t]}", file=sys.stderr)
            quantize(source, paths[t], t, threads)
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", default=",".join(FTYPES), help="comma-separated, from " + ",".join(FTYPES))
    ap.add_argument("--source", default=SOURCE)
    ap.add_argument("--out", default=OUT_DIR)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        sys.exit("llama-cpp-python is not installed: run bash tools/install_llamacpp_reference.sh "
                 "and use .venv/bin/python")
    try:
        paths = ensure_models(args.types.split(","), args.source, args.out, args.threads)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        sys.exit(f"make_quantized_models: {e}")
    print(json.dumps(paths))


if __name__ == "__main__":
    main()
