"""Shared fixtures for the end-to-end tests: the repo root, the built `greta` binary and the
default model. A test whose binary or model is missing is skipped with the reason, never passed."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")


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


def run_greta(greta_bin, *args, input=None, check=True, timeout=600):
    """Runs greta with args; returns the CompletedProcess (text mode)."""
    p = subprocess.run([greta_bin, *map(str, args)], input=input, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"greta {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stderr}")
    return p


def read_json(path):
    with open(path) as f:
        return json.load(f)


def logits_error_vs_reference(greta_bin, model, ref_dir, report, steps, n=4, reference="logits"):
    """Runs greta greedily on `model` (CPU, --report) and yields (step, err, ours, want) for each of
    `steps`: err is max |ours - want| / max |want|, where want is tools/random_hf_model.py's float64
    forward over the float checkpoint `ref_dir` on the same tokens (reference "hf-logits":
    transformers' forward instead)."""
    import numpy as np  # only the tests that compare logits need numpy
    run_greta(greta_bin, "run", "-m", model, "--device", "cpu", "-p", "The GNU General Public License is", "-n", n,
              "--temp", "0", "--ignore-eos", "--report", report, "--report-top", 1000)
    r = read_json(report)
    for step in steps:
        ids = r["prompt_ids"] + r["generated_ids"][:step]
        out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "random_hf_model.py"), reference, str(ref_dir),
                              json.dumps(ids)], check=True, capture_output=True, text=True).stdout
        want = np.array(json.loads(out))
        ours = np.zeros_like(want)
        for t, v in r["steps"][step]:
            ours[t] = v
        yield step, np.abs(ours - want).max() / np.abs(want).max(), ours, want
