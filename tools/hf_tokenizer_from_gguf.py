#!/usr/bin/env python3
"""Builds the Hugging Face `tokenizers` tokenizer for a GGUF file with transformers' own GGUF
conversion (transformers.integrations.gguf.gguf_tokenizer_mapping) -- a reference nobody here
wrote. transformers' top-level GGUF loader needs torch; this calls its tokenizer converter
directly with metadata read by gguf-py, so it works without torch.

Usage: python3 tools/hf_tokenizer_from_gguf.py MODEL.gguf OUT_DIR   (writes tokenizer.json and
tokenizer_config.json)
"""
import json
import os
import sys

from gguf import GGUFReader


def read_metadata(path):
    r = GGUFReader(path)
    return {k: f.contents() for k, f in r.fields.items()}


def build(path):
    """Returns (tokenizers.Tokenizer, tokenizer_config dict) for the GGUF at `path`."""
    import transformers.integrations.gguf.gguf_tokenizer_mapping as m
    md = read_metadata(path)
    grouped = {group: {name: md[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in md}
               for group, renames in m.GGUF_TOKENIZER_MAPPING.items()}
    tok_dict, config = grouped["tokenizer"], grouped["tokenizer_config"]
    if tok_dict.get("tokenizer_type") == "llama":
        config.setdefault("add_bos_token", True)
    for name, key in m._SPECIAL_TOKENS.items():
        tid = md.get(f"tokenizer.ggml.{key}")
        config[name] = tok_dict["tokens"][tid] if tid is not None else None
    tokenizer, _ = m.convert_gguf_tokenizer(md["general.architecture"], tok_dict)
    return tokenizer, config


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    tokenizer, config = build(sys.argv[1])
    os.makedirs(sys.argv[2], exist_ok=True)
    tokenizer.save(os.path.join(sys.argv[2], "tokenizer.json"))
    with open(os.path.join(sys.argv[2], "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)


if __name__ == "__main__":
    main()
