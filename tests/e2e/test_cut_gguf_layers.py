"""tools/cut_gguf_layers.py: a model cut to its first layers and requantized is a valid model
greta loads and runs, with the layer count, the type and the weights it was asked for (a tiny
random F32 Llama of test_yarn.py's shape, so the test takes a second)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_greta
from test_yarn import write_gguf

gguf = pytest.importorskip("gguf")
from gguf.quants import dequantize  # noqa: E402


def test_cut_model_has_the_first_layers_requantized(greta_bin, tmp_path):
    src_path, out = tmp_path / "two-layers.gguf", tmp_path / "cut.gguf"
    write_gguf(src_path, "llama", yarn=False)
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "cut_gguf_layers.py"), str(src_path), str(out), "1",
                    "--type", "q8_0"], check=True, capture_output=True, text=True)
    src, cut = gguf.GGUFReader(str(src_path)), gguf.GGUFReader(str(out))
    names = {t.name for t in cut.tensors}
    assert "blk.0.attn_q.weight" in names and not any(n.startswith("blk.1.") for n in names)
    a = next(t for t in src.tensors if t.name == "blk.0.ffn_down.weight")
    b = next(t for t in cut.tensors if t.name == "blk.0.ffn_down.weight")
    assert b.tensor_type == gguf.GGMLQuantizationType.Q8_0
    want, got = dequantize(a.data, a.tensor_type), dequantize(b.data, b.tensor_type)
    assert want.shape == got.shape
    # Q8_0 of the F32 values: within half a Q8_0 step (amax / 127), plus the fp16 rounding of the
    # block scale (up to 127 x 2^-11 of a step).
    step = np.abs(want.reshape(-1, 32)).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(got - want).reshape(-1, 32) <= 0.57 * step + 1e-6)
    info = json.loads(run_greta(greta_bin, "info", "-m", out, "--json").stdout)
    assert info["layers"] == 1
    p = run_greta(greta_bin, "run", "-m", out, "--device", "cpu", "-p", "Hello", "-n", "4", "--temp", "0",
                  "--ignore-eos")
    assert "generation 4 tokens" in p.stderr
