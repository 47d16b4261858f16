#!/usr/bin/env python3
"""The same model on two backends of greta (default: cpu vs cuda), on a GPU machine.

For each prompt: the CPU backend decodes N greedy tokens; the GPU backend then scores exactly
those tokens (--force) and reports its logits at every step. At every step the GPU's greedy
choice must equal the CPU's, or be a near-tie: both backends' margins below 4 bf16 ulps of the
top logit (the GPU writes logits in bf16: at a logit of 17 one ulp is 0.125; the CPU's 8-bit
activations put its logits up to ~0.75 from the exact float64 forward), so ties break either way. Also runs the GPU free-running and reports
how many tokens match before the first divergence. One JSON line; exit 1 on failure.

  python3 tools/compare_devices.py --greta build/greta -m models/X.gguf [-n 64]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

PROMPTS = ["The capital of France is", "def fibonacci(n):\n", "Once upon a time, in a small village by the sea,",
           "Water boils at", "The three primary colors are"]


def run(greta, model, device, prompt, n, report, *extra):
    p = subprocess.run([greta, "run", "-m", model, "--device", device, "-p", prompt, "-n", str(n), "--temp", "0",
                        "--ignore-eos", "--report", report, "--report-top", "50", *extra],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"greta run --device {device} failed: {p.stderr.strip()}")
    return json.load(open(report))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--greta", required=True)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--a", default="cpu")
    ap.add_argument("--b", default="cuda")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    agree = total = 0
    ties, bad, free = [], [], []
    for i, prompt in enumerate(PROMPTS):
        ra = run(args.greta, args.model, args.a, prompt, args.n, os.path.join(tmp, f"a{i}.json"))
        rb = run(args.greta, args.model, args.b, prompt, args.n, os.path.join(tmp, f"b{i}.json"),
                 "--force", json.dumps(ra["generated_ids"]))
        for s, (sa, sb) in enumerate(zip(ra["steps"], rb["steps"])):
            da, db = dict(sa), dict(sb)
            ta, tb = sa[0][0], sb[0][0]
            total += 1
            if ta == tb:
                agree += 1
                continue
            top = max(abs(sa[0][1]), 1.0)
            tol = 4 * 2.0 ** (math.floor(math.log2(top)) - 7)  # 4 bf16 ulps at the top logit
            ma = da[ta] - da.get(tb, -1e9)
            mb = db[tb] - db.get(ta, -1e9)
            (ties if ma < tol and mb < tol else bad).append((i, s, round(ma, 4), round(mb, 4)))
        rf = run(args.greta, args.model, args.b, prompt, args.n, os.path.join(tmp, f"f{i}.json"))
        same = 0
        for x, y in zip(ra["generated_ids"], rf["generated_ids"]):
            if x != y:
                break
            same += 1
        free.append(same)
    ok = not bad
    print(json.dumps({"check": f"{args.a}_vs_{args.b}", "model": os.path.basename(args.model), "steps": total,
                      "greedy_agree": agree, "near_ties": ties, "mismatches": bad,
                      "free_running_identical_tokens": free, "ok": ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
