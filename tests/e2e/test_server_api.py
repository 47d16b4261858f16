"""`greta serve` through the official openai client: chat and completions, plain and streamed
(streamed text == plain text at temperature 0), n, logprobs, stop, models, metrics, and the
API key. The server runs on the CPU backend with the default model on a free loopback port.
The helpers here (start_server, ...) are shared with test_server_load.py."""
import json
import os
import socket
import subprocess
import time

import pytest
import requests

openai = pytest.importorskip("openai")

API_KEY = "test-key-123"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, greta_bin, model, *extra, api_key=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # model None: `extra` names it (e.g. "--synthetic", "tiny").
        args = [greta_bin, "serve", *(["-m", model] if model else []), "--device", "cpu", "--port", str(self.port),
                *map(str, extra)]
        if api_key:
            args += ["--api-key", api_key]
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"greta serve exited ({self.proc.returncode}):\n{self.proc.stderr.read()}")
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError("greta serve did not answer /health within 60 s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def client(self, **kw):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=API_KEY if self.headers else "unused",
                             max_retries=0, timeout=60, **kw)

    def metrics(self):
        r = requests.get(self.url + "/metrics", headers=self.headers, timeout=10)
        assert r.status_code == 200
        return parse_metrics(r.text)

    def post(self, path, body=None, data=None, headers=None, timeout=60):
        h = dict(self.headers)
        h.update(headers or {})
        if body is not None:
            data = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        return requests.post(self.url + path, data=data, headers=h, timeout=timeout)


def parse_metrics(text):
    """Prometheus text -> {name{labels}: value} (HELP/TYPE lines skipped)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def assert_error(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str) and err["type"]
    assert "param" in err and "code" in err
    return err


@pytest.fixture(scope="module")
def server(greta_bin, default_model):
    s = Server(greta_bin, default_model, "--ctx", 1024, api_key=API_KEY)
    yield s
    s.stop()


MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT = [{"role": "user", "content": "Name three colors."}]


def test_models_and_health(server):
    models = server.client().models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert server.client().models.retrieve(MODEL).id == MODEL
    assert requests.get(server.url + "/health", timeout=5).json() == {"status": "ok"}


def test_chat_plain_and_streamed_agree(server):
    c = server.client()
    plain = c.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=12, temperature=0)
    text = plain.choices[0].message.content
    assert plain.choices[0].message.role == "assistant"
    assert text and plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage.completion_tokens <= 12 and plain.usage.prompt_tokens > 5
    chunks = list(c.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=12, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == text
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_completions_plain_and_streamed_agree(server):
    c = server.client()
    plain = c.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=10, temperature=0)
    assert plain.choices[0].finish_reason == "length" and plain.usage.completion_tokens == 10
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=10, temperature=0, stream=True) if ch.choices)
    assert streamed == plain.choices[0].text
    assert "Paris" in plain.choices[0].text


def test_connection_burst_is_accepted(server):
    """Hundreds of clients connecting at once all get answers (the listen backlog holds them)."""
    host, port = server.url.split("//")[1].split(":")
    socks = []
    try:
        for _ in range(400):  # connect all before sending anything: a burst on the accept queue
            s = socket.socket()
            s.settimeout(30)
            s.connect((host, int(port)))
            socks.append(s)
        for s in socks:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        for s in socks:
            head = s.recv(64)
            assert head.startswith(b"HTTP/1.1 200"), head
    finally:
        for s in socks:
            s.close()


def test_stop_and_n_and_seed(server):
    c = server.client()
    base = c.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0).choices[0].text
    assert "6" in base
    cut = c.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=["6"])
    assert cut.choices[0].finish_reason == "stop" and cut.choices[0].text == base[: base.index("6")]
    r = c.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=8, temperature=1.0, n=3, seed=42)
    assert [ch.index for ch in r.choices] == [0, 1, 2]
    again = c.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=8, temperature=1.0, n=3, seed=42)
    assert [ch.message.content for ch in r.choices] == [ch.message.content for ch in again.choices]


def test_logprobs(server):
    c = server.client()
    r = c.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=5, temperature=0, logprobs=True,
                                  top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert t.top_logprobs[0].token == t.token and abs(t.top_logprobs[0].logprob - t.logprob) < 1e-4
    r = c.completions.create(model=MODEL, prompt="Hello", max_tokens=4, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 4 and len(lp.token_logprobs) == 4 and all(len(t) <= 2 for t in lp.top_logprobs)
    assert "".join(lp.tokens) == r.choices[0].text


def test_auth(server):
    r = requests.post(server.url + "/v1/chat/completions", json={"messages": CHAT}, timeout=10)
    assert_error(r, 401)
    r = requests.post(server.url + "/v1/chat/completions", json={"messages": CHAT},
                      headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert_error(r, 401)
    assert requests.get(server.url + "/metrics", timeout=10).status_code == 401
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0).models.list()


def test_metrics_shape(server):
    m = server.metrics()
    for name in ("greta_requests_running", "greta_requests_waiting", "greta_kv_blocks_used", "greta_kv_blocks_total",
                 "greta_prompt_tokens_total", "greta_generation_tokens_total", "greta_prefix_cache_hit_tokens_total",
                 "greta_time_to_first_token_seconds_count", "greta_inter_token_latency_seconds_count"):
        assert name in m, name
    assert m["greta_kv_blocks_total"] > 0 and m["greta_generation_tokens_total"] > 0
    assert m['greta_http_requests_total{path="/v1/chat/completions",code="200"}'] >= 1
    assert m['greta_http_requests_total{path="/v1/chat/completions",code="401"}'] >= 1
    assert m['greta_time_to_first_token_seconds_bucket{le="+Inf"}'] == m["greta_time_to_first_token_seconds_count"] > 0
    phases = {p: m[f'greta_engine_seconds_total{{phase="{p}"}}']
              for p in ("idle", "schedule", "forward", "sample", "emit")}
    assert phases["forward"] > 0 and min(phases.values()) >= 0, phases
