"""Tokenizer parity: `greta tokenize` ids must equal Hugging Face `tokenizers` ids on a corpus of
English, code, many scripts, emoji, odd whitespace, numbers, contractions and special tokens.

References (none written here):
  - default model: the tokenizer transformers builds from the same GGUF file
    (tools/hf_tokenizer_from_gguf.py calls transformers' GGUF tokenizer conversion). transformers
    has no entry for tokenizer.ggml.pre "smollm" and falls back to plain GPT-2 ByteLevel, which
    SmolLM2 is not: its own tokenizer.json (and llama.cpp's "smollm") isolates every digit first
    (Sequence[Digits(individual_digits=True), ByteLevel]). We put that pre-tokenizer back on the
    transformers-built tokenizer; the vocabulary, merges and added tokens stay transformers'.
  - SentencePiece: tests/data/tokenizer/spm (tools/make_spm_tokenizer.py): the tokenizer.json
    transformers converted from a trained SentencePiece BPE model, and spm.gguf with the same
    vocabulary, which we check against transformers' own GGUF conversion.
Invalid UTF-8 input: we encode it as Python's bytes.decode("utf-8", errors="replace") would, so
the reference is the HF tokenizer on that str.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

tokenizers = pytest.importorskip("tokenizers")
CORPUS = os.path.join(ROOT, "tests", "data", "tokenizer", "corpus.jsonl")
SPM_DIR = os.path.join(ROOT, "tests", "data", "tokenizer", "spm")
SPM_GGUF = os.path.join(SPM_DIR, "spm.gguf")

INVALID_UTF8 = [b"abc\xff def", b"\xe2\x82 truncated", b"\xc0\x80 overlong", b"\xed\xa0\x80 surrogate",
                b"end \xf0\x9f\x98", b"\x80\x80\x80", b"caf\xc3", b"ok \xf4\x90\x80\x80 big"]


def corpus():
    with open(CORPUS, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def hf_from_gguf(path):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        from hf_tokenizer_from_gguf import build, read_metadata
    finally:
        sys.path.pop(0)
    try:
        tok, config = build(path)
    except ImportError as e:
        pytest.skip(f"transformers GGUF conversion unavailable: {e}")
    if config.get("add_bos_token") and config.get("bos_token"):
        # What transformers' tokenizer class does with add_bos_token from the GGUF; the bare
        # backend tokenizer that build() returns does not add BOS by itself.
        bos = config["bos_token"]
        tok.post_processor = tokenizers.processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    if read_metadata(path).get("tokenizer.ggml.pre") == "smollm":
        tok.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
            tokenizers.pre_tokenizers.Digits(individual_digits=True),
            tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return tok


def greta_jsonl(greta_bin, model, items, *flags):
    """One greta process for the whole list: one JSON value per line in and out."""
    p = subprocess.run([greta_bin, "tokenize", "-m", model, "--jsonl", *flags],
                       input="".join(json.dumps(x) + "\n" for x in items),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    # split("\n"), not splitlines(): decoded text may hold U+2028, U+0085, \x1c... raw.
    out = [json.loads(line) for line in p.stdout.split("\n")[:-1]]
    assert len(out) == len(items), f"{len(out)} output lines for {len(items)} inputs"
    return out


def compare(name, lines, ours, ref):
    matched = sum(o == r for o, r in zip(ours, ref))
    print(f"{name}: {matched}/{len(lines)} lines match")
    for line, o, r in zip(lines, ours, ref):
        if o != r:
            k = next((i for i, (a, b) in enumerate(zip(o, r)) if a != b), min(len(o), len(r)))
            pytest.fail(f"{name}: {matched}/{len(lines)} match; first mismatch on {line!r}:\n"
                        f"  at token {k}: greta {o[k:k + 8]} vs HF {r[k:k + 8]}\n  greta {o}\n  HF    {r}")


def check_model(greta_bin, model, ref, label):
    lines = corpus()
    for special in (True, False):
        ref.encode_special_tokens = not special  # HF treats special tokens as text when True
        want = [ref.encode(line).ids for line in lines]
        got = greta_jsonl(greta_bin, model, lines, *(["--special"] if special else []))
        compare(f"{label} special={special}", lines, got, want)
    ref.encode_special_tokens = False
    # Decode: HF ids back to text, special tokens skipped.
    ids = [ref.encode(line).ids for line in lines]
    got = greta_jsonl(greta_bin, model, ids, "--decode")
    want = [ref.decode(i, skip_special_tokens=True) for i in ids]
    bad = [(l, g, w) for l, g, w in zip(lines, got, want) if g != w]
    assert not bad, f"{label} decode: {len(lines) - len(bad)}/{len(lines)} match; first: {bad[0]!r}"
    # Invalid UTF-8 on stdin (raw bytes, not JSON): same ids as HF on the replaced str.
    for raw in INVALID_UTF8:
        p = subprocess.run([greta_bin, "tokenize", "-m", model], input=raw, capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
        want = ref.encode(raw.decode("utf-8", errors="replace")).ids
        assert json.loads(p.stdout) == want, f"{label}: invalid UTF-8 {raw!r}"


def test_default_model_matches_hf(greta_bin, default_model):
    check_model(greta_bin, default_model, hf_from_gguf(default_model), "SmolLM2 gguf")


def test_spm_tokenizer_json_matches_hf(greta_bin):
    ref = tokenizers.Tokenizer.from_file(os.path.join(SPM_DIR, "tokenizer.json"))
    check_model(greta_bin, SPM_DIR, ref, "spm tokenizer.json")


def test_spm_gguf_matches_hf(greta_bin):
    check_model(greta_bin, SPM_GGUF, hf_from_gguf(SPM_GGUF), "spm gguf")


def test_cli_text_argument_and_flags(greta_bin):
    ref = tokenizers.Tokenizer.from_file(os.path.join(SPM_DIR, "tokenizer.json"))
    text = "Copyright <s> free software"

    def tokenize(*args):
        p = subprocess.run([greta_bin, "tokenize", "-m", SPM_DIR, *args], capture_output=True, text=True, check=True)
        return p.stdout

    ids = json.loads(tokenize(text))
    ref.encode_special_tokens = True  # without --special, "<s>" in the text is plain text
    assert ids == ref.encode(text).ids and ids[0] == ref.token_to_id("<s>")
    assert json.loads(tokenize("--no-bos", text)) == ids[1:]
    ref.encode_special_tokens = False
    special = json.loads(tokenize("--special", text))
    assert special == ref.encode(text).ids and special.count(ref.token_to_id("<s>")) == 2
    assert tokenize("--decode", json.dumps(ids)) == ref.decode(ids) + "\n"


def test_cli_bad_input_is_an_error_not_a_crash(greta_bin):
    p = subprocess.run([greta_bin, "tokenize", "-m", SPM_DIR, "--decode", "[1, 99999]"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "not a token id" in p.stderr
    p = subprocess.run([greta_bin, "tokenize", "-m", os.path.join(ROOT, "no-such-model.gguf"), "x"],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "no-such-model" in p.stderr
