"""The default model against llama.cpp (reference dumps made by tools/make_llamacpp_reference.py
with the PyPI package llama-cpp-python): same prompt tokens, the same 64 greedy tokens, logits
close, and perplexity within 1%."""
import json
import os

import numpy as np
import pytest

from conftest import ROOT, read_json, run_greta

REF_DIR = os.path.join(ROOT, "tests", "data", "reference")
REF = os.path.join(REF_DIR, "llamacpp_smollm2.json")


@pytest.fixture(scope="module")
def ref():
    if not os.path.exists(REF):
        pytest.skip(f"reference dump missing: {REF} (run tools/make_llamacpp_reference.py)")
    return read_json(REF)


def test_greedy_tokens_and_logits_match_llamacpp(greta_bin, default_model, ref, tmp_path):
    full = np.load(os.path.join(REF_DIR, "llamacpp_smollm2_logits.npz"))
    worst = 0.0
    summary = []
    for i, p in enumerate(ref["prompts"]):
        rep = tmp_path / f"p{i}.json"
        args = ["run", "-m", default_model, "--device", "cpu", "-p", p["text"], "-n", ref["n_gen"], "--temp", "0",
                "--ignore-eos", "--report", rep, "--report-top", ref["top"]]
        if p["special"]:
            args.append("--special")
        run_greta(greta_bin, *args)
        got = read_json(rep)
        assert got["prompt_ids"] == p["prompt_ids"], f"prompt {i}: token ids differ from llama.cpp"
        n_same = 0
        for a, b in zip(got["generated_ids"], p["generated_ids"]):
            if a != b:
                break
            n_same += 1
        # Logit differences over each step's top entries (shared ids), while the sequences agree.
        for s in range(n_same):
            mine = {tid: v for tid, v in got["steps"][s]}
            for tid, v in p["steps"][s]:
                if tid in mine:
                    worst = max(worst, abs(mine[tid] - v))
        summary.append(n_same)
    # Full-vocabulary logits of the first step.
    full_worst = 0.0
    for i, p in enumerate(ref["prompts"]):
        rep = tmp_path / f"full{i}.json"
        args = ["run", "-m", default_model, "--device", "cpu", "-p", p["text"], "-n", 1, "--temp", "0",
                "--report", rep, "--report-top", 1 << 20]
        if p["special"]:
            args.append("--special")
        run_greta(greta_bin, *args)
        ours = np.zeros(len(full[f"p{i}"]), dtype=np.float32)
        for tid, v in read_json(rep)["steps"][0]:
            ours[tid] = v
        full_worst = max(full_worst, float(np.abs(ours - full[f"p{i}"]).max()))
    print(f"\nllama.cpp parity: tokens matched per prompt {summary} of {ref['n_gen']}; "
          f"max |logit diff| top-{ref['top']} all steps {worst:.4f}, full vocab first step {full_worst:.4f}")
    # Both engines quantize activations to 8 bits for the Q4_1/Q8_0 dot products, in different
    # groupings, so logits differ slightly; a wrong kernel gives differences of whole units.
    # The issue asks for at least 5 prompts with 64 identical greedy tokens.
    full_match = sum(n == ref["n_gen"] for n in summary)
    assert full_match >= 5, f"only {full_match} prompts match llama.cpp for {ref['n_gen']} tokens: {summary}"
    assert worst < 0.5 and full_worst < 0.5


def test_perplexity_within_one_percent_of_llamacpp(greta_bin, default_model, ref):
    r = ref["perplexity"]
    if not os.path.exists(r["file"]):
        pytest.skip(f"{r['file']} missing")
    p = run_greta(greta_bin, "perplexity", "-m", default_model, "--device", "cpu", "-f", r["file"],
                  "-c", r["ctx"], "--chunks", r["chunks"])
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["tokens"] == r["tokens"], "tokenization of the text differs from llama.cpp"
    rel = abs(got["perplexity"] - r["perplexity"]) / r["perplexity"]
    print(f"\nperplexity: greta {got['perplexity']:.4f} llama.cpp {r['perplexity']:.4f} (rel diff {rel:.4%})")
    assert rel < 0.01
