#!/usr/bin/env python3
"""A/B of one environment switch of the backend: `greta bench ARGS...` once per value, back to
back on the same machine (so every side sees the same card, clocks and neighbours), each output
line tagged with the value ("ab" field), then a table of all of them.

Give each value twice or more ("0 1 0 1") to see the run-to-run spread next to the difference.
--step-profile also sets GRETA_CUDA_STEP_PROFILE=1 and prints the device time per decode step
(the profile synchronises every step, so leave it off when launch overhead is what is measured,
as in a graphs on/off run).

Usage: ab_switch.py --greta build/greta --var GRETA_CUDA_GEMV_PIPE --values 0 1 0 1 --out ab.jsonl
           [--step-profile] -- --synthetic llama-2-7b --device cuda -p 16 -n 256 --batch 8
Exit status 1 when a run fails (its output check included).
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_lines import bench_row, read_json_lines  # noqa: E402


def run_side(greta, var, value, bench_args, step_profile, out, err):
    """One `greta bench` run with var=value; its JSON lines appended to out, tagged."""
    env = dict(os.environ, **{var: value})
    if step_profile:
        env["GRETA_CUDA_STEP_PROFILE"] = "1"
    p = subprocess.run([greta, "bench", *bench_args], env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    for line in p.stdout.splitlines():
        if line.startswith("{"):
            out.write(json.dumps({"ab": value, **json.loads(line)}) + "\n")
    out.flush()
    return p.returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--greta", required=True, help="greta binary")
    ap.add_argument("--var", required=True, help="environment variable to vary, e.g. GRETA_CUDA_GRAPHS")
    ap.add_argument("--values", nargs="+", required=True, help="its values, in the order they run")
    ap.add_argument("--out", required=True, help="JSON lines of every run (overwritten)")
    ap.add_argument("--err", help="stderr of the runs (default: OUT with .err)")
    ap.add_argument("--step-profile", action="store_true", help="also GRETA_CUDA_STEP_PROFILE=1, profile lines printed")
    ap.add_argument("bench_args", nargs=argparse.REMAINDER, help="-- then greta bench's arguments")
    a = ap.parse_args()
    bench_args = a.bench_args[1:] if a.bench_args[:1] == ["--"] else a.bench_args
    err_path = a.err or os.path.splitext(a.out)[0] + ".err"
    status = 0
    with open(a.out, "w") as out, open(err_path, "w") as err:
        for v in a.values:
            err.write(f"== {a.var}={v}\n")
            err.flush()
            rc = run_side(a.greta, a.var, v, bench_args, a.step_profile, out, err)
            if rc != 0:
                status = 1
                print(f"{a.var}={v}: greta bench exited {rc} (see {err_path})", file=sys.stderr)
    with open(err_path) as f:
        for line in f:
            if "step profile" in line:
                print(line.rstrip())
    for r in read_json_lines(a.out):
        if "tokens_per_s" in r:
            print(bench_row(r, a.var))
    return status


if __name__ == "__main__":
    sys.exit(main())
