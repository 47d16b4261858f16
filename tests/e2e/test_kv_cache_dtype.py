"""--kv-dtype on the CPU backend with the default model: the FP8 (e4m3, a float scale per row) cache
scores the perplexity text within +0.5% of the default f16 cache and of a bf16 one; its rows take
about half the bytes, so a server's memory budget (--kv-memory-mib) holds about twice the blocks;
the load log and the server's start line say the type and the tokens the cache holds, `greta info`
the bytes a token takes in each. Measured figures: docs/notes/kv-cache-fp8.md."""
import json
import os
import re

import pytest

from conftest import KV_CACHE_LOG, ROOT, run_greta
from test_server_api import Server

TEXT = os.path.join(ROOT, "tests", "data", "perplexity_text.txt")
# One chunk of 1024 tokens: positions 512..1022 are scored, each over at least 512 cached rows
# (the longest context the text allows; about 5 s a run on 2 cores).
CTX = 1024
MAX_REL_INCREASE = 0.005


def perplexity(greta_bin, model, kv_dtype):
    p = run_greta(greta_bin, "perplexity", "-m", model, "--device", "cpu", "-t", 2, "-f", TEXT, "-c", CTX,
                  "--kv-dtype", kv_dtype, timeout=120)
    log = KV_CACHE_LOG.search(p.stderr)
    assert log, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1]), log


@pytest.fixture(scope="module")
def runs(greta_bin, default_model):
    return {t: perplexity(greta_bin, default_model, t) for t in ("auto", "bf16", "fp8")}


def test_fp8_perplexity_within_half_a_percent(runs):
    ppl = {t: j["perplexity"] for t, (j, _) in runs.items()}
    print(f"\nperplexity ctx {CTX}: f16 {ppl['auto']:.4f}, bf16 {ppl['bf16']:.4f}, fp8 {ppl['fp8']:.4f} "
          f"({(ppl['fp8'] / ppl['auto'] - 1):+.3%} vs f16, {(ppl['fp8'] / ppl['bf16'] - 1):+.3%} vs bf16)")
    for j, _ in runs.values():
        assert (j["chunks"], j["scored"]) == (1, CTX // 2 - 1)
    assert [runs[t][0]["kv_dtype"] for t in ("auto", "bf16", "fp8")] == ["f16", "bf16", "fp8_e4m3"]
    assert ppl["fp8"] != ppl["auto"], "the fp8 cache gave exactly the f16 result: was it used?"
    assert ppl["fp8"] <= ppl["auto"] * (1 + MAX_REL_INCREASE)
    assert ppl["fp8"] <= ppl["bf16"] * (1 + MAX_REL_INCREASE)


def test_load_log_says_type_tokens_and_half_the_memory(runs):
    (_, f16), (_, fp8) = runs["auto"], runs["fp8"]
    assert (f16.group(1), fp8.group(1)) == ("f16", "fp8_e4m3")
    assert f16.group(2) == fp8.group(2) == str(CTX)
    # head_dim 64: an fp8 row is 64 bytes + a 4-byte scale against 128 bytes.
    assert float(fp8.group(3)) / float(f16.group(3)) == pytest.approx(68 / 128, abs=0.01)


def test_info_gives_the_bytes_a_token_takes(greta_bin, default_model):
    j = json.loads(run_greta(greta_bin, "info", "-m", default_model, "--json", timeout=30).stdout)
    # 30 layers x 2 (K, V) x 3 kv heads x (64 x 2 bytes | 64 + 4 bytes)
    assert j["kv_bytes_per_token"] == {"f16": 23040, "bf16": 23040, "fp8_e4m3": 12240}


def test_memory_budget_holds_twice_the_blocks_in_fp8(greta_bin, default_model):
    pools = {}
    for t in ("auto", "fp8"):
        s = Server(greta_bin, default_model, "-t", 2, "--kv-dtype", t, "--kv-memory-mib", 16)
        try:
            r = s.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0})
            assert r.status_code == 200, r.text
            total = s.metrics()["greta_kv_blocks_total"]
        finally:
            s.stop()
        err = s.proc.stderr.read()
        start = re.search(r"max context \d+ tokens, (\d+) KV blocks of (\S+)\)", err)
        assert start, err
        assert int(start.group(1)) == total
        pools[t] = (int(start.group(1)), start.group(2))
    # A block of 16 tokens: 30 layers x 2 (K, V) x 3 kv heads x 16 x (64 x 2 bytes | 64 + 4 bytes).
    assert pools["auto"] == (16 * 2**20 // (30 * 2 * 3 * 16 * 128), "f16")
    assert pools["fp8"] == (16 * 2**20 // (30 * 2 * 3 * 16 * 68), "fp8_e4m3")
