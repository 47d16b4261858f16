#!/usr/bin/env python3
"""Reference dumps from llama.cpp (PyPI llama-cpp-python, which builds llama.cpp from source)
for the default model, checked by tests/e2e/test_llamacpp_parity.py.

Writes tests/data/reference/llamacpp_smollm2.json: for each prompt, llama.cpp's prompt token ids,
64 greedy tokens with the top-20 logits of every step, and the full logits of the first step
(in llamacpp_smollm2_logits.npz); and perplexity on a license text Debian ships, scored the way
`greta perplexity` scores it (chunks of CTX tokens, second half of each chunk).

Usage:
  bash tools/install_llamacpp_reference.sh     # llama-cpp-python into .venv, built for this CPU
  .venv/bin/python tools/make_llamacpp_reference.py
"""
import argparse
import json
import math
import os
import time

import numpy as np

try:
    from llama_cpp import Llama
except ImportError:
    raise SystemExit("llama-cpp-python is not installed: run bash tools/install_llamacpp_reference.sh "
                     "and use .venv/bin/python")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT_DIR = os.path.join(ROOT, "tests", "data", "reference")

PROMPTS = [
    {"text": "The capital of France is", "special": False},
    {"text": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n", "special": False},
    {"text": "Once upon a time, in a small village by the sea, there lived", "special": False},
    {"text": "<|im_start|>user\nWhat is the boiling point of water in Celsius?<|im_end|>\n<|im_start|>assistant\n",
     "special": True},
    {"text": "Les trois couleurs du drapeau français sont", "special": False},
    {"text": "1, 2, 3, 5, 8, 13,", "special": False},
]
N_GEN = 64
TOP = 20
PPL_FILE = "/usr/share/common-licenses/GPL-3"
PPL_CTX = 512
PPL_CHUNKS = 4


def top_logits(row, k):
    idx = np.lexsort((np.arange(len(row)), -row))[:k]
    return [[int(i), float(row[i])] for i in idx]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    llm = Llama(model_path=MODEL, n_ctx=2048, n_threads=args.threads, n_batch=512, logits_all=True,
                verbose=False, seed=0)
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
    out = {"model": os.path.basename(MODEL), "llama_cpp_python": __import__("llama_cpp").__version__,
           "n_gen": N_GEN, "top": TOP, "prompts": []}
    first_logits = {}
    for pi, p in enumerate(PROMPTS):
        ids = llm.tokenize(p["text"].encode(), add_bos=add_bos, special=p["special"])
        llm.reset()
        llm.eval(ids)
        steps, gen = [], []
        for i in range(N_GEN):
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            if i == 0:
                first_logits[f"p{pi}"] = row
            steps.append(top_logits(row, TOP))
            tok = int(np.argmax(row))
            gen.append(tok)
            llm.eval([tok])
        out["prompts"].append({"text": p["text"], "special": p["special"], "prompt_ids": ids,
                               "generated_ids": gen, "steps": steps})
        print(f"prompt {pi}: {len(ids)} prompt tokens -> {llm.detokenize(gen)[:60]!r}")

    # Perplexity, same definition as `greta perplexity`.
    text = open(PPL_FILE, encoding="utf-8").read()
    ids = llm.tokenize(text.encode(), add_bos=add_bos, special=False)
    nll, count = 0.0, 0
    n_chunks = min(PPL_CHUNKS, len(ids) // PPL_CTX)
    for c in range(n_chunks):
        chunk = ids[c * PPL_CTX:(c + 1) * PPL_CTX]
        llm.reset()
        llm.eval(chunk)
        for j in range(PPL_CTX // 2, PPL_CTX - 1):
            row = np.array(llm.scores[j], dtype=np.float64)
            mx = row.max()
            lse = mx + math.log(np.exp(row - mx).sum())
            nll += lse - row[chunk[j + 1]]
            count += 1
    out["perplexity"] = {"file": PPL_FILE, "ctx": PPL_CTX, "chunks": n_chunks, "tokens": len(ids),
                         "scored": count, "perplexity": math.exp(nll / count)}
    print("perplexity", out["perplexity"])

    # Decode speed of llama.cpp on this machine (recorded in bench/BENCHMARKS.md, not checked in CI).
    prompt = [(1009 * (i + 1)) % llm.n_vocab() for i in range(16)]
    best = 1e30
    for _ in range(3):
        llm.reset()
        llm.eval(prompt)
        t0 = time.perf_counter()
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        for _ in range(127):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        best = min(best, time.perf_counter() - t0)
    out["llamacpp_decode_tokens_per_s"] = 127 / best
    out["threads"] = args.threads
    print("llama.cpp decode tokens/s:", out["llamacpp_decode_tokens_per_s"])

    os.makedirs(OUT_DIR, exist_ok=True)
    with open(os.path.join(OUT_DIR, "llamacpp_smollm2.json"), "w") as f:
        json.dump(out, f)
    np.savez_compressed(os.path.join(OUT_DIR, "llamacpp_smollm2_logits.npz"), **first_logits)


if __name__ == "__main__":
    main()
