#!/usr/bin/env python3
"""Load benchmark for `greta serve`: N streaming /v1/completions requests from C concurrent
clients on loopback, each with a P-token prompt and G output tokens; prints one JSON line.

Starts the server itself (its own free port, waits for /health, stops it at the end) unless
--url points at one already running. Stdlib only (http.client, threads, processes), so it
measures the server rather than a client library.

Why these choices:
- Prompts are token-id lists, which /v1/completions accepts: exactly P prompt tokens, no
  tokenizer guesswork. Each request draws its own ids (seeded), so requests share no prefix
  unless --shared-prefix asks for one, and the prefix-cache counter shows what that buys.
- `ignore_eos` is sent (unless --no-ignore-eos) so every request generates exactly G tokens;
  output tokens are still counted from the server's usage chunk, not assumed.
- Token ids are drawn below the model's vocabulary, which /v1/models reports (vocab_size), so
  the same command works for a 1,000-token test model and a 128k one. `--synthetic NAME`
  serves a random-weight model of a real shape (greta serve --synthetic), e.g. llama-3-8b.
- TTFT is request start -> first content chunk; inter-token latency is the gap between
  consecutive content chunks of one stream. The server writes whatever tokens are ready in one
  go, so several tokens can land in one read: gaps are measured at chunk arrival, as a client
  sees them, and `chunks` is reported next to `output_tokens` so a merge shows.
- The clients can be spread over worker processes (--procs; by default 1 up to 32 clients,
  else min(8, CPUs/2, C)) that share one counter of prompt indices: hundreds of threads in one
  Python process contend for the GIL while parsing thousands of SSE events a second, so the
  client itself can cap the measured throughput. `client_cpu_s` (the clients' CPU seconds) next
  to `wall_s * client_procs` shows how close they came. Chunk times stay comparable across
  processes: time.monotonic is CLOCK_MONOTONIC, one clock for the whole machine on Linux.
- The server's engine-phase counters (greta_engine_seconds_total) are reported as `engine_s`,
  their change over the run: forward time near the whole wall means the GPU bounds throughput;
  schedule + sample + emit the engine's host work between steps; idle a client or HTTP layer
  that does not keep the engine fed.
- Head of line (--long-prompt L): one request with an L-token prompt is sent first, and the
  N short requests start once the server has begun computing it (its computed-token counter
  moved). The short requests' TTFT (ttft_ms_*) then shows whether a long prompt holds up
  everyone behind it; the long request's own TTFT is reported as long_ttft_ms.
- Bounded: every request has a deadline (--request-timeout) checked on every line it reads
  (the server sends a keep-alive comment each second while a request is queued), sockets time
  out, and the whole run stops at --max-time: no new request starts after it, workers are
  daemon threads, and the result counts whatever did not finish as an error.
"""
import argparse
import http.client
import json
import multiprocessing
import os
import queue
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
METRICS = {  # /metrics counter -> key in the result (reported as the change over the run)
    "greta_prefix_cache_hit_tokens_total": "prefix_cache_hit_tokens",
    "greta_preemptions_total": "preemptions",
    "greta_prompt_tokens_total": "server_prompt_tokens",
    "greta_computed_tokens_total": "server_computed_tokens",
    "greta_generation_tokens_total": "server_generated_tokens",
    "greta_client_disconnects_total": "client_disconnects",
    "greta_grammar_masks_total": "grammar_masks",
}
# Float counters (seconds), reported as the change over the run.
SECONDS_METRICS = {"greta_grammar_mask_seconds_total": "grammar_mask_s",
                   "greta_grammar_mask_wait_seconds_total": "grammar_mask_wait_s"}
ENGINE_PHASES = ("idle", "schedule", "forward", "sample", "emit")  # greta_engine_seconds_total{phase=...}
METRIC_LINE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*(?:\{.*\})?)\s+(\S+)$")


def find_greta():
    for d in ("build-load", "build", "build-release", "build-serve", "build-gpu"):
        p = os.path.join(ROOT, d, "greta")
        if os.access(p, os.X_OK):
            return p
    return shutil.which("greta")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Endpoint:
    """What a client needs to send requests (picklable, unlike Target with its server process)."""

    def __init__(self, host, port, headers):
        self.host, self.port, self.headers = host, port, dict(headers)


class Target:
    """Where requests go: host, port, headers; optionally the server process we started."""

    def __init__(self, url, api_key):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise SystemExit(f"serve_load: --url must be http://HOST:PORT, got {url!r}")
        self.host, self.port = u.hostname, u.port or 80
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.proc = None
        self.device = None
        self.stderr_lines = []

    def get(self, path, timeout=10):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("GET", path, headers=self.headers)
            r = conn.getresponse()
            return r.status, r.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def start(self, greta, model_args, device, threads, extra, wait_s):
        args = [greta, "serve", *model_args, "--device", device, "--host", self.host, "--port", str(self.port)]
        if threads:
            args += ["--threads", str(threads)]
        args += extra
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # Drain stderr on a thread so the pipe never fills; its "serving ID on BACKEND" line names
        # the device the server really chose.
        def drain():
            for line in self.proc.stderr:
                self.stderr_lines.append(line.rstrip("\n"))
                m = re.search(r"greta: serving .* on (.+?) \(max context", line)
                if m:
                    self.device = m.group(1)
        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the drain thread read the reason
                tail = "\n".join(self.stderr_lines[-10:])
                raise SystemExit(f"serve_load: greta serve exited ({self.proc.returncode}):\n{tail}")
            try:
                if self.get("/health", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"serve_load: greta serve did not answer /health within {wait_s:.0f} s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)

    def metrics(self):
        status, text = self.get("/metrics")
        if status != 200:
            raise SystemExit(f"serve_load: GET /metrics answered {status}: {text[:200]}")
        return parse_metrics(text)

    def model_info(self):
        """The served model's /v1/models entry (id, and vocab_size from greta)."""
        status, text = self.get("/v1/models")
        if status != 200:
            raise SystemExit(f"serve_load: GET /v1/models answered {status}: {text[:200]}")
        return json.loads(text)["data"][0]


def parse_metrics(text):
    """Prometheus text -> {'name' or 'name{labels}': value}; labels are kept as the server wrote
    them (a label value may hold spaces, so the value is the last field)."""
    out = {}
    for line in text.splitlines():
        m = METRIC_LINE.match(line.strip())
        if m and not line.startswith("#"):
            out[m.group(1)] = float(m.group(2))
    return out


def engine_phase_deltas(before, after):
    """Seconds the engine spent in each loop phase between two scrapes; None for a server
    without the counters."""
    keys = {p: f'greta_engine_seconds_total{{phase="{p}"}}' for p in ENGINE_PHASES}
    if not all(k in after for k in keys.values()):
        return None
    return {p: round(after[k] - before.get(k, 0.0), 4) for p, k in keys.items()}


def stream_one(target, body, deadline):
    """One streaming request. Returns a dict with start, chunk times, output tokens, error."""
    rec = {"start": time.monotonic(), "chunks": [], "tokens": None, "error": None}
    conn = http.client.HTTPConnection(target.host, target.port,
                                      timeout=max(0.1, deadline - rec["start"]))
    try:
        conn.request("POST", "/v1/completions", body=body, headers=target.headers)
        r = conn.getresponse()
        if r.status != 200:
            rec["error"] = f"HTTP {r.status}: {r.read(300).decode('utf-8', 'replace')}"
            return rec
        done = False
        while True:
            if time.monotonic() > deadline:
                rec["error"] = "timeout"
                return rec
            line = r.readline()
            if not line:
                break
            now = time.monotonic()
            if not line.startswith(b"data:"):
                continue  # blank separators and ": keep-alive" comments
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            ev = json.loads(data)
            if "error" in ev:
                rec["error"] = "stream error: " + str(ev["error"].get("message"))
                return rec
            if ev.get("usage"):
                rec["tokens"] = ev["usage"]["completion_tokens"]
            for ch in ev.get("choices") or []:
                if ch.get("text"):
                    rec["chunks"].append(now)
        if not done:
            rec["error"] = "stream ended without [DONE]"
        elif rec["tokens"] is None:
            rec["error"] = "no usage chunk"
    except (OSError, http.client.HTTPException, ValueError) as e:
        rec["error"] = f"{type(e).__name__}: {e}"
    finally:
        rec["end"] = time.monotonic()
        conn.close()
    return rec


def percentile(xs, q):
    """Linear interpolation between closest ranks (numpy's default); None when empty."""
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def make_prompts(n, p, shared, lo, hi, seed):
    rng = random.Random(seed)
    prefix = [rng.randrange(lo, hi) for _ in range(shared)]
    return [prefix + [rng.randrange(lo, hi) for _ in range(p - shared)] for _ in range(n)]


# --json-schema default: an object whose output can run to any length (a list of strings), so a
# constrained request ends at max_tokens as the unconstrained ones do and the two loads compare.
DEFAULT_SCHEMA = {"type": "object", "properties": {"title": {"type": "string"},
                                                   "items": {"type": "array", "items": {"type": "string"}}},
                  "required": ["title", "items"], "additionalProperties": False}


def response_format(a):
    """The response_format every request carries (--json-schema), or None."""
    if not a.json_schema:
        return None
    if a.json_schema == "default":
        schema = DEFAULT_SCHEMA
    else:
        with open(a.json_schema) as f:
            schema = json.load(f)
    return {"type": "json_schema", "json_schema": {"name": "load", "schema": schema, "strict": True}}


def request_body(ids, gen, ignore_eos, fmt=None):
    body = {"prompt": ids, "max_tokens": gen, "stream": True, "temperature": 0,
            "ignore_eos": ignore_eos, "stream_options": {"include_usage": True}}
    if fmt:
        body["response_format"] = fmt
    return json.dumps(body)


def run_clients(endpoint, prompts, gen, ignore_eos, request_timeout, threads, next_index, run_deadline, fmt=None):
    """`threads` closed-loop clients in this process: each takes the next prompt index from
    next_index() (None: none left) and streams it. Returns {index: record}."""
    results = {}

    def client():
        while True:
            i = next_index()
            if i is None:
                return
            results[i] = stream_one(endpoint, request_body(prompts[i], gen, ignore_eos, fmt),
                                    min(time.monotonic() + request_timeout, run_deadline))

    workers = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=max(0.0, run_deadline - time.monotonic()) + 5)
    return dict(results)  # a copy: a client past the deadline may still be writing


def shared_counter_next(counter, n, run_deadline):
    """next_index over processes: one shared counter hands out prompt indices in order, so the
    clients stay one closed loop whichever process they live in."""
    def next_index():
        if time.monotonic() >= run_deadline:
            return None
        with counter.get_lock():
            i = counter.value
            if i >= n:
                return None
            counter.value = i + 1
        return i
    return next_index


def client_process(k, endpoint, prompts, a, threads, counter, start, go, reports):
    """One worker process: reports it is ready, waits for the parent's start time, runs its
    clients and sends back its records and CPU seconds."""
    reports.put(("ready", k))
    go.wait()
    run_deadline = start.value + a.max_time
    cpu0 = time.process_time()
    recs = run_clients(endpoint, prompts, a.gen, a.ignore_eos, a.request_timeout, threads,
                       shared_counter_next(counter, len(prompts), run_deadline), run_deadline, response_format(a))
    reports.put(("done", k, recs, time.process_time() - cpu0))


def start_long_request(target, a, lo, hi):
    """Sends one --long-prompt request on a thread and returns once the server has begun to
    compute it; the thread's record lands in the returned dict under "rec"."""
    ids = make_prompts(1, a.long_prompt, 0, lo, hi, a.seed + 2_000_003)[0]
    endpoint = Endpoint(target.host, target.port, target.headers)
    computed = "greta_computed_tokens_total"
    before = target.metrics().get(computed, 0)
    out = {}
    body = request_body(ids, a.gen, a.ignore_eos)
    out["thread"] = threading.Thread(daemon=True, target=lambda: out.update(
        rec=stream_one(endpoint, body, time.monotonic() + a.request_timeout)))
    out["thread"].start()
    deadline = time.monotonic() + a.request_timeout
    while target.metrics().get(computed, 0) == before and time.monotonic() < deadline and "rec" not in out:
        time.sleep(0.005)
    return out


def split(total, parts):
    """total as `parts` near-equal shares, the larger ones first."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_load(target, prompts, a, on_start=lambda: None):
    """Runs every prompt through a.concurrency clients spread over a.procs processes; on_start()
    runs once they are ready, just before the first request (e.g. to read the server's
    counters, so that process start-up does not count as engine idle time). Returns (records in
    prompt order, None where not finished; t0; t1; client CPU seconds)."""
    endpoint = Endpoint(target.host, target.port, target.headers)
    if a.procs <= 1:
        lock, next_i = threading.Lock(), [0]
        on_start()
        t0 = time.monotonic()
        run_deadline = t0 + a.max_time

        def next_index():
            with lock:
                i = next_i[0]
                if i >= len(prompts) or time.monotonic() >= run_deadline:
                    return None
                next_i[0] += 1
                return i

        cpu0 = time.process_time()
        recs = run_clients(endpoint, prompts, a.gen, a.ignore_eos, a.request_timeout, a.concurrency,
                           next_index, run_deadline, response_format(a))
        cpu = time.process_time() - cpu0
        t1 = time.monotonic()
    else:
        recs, t0, t1, cpu = run_processes(endpoint, prompts, a, on_start)
    return [recs.get(i) for i in range(len(prompts))], t0, t1, cpu


def next_report(reports, procs, deadline):
    """The next message from a worker; fails fast when one died instead of waiting it out."""
    while True:
        try:
            return reports.get(timeout=1.0)
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise SystemExit(f"serve_load: a client process died (exit code {dead[0]})")
            if time.monotonic() > deadline:
                raise SystemExit("serve_load: a client process did not report in time")


def run_processes(endpoint, prompts, a, on_start):
    # spawn, not fork: the parent has threads (the server's stderr drain), and forking a
    # threaded process can deadlock the child. Start-up cost is paid before t0.
    ctx = multiprocessing.get_context("spawn")
    counter, start, go, reports = ctx.Value("q", 0), ctx.Value("d", 0.0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=client_process, daemon=True,
                         args=(k, endpoint, prompts, a, threads, counter, start, go, reports))
             for k, threads in enumerate(split(a.concurrency, a.procs))]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            next_report(reports, procs, time.monotonic() + a.startup_timeout)
        on_start()
        t0 = time.monotonic()  # workers read their deadline from `start` once `go` is set
        start.value = t0
        go.set()
        recs, cpu = {}, 0.0
        for _ in procs:  # read before join: a full pipe would block a worker's exit
            _, _, got, cpu_k = next_report(reports, procs, t0 + a.max_time + 30)
            recs.update(got)
            cpu += cpu_k
        t1 = time.monotonic()
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
    return recs, t0, t1, cpu


def default_procs(concurrency):
    """One process is enough for a few dozen streams; beyond that, the GIL gets in the way."""
    if concurrency <= 32:
        return 1
    return max(1, min(8, (os.cpu_count() or 2) // 2, concurrency))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--url", help="benchmark a running server (http://HOST:PORT) instead of starting one")
    ap.add_argument("--greta", default=find_greta(), help="greta binary")
    ap.add_argument("-m", "--model", default=os.environ.get("GRETA_MODEL", DEFAULT_MODEL))
    ap.add_argument("--synthetic", metavar="NAME",
                    help="serve a random-weight model of this shape instead of -m (llama-3-8b, tiny, ...)")
    ap.add_argument("--dtype", help="--dtype for --synthetic weights (the server's default: bf16)")
    ap.add_argument("--device", default="cpu", help="--device for the server we start (cpu, cuda, auto)")
    ap.add_argument("--device-name", help="device to record in the result when --url is given (e.g. the GPU's name)")
    ap.add_argument("-t", "--threads", type=int, default=0, help="server CPU threads (0 = its default)")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="extra argument for greta serve (repeat; e.g. --server-arg=--max-running=16)")
    ap.add_argument("--api-key")
    ap.add_argument("-n", "--requests", type=int, default=32)
    ap.add_argument("-c", "--concurrency", type=int, default=8)
    ap.add_argument("--procs", type=int, default=None,
                    help="client processes sharing the -c clients; default: 1 up to 32 clients, else "
                         "min(8, CPUs/2, -c)")
    ap.add_argument("-p", "--prompt-tokens", type=int, default=64)
    ap.add_argument("-g", "--gen", "--max-tokens", dest="gen", type=int, default=32,
                    help="max_tokens (ignore_eos: exactly this many)")
    ap.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=True,
                    help="generate exactly max_tokens tokens, EOS or not")
    ap.add_argument("--shared-prefix", type=int, default=0, help="prompt tokens every request shares")
    ap.add_argument("--long-prompt", type=int, default=0, metavar="L",
                    help="head of line: send one L-token prompt first, then the -n short requests")
    ap.add_argument("--long-every", type=int, default=0, metavar="K",
                    help="with --long-prompt: no head-of-line request; instead every K-th of the -n requests "
                         "is an L-token prompt among the short ones (long documents mixed with chats); the "
                         "short requests' inter-token latency is reported apart")
    ap.add_argument("--json-schema", metavar="FILE|default",
                    help="constrained load: every request carries response_format json_schema with this schema "
                         "(a JSON file, or `default`: an object with a string and a list of strings, which can "
                         "run to max_tokens); compare with the same load without it")
    ap.add_argument("--id-range", default="auto",
                    help="prompt token ids are drawn from [LO, HI); auto: [1000, 20000) clipped to the "
                         "model's vocabulary V as [min(1000, V/10), min(20000, V)) (above most special tokens)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed requests first, -c at a time (page in weights; -c of them warm every batch size)")
    ap.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request")
    ap.add_argument("--max-time", type=float, default=600.0, help="seconds for the whole timed run")
    ap.add_argument("--startup-timeout", type=float, default=120.0)
    a = ap.parse_args()
    if min(a.requests, a.concurrency, a.prompt_tokens, a.gen) < 1 or a.warmup < 0:
        ap.error("-n, -c, -p, -g must be >= 1 and --warmup >= 0")
    if a.procs is None:
        a.procs = default_procs(a.concurrency)
    if a.procs < 1:
        ap.error("--procs must be >= 1")
    a.procs = min(a.procs, a.concurrency)  # no process without a client
    if a.long_prompt < 0 or a.long_every < 0:
        ap.error("--long-prompt and --long-every must be >= 0")
    if a.long_every and not a.long_prompt:
        ap.error("--long-every needs --long-prompt L")
    if not 0 <= a.shared_prefix <= a.prompt_tokens:
        ap.error("--shared-prefix must be in [0, -p]")
    id_range = None
    if a.id_range != "auto":
        try:
            id_range = tuple(int(x) for x in a.id_range.split(":"))
            assert len(id_range) == 2 and 0 <= id_range[0] < id_range[1]
        except (ValueError, AssertionError):
            ap.error(f"--id-range: expected auto or LO:HI with 0 <= LO < HI, got {a.id_range!r}")

    if a.url:
        target = Target(a.url, a.api_key)
    else:
        if not a.greta:
            ap.error("no greta binary found: build it or pass --greta")
        target = Target(f"http://127.0.0.1:{free_port()}", a.api_key)
        model_args = ["--synthetic", a.synthetic] if a.synthetic else ["-m", a.model]
        if a.synthetic and a.dtype:
            model_args += ["--dtype", a.dtype]
        target.start(a.greta, model_args, a.device, a.threads, a.server_arg, a.startup_timeout)
    try:
        try:
            info = target.model_info()
        except OSError as e:
            raise SystemExit(f"serve_load: cannot reach {target.host}:{target.port}: {e}")
        model, vocab = info["id"], info.get("vocab_size")
        if id_range is None:
            if not vocab:
                raise SystemExit("serve_load: the server does not report vocab_size; pass --id-range LO:HI")
            id_range = (min(1000, vocab // 10), min(20000, vocab))
        elif vocab and id_range[1] > vocab:
            raise SystemExit(f"serve_load: --id-range {a.id_range} reaches past the vocabulary ({vocab} tokens)")
        lo, hi = id_range
        # Warm-up prompts come from another seed so they put nothing in the prefix cache that the
        # timed prompts could hit; they run -c at a time so every batch size the run will use is
        # seen once before timing (CUDA graphs are captured per batch-size bucket).
        if a.warmup:
            warm = make_prompts(a.warmup, a.prompt_tokens, 0, lo, hi, a.seed + 1_000_003)
            wres, _, _, _ = run_load(target, warm, a)
            failed = [r["error"] if r else "not finished" for r in wres if not r or r["error"]]
            if failed:
                raise SystemExit(f"serve_load: {len(failed)} warm-up requests failed, e.g.: {failed[0]}")
        prompts = make_prompts(a.requests, a.prompt_tokens, a.shared_prefix, lo, hi, a.seed)
        if a.long_every:
            longs = make_prompts(len(prompts) // a.long_every, a.long_prompt, 0, lo, hi, a.seed + 3_000_017)
            for j, ids in enumerate(longs):
                prompts[(j + 1) * a.long_every - 1] = ids
        before = {}
        long_req = start_long_request(target, a, lo, hi) if a.long_prompt and not a.long_every else None
        results, t0, t1, client_cpu = run_load(target, prompts, a, lambda: before.update(target.metrics()))
        after = target.metrics()
        if long_req:
            long_req["thread"].join(a.request_timeout)
    finally:
        target.stop()

    ok = [r for r in results if r and not r["error"]]
    errors = [r["error"] if r else "not started or not finished (--max-time)" for r in results
              if not r or r["error"]]
    wall = (max(r["end"] for r in ok) - t0) if ok else (t1 - t0)
    ttft = [r["chunks"][0] - r["start"] for r in ok if r["chunks"]]
    itl = [b - a_ for r in ok for a_, b in zip(r["chunks"], r["chunks"][1:])]
    out_tokens = sum(r["tokens"] for r in ok)
    ms = lambda x: None if x is None else round(x * 1000, 2)
    result = {
        "bench": "serve_load",
        "model": model,
        "device": target.device or a.device_name or (a.device if not a.url else "unknown (--url)"),
        "vocab": vocab, "id_range": [lo, hi],
        "N": a.requests, "C": a.concurrency, "P": a.prompt_tokens, "G": a.gen,
        "json_schema": a.json_schema,
        "client_procs": a.procs,
        "shared_prefix": a.shared_prefix,
        "server_threads": a.threads or None,
        "ignore_eos": a.ignore_eos,
        "completed": len(ok),
        "errors": len(errors),
        "wall_s": round(wall, 3),
        "output_tokens": out_tokens,
        "chunks": sum(len(r["chunks"]) for r in ok),
        "output_tok_per_s": round(out_tokens / wall, 2) if wall > 0 else None,
        "requests_per_s": round(len(ok) / wall, 3) if wall > 0 else None,
        "ttft_ms_p50": ms(percentile(ttft, 0.5)), "ttft_ms_p99": ms(percentile(ttft, 0.99)),
        "ttft_ms_max": ms(max(ttft, default=None)),
        "itl_ms_p50": ms(percentile(itl, 0.5)), "itl_ms_p99": ms(percentile(itl, 0.99)),
        "client_cpu_s": round(client_cpu, 3),
    }
    if a.long_every:
        # Records in prompt order (run_load returns one slot per prompt): short chats and long documents apart.
        kinds = {"short": [r for r, p in zip(results, prompts) if r and not r["error"] and len(p) != a.long_prompt],
                 "long": [r for r, p in zip(results, prompts) if r and not r["error"] and len(p) == a.long_prompt]}
        short_itl = [b - a_ for r in kinds["short"] for a_, b in zip(r["chunks"], r["chunks"][1:])]
        long_ttft = [r["chunks"][0] - r["start"] for r in kinds["long"] if r["chunks"]]
        result.update({"long_prompt": a.long_prompt, "long_every": a.long_every, "long_completed": len(kinds["long"]),
                       "short_itl_ms_p50": ms(percentile(short_itl, 0.5)),
                       "short_itl_ms_p99": ms(percentile(short_itl, 0.99)),
                       "long_ttft_ms_p50": ms(percentile(long_ttft, 0.5)),
                       "long_ttft_ms_max": ms(max(long_ttft, default=None))})
    if long_req:
        rec = long_req.get("rec")
        result["long_prompt"] = a.long_prompt
        result["long_ttft_ms"] = ms(rec["chunks"][0] - rec["start"]) if rec and rec["chunks"] else None
        if not rec or rec["error"]:
            errors.append("long request: " + (rec["error"] if rec else "not finished"))
            result["errors"] = len(errors)
    for name, key in METRICS.items():
        if name in after:
            result[key] = int(after[name] - before.get(name, 0))
    for name, key in SECONDS_METRICS.items():
        if name in after:
            result[key] = round(after[name] - before.get(name, 0), 4)
    engine_s = engine_phase_deltas(before, after)
    if engine_s is not None:
        result["engine_s"] = engine_s
    if errors:
        result["first_errors"] = sorted(set(errors))[:3]
    try:
        result["commit"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                          text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        result["commit"] = None
    print(json.dumps(result), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
