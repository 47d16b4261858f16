#!/usr/bin/env python3
"""One decode step's kernels, from an Nsight Compute CSV, as a table: where the step's time goes.

Input: `ncu --csv --page raw --print-units base --metrics gpu__time_duration.sum,dram__bytes_read.sum,
dram__bytes_write.sum,launch__registers_per_thread ...` over a `greta bench` run with device sampling
(scripts/gpu-check.sh profile). The step is the run of kernels that ends at the last sampling
kernel and starts after the one before it. ncu runs each kernel alone (serialised, no PDL overlap,
caches left warm with --cache-control none), so the sum of the kernels' times against the step
time measured without the profiler says how much the overlap of neighbours wins or the gaps lose.

Usage: ncu_step_table.py CSV --copy-gbs 2993 [--step-us 5380]
"""
import argparse
import collections
import csv
import re
import sys


def short_name(full):
    """The kernel's function name without namespaces, template arguments or parameters."""
    name = full.replace("(anonymous namespace)", "").replace("<unnamed>", "").replace("unnamed>", "")
    name = re.sub(r"\(.*$", "", name)  # parameters
    depth, out = 0, []
    for ch in name:  # drop template arguments, nested ones included
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    name = "".join(out).split("::")[-1].strip()
    return name.split(" ")[-1]


def read_rows(path):
    with open(path, newline="") as f:
        lines = [ln for ln in f if ln.startswith('"')]  # ncu's own log lines are not CSV
    rows = list(csv.DictReader(lines))
    return [r for r in rows if r.get("ID", "").isdigit()]  # skip the units row


def num(r, key):
    v = r.get(key, "").replace(",", "")
    try:
        return float(v)
    except ValueError:
        return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--copy-gbs", type=float, required=True, help="measured device copy bandwidth, GB/s")
    ap.add_argument("--step-us", type=float, default=0.0, help="the step's time without the profiler, us")
    ap.add_argument("--sample-kernel", default="sample_kernel")
    a = ap.parse_args()
    rows = read_rows(a.csv)
    ends = [i for i, r in enumerate(rows) if short_name(r["Kernel Name"]) == a.sample_kernel]
    if len(ends) < 2:
        sys.exit(f"need two decode steps (two {a.sample_kernel} launches) in {a.csv}, found {len(ends)}")
    step = rows[ends[-2] + 1: ends[-1] + 1]
    groups = collections.OrderedDict()
    for r in step:
        key = (short_name(r["Kernel Name"]), r.get("Grid Size", ""), r.get("Block Size", ""))
        g = groups.setdefault(key, {"n": 0, "ns": 0.0, "rd": 0.0, "wr": 0.0,
                                    "regs": r.get("launch__registers_per_thread", "")})
        g["n"] += 1
        g["ns"] += num(r, "gpu__time_duration.sum")
        g["rd"] += num(r, "dram__bytes_read.sum")
        g["wr"] += num(r, "dram__bytes_write.sum")
    total_ns = sum(g["ns"] for g in groups.values())
    total_b = sum(g["rd"] + g["wr"] for g in groups.values())
    print(f"{'kernel':28s} {'grid':>16s} {'block':>12s} {'regs':>4s} {'n':>4s} {'us/launch':>9s} {'us total':>9s} "
          f"{'share':>6s} {'MB/launch':>9s} {'% copy':>7s}")
    for (name, grid, block), g in sorted(groups.items(), key=lambda kv: -kv[1]["ns"]):
        b = g["rd"] + g["wr"]
        pct = 100.0 * (b / (g["ns"] * 1e-9)) / (a.copy_gbs * 1e9) if g["ns"] > 0 else 0.0
        print(f"{name[:28]:28s} {grid:>16s} {block:>12s} {g['regs']:>4s} {g['n']:4d} {g['ns'] / g['n'] / 1e3:9.2f} "
              f"{g['ns'] / 1e3:9.1f} {100 * g['ns'] / total_ns:5.1f}% {b / g['n'] / 1e6:9.2f} {pct:6.1f}%")
    ideal_us = total_b / (a.copy_gbs * 1e9) * 1e6
    print(f"step: {len(step)} kernels, {total_ns / 1e3:.1f} us summed alone, {total_b / 1e9:.3f} GB moved "
          f"(at copy bandwidth {ideal_us:.1f} us, {100 * ideal_us * 1e3 / total_ns:.1f}% of the summed time)")
    if a.step_us > 0:
        print(f"measured step without the profiler: {a.step_us:.1f} us = {100 * ideal_us / a.step_us:.1f}% of copy; "
              f"summed kernels alone - measured = {total_ns / 1e3 - a.step_us:+.1f} us (overlap if positive)")


if __name__ == "__main__":
    main()
