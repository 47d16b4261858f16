#!/usr/bin/env python3
"""Builds the small SentencePiece test vocabulary under tests/data/tokenizer/spm/.

1. Trains a SentencePiece BPE model (byte_fallback, 1000 pieces, one thread: deterministic) on
   the GPL-3 text Debian ships plus a few multilingual lines, so that most non-Latin characters
   are NOT in the vocabulary and exercise the <0xNN> byte fallback.
2. Converts it with transformers (LlamaTokenizer -> tokenizers BPE, Metaspace, byte_fallback)
   to tokenizer.json + tokenizer_config.json: the Hugging Face reference.
3. Writes spm.gguf holding the same vocabulary the way llama.cpp's converter does
   (tokenizer.ggml.model "llama", tokens, scores, token_type, bos/eos/unk ids, no merges).

Usage: python3 tools/make_spm_tokenizer.py [OUT_DIR]   (default tests/data/tokenizer/spm)
"""
import io
import os
import sys

import gguf
import sentencepiece as spm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = "/usr/share/common-licenses/GPL-3"
EXTRA = [
    "café naïve résumé façade, Straße Größe",
    "Привет, мир! Это небольшой тест.",
    "你好，世界！",
    "The year 2024 had 366 days; 3.14159 is pi.",
    "def f(x):\n    return x * 2  # code\n",
]


def train(out_dir):
    with open(TEXT, encoding="utf-8") as f:
        lines = [l.rstrip("\n") for l in f if l.strip()]
    lines += EXTRA
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=1000,
        byte_fallback=True, character_coverage=0.9995, num_threads=1, split_digits=True,
        add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    path = os.path.join(out_dir, "tokenizer.model")
    with open(path, "wb") as f:
        f.write(model.getvalue())
    return path


def write_hf(model_path, out_dir):
    # transformers' own SentencePiece conversion: SentencePieceExtractor reads the model proto
    # (needs protobuf) and yields vocab + merges; LlamaTokenizer adds Metaspace, byte_fallback,
    # the BOS template and the decoder.
    from tokenizers.models import BPE
    from transformers import LlamaTokenizer
    from transformers.convert_slow_tokenizer import SentencePieceExtractor
    kwargs = SentencePieceExtractor(model_path).extract(BPE)
    tok = LlamaTokenizer(vocab=kwargs["vocab"], merges=kwargs["merges"], legacy=False, add_bos_token=True,
                         bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.save_pretrained(out_dir)
    for extra in ("special_tokens_map.json", "chat_template.jinja"):
        p = os.path.join(out_dir, extra)
        if os.path.exists(p):
            os.remove(p)


def write_gguf(model_path, out_path):
    sp = spm.SentencePieceProcessor(model_file=model_path)
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(gguf.TokenType.UNKNOWN)
        elif sp.is_control(i):
            types.append(gguf.TokenType.CONTROL)
        elif sp.is_byte(i):
            types.append(gguf.TokenType.BYTE)
        elif sp.is_unused(i):
            types.append(gguf.TokenType.UNUSED)
        else:
            types.append(gguf.TokenType.NORMAL)
    w = gguf.GGUFWriter(out_path, "llama")
    w.add_name("greta-spm-test")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "data", "tokenizer", "spm")
    os.makedirs(out_dir, exist_ok=True)
    model_path = train(out_dir)
    write_hf(model_path, out_dir)
    write_gguf(model_path, os.path.join(out_dir, "spm.gguf"))
    os.remove(model_path)  # the two converted forms are what the tests use
    print("wrote", sorted(os.listdir(out_dir)))


if __name__ == "__main__":
    main()
