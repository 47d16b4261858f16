#!/usr/bin/env python3
"""`greta serve` under load: starts the server on a synthetic model, runs bench/serve_load.py
against it for two workloads (128 prompt tokens / 128 generated, then 512 / 256; ignore_eos,
streaming clients on loopback), stops it and prints one summary line per workload.

The server is started once for both workloads (a synthetic 8B model takes a while to generate
and upload). It listens on port 0, i.e. a free port it prints, so a leftover server elsewhere on
the machine can never answer for it; up means /health answers 200 on that port. The second
workload uses another seed, so its prompts share no prefix with the first's.

Sizing for the default, ~256 sequences at once on an 80 GB card: weights 16 GB; KV (bf16) 128 KiB
a token, so 16384 blocks of 16 tokens = 32 GiB hold 256 x (512 + 256) tokens with a third to
spare; a step carries every running sequence's decode token plus the rest of --max-step-tokens
in prompt tokens. 512 clients want --kv-blocks 24576 (48 GiB of KV).

Files in --out-dir: serve.out/.err (the server), serve_load.jsonl/.err (the load client).
Exit status 1 when the server does not start or a workload has errors (--max-time cuts off
requests: they count as errors, never silently).

Usage: serve_bench.py --greta build-gpu/greta --out-dir /tmp/gpu-check [--concurrency 512 --kv-blocks 24576]
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_lines import read_json_lines  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = ((128, 128, 0), (512, 256, 1))  # prompt tokens, generated tokens, seed


def wait_for_health(proc, out_path, timeout_s):
    """The port the server printed, once /health answers 200 there; None if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print("serve: greta serve exited before answering /health", file=sys.stderr)
            return None
        with open(out_path) as f:
            m = re.search(r"listening on http://[^:]+:(\d+)/", f.read())
        try:
            if m and urllib.request.urlopen(f"http://127.0.0.1:{m[1]}/health", timeout=2).status == 200:
                return int(m[1])
        except OSError:
            pass
        time.sleep(1)
    print(f"serve: greta serve did not answer /health within {timeout_s:.0f} s", file=sys.stderr)
    return None


def device_name(device):
    if device == "cpu":
        return f"cpu ({os.cpu_count()} cores)"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout
        return out.splitlines()[0].strip() if out.strip() else device
    except (OSError, subprocess.TimeoutExpired):
        return device


def summary(r):
    return (f"{r['device']}: {r['N']} x {r['P']}-in/{r['G']}-out, {r['C']} clients: "
            f"{r['output_tok_per_s']} output tok/s, {r['requests_per_s']} req/s, "
            f"TTFT p50/p99 {r['ttft_ms_p50']}/{r['ttft_ms_p99']} ms, ITL p50/p99 {r['itl_ms_p50']}/{r['itl_ms_p99']} ms, "
            f"{r['completed']} done, {r['errors']} errors, {r.get('preemptions', '?')} preemptions")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--greta", required=True, help="greta binary with `serve` (built with cpp-httplib)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--synthetic", default="llama-3-8b", help="model shape served")
    ap.add_argument("--dtype", default="bf16", help="its weight type (greta serve --dtype: bf16, fp8, q4_k, ...)")
    ap.add_argument("--device", default="cuda", help="server --device (cpu runs the same step on a CPU)")
    ap.add_argument("--requests", type=int, default=1024, help="timed requests per workload")
    ap.add_argument("--concurrency", type=int, default=256, help="clients at once (also the warm-up requests)")
    ap.add_argument("--max-running", type=int, help="server --max-running (default: --concurrency)")
    ap.add_argument("--kv-blocks", type=int, default=16384, help="server --kv-blocks")
    ap.add_argument("--max-step-tokens", type=int, default=2048, help="server --max-step-tokens")
    ap.add_argument("--procs", type=int, help="load client processes (serve_load.py --procs; default up to 8)")
    ap.add_argument("--json-schema", metavar="FILE|default",
                    help="constrained workloads: every request carries this response_format json_schema "
                         "(serve_load.py --json-schema)")
    ap.add_argument("--max-time", type=float, default=200, help="seconds each workload's timed run (and its "
                    "warm-up) may take")
    ap.add_argument("--short-only", action="store_true", help="only the 128 / 128 workload")
    ap.add_argument("--startup-timeout", type=float, default=600, help="seconds for the server to answer /health")
    a = ap.parse_args()
    if subprocess.run([a.greta, "serve", "--help"], capture_output=True).returncode != 0:
        sys.exit(f"serve: {a.greta} has no 'serve' (built without cpp-httplib? run scripts/gpu-deps.sh "
                 "where it is installed, carry .gpu-deps, then build again)")
    log = lambda name: os.path.join(a.out_dir, name)  # noqa: E731
    server = [a.greta, "serve", "--synthetic", a.synthetic, "--dtype", a.dtype, "--device", a.device, "--port", "0",
              "--max-running", str(a.max_running or a.concurrency), "--kv-blocks", str(a.kv_blocks),
              "--max-step-tokens", str(a.max_step_tokens), "--max-queue", "4096",
              "--http-threads", str(a.concurrency + 64)]
    with open(log("serve.out"), "w") as out, open(log("serve.err"), "w") as err:
        proc = subprocess.Popen(server, stdout=out, stderr=err)
    status = 0
    try:
        port = wait_for_health(proc, log("serve.out"), a.startup_timeout)
        if port is None:
            with open(log("serve.err")) as f:
                sys.stderr.write("serve: the end of serve.err:\n" + "".join(f.readlines()[-20:]))
            return 1
        with open(log("serve.err")) as f:
            for line in f.readlines()[:3]:
                print("== " + line.rstrip())
        name = device_name(a.device)
        for name_ in ("serve_load.jsonl", "serve_load.err"):
            open(log(name_), "w").close()
        for p, g, seed in WORKLOADS[:1] if a.short_only else WORKLOADS:
            load = [sys.executable, os.path.join(ROOT, "bench", "serve_load.py"), "--url", f"http://127.0.0.1:{port}",
                    "--device-name", name, "--requests", str(a.requests), "--concurrency", str(a.concurrency),
                    "--prompt-tokens", str(p), "--max-tokens", str(g), "--ignore-eos", "--seed", str(seed),
                    "--warmup", str(a.concurrency), "--request-timeout", "600", "--max-time", str(a.max_time)]
            if a.procs:
                load += ["--procs", str(a.procs)]
            if a.json_schema:
                load += ["--json-schema", a.json_schema]
            with open(log("serve_load.jsonl"), "a") as out, open(log("serve_load.err"), "a") as err:
                rc = subprocess.run(load, stdout=out, stderr=err, env=dict(os.environ, PYTHONUNBUFFERED="1")).returncode
            if rc != 0:
                status = 1
                with open(log("serve_load.err")) as f:
                    sys.stderr.write("".join(f.readlines()[-5:]))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    for r in read_json_lines(log("serve_load.jsonl")):
        print(summary(r))
        print(json.dumps(r))
    return status


if __name__ == "__main__":
    sys.exit(main())
