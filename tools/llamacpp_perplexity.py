#!/usr/bin/env python3
"""llama.cpp's perplexity of a GGUF model on a text file (through PyPI llama-cpp-python,
installed by tools/install_llamacpp_reference.sh), scored exactly the way `greta perplexity`
scores it (src/cli/cmd_perplexity.cpp), not the way llama.cpp's own perplexity tool does:
  - the file's bytes are tokenized once, BOS in front only when the model's GGUF asks for it
    (tokenizer.ggml.add_bos_token), special-token text read as plain text;
  - the ids are cut into consecutive chunks of CTX tokens (the tail shorter than CTX is dropped;
    --chunks N keeps the first N), each chunk evaluated from an empty cache;
  - in each chunk, positions CTX/2 .. CTX-2 are scored: the log-probability (float64 softmax of
    that position's logits) of the chunk's next token.
Prints one JSON line with greta's keys: file, tokens, ctx, chunks, scored, perplexity.

Usage: .venv/bin/python tools/llamacpp_perplexity.py -m MODEL.gguf -f TEXT [-c 512] [--chunks N]
"""
import argparse
import json
import math
import sys
import time

import numpy as np


def chunk_nll(logits, chunk, ctx):
    """Summed negative log-likelihood and count of the scored positions of one chunk;
    logits[j] is the row of position j."""
    nll, count = 0.0, 0
    for j in range(ctx // 2, ctx - 1):
        row = np.asarray(logits[j], dtype=np.float64)
        mx = row.max()
        nll += mx + math.log(np.exp(row - mx).sum()) - row[chunk[j + 1]]
        count += 1
    return nll, count


def eval_chunk(llm, batch, chunk, ctx):
    """One chunk from an empty cache in one batch; logits are requested for the scored positions
    only (as llama.cpp's own perplexity tool requests them). Returns {position: logits}."""
    import llama_cpp

    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
    batch.n_tokens = len(chunk)
    for i, tok in enumerate(chunk):
        batch.token[i] = tok
        batch.pos[i] = i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = ctx // 2 <= i < ctx - 1
    rc = llama_cpp.llama_decode(llm.ctx, batch)
    if rc != 0:
        raise RuntimeError(f"llama_decode failed ({rc})")
    n_vocab = llm.n_vocab()
    return {j: np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, j), shape=(n_vocab,)).copy()
            for j in range(ctx // 2, ctx - 1)}


def perplexity(model, text_file, ctx=512, chunks=0, threads=2):
    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(model_path=model, n_ctx=ctx, n_batch=ctx, n_ubatch=ctx, n_threads=threads,
                n_threads_batch=threads, verbose=False)
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
    with open(text_file, "rb") as f:
        ids = llm.tokenize(f.read(), add_bos=add_bos, special=False)
    n_chunks = len(ids) // ctx
    if chunks > 0:
        n_chunks = min(n_chunks, chunks)
    if n_chunks == 0:
        raise ValueError(f"'{text_file}' has {len(ids)} tokens, fewer than one chunk of {ctx}")
    nll, count = 0.0, 0
    t0 = time.perf_counter()
    batch = llama_cpp.llama_batch_init(ctx, 0, 1)
    try:
        for c in range(n_chunks):
            chunk = ids[c * ctx:(c + 1) * ctx]
            n, k = chunk_nll(eval_chunk(llm, batch, chunk, ctx), chunk, ctx)
            nll += n
            count += k
    finally:
        llama_cpp.llama_batch_free(batch)
    return {"file": text_file, "tokens": len(ids), "ctx": ctx, "chunks": n_chunks, "scored": count,
            "perplexity": math.exp(nll / count), "seconds": time.perf_counter() - t0, "device": "llama.cpp"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-f", "--file", required=True)
    ap.add_argument("-c", "--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=0, help="score at most this many chunks (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.ctx < 4:
        sys.exit(f"llamacpp_perplexity: --ctx {args.ctx}: need at least 4")
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        sys.exit("llama-cpp-python is not installed: run bash tools/install_llamacpp_reference.sh "
                 "and use .venv/bin/python")
    try:
        r = perplexity(args.model, args.file, args.ctx, args.chunks, args.threads)
    except (ValueError, OSError, RuntimeError) as e:
        sys.exit(f"llamacpp_perplexity: {e}")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
