"""`greta serve` under load and abuse: 16 concurrent clients get the same greedy output as one at a
time, a repeated system prompt hits the prefix cache, every bad input gets the right status and
an OpenAI error body, a full queue answers 429, and a client that disconnects mid-stream has its
sequence cancelled while /health keeps answering."""
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from test_server_api import MODEL, Server, assert_error, parse_metrics

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def server(greta_bin, default_model):
    s = Server(greta_bin, default_model, "--ctx", 512)
    yield s
    s.stop()


def test_concurrent_equals_sequential(server):
    c = server.client()
    prompts = [f"Write a short sentence about the number {i}." for i in range(16)]

    def ask(p):
        r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": p}], max_tokens=12,
                                      temperature=0)
        return r.choices[0].message.content

    alone = [ask(p) for p in prompts]
    with ThreadPoolExecutor(max_workers=16) as pool:
        together = list(pool.map(ask, prompts, timeout=120))
    assert together == alone
    assert len(set(alone)) > 1  # the prompts really differ, so a mix-up would show


def test_prefix_cache_hits(server):
    c = server.client()
    system = "You are a careful assistant. " + " ".join(f"Rule {i}: answer briefly and politely." for i in range(25))
    before = server.metrics()["greta_prefix_cache_hit_tokens_total"]
    usages = []
    for q in ("What is red?", "What is blue?"):
        r = c.chat.completions.create(model=MODEL, max_tokens=3, temperature=0,
                                      messages=[{"role": "system", "content": system}, {"role": "user", "content": q}])
        usages.append(r.usage)
    hits = server.metrics()["greta_prefix_cache_hit_tokens_total"] - before
    assert usages[0].prompt_tokens > 200
    # The second request shares the whole system prompt: all its full KV blocks come from the cache.
    assert hits >= 160, hits
    assert usages[1].prompt_tokens_details.cached_tokens >= 160


BAD = [
    ("invalid json", "/v1/chat/completions", b"{not json", 400),
    ("not an object", "/v1/chat/completions", b"[1, 2]", 400),
    ("invalid utf-8", "/v1/chat/completions",
     b'{"messages": [{"role": "user", "content": "caf\xc3\x28"}]}', 400),
    ("wrong type", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400),
    ("messages not a list", "/v1/chat/completions", {"messages": "hi"}, 400),
    ("empty messages", "/v1/chat/completions", {"messages": []}, 400),
    ("bad role", "/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, 400),
    ("n too large", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 100}, 400),
    ("negative max_tokens", "/v1/completions", {"prompt": "hi", "max_tokens": -1}, 400),
    ("missing prompt", "/v1/completions", {"max_tokens": 3}, 400),
    ("prompt too long", "/v1/completions", {"prompt": [1] * 600, "max_tokens": 1}, 400),
    ("max_tokens beyond context", "/v1/completions", {"prompt": "hi", "max_tokens": 5000}, 400),
    ("token id out of vocab", "/v1/completions", {"prompt": [10**9], "max_tokens": 1}, 400),
    ("unknown model", "/v1/chat/completions", {"model": "gpt-7", "messages": [{"role": "user", "content": "hi"}]}, 404),
    ("unknown endpoint", "/v1/nothing", {"prompt": "hi"}, 404),
]


@pytest.mark.parametrize("name,path,body,status", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs(server, name, path, body, status):
    if isinstance(body, bytes):
        r = server.post(path, data=body, headers={"Content-Type": "application/json"})
    else:
        r = server.post(path, body)
    assert_error(r, status)


def test_body_too_large(server):
    big = {"prompt": "x" * (2 << 20), "max_tokens": 1}
    try:
        r = server.post("/v1/completions", big)
    except requests.ConnectionError:
        pytest.fail("the server dropped the connection instead of answering 413")
    assert_error(r, 413)


def test_unknown_fields_are_ignored(server):
    r = server.post("/v1/completions", {"prompt": "Hi", "max_tokens": 2, "temperature": 0, "some_future_field": 1})
    assert r.status_code == 200, r.text


def test_openai_client_raises_on_errors(server):
    c = server.client()
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model=MODEL, messages=[], max_tokens=2)


def open_stream(server, max_tokens, body=None):
    """Starts a streamed completion on a raw socket; returns the socket after the first data line."""
    body = json.dumps(body or {"prompt": "Count: 1, 2, 3,", "max_tokens": max_tokens, "ignore_eos": True,
                               "temperature": 0, "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    got = b""
    deadline = time.time() + 30
    while b"data: {" not in got and time.time() < deadline:
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    return s, got


def test_disconnect_cancels_stream(server):
    before = server.metrics()
    s, head = open_stream(server, max_tokens=400)
    assert head.startswith(b"HTTP/1.1 200") and b"data: {" in head
    assert server.metrics()["greta_requests_running"] == 1
    s.close()
    # 400 tokens take many seconds on CPU; the sequence must be gone long before that.
    deadline = time.time() + 5
    m = server.metrics()
    while m["greta_requests_running"] != 0 and time.time() < deadline:
        assert requests.get(server.url + "/health", timeout=2).status_code == 200
        time.sleep(0.05)
        m = server.metrics()
    assert m["greta_requests_running"] == 0
    assert m["greta_client_disconnects_total"] == before.get("greta_client_disconnects_total", 0) + 1
    assert m["greta_generation_tokens_total"] - before["greta_generation_tokens_total"] < 400
    assert m["greta_kv_blocks_used"] == 0


def test_queue_full_is_429(greta_bin, default_model):
    s = Server(greta_bin, default_model, "--ctx", 512, "--max-running", 1, "--max-queue", 1)
    socks = []
    try:
        socks.append(open_stream(s, max_tokens=300)[0])  # running
        body = json.dumps({"prompt": "Hello", "max_tokens": 300, "ignore_eos": True, "stream": True}).encode()
        waiting = socket.create_connection(("127.0.0.1", s.port), timeout=30)  # queued: fills the queue
        waiting.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        socks.append(waiting)
        deadline = time.time() + 10
        while s.metrics()["greta_requests_waiting"] < 1 and time.time() < deadline:
            time.sleep(0.05)
        err = assert_error(s.post("/v1/completions", {"prompt": "Hi", "max_tokens": 2}), 429)
        assert err["type"] == "rate_limit_error"
        with pytest.raises(openai.RateLimitError):
            s.client().completions.create(model=MODEL, prompt="Hi", max_tokens=2)
    finally:
        for sock in socks:
            sock.close()
        # Both clients are gone, the queued one before its first token (the server probes idle
        # streams): their requests are cancelled and the server serves again.
        deadline = time.time() + 10
        m = s.metrics()
        while (m["greta_requests_running"] or m["greta_requests_waiting"]) and time.time() < deadline:
            time.sleep(0.1)
            m = s.metrics()
        drained = m["greta_requests_running"] == 0 and m["greta_requests_waiting"] == 0
        if drained:
            # A stream that waits in the queue gets keep-alive comments; the client must skip them.
            busy = open_stream(s, max_tokens=120)[0]
            c = s.client()
            streamed = "".join(ch.choices[0].text for ch in c.completions.create(
                model=MODEL, prompt="Hi there", max_tokens=4, temperature=0, stream=True) if ch.choices)
            busy.close()
            plain = c.completions.create(model=MODEL, prompt="Hi there", max_tokens=4, temperature=0)
        s.stop()
    assert drained, m
    assert streamed == plain.choices[0].text
