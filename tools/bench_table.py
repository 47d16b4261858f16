#!/usr/bin/env python3
"""`greta bench` JSON lines as a table: one row per measurement with tokens/s, TTFT (prefill) or
the share of the device bandwidth (decode), and the result of the run's own output check.

Lines written by tools/ab_switch.py carry the switch's value in an "ab" field; --ab-var names the
switch so each row starts with NAME=value.

Usage: bench_table.py FILE.jsonl [--ab-var GRETA_CUDA_GRAPHS]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_lines import bench_row, read_json_lines  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("jsonl", help="`greta bench` output (non-JSON lines are skipped)")
    ap.add_argument("--ab-var", metavar="NAME", help="the switch an A/B run varied (rows start with NAME=value)")
    a = ap.parse_args()
    for r in read_json_lines(a.jsonl):
        if "tokens_per_s" in r:
            print(bench_row(r, a.ab_var))
    return 0


if __name__ == "__main__":
    sys.exit(main())
