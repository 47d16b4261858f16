#!/usr/bin/env python3
"""The kernel benchmarks' JSON lines (build/gpu_*_bench) as one short report: the card's
ceilings (device, copy and read lines), the fastest GEMV variant per shape next to cuBLAS on the
same shape, then every other line (layer chains, attention) as it was written.

GEMV columns: us and GB/s of the fastest variant, % of the copy and of the read bandwidth
measured in the same run, its error against cuBLAS, cuBLAS's own % of copy, and the check.

Usage: kernel_bench_table.py DIR | FILE.jsonl...   (a directory: its gpu_*_bench.jsonl files)
"""
import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_lines import read_json_lines  # noqa: E402

CEILINGS = ("device", "copy", "read")


def input_files(paths):
    files = []
    for p in paths:
        files += sorted(glob.glob(os.path.join(p, "gpu_*_bench.jsonl"))) if os.path.isdir(p) else [p]
    return files


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="a directory of gpu_*_bench.jsonl files, or the files")
    a = ap.parse_args()
    rows = [r for f in input_files(a.inputs) for r in read_json_lines(f)]
    for r in rows:
        if r["bench"] in CEILINGS:
            print(" ".join(f"{k}={v}" for k, v in r.items() if k != "bench"), f"[{r['bench']}]")
    best = {}
    for r in rows:
        if r["bench"] != "gemv":
            continue
        key = (r["shape"], r["m"], r["k"], r["n"])
        if key not in best or r["us"] < best[key]["us"]:
            best[key] = r
    blas = {(r["shape"], r["m"], r["k"], r["n"]): r for r in rows if r["bench"] == "cublas_gemm"}
    if best:
        print(f"{'shape':20s} {'m':>6s} {'k':>6s} {'n':>2s} {'unroll':>6s} {'us':>8s} {'GB/s':>7s} {'%copy':>6s} "
              f"{'%read':>6s} {'rel_err':>8s} {'cublas%':>7s} ok")
    for key, r in best.items():
        b = blas.get(key, {})
        print(f"{r['shape']:20s} {r['m']:6d} {r['k']:6d} {r['n']:2d} {r['unroll']:6d} {r['us']:8.2f} {r['GBps']:7.0f} "
              f"{r['pct_copy']:6.1f} {r['pct_read']:6.1f} {r['rel_err']:8.1e} {b.get('pct_copy', 0):7.1f} {r['ok']}")
    for r in rows:
        if r["bench"] not in CEILINGS + ("gemv", "cublas_gemm"):
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
