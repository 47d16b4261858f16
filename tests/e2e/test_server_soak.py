"""Soak: one `greta serve` on 127.0.0.1 takes, for SOAK_S seconds at once, ordinary clients
(whose greedy answers must stay exactly right), clients that hang up mid-stream or before their
answer, adversarial clients (malformed JSON, deep nesting, huge numbers, smuggling framings,
garbage, oversized heads) and slow senders, while a monitor requires /health to answer within
two seconds. Afterwards the server must be alive, idle, leak no KV blocks, and still answer right."""
import json
import random
import socket
import threading
import time

import requests

from test_server_api import Server
from test_server_hardening import ATTACKER, health_time, raw_connect, recv_all

SOAK_S = 20
PROMPTS = ["The capital of France is", "1, 2, 3, 4,", "Water boils at"]


def completion(server, prompt, stream=False):
    body = {"prompt": prompt, "max_tokens": 6, "temperature": 0, "stream": stream}
    r = server.post("/v1/completions", body, timeout=60)
    assert r.status_code == 200, r.text
    if not stream:
        return r.json()["choices"][0]["text"]
    events = [line[6:] for line in r.content.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events[-2:]
    return "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])


def send_raw(server, data, source=ATTACKER, read=True):
    s = raw_connect(server, source, timeout=15)
    try:
        s.sendall(data)
        return recv_all(s) if read else b""
    finally:
        s.close()


def post_bytes(path, body, extra=b""):
    return (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + extra +
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)


# (name, request bytes, acceptable first status digits): every one must be answered 4xx.
ADVERSARIAL = [
    ("malformed", post_bytes(b"/v1/completions", b'{"prompt": "x",'), b"4"),
    ("not utf-8", post_bytes(b"/v1/completions", b'{"prompt": "\xff\xfe"}'), b"4"),
    ("deep", post_bytes(b"/v1/completions", b'{"prompt": ' + b"[" * 50000 + b"]" * 50000 + b"}"), b"4"),
    ("huge number", post_bytes(b"/v1/chat/completions",
                               b'{"messages": [{"role": "user", "content": "x"}], "temperature": 1e999}'), b"4"),
    ("wrong type", post_bytes(b"/v1/completions", b'{"prompt": {"a": [1, {"b": null}]}}'), b"4"),
    ("cl+te", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"4"),
    ("two cl", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", b"4"),
    ("big head", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 40000 + b"\r\n\r\n", b"4"),
    ("no route", b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"4"),
    ("empty body", post_bytes(b"/v1/completions", b""), b"4"),
]


class Soak:
    def __init__(self, server, reference):
        self.server, self.reference = server, reference
        self.errors, self.counts = [], {}
        self.worst_health = 0.0
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def run(self, name, fn):
        rng = random.Random(name)
        while not self.stop.is_set():
            try:
                fn(rng)
                with self.lock:
                    self.counts[name] = self.counts.get(name, 0) + 1
            except Exception as e:  # noqa: BLE001 - every failure is reported at the end
                with self.lock:
                    self.errors.append(f"{name}: {type(e).__name__}: {e}")
                time.sleep(0.2)

    def ordinary(self, rng):
        p = rng.choice(PROMPTS)
        got = completion(self.server, p, stream=rng.random() < 0.5)
        assert got == self.reference[p], (p, got, self.reference[p])

    def hang_up(self, rng):
        stream = rng.random() < 0.5
        body = json.dumps({"prompt": rng.choice(PROMPTS), "max_tokens": 200, "ignore_eos": True,
                           "stream": stream}).encode()
        s = raw_connect(self.server, timeout=15)
        try:
            s.sendall(post_bytes(b"/v1/completions", body).replace(b"Connection: close\r\n", b""))
            if stream:
                s.recv(256)  # hang up mid-stream
            time.sleep(rng.random() * 0.5)  # (a plain request: hang up while it is generated)
        finally:
            s.close()

    def adversarial(self, rng):
        name, data, status = rng.choice(ADVERSARIAL)
        resp = send_raw(self.server, data)
        assert resp[9:10] == status, (name, resp[:60])

    def garbage(self, rng):
        send_raw(self.server, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000))), read=False)

    def slow(self, rng):
        s = raw_connect(self.server, timeout=15)
        try:
            for b in b"POST /v1/completions HTTP/1.1\r\n":
                if self.stop.is_set():
                    return
                s.send(bytes([b]))
                time.sleep(0.5)
        except OSError:
            pass  # the head deadline closed it, as it should
        finally:
            s.close()

    def monitor(self, rng):
        t = health_time(self.server)
        with self.lock:
            self.worst_health = max(self.worst_health, t)
        assert t < 2.0, t
        time.sleep(0.2)


def test_soak(greta_bin, default_model):
    server = Server(greta_bin, default_model, "--ctx", 512, "--header-timeout", 2, "--body-timeout", 2,
                    "--idle-timeout", 3)
    try:
        reference = {p: completion(server, p) for p in PROMPTS}
        soak = Soak(server, reference)
        roles = [("ordinary", soak.ordinary, 4), ("hang_up", soak.hang_up, 3), ("adversarial", soak.adversarial, 3),
                 ("garbage", soak.garbage, 1), ("slow", soak.slow, 8), ("monitor", soak.monitor, 1)]
        threads = [threading.Thread(target=soak.run, args=(f"{name}{i}", fn), daemon=True)
                   for name, fn, n in roles for i in range(n)]
        for t in threads:
            t.start()
        time.sleep(SOAK_S)
        soak.stop.set()
        for t in threads:
            t.join(timeout=30)
        assert not soak.errors, soak.errors[:10]
        done = {name: sum(v for k, v in soak.counts.items() if k.startswith(name)) for name, _, _ in roles}
        assert all(done[name] > 0 for name in ("ordinary", "hang_up", "adversarial", "monitor")), done
        assert server.proc.poll() is None, "the server died"
        deadline = time.time() + 15
        m = server.metrics()
        while m["greta_requests_running"] + m["greta_requests_waiting"] > 0 and time.time() < deadline:
            time.sleep(0.2)
            m = server.metrics()
        assert m["greta_requests_running"] + m["greta_requests_waiting"] == 0, m
        assert m["greta_kv_blocks_used"] == 0, m
        for p in PROMPTS:
            assert completion(server, p) == reference[p]
            assert completion(server, p, stream=True) == reference[p]
        print(f"\nsoak {SOAK_S} s: {done}, worst /health {soak.worst_health * 1000:.0f} ms")
    finally:
        server.stop()
