"""`greta serve` against hostile and careless clients: deeply nested JSON, numbers out of range,
request smuggling framings, slow senders (slowloris), abandoned requests, too many connections
from one address, a stream whose model emits token ids its tokenizer lacks, SIGTERM during a
stream, a port already in use, and the warning for a public address without an API key.

Attack traffic comes from 127.0.0.2 (still loopback) so the per-address connection bound of
the attacker does not also cover the /health probes, which come from 127.0.0.1 as a monitor's
would from its own address. Every test is bounded to seconds."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests

from conftest import ROOT
from test_server_api import Server, assert_error, free_port, parse_metrics

ATTACKER = "127.0.0.2"
TINY_IDS = [11, 12, 13, 14, 15, 16, 17, 18]


def raw_connect(server, source=ATTACKER, timeout=10):
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", server.port))
    return s


def recv_all(s):
    out = b""
    while True:
        try:
            b = s.recv(65536)
        except (ConnectionResetError, socket.timeout):
            return out
        if not b:
            return out
        out += b


def health_time(server):
    t0 = time.time()
    r = requests.get(server.url + "/health", timeout=5)
    assert r.status_code == 200
    return time.time() - t0


def post_raw(server, path, body, source=ATTACKER):
    """POST with an exact body; returns (status, json body)."""
    s = raw_connect(server, source)
    try:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        resp = recv_all(s)
    finally:
        s.close()
    head, _, payload = resp.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(payload)


@pytest.fixture(scope="module")
def tiny(greta_bin):
    s = Server(greta_bin, None, "--synthetic", "tiny", "-t", 2, "--ctx", 256, "--header-timeout", 2,
               "--body-timeout", 2, "--idle-timeout", 2, "--max-client-connections", 100)
    yield s
    s.stop()


def test_deep_nesting_is_a_400_and_the_server_stays_up(tiny):
    deep = b'{"prompt": ' + b"[" * 60000 + b"]" * 60000 + b"}"
    status, body = post_raw(tiny, "/v1/completions", deep)
    assert status == 400 and "nested deeper" in body["error"]["message"]
    assert body["error"]["param"].startswith("prompt")
    rf = b'{"messages": [{"role": "user", "content": "x"}], "response_format": {"type": ' + \
         b'{"a": ' * 60000 + b"1" + b"}" * 60000 + b"}}"
    status, body = post_raw(tiny, "/v1/chat/completions", rf)
    assert status == 400 and body["error"]["param"].startswith("response_format.type")
    assert health_time(tiny) < 2


@pytest.mark.parametrize("field", ["temperature", "max_tokens", "top_p", "seed", "presence_penalty"])
def test_huge_number_is_a_400_naming_the_field(tiny, field):
    body = b'{"prompt": [1, 2, 3], "%s": 1e999}' % field.encode()
    status, err = post_raw(tiny, "/v1/completions", body)
    assert status == 400, err
    assert err["error"]["param"] == field and "out of range" in err["error"]["message"]


def test_errors_do_not_echo_request_values(tiny):
    secret = "SECRET" + "x" * 5000
    r = tiny.post("/v1/completions", {"prompt": TINY_IDS, "model": secret})
    assert "SECRET" not in assert_error(r, 404)["message"]
    r = requests.get(tiny.url + "/v1/models/" + secret, timeout=10)
    assert "SECRET" not in assert_error(r, 404)["message"]
    r = tiny.post("/v1/completions", {"prompt": [1, [secret]]})
    assert "SECRET" not in assert_error(r, 400)["message"]


@pytest.mark.parametrize("framing", [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\nContent-Length: 5\r\n",
])
def test_ambiguous_framing_is_refused_and_the_connection_closed(tiny, framing):
    s = raw_connect(tiny)
    try:
        # A second request rides in the "body": it must never be answered.
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n0\r\n\r\n"
                  b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        resp = recv_all(s)
    finally:
        s.close()
    assert resp.startswith(b"HTTP/1.1 400"), resp[:80]
    assert resp.count(b"HTTP/1.1") == 1, resp
    assert b"refused" in resp


def test_slowloris_does_not_starve_health(tiny):
    """70 connections trickling a request head at one byte per second (more than the 64 workers)."""
    socks = []
    stop = threading.Event()
    try:
        for _ in range(70):
            socks.append(raw_connect(tiny))
        head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"

        def trickle():
            for i in range(len(head)):
                if stop.is_set():
                    return
                for s in socks:
                    try:
                        s.send(head[i:i + 1])
                    except OSError:
                        pass
                time.sleep(1)
        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        time.sleep(1.2)
        worst = max(health_time(tiny) for _ in range(5))
        assert worst < 1.0, worst
        # The head deadline (2 s here) does not restart with each byte: 408, then the close.
        socks[0].settimeout(6)
        resp = recv_all(socks[0])
        assert resp.startswith(b"HTTP/1.1 408"), resp[:80]
    finally:
        stop.set()
        for s in socks:
            s.close()


def test_slow_body_gets_408(tiny):
    s = raw_connect(tiny)
    try:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"prompt\"")
        t0 = time.time()
        s.settimeout(8)
        for _ in range(3):  # a byte a second would renew a per-read timeout forever
            time.sleep(1)
            try:
                s.send(b" ")
            except OSError:
                break
        resp = recv_all(s)
    finally:
        s.close()
    assert resp.startswith(b"HTTP/1.1 408"), resp[:80]
    assert resp.count(b"HTTP/1.1") == 1, resp  # closed: the late bytes are no new request
    assert time.time() - t0 < 6


def test_slow_bodies_do_not_hold_the_workers(tiny):
    """70 requests (more than the 64 workers) whose bodies trickle in: an ordinary request is
    still answered at once, since a body of known length is collected before a worker is used."""
    socks = []
    try:
        for _ in range(70):
            s = raw_connect(tiny)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{")
            socks.append(s)
        time.sleep(0.5)
        for s in socks:
            s.send(b" ")
        t0 = time.time()
        r = requests.post(tiny.url + "/v1/completions", json={"prompt": TINY_IDS, "max_tokens": 2}, timeout=10)
        assert r.status_code == 200 and time.time() - t0 < 1.0, (r.status_code, time.time() - t0)
    finally:
        for s in socks:
            s.close()


def test_oversized_body_costs_no_worker(tiny):
    """A body over --max-body is read and dropped by the gate and answered 413, so 70 clients
    announcing huge bodies they never send hold no worker (and none gets a reset)."""
    socks = []
    try:
        for _ in range(70):
            s = raw_connect(tiny)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n{")
            socks.append(s)
        time.sleep(0.3)
        t0 = time.time()
        r = requests.post(tiny.url + "/v1/completions", json={"prompt": TINY_IDS, "max_tokens": 2}, timeout=10)
        assert r.status_code == 200 and time.time() - t0 < 1.0, (r.status_code, time.time() - t0)
        resp = recv_all(socks[0])  # the body deadline ends the wait
        assert resp.startswith(b"HTTP/1.1 408"), resp[:80]
    finally:
        for s in socks:
            s.close()
    r = tiny.post("/v1/completions", {"prompt": "x" * (2 << 20)})
    assert_error(r, 413)


def test_idle_connection_is_closed(tiny):
    s = raw_connect(tiny)
    try:
        s.settimeout(6)
        t0 = time.time()
        assert s.recv(1) == b""  # closed by the server, no bytes
        assert 1 < time.time() - t0 < 5
    finally:
        s.close()


def test_connections_per_address_are_bounded(greta_bin):
    srv = Server(greta_bin, None, "--synthetic", "tiny", "-t", 2, "--ctx", 256, "--max-client-connections", 4)
    socks = []
    try:
        socks = [raw_connect(srv) for _ in range(4)]
        time.sleep(0.3)
        extra = raw_connect(srv)
        resp = recv_all(extra)
        extra.close()
        assert resp.startswith(b"HTTP/1.1 429"), resp[:80]
        assert health_time(srv) < 2  # another address is not affected
        assert srv.metrics()['greta_connections_refused_total{reason="too_many_connections"}'] == 1
        socks.pop().close()
        time.sleep(0.3)
        ok = raw_connect(srv)
        ok.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert recv_all(ok).startswith(b"HTTP/1.1 200")
        ok.close()
    finally:
        for s in socks:
            s.close()
        srv.stop()


def test_abandoned_requests_are_cancelled(greta_bin, default_model):
    """70 non-streamed requests whose clients hang up at once: their generations are cancelled,
    the workers come free, and /health answers all along."""
    srv = Server(greta_bin, default_model, "--ctx", 512, "--max-queue", 512)
    try:
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True,
                           "temperature": 0}).encode()
        socks = []
        for _ in range(70):
            s = raw_connect(srv)
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body)
            socks.append(s)
        deadline = time.time() + 10
        while srv.metrics()["greta_requests_running"] < 8 and time.time() < deadline:
            time.sleep(0.05)
        for s in socks:
            s.close()
        t0 = time.time()
        m = srv.metrics()
        while (m["greta_requests_running"] + m["greta_requests_waiting"] > 0) and time.time() - t0 < 5:
            assert health_time(srv) < 1.5
            time.sleep(0.1)
            m = srv.metrics()
        assert m["greta_requests_running"] + m["greta_requests_waiting"] == 0, m
        assert m["greta_generation_tokens_total"] < 70 * 400 / 4
        # The workers are free again: an ordinary request is answered at once.
        r = srv.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0},
                     timeout=20)
        assert r.status_code == 200 and "Paris" in r.json()["choices"][0]["text"]
    finally:
        srv.stop()


def write_padded_model(out):
    """A random llama3-shape checkpoint whose lm_head has 24 rows more than its tokenizer has
    tokens, made to win the argmax: every greedy token is an id the tokenizer does not have."""
    from safetensors.numpy import load_file, save_file
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "random_hf_model.py"), "write", "llama3", str(out)],
                   check=True, capture_output=True, text=True)
    w = load_file(os.path.join(out, "model.safetensors"))
    emb, head = w["model.embed_tokens.weight"], w["lm_head.weight"]
    w["model.embed_tokens.weight"] = np.concatenate([emb, emb[:24]])
    w["lm_head.weight"] = np.concatenate([head, 10 * head[:12], -10 * head[:12]]).astype(np.float32)
    save_file(w, os.path.join(out, "model.safetensors"))
    cfg = json.load(open(os.path.join(out, "config.json")))
    cfg["vocab_size"] = emb.shape[0] + 24
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"))


def test_token_ids_beyond_the_tokenizer(greta_bin, tmp_path):
    pytest.importorskip("safetensors")
    write_padded_model(tmp_path / "padded")
    srv = Server(greta_bin, str(tmp_path / "padded"), "--ctx", 128)
    try:
        req = {"prompt": TINY_IDS, "max_tokens": 6, "temperature": 0, "logprobs": 5, "ignore_eos": True}
        r = srv.post("/v1/completions", req)
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "length" and r.json()["usage"]["completion_tokens"] == 6
        assert choice["logprobs"]["tokens"] == [""] * 6  # ids with no text in the tokenizer
        r = srv.post("/v1/completions", {**req, "stream": True})
        assert r.status_code == 200
        events = [line[6:] for line in r.content.decode().splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert all("error" not in c for c in chunks), chunks
        assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "length"
        assert health_time(srv) < 2
    finally:
        srv.stop()


def test_sigterm_ends_streams_with_an_error_event_and_done(greta_bin, default_model):
    srv = Server(greta_bin, default_model, "--ctx", 512)
    s = None
    try:
        body = json.dumps({"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True,
                           "stream": True}).encode()
        s = raw_connect(srv, "127.0.0.1", timeout=15)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        got = b""
        while got.count(b"data: {") < 3:
            got += s.recv(4096)
        srv.proc.send_signal(signal.SIGTERM)
        got += recv_all(s)
        assert srv.proc.wait(timeout=15) == 0
        events = [line[6:] for line in got.decode(errors="replace").splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]", events[-3:]
        last = json.loads(events[-2])
        assert "shutting down" in last["error"]["message"], last
        assert got.endswith(b"0\r\n\r\n")  # the chunked body was terminated, not cut
    finally:
        if s:
            s.close()
        srv.stop()


def test_second_server_on_a_port_in_use_fails(greta_bin, tiny):
    p = subprocess.run([greta_bin, "serve", "--synthetic", "tiny", "--device", "cpu", "--port", str(tiny.port)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    errors = [line for line in p.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "address already in use" in errors[0].lower(), p.stderr
    assert health_time(tiny) < 2


def test_public_address_without_api_key_warns(greta_bin):
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the bind fails, nothing listens.
    p = subprocess.run([greta_bin, "serve", "--synthetic", "tiny", "--device", "cpu", "--host", "192.0.2.1",
                        "--port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "without --api-key" in p.stderr, p.stderr
    p = subprocess.run([greta_bin, "serve", "--synthetic", "tiny", "--device", "cpu", "--host", "192.0.2.1",
                        "--port", str(free_port()), "--api-key", "k"], capture_output=True, text=True, timeout=60)
    assert "without --api-key" not in p.stderr, p.stderr
