#!/usr/bin/env python3
"""Lines up greta's CPU op outputs (GRETA_DUMP_DIR=DIR greta run ...) with llama.cpp's graph
tensors (tools/dump_llamacpp_tensors.py) for the same prompt, op by op, and prints for each the
largest absolute difference, the number of elements that are not bit-identical, and the largest
difference relative to the tensor's largest magnitude. The first row that is not bit-identical
is the op to look at: everything after it inherits its difference.

Usage:
  python3 tools/dump_llamacpp_tensors.py --prompt 0 --steps 1 --out /tmp/llama_dump.npz
  GRETA_DUMP_DIR=/tmp/gd build/greta run --device cpu -p "The capital of France is" --temp 0 -n 2
  python3 tools/compare_dumps.py /tmp/llama_dump.npz /tmp/gd [--step 0] [--layers 2]

greta's per-layer op order is the CPU backend's (the Backend defaults compose the fused ops):
rms_norm, matmul q, k, v, rope_q, rope_k, attention, matmul wo, add, rms_norm, matmul gate, up,
silu_mul, matmul down, add; then gather_rows (not dumped), rms_norm, matmul for the logits.
"""
import argparse
import os
import re
import sys

import numpy as np

# (greta op, llama.cpp tensor name with {l} for the layer, which occurrence of that name)
LAYER_OPS = [("rms_norm", "attn_norm-{l}", 0), ("matmul", "Qcur-{l}", 0), ("matmul", "Kcur-{l}", 0),
             ("matmul", "Vcur-{l}", 0), ("rope_q", "Qcur-{l}", 2), ("rope_k", "Kcur-{l}", 2),
             ("attention", "kqv_out-{l}", 0), ("matmul", "attn_out-{l}", 0), ("add", "ffn_inp-{l}", 0),
             ("rms_norm", "ffn_norm-{l}", 0), ("matmul", "ffn_gate-{l}", 0), ("matmul", "ffn_up-{l}", 0),
             ("silu_mul", "ffn_swiglu-{l}", 0), ("matmul", "ffn_out-{l}", 0), ("add", "l_out-{l}", 0)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("llama_npz")
    ap.add_argument("greta_dir")
    ap.add_argument("--step", type=int, default=0)
    ap.add_argument("--layers", type=int, default=1000, help="compare only the first N layers")
    args = ap.parse_args()
    ref = np.load(args.llama_npz)
    by_name = {}
    for k in ref.files:
        m = re.match(rf"s{args.step}/(\d+)/(.*)$", k)
        if m:
            by_name.setdefault(m.group(2), []).append(k)
    files = sorted(f for f in os.listdir(args.greta_dir) if f.startswith(f"s{args.step}_"))
    ops = [(re.match(r"s\d+_\d+_(.*)\.npy", f).group(1), os.path.join(args.greta_dir, f)) for f in files]
    plan = [("embed", "embd", 0)]
    n_layers = sum(1 for n in by_name if re.fullmatch(r"l_out-\d+", n))
    for l in range(min(n_layers, args.layers)):
        plan += [(op, name.format(l=l), occ) for op, name, occ in LAYER_OPS]
    if args.layers >= n_layers:
        plan += [("rms_norm", "result_norm", 0), ("matmul", "result_output", 0)]
    print(f"{'greta op':>10} {'llama.cpp tensor':>18} {'shape':>14} {'max|diff|':>10} {'rel':>9} {'not-equal':>12}")
    gi = 0
    for op, name, occ in plan:
        while gi < len(ops) and ops[gi][0] != op:
            gi += 1
        if gi >= len(ops):
            print(f"greta has no more '{op}' outputs")
            break
        g = np.load(ops[gi][1])
        gi += 1
        keys = by_name.get(name, [])
        if len(keys) <= occ:
            print(f"{op:>10} {name:>18}  (not in the llama.cpp dump)")
            continue
        r = ref[keys[occ]].reshape(-1, g.shape[1]) if ref[keys[occ]].size % g.shape[1] == 0 else None
        if r is None:
            print(f"{op:>10} {name:>18}  shape {ref[keys[occ]].shape} vs {g.shape}")
            continue
        rows = min(len(r), len(g))  # greta computes the logits of the last row only
        r, g = r[-rows:], g[-rows:]
        d = np.abs(r.astype(np.float64) - g)
        ne = int(np.count_nonzero(r != g))
        rel = d.max() / max(np.abs(r).max(), 1e-30)
        print(f"{op:>10} {name:>18} {str(g.shape):>14} {d.max():10.3e} {rel:9.2e} {ne:7d}/{g.size}")


if __name__ == "__main__":
    sys.exit(main())
