#!/usr/bin/env python3
"""One batch-1 decode step of a synthetic model, kernel by kernel under Nsight Compute, next to
the step time measured without the profiler.

For each position: `greta bench` (no profiler) gives the step time and the card's copy
bandwidth; `ncu` then runs a short `greta bench` with every decode kernel profiled alone (time,
DRAM bytes read and written, registers), and tools/ncu_step_table.py prints the last full step
as a table against both. Files per position, in --out-dir: profile_{dtype}_pP{tag}.jsonl/.err
(the timed run), ncu_{dtype}_pP{tag}.csv/.err (the profiled one).

Usage: ncu_profile_step.py --greta build-gpu/greta --out-dir /tmp/gpu-check [--positions 16 4000]
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_lines import read_json_lines  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# Backend switches that change the decode step's kernels; the ones set in the environment name
# the output files, so runs with different settings do not overwrite each other.
TAG_SWITCHES = ("GRETA_CUDA_GEMV_PIPE", "GRETA_CUDA_SPLITK", "GRETA_CUDA_ATTN_LAST_MERGE", "GRETA_CUDA_GRAPHS")
KERNELS = "regex:gemv|rms_norm|decode_|sample_kernel|gather|binary|add_bias"
METRICS = "gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__registers_per_thread"


def default_tag():
    return "".join(f"_{v.lower().replace('greta_cuda_', '')}{os.environ[v]}" for v in TAG_SWITCHES
                   if os.environ.get(v))


def find_ncu():
    found = shutil.which("ncu")
    if found:
        return found
    for p in ["/usr/local/cuda/bin/ncu", *sorted(glob.glob("/opt/nvidia/nsight-compute/*/ncu"))]:
        if os.access(p, os.X_OK):
            return p
    return None


def run(args, out_path, err_path):
    with open(out_path, "w") as out, open(err_path, "w") as err:
        rc = subprocess.run(args, stdout=out, stderr=err).returncode
    if rc != 0:
        with open(err_path) as f:
            sys.stderr.write("".join(f.readlines()[-5:]))
    return rc


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--greta", required=True, help="greta binary built with the CUDA backend")
    ap.add_argument("--out-dir", required=True, help="where the runs' files go")
    ap.add_argument("--positions", nargs="+", type=int, default=[16, 4000], help="context positions of the step")
    ap.add_argument("--synthetic", default="llama-2-7b", help="model shape (greta bench --synthetic)")
    ap.add_argument("--dtype", default="bf16", help="weight format of the synthetic model (greta bench --dtype)")
    ap.add_argument("--tag", default=default_tag(), help="file name suffix (default: the switches set in the "
                    "environment, e.g. _gemv_pipe0)")
    ap.add_argument("--ncu", default=find_ncu(), help="Nsight Compute CLI (default: on PATH or under /opt/nvidia)")
    ap.add_argument("--kernels", default=KERNELS, help="ncu --kernel-name filter")
    a = ap.parse_args()
    if not a.ncu:
        ap.error("no ncu found: pass --ncu")
    model = ["--synthetic", a.synthetic, "--dtype", a.dtype, "--device", "cuda"]
    status = 0
    for p in a.positions:
        base = os.path.join(a.out_dir, f"profile_{a.dtype}_p{p}{a.tag}")
        if run([a.greta, "bench", *model, "-p", str(p), "-n", "64", "-r", "2"], base + ".jsonl", base + ".err"):
            status = 1
            continue
        timed = [r for r in read_json_lines(base + ".jsonl") if "tokens_per_s" in r][0]
        copy_gbs, step_us = timed["device_bandwidth_gb_s"], 1e6 / timed["tokens_per_s"]
        ncu_base = os.path.join(a.out_dir, f"ncu_{a.dtype}_p{p}{a.tag}")
        ncu = [a.ncu, "--clock-control", "none", "--cache-control", "none", "--csv", "--page", "raw",
               "--print-units", "base", "--kernel-name-base", "function", "--kernel-name", a.kernels,
               "--metrics", METRICS]
        if run([*ncu, a.greta, "bench", *model, "-p", str(p), "-n", "3", "-r", "1"], ncu_base + ".csv",
               ncu_base + ".err"):
            status = 1
            continue
        print(f"-- position {p} (copy {copy_gbs} GB/s)", flush=True)
        table = [sys.executable, os.path.join(HERE, "ncu_step_table.py"), ncu_base + ".csv",
                 "--copy-gbs", str(copy_gbs), "--step-us", str(step_us)]
        status |= subprocess.run(table).returncode != 0
    return status


if __name__ == "__main__":
    sys.exit(main())
