"""llama.cpp (PyPI llama-cpp-python) as the reference of the model-family tests: its prompt ids,
greedy tokens and every logit of every step on a GGUF file. Skips the calling test where the
package is not installed (bash tools/install_llamacpp_reference.sh)."""
import importlib.util
import sys

import pytest


def greedy_steps(model, prompt, n_gen):
    """{"prompt_ids", "generated_ids", "steps"}: each step's logits as [token, logit] pairs, best
    first, equal logits by token id."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip(f"llama-cpp-python is not installed for {sys.executable} (bash tools/install_llamacpp_reference.sh)")
    import numpy as np
    from llama_cpp import Llama
    llm = Llama(model_path=str(model), n_ctx=128, n_threads=2, n_batch=128, logits_all=True, verbose=False, seed=0)
    ids = llm.tokenize(prompt.encode(), add_bos=True)
    llm.eval(ids)
    gen, steps = [], []
    for _ in range(n_gen):
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
        order = np.lexsort((np.arange(len(row)), -row))
        steps.append([[int(t), float(row[t])] for t in order])
        gen.append(int(order[0]))
        llm.eval([gen[-1]])
    return {"prompt_ids": ids, "generated_ids": gen, "steps": steps}
