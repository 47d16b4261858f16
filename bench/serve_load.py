#!/usr/bin/env python3
"""Load benchmark for `greta serve`: N streaming /v1/completions requests from C concurrent
clients on loopback, each with a P-token prompt and G output tokens; prints one JSON line.

Starts the server itself (its own free port, waits for /health, stops it at the end) unless
--url points at one already running. Stdlib only (http.client + threads), so it measures the
server rather than a client library.

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
- Bounded: every request has a deadline (--request-timeout) checked on every line it reads
  (the server sends a keep-alive comment each second while a request is queued), sockets time
  out, and the whole run stops at --max-time: no new request starts after it, workers are
  daemon threads, and the result counts whatever did not finish as an error.
"""
import argparse
import http.client
import json
import os
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
}


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
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

    def model_info(self):
        """The served model's /v1/models entry (id, and vocab_size from greta)."""
        status, text = self.get("/v1/models")
        if status != 200:
            raise SystemExit(f"serve_load: GET /v1/models answered {status}: {text[:200]}")
        return json.loads(text)["data"][0]


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


def request_body(ids, gen, ignore_eos):
    return json.dumps({"prompt": ids, "max_tokens": gen, "stream": True, "temperature": 0,
                       "ignore_eos": ignore_eos, "stream_options": {"include_usage": True}})


def run_load(target, prompts, a, run_deadline):
    results = [None] * len(prompts)
    next_i = [0]
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                i = next_i[0]
                if i >= len(prompts) or time.monotonic() >= run_deadline:
                    return
                next_i[0] += 1
            results[i] = stream_one(target, request_body(prompts[i], a.gen, a.ignore_eos),
                                    min(time.monotonic() + a.request_timeout, run_deadline))

    t0 = time.monotonic()
    workers = [threading.Thread(target=worker, daemon=True) for _ in range(a.concurrency)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=max(0.0, run_deadline - time.monotonic()) + 5)
    return results, t0, time.monotonic()


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
    ap.add_argument("-p", "--prompt-tokens", type=int, default=64)
    ap.add_argument("-g", "--gen", "--max-tokens", dest="gen", type=int, default=32,
                    help="max_tokens (ignore_eos: exactly this many)")
    ap.add_argument("--ignore-eos", action=argparse.BooleanOptionalAction, default=True,
                    help="generate exactly max_tokens tokens, EOS or not")
    ap.add_argument("--shared-prefix", type=int, default=0, help="prompt tokens every request shares")
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
            wres, _, _ = run_load(target, warm, a, time.monotonic() + a.max_time)
            failed = [r["error"] if r else "not finished" for r in wres if not r or r["error"]]
            if failed:
                raise SystemExit(f"serve_load: {len(failed)} warm-up requests failed, e.g.: {failed[0]}")
        before = target.metrics()
        prompts = make_prompts(a.requests, a.prompt_tokens, a.shared_prefix, lo, hi, a.seed)
        results, t0, t1 = run_load(target, prompts, a, time.monotonic() + a.max_time)
        after = target.metrics()
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
        "itl_ms_p50": ms(percentile(itl, 0.5)), "itl_ms_p99": ms(percentile(itl, 0.99)),
    }
    for name, key in METRICS.items():
        if name in after:
            result[key] = int(after[name] - before.get(name, 0))
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
