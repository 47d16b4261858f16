"""greta's block quantizers (`--quantize`, core/quant_blocks.cpp) against llama.cpp's reference
quantizers as gguf-py writes them (gguf.quants, "bit-exact with the reference implementation in
ggml-quants.c"): for the 32-value formats the blocks must be the same bytes, so a model quantized
on load equals the file llama.cpp's quantizer would write.

The rows: random values at several scales, blocks made of exact rounding ties (x / d = k + 1/2,
where round-half-even and round-half-away differ), blocks of one repeated value, all zeros, and a
block whose largest magnitude is negative."""
import subprocess

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import quants  # noqa: E402

from conftest import built_tool  # noqa: E402

TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]


@pytest.fixture(scope="session")
def quantize_bin():
    return built_tool("greta_quantize_rows")


def rows():
    rng = np.random.default_rng(7)
    blocks = [rng.standard_normal(32 * 64) * s for s in (1e-3, 0.02, 1.0, 300.0)]
    # Ties: with the block's largest magnitude 127 (Q8_0: d = 1) or 8 / 16 (Q4_0 / Q5_0: d = -1 for
    # a largest value of -8 / -16), half-integers sit exactly between two levels.
    for top in (127.0, -8.0, -16.0, 15.0, 31.0):
        t = np.arange(32, dtype=np.float64) % 14 - 7 + 0.5
        t[0] = top
        blocks.append(t)
    blocks.append(np.full(32, 0.37))
    blocks.append(np.zeros(32))
    b = rng.standard_normal(32)
    b[5] = -9.0
    blocks.append(b)
    return np.concatenate(blocks).astype(np.float32)


@pytest.mark.parametrize("type_name", TYPES)
def test_blocks_are_llamacpp_bytes(quantize_bin, type_name):
    x = rows()
    qtype = getattr(gguf.GGMLQuantizationType, type_name)
    want = quants.quantize(x.reshape(1, -1), qtype).tobytes()
    got = subprocess.run([quantize_bin, type_name], input=x.tobytes(), capture_output=True, check=True).stdout
    assert len(got) == len(want)
    block = gguf.GGML_QUANT_SIZES[qtype][1]
    bad = [i for i in range(len(got) // block) if got[i * block:(i + 1) * block] != want[i * block:(i + 1) * block]]
    assert not bad, f"{type_name}: {len(bad)} of {len(got) // block} blocks differ from llama.cpp's (first: {bad[:5]})"


def test_bad_input_is_one_error_line(quantize_bin):
    r = subprocess.run([quantize_bin, "Q8_0"], input=b"\0" * 12, capture_output=True)
    assert r.returncode == 1 and r.stderr.decode().startswith("error: ") and "32 values" in r.stderr.decode()
    r = subprocess.run([quantize_bin, "Q9_9"], input=b"", capture_output=True)
    assert r.returncode == 1 and "unknown type 'Q9_9'" in r.stderr.decode()
