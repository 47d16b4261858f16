#!/usr/bin/env python3
"""Dumps llama.cpp's intermediate tensors of one forward pass, for op-by-op comparison with greta's
CPU backend (GRETA_DUMP_DIR, see src/backend/cpu/dump.h and tools/compare_dumps.py).

llama.cpp (PyPI llama-cpp-python, installed by tools/install_llamacpp_reference.sh) calls an eval
callback (llama_context_params.cb_eval, ggml_backend_sched_eval_callback) for every node of its
compute graph: once with ask=true ("do you want this one?") and, for the nodes we say yes to, once
more with ask=false after the node is computed, when its data can be copied. The graph is then
run in pieces between observed nodes, which changes no arithmetic.

Each evaluated graph is one "step": step 0 is the prompt pass, step s >= 1 the s-th greedy decode
step. Every node of a step is saved as float32 in numpy order (ggml's ne reversed, so the last
axis is ggml's ne0), under "s{step}/{index:04d}/{name}" where index is the node's order of
evaluation within the step and name the ggml tensor name ("attn_norm-0", "Qcur-0", "kq-0",
"kq_soft_max-0", "kqv_out-0", "ffn_out-0", "l_out-0", "result_output", ...). F32, F16 and I32
tensors are saved (views with their strides); quantized ones are skipped.

Usage:
  python3 tools/dump_llamacpp_tensors.py --prompt 0 --steps 1 --out /tmp/llama_dump.npz
  python3 tools/dump_llamacpp_tensors.py --list /tmp/llama_dump.npz     # names and shapes
"""
import argparse
import ctypes
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))


class GgmlTensorHead(ctypes.Structure):
    # The leading fields of struct ggml_tensor (ggml.h): type, buffer, ne[4], nb[4]. Stable across
    # ggml versions for years; the rest is reached through ggml's own accessor functions.
    _fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * 4),
                ("nb", ctypes.c_size_t * 4)]


GGML_F32, GGML_F16, GGML_I32 = 0, 1, 26
NP_TYPES = {GGML_F32: np.float32, GGML_F16: np.float16, GGML_I32: np.int32}


def load_ggml():
    import llama_cpp
    libdir = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
    g = ctypes.CDLL(os.path.join(libdir, "libggml-base.so"))
    g.ggml_get_name.restype = ctypes.c_char_p
    g.ggml_get_name.argtypes = [ctypes.c_void_p]
    g.ggml_nbytes.restype = ctypes.c_size_t
    g.ggml_nbytes.argtypes = [ctypes.c_void_p]
    g.ggml_op_desc.restype = ctypes.c_char_p
    g.ggml_op_desc.argtypes = [ctypes.c_void_p]
    g.ggml_backend_tensor_get.restype = None
    g.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    return g


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompt", type=int, default=0, help="index into make_llamacpp_reference.PROMPTS")
    ap.add_argument("--steps", type=int, default=1, help="greedy decode steps after the prompt pass")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="/tmp/llama_dump.npz")
    ap.add_argument("--list", metavar="NPZ", help="print the names and shapes of a dump and exit")
    args = ap.parse_args()
    if args.list:
        d = np.load(args.list)
        for k in d.files:
            print(k, d[k].shape, d[k].dtype)
        return

    import llama_cpp
    from llama_cpp import Llama
    from make_llamacpp_reference import MODEL, PROMPTS

    g = load_ggml()
    saved = {}
    state = {"step": 0, "index": 0}

    def cb(t, ask, _user):
        if ask:
            return True  # observe every node
        head = GgmlTensorHead.from_address(t)
        name = g.ggml_get_name(t).decode()
        if head.type in NP_TYPES:
            nbytes = g.ggml_nbytes(t)
            raw = (ctypes.c_uint8 * nbytes)()
            g.ggml_backend_tensor_get(t, raw, 0, nbytes)
            dt = np.dtype(NP_TYPES[head.type])
            shape = tuple(int(head.ne[i]) for i in range(3, -1, -1))
            strides = tuple(int(head.nb[i]) for i in range(3, -1, -1))
            buf = np.frombuffer(raw, dtype=np.uint8)
            arr = np.ndarray(shape=shape, dtype=dt, buffer=buf, strides=strides)
            # Drop leading axes of size 1 (ggml keeps 4), keep at least 2.
            a = np.array(arr, dtype=np.float32 if dt != np.int32 else np.int32)
            while a.ndim > 2 and a.shape[0] == 1:
                a = a[0]
            saved[f"s{state['step']}/{state['index']:04d}/{name}"] = a
        state["index"] += 1
        return True

    cb_c = llama_cpp.ggml_backend_sched_eval_callback(cb)
    orig = llama_cpp.llama_context_default_params

    def params_with_cb():
        p = orig()
        p.cb_eval = cb_c
        p.cb_eval_user_data = None
        return p

    llama_cpp.llama_context_default_params = params_with_cb
    import llama_cpp.llama as llama_mod
    llama_mod.llama_cpp.llama_context_default_params = params_with_cb
    # Same construction as tools/make_llamacpp_reference.py, so the arithmetic is the reference's.
    llm = Llama(model_path=MODEL, n_ctx=2048, n_threads=args.threads, n_batch=512, logits_all=True, verbose=False,
                seed=0)
    p = PROMPTS[args.prompt]
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
    ids = llm.tokenize(p["text"].encode(), add_bos=add_bos, special=p["special"])
    llm.reset()
    saved.clear()  # anything the constructor evaluated (warm-up graphs) is not ours
    state.update(step=0, index=0)
    llm.eval(ids)
    gen = []
    for s in range(args.steps):
        tok = int(np.argmax(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)))
        gen.append(tok)
        state.update(step=s + 1, index=0)
        llm.eval([tok])
    saved["prompt_ids"] = np.array(ids, dtype=np.int32)
    saved["generated_ids"] = np.array(gen, dtype=np.int32)
    np.savez(args.out, **saved)
    print(f"prompt {args.prompt}: {len(ids)} tokens {ids}, generated {gen}; {len(saved) - 2} tensors -> {args.out}")


if __name__ == "__main__":
    main()
