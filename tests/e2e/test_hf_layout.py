"""The default model exported to Hugging Face layout (tools/export_hf.py: dequantized
safetensors, config.json, tokenizer.json) runs through the safetensors loader and gives the same
greedy tokens as the GGUF through the GGUF loader."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT, read_json, run_greta

PROMPTS = ["The capital of France is", "def add(a, b):\n", "Water boils at"]
N = 32


@pytest.fixture(scope="module")
def hf_dir(default_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "smollm2"
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "export_hf.py"), default_model, str(out)],
                   check=True, capture_output=True, text=True)
    return str(out)


def test_info_reads_hf_directory(greta_bin, hf_dir):
    p = run_greta(greta_bin, "info", "-m", hf_dir, "--json")
    import json
    j = json.loads(p.stdout)
    assert j["format"] == "safetensors" and j["layers"] == 30 and j["kv_heads"] == 3 and j["tied_embeddings"]


def test_hf_layout_gives_same_greedy_tokens_as_gguf(greta_bin, default_model, hf_dir, tmp_path):
    matched = []
    for i, prompt in enumerate(PROMPTS):
        ids = {}
        for name, model in (("gguf", default_model), ("hf", hf_dir)):
            rep = tmp_path / f"{name}{i}.json"
            run_greta(greta_bin, "run", "-m", model, "--device", "cpu", "-p", prompt, "-n", N, "--temp", "0",
                      "--ignore-eos", "--report", rep)
            ids[name] = read_json(rep)
        assert ids["hf"]["prompt_ids"] == ids["gguf"]["prompt_ids"]
        assert ids["hf"]["generated_ids"] == ids["gguf"]["generated_ids"], f"prompt {prompt!r}"
        matched.append(len(ids["hf"]["generated_ids"]))
    print(f"\nHF layout vs GGUF: {matched} of {N} greedy tokens identical")
