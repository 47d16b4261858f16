"""`greta serve --synthetic NAME`: a random-weight model with a generated vocabulary served like any
other (what the GPU load benchmark runs on), token-id prompts (one list, or a list of lists, as
OpenAI and vLLM accept) on the synthetic model and on the default model, and bench/serve_load.py
driving the whole path end to end. CPU backend, the 4-layer `tiny` shape: quick."""
import json
import os
import subprocess
import sys

import pytest
import requests

from conftest import ROOT, run_greta
from test_server_api import Server, assert_error

TINY_VOCAB = 1000


@pytest.fixture(scope="module")
def tiny(greta_bin):
    s = Server(greta_bin, None, "--synthetic", "tiny", "-t", 2, "--ctx", 256)
    yield s
    s.stop()


def complete(server, **body):
    r = server.post("/v1/completions", {"temperature": 0, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_synthetic_model_is_listed_with_its_vocabulary(tiny):
    r = requests.get(tiny.url + "/v1/models", timeout=10).json()
    assert [m["id"] for m in r["data"]] == ["synthetic-tiny"]
    assert r["data"][0]["vocab_size"] == TINY_VOCAB
    assert r["data"][0]["max_model_len"] == 256


def test_token_id_prompt_gives_exact_lengths(tiny):
    ids = [(7 * i + 3) % TINY_VOCAB for i in range(37)]
    out = complete(tiny, prompt=ids, max_tokens=9, ignore_eos=True)
    assert out["model"] == "synthetic-tiny"
    assert out["usage"]["prompt_tokens"] == 37 and out["usage"]["completion_tokens"] == 9
    assert out["choices"][0]["finish_reason"] == "length"
    assert isinstance(out["choices"][0]["text"], str) and out["choices"][0]["text"]
    # Greedy on fixed weights: the same ids give the same text, streamed or not.
    assert complete(tiny, prompt=ids, max_tokens=9, ignore_eos=True)["choices"][0]["text"] == out["choices"][0]["text"]
    r = tiny.post("/v1/completions", {"prompt": ids, "max_tokens": 9, "ignore_eos": True, "temperature": 0,
                                      "stream": True}, timeout=60)
    assert r.status_code == 200
    chunks = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == out["choices"][0]["text"]


def test_list_of_token_id_prompts(tiny):
    a, b = [11, 12, 13, 14, 15], [500, 400, 300, 200, 100, 999, 5]
    both = complete(tiny, prompt=[a, b], max_tokens=6, ignore_eos=True)
    assert [c["index"] for c in both["choices"]] == [0, 1]
    assert both["usage"]["prompt_tokens"] == len(a) + len(b)
    assert both["usage"]["completion_tokens"] == 12
    # Each choice belongs to its own prompt: batched together = one at a time.
    alone = [complete(tiny, prompt=p, max_tokens=6, ignore_eos=True)["choices"][0]["text"] for p in (a, b)]
    assert [c["text"] for c in both["choices"]] == alone
    assert alone[0] != alone[1]


def test_text_prompt_on_generated_vocabulary(tiny):
    out = complete(tiny, prompt="Hello, world! caf\u00e9 \u65e5\u672c", max_tokens=5, ignore_eos=True)
    # BOS plus at least one token; the generated vocabulary never drops text.
    assert out["usage"]["prompt_tokens"] >= 2 and out["usage"]["completion_tokens"] == 5


@pytest.mark.parametrize("prompt", [[TINY_VOCAB], [-1], [1.5], [], [[]], [[1, 2], "text"], [[1, 2], [TINY_VOCAB]]],
                         ids=["id=vocab", "negative", "float", "empty", "empty inner", "mixed", "inner out of vocab"])
def test_bad_token_id_prompts(tiny, prompt):
    err = assert_error(tiny.post("/v1/completions", {"prompt": prompt, "max_tokens": 2}), 400)
    assert "prompt" in err["message"] or err["param"] == "prompt"


def test_chat_needs_a_template(tiny):
    err = assert_error(tiny.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}), 400)
    assert "chat template" in err["message"]


def test_unknown_synthetic_name_fails_clearly(greta_bin):
    p = run_greta(greta_bin, "serve", "--synthetic", "llama-9-1t", "--device", "cpu", "--port", 0, check=False,
                  timeout=60)
    assert p.returncode != 0
    assert "unknown synthetic model 'llama-9-1t'" in p.stderr and "tiny" in p.stderr


def test_token_ids_equal_their_text_on_the_default_model(greta_bin, default_model):
    text = "The capital of France is"
    ids = json.loads(run_greta(greta_bin, "tokenize", "-m", default_model, text).stdout)
    s = Server(greta_bin, default_model, "-t", 2, "--ctx", 256)
    try:
        by_text = complete(s, prompt=text, max_tokens=6)
        by_ids = complete(s, prompt=ids, max_tokens=6)
        batched = complete(s, prompt=[ids, ids[:3]], max_tokens=6)
    finally:
        s.stop()
    assert by_ids["usage"]["prompt_tokens"] == len(ids) == by_text["usage"]["prompt_tokens"]
    assert by_ids["choices"][0]["text"] == by_text["choices"][0]["text"]
    assert batched["choices"][0]["text"] == by_text["choices"][0]["text"]


def serve_load(greta_bin, *args):
    """bench/serve_load.py on the tiny model, CPU; returns its JSON result."""
    p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "serve_load.py"), "--greta", greta_bin,
                        "--synthetic", "tiny", "--device", "cpu", "-t", "2", *map(str, args)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_serve_load_script_end_to_end(greta_bin):
    """bench/serve_load.py as the GPU check runs it, on the tiny model: every request completes with
    exactly max_tokens tokens, and the server's own counter agrees with the clients' count."""
    r = serve_load(greta_bin, "--requests", 12, "--concurrency", 4, "--prompt-tokens", 16, "--max-tokens", 8,
                   "--ignore-eos", "--warmup", 4, "--max-time", 60)
    assert r["model"] == "synthetic-tiny" and r["vocab"] == TINY_VOCAB
    assert r["completed"] == 12 and r["errors"] == 0
    assert r["output_tokens"] == 12 * 8 == r["server_generated_tokens"]
    assert r["server_prompt_tokens"] == 12 * 16
    assert r["output_tok_per_s"] > 0 and r["ttft_ms_p50"] is not None and r["itl_ms_p99"] is not None
    assert 0 <= r["id_range"][0] < r["id_range"][1] <= TINY_VOCAB
    assert r["client_procs"] == 1  # the default for a few clients
    # The engine's time over the run, by phase: the model ran, nothing is negative.
    assert set(r["engine_s"]) == {"idle", "schedule", "forward", "sample", "emit"}
    assert r["engine_s"]["forward"] > 0 and min(r["engine_s"].values()) >= 0


def test_serve_load_spreads_clients_over_processes(greta_bin):
    """--procs 2: the clients live in two processes that share the prompts; the merged result
    counts every request once, in full."""
    r = serve_load(greta_bin, "--requests", 8, "--concurrency", 4, "--procs", 2, "--prompt-tokens", 16,
                   "--max-tokens", 8, "--ignore-eos", "--warmup", 2, "--max-time", 60)
    assert r["client_procs"] == 2
    assert r["completed"] == 8 and r["errors"] == 0
    assert r["output_tokens"] == 8 * 8 == r["server_generated_tokens"]
    assert r["server_prompt_tokens"] == 8 * 16  # no request sent twice, none lost
    assert r["chunks"] > 0 and r["ttft_ms_p50"] is not None and r["itl_ms_p99"] is not None
    assert 0 < r["wall_s"] < 60 and r["client_cpu_s"] > 0
    assert r["engine_s"]["forward"] > 0


def test_serve_load_mixes_long_documents_with_chats(greta_bin):
    """--long-every 4 --long-prompt 96: every 4th request is a 96-token document; the chats' inter-token
    latency and the documents' TTFT are reported apart, and the server saw exactly those prompt tokens."""
    r = serve_load(greta_bin, "--requests", 8, "--concurrency", 4, "--prompt-tokens", 16, "--max-tokens", 4,
                   "--ignore-eos", "--warmup", 2, "--max-time", 60, "--long-prompt", 96, "--long-every", 4)
    assert r["completed"] == 8 and r["errors"] == 0 and r["long_completed"] == 2
    assert r["server_prompt_tokens"] == 6 * 16 + 2 * 96
    assert r["short_itl_ms_p99"] is not None and r["long_ttft_ms_p50"] is not None


def test_serve_load_constrained_workload(greta_bin):
    """--json-schema default: every request carries response_format json_schema; on random weights the
    grammar's list of strings runs to max_tokens, so the load still generates every token."""
    r = serve_load(greta_bin, "--requests", 6, "--concurrency", 3, "--prompt-tokens", 16, "--max-tokens", 12,
                   "--ignore-eos", "--warmup", 1, "--max-time", 60, "--json-schema", "default")
    assert r["json_schema"] == "default" and r["completed"] == 6 and r["errors"] == 0
    assert r["output_tokens"] == 6 * 12 == r["server_generated_tokens"]
    assert r["grammar_masks"] >= 6 * 12 and r["grammar_mask_s"] > 0
