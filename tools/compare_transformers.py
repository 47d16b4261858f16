#!/usr/bin/env python3
"""GPU-machine check (needs torch + transformers, no network): a random-weight Llama checkpoint
of a real shape, written in Hugging Face layout by transformers itself (sharded safetensors +
index, bf16), is run by transformers' LlamaForCausalLM and by `greta run --device cuda`.

Checks: per-step logits relative error (||greta - hf|| / ||hf||) <= 2e-2, and greedy tokens:
HF's 32 greedy tokens are fed to greta (--force); at every step greta's greedy choice must be
HF's or a near-tie in HF's logits. Prints one JSON line with the figures; exit 1 on failure.

  python3 tools/compare_transformers.py --greta build/greta [--shape llama-2-7b|small] [--out DIR]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = {
    "llama-2-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32000, rope_theta=10000.0),
    "small": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=4, num_attention_heads=16,
                  num_key_value_heads=4, vocab_size=32000, rope_theta=10000.0),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--greta", required=True)
    ap.add_argument("--shape", default="llama-2-7b", choices=SHAPES)
    ap.add_argument("--out", default="/tmp/greta-hf-random")
    ap.add_argument("--steps", type=int, default=32)
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = LlamaConfig(**SHAPES[a.shape], max_position_embeddings=4096, rms_norm_eps=1e-5,
                      tie_word_embeddings=False, torch_dtype="bfloat16")
    t0 = time.time()
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    with torch.no_grad():  # uniform +-1/sqrt(fan_in): activations stay O(1) through the layers
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.uniform_(-1.0, 1.0).mul_(1.0 / p.shape[1] ** 0.5)
                if "embed" in name:
                    p.mul_(p.shape[1] ** 0.5)
            else:
                p.fill_(1.0)
    model.eval()
    shutil.rmtree(a.out, ignore_errors=True)
    model.save_pretrained(a.out, safe_serialization=True, max_shard_size="4GB")
    for f in ("tokenizer.json", "tokenizer_config.json"):  # any tokenizer: the check feeds ids
        shutil.copy(os.path.join(ROOT, "tests", "data", "tokenizer", "spm", f), os.path.join(a.out, f))
    prompt = [1] + [int(x) for x in torch.randint(3, 1000, (15,), generator=torch.Generator().manual_seed(1))]
    ids = torch.tensor([prompt], device="cuda")
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=a.steps, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=0)
    hf_tokens = out.sequences[0, len(prompt):].tolist()
    hf_logits = torch.stack([s[0].float() for s in out.logits]).cpu()  # [steps, vocab], raw logits
    t_hf = time.time() - t0
    del model, out
    torch.cuda.empty_cache()

    rep = os.path.join(a.out, "greta_report.json")
    t1 = time.time()
    p = subprocess.run([a.greta, "run", "-m", a.out, "--device", "cuda", "--prompt-ids", json.dumps(prompt),
                        "--force", json.dumps(hf_tokens), "--temp", "0", "--report", rep,
                        "--report-top", str(cfg.vocab_size)], capture_output=True, text=True)
    if p.returncode != 0:
        print(p.stderr)
        sys.exit(1)
    steps = json.load(open(rep))["steps"]
    worst_rel, agree, ties, bad = 0.0, 0, [], []
    for s in range(a.steps):
        g = torch.zeros(cfg.vocab_size)
        for t, v in steps[s]:
            g[t] = v
        h = hf_logits[s]
        rel = float((g - h).norm() / h.norm())
        worst_rel = max(worst_rel, rel)
        gt, ht = int(g.argmax()), hf_tokens[s]
        if gt == ht:
            agree += 1
        else:
            margin = float(h[ht] - h[gt])
            (ties if margin < 0.02 * float(h.abs().max()) else bad).append((s, gt, ht, round(margin, 4)))
    ok = worst_rel <= 2e-2 and not bad
    print(json.dumps({"check": "transformers_vs_greta_cuda", "shape": a.shape, "steps": a.steps,
                      "max_rel_err": worst_rel, "greedy_agree": agree, "near_ties": ties, "mismatches": bad,
                      "ok": ok, "hf_seconds": round(t_hf, 1), "greta_seconds": round(time.time() - t1, 1),
                      "device": torch.cuda.get_device_name(0)}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
