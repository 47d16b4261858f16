#!/usr/bin/env python3
"""Decode speed of the default model on the CPU: greta next to llama.cpp, same machine, same threads.

greta: `greta bench -m MODEL --device cpu -t T -p P -n G` (its decode is checked against a batched
re-score in the same run; ms_per_token of the decode loop). llama.cpp: llama-cpp-python (it builds
llama.cpp from source; install it as tools/make_llamacpp_reference.py says), the same prompt length,
greedy, one token per eval() call -- wall time per generated token, Python loop included. The two
alternate for --rounds rounds so both see the same machine load; the best round of each counts.

  python3 bench/cpu_vs_llamacpp.py [--greta build/greta] [--threads 2] [--rounds 3]

Prints one JSON line: tokens/s of both, their ratio.
"""
import argparse
import json
import os
import subprocess
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def greta_decode_ms(greta, model, threads, prompt_len, gen):
    out = subprocess.run([greta, "bench", "-m", model, "--device", "cpu", "-t", str(threads), "-p", str(prompt_len),
                          "-n", str(gen), "-r", "1"], check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    dec = [r for r in rows if r.get("measure") == "decode"]
    if not dec or dec[0].get("check") != "pass":
        raise SystemExit(f"greta bench gave no checked decode line: {out.strip()}")
    return dec[0]["ms_per_token"]


def llamacpp_decode_ms(llm, prompt_len, gen):
    prompt = [(1009 * (i + 1)) % llm.n_vocab() for i in range(prompt_len)]
    llm.reset()
    llm.eval(prompt)
    t0 = time.perf_counter()
    tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    for _ in range(gen - 1):
        llm.eval([tok])
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    return (time.perf_counter() - t0) * 1e3 / (gen - 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--greta", default=os.path.join(ROOT, "build", "greta"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    try:
        from llama_cpp import Llama, __version__ as llama_cpp_version
    except ImportError:
        raise SystemExit("llama-cpp-python is not installed: run bash tools/install_llamacpp_reference.sh "
                         "and use .venv/bin/python")
    llm = Llama(model_path=a.model, n_ctx=2048, n_threads=a.threads, n_batch=512, verbose=False)
    g_ms, l_ms = [], []
    for _ in range(a.rounds):
        g_ms.append(greta_decode_ms(a.greta, a.model, a.threads, a.prompt_len, a.gen))
        l_ms.append(llamacpp_decode_ms(llm, a.prompt_len, a.gen))
    g, l = 1e3 / min(g_ms), 1e3 / min(l_ms)
    print(json.dumps({"bench": "cpu_decode_vs_llamacpp", "model": os.path.basename(a.model), "threads": a.threads,
                      "prompt_len": a.prompt_len, "gen": a.gen, "greta_tokens_per_s": round(g, 1),
                      "llamacpp_tokens_per_s": round(l, 1), "ratio": round(g / l, 2),
                      "greta_ms_rounds": [round(x, 3) for x in g_ms], "llamacpp_ms_rounds": [round(x, 3) for x in l_ms],
                      "llama_cpp_python": llama_cpp_version, "cpu": os.cpu_count()}))


if __name__ == "__main__":
    main()
