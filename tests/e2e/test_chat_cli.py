"""`greta chat` end to end: scripted conversations piped through stdin with greedy sampling.
The reference for every turn is `greta run --special` on the conversation rendered by Python
jinja2 the way transformers' apply_chat_template renders it, so the chat command's history,
template use, KV-cache reuse across turns, /reset and /system are each checked against an
independent rendering of the same conversation."""
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import KV_CACHE_LOG, run_greta

jinja2 = pytest.importorskip("jinja2")

N = 24  # tokens per reply: long enough to tell replies apart, short enough for a CPU run


def _compile(source):
    """transformers' own template compiler when available, else the same jinja2 environment."""
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template
        return _compile_jinja_template(source)
    except ImportError:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        return env.from_string(source)


@pytest.fixture(scope="module")
def template(default_model):
    from gguf import GGUFReader
    f = GGUFReader(default_model).fields["tokenizer.chat_template"]
    return _compile(bytes(f.parts[f.data[0]]).decode("utf-8"))


def render(template, messages):
    # SmolLM2's template writes no BOS/EOS; they are passed only because transformers does.
    return template.render(messages=messages, add_generation_prompt=True, bos_token="<|endoftext|>",
                           eos_token="<|endoftext|>", tools=None, documents=None)


def chat(greta_bin, model, lines, *extra, n=N):
    p = run_greta(greta_bin, "chat", "-m", model, "--temp", "0", "-n", n, "-t", 2, *extra,
                  input="".join(line + "\n" for line in lines))
    return p.stdout


def run_ref(greta_bin, model, prompt, n=N):
    """What `greta run` answers to an already rendered prompt (stdout: reply + newline)."""
    return run_greta(greta_bin, "run", "-m", model, "--special", "-p", prompt, "--temp", "0", "-n", n,
                     "-t", 2).stdout


def test_turns_match_run_on_the_rendered_conversation(greta_bin, default_model, template):
    # Turn 2's prompt extends the cache (prompt 1 + reply 1); in turn 3 reply 2 ("L'Am\u00e9ripe...")
    # re-tokenizes differently from how it was generated, so the cache is reused only up to the
    # first difference: both paths must give what a fresh run of the whole conversation gives.
    users = ["What is the capital of France?", "And of Germany?", "Thanks"]
    conv, outs = [], ""
    for i, u in enumerate(users):
        p = run_greta(greta_bin, "chat", "-m", default_model, "--temp", "0", "-n", N, "-t", 2, "-v",
                      input="".join(line + "\n" for line in users[:i + 1]))
        assert p.stdout.startswith(outs)
        reply = p.stdout[len(outs):]
        assert reply.endswith("\n") and reply.strip(), f"no reply to message {i + 1}: {p.stdout!r}"
        conv.append({"role": "user", "content": u})
        assert reply == run_ref(greta_bin, default_model, render(template, conv)), f"turn {i + 1}"
        conv.append({"role": "assistant", "content": reply[:-1]})  # the newline only ends the output
        outs = p.stdout
    # Every turn after the first reused the KV cache for part of its prompt.
    reused = [int(line.split("(")[1].split()[0]) for line in p.stderr.splitlines() if "reused" in line]
    assert len(reused) == 3 and reused[0] == 0 and all(r > 0 for r in reused[1:]), p.stderr


def test_load_log_names_the_kv_cache(greta_bin, default_model):
    # As `greta run` and `greta serve` do: the cache's element type and the tokens it holds.
    p = run_greta(greta_bin, "chat", "-m", default_model, "--temp", "0", "-n", 4, "-t", 2, "-c", 512,
                  "--kv-dtype", "fp8", input="Hi\n")
    log = KV_CACHE_LOG.search(p.stderr)
    assert log, p.stderr
    assert log.group(1) == "fp8_e4m3" and int(log.group(2)) >= 512, p.stderr


def test_reset_starts_a_fresh_conversation(greta_bin, default_model):
    u = "Name a color."
    fresh = chat(greta_bin, default_model, [u])
    out = chat(greta_bin, default_model, ["Tell me about cats.", "/reset", u])
    first = chat(greta_bin, default_model, ["Tell me about cats."])
    assert out.startswith(first)
    assert out[len(first):] == fresh
    # Without the reset the history changes the answer: the check above is not vacuous.
    assert chat(greta_bin, default_model, ["Tell me about cats.", u])[len(first):] != fresh


def test_system_message_is_rendered(greta_bin, default_model, template):
    sys_msg, u = "You are a pirate. Always answer like a pirate.", "Hello, who are you?"
    out = chat(greta_bin, default_model, ["Hi", "/system " + sys_msg, u])
    first = chat(greta_bin, default_model, ["Hi"])
    conv = [{"role": "system", "content": sys_msg}, {"role": "user", "content": u}]
    assert out[len(first):] == run_ref(greta_bin, default_model, render(template, conv))
    # --system gives the same start, and differs from the model's default system prompt.
    assert chat(greta_bin, default_model, [u], "--system", sys_msg) == out[len(first):]
    assert chat(greta_bin, default_model, [u]) != out[len(first):]


def test_multiline_message_and_eof(greta_bin, default_model, template):
    p = run_greta(greta_bin, "chat", "-m", default_model, "--temp", "0", "-n", N, "-t", 2,
                  input="Write two words:\\\nred and blue")  # no final newline: EOF ends the message
    assert p.returncode == 0
    conv = [{"role": "user", "content": "Write two words:\nred and blue"}]
    assert p.stdout == run_ref(greta_bin, default_model, render(template, conv))
    # Empty input: nothing printed, exit 0; /exit stops reading further lines.
    assert run_greta(greta_bin, "chat", "-m", default_model, input="").stdout == ""
    assert run_greta(greta_bin, "chat", "-m", default_model, "-n", 4, input="/exit\nHello\n").stdout == ""


def test_bad_chat_template_is_a_clear_error(greta_bin, default_model, tmp_path):
    p = run_greta(greta_bin, "chat", "-m", default_model, "--chat-template", "/nonexistent", input="Hi\n",
                  check=False)
    assert p.returncode != 0
    assert "--chat-template" in p.stderr and "/nonexistent" in p.stderr and "chatml" in p.stderr
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}{{ m.content }")
    p = run_greta(greta_bin, "chat", "-m", default_model, "--chat-template", str(bad), input="Hi\n", check=False)
    assert p.returncode != 0 and "chat template" in p.stderr and "Traceback" not in p.stderr
    # A built-in name works in place of the model's own template.
    p = run_greta(greta_bin, "chat", "-m", default_model, "--chat-template", "chatml", "--temp", "0", "-n", 4,
                  input="Hi\n")
    assert p.stdout.strip()


def test_full_context_drops_old_turns_and_skips_oversized_messages(greta_bin, default_model):
    long_msg = "Please repeat: " + "the quick brown fox jumps over the lazy dog " * 40  # ~400 tokens
    lines = ["Hi", "Tell me a joke.", "Another one.", "What is 2+2?", "Name a fruit.", long_msg,
             "Name a city.", "Bye"]
    p = run_greta(greta_bin, "chat", "-m", default_model, "--temp", "0", "-n", 16, "-c", 128, "-t", 2,
                  input="".join(line + "\n" for line in lines))
    assert p.returncode == 0
    assert "dropped the" in p.stderr and "oldest messages" in p.stderr
    assert "skipped" in p.stderr
    assert p.stdout.count("\n") >= len(lines) - 1  # every message but the oversized one got a reply


def test_ctrl_c_stops_the_reply_and_chat_goes_on(greta_bin, default_model):
    p = subprocess.Popen([greta_bin, "chat", "-m", default_model, "--temp", "0", "-n", "2000", "--ignore-eos",
                          "-t", "2"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = bytearray(), bytearray()

    def pump(src, dst):
        while True:
            b = src.read1(4096)
            if not b:
                return
            dst.extend(b)

    threads = [threading.Thread(target=pump, args=(p.stdout, out), daemon=True),
               threading.Thread(target=pump, args=(p.stderr, err), daemon=True)]
    for t in threads:
        t.start()

    def wait_for(cond, what, timeout=300):
        end = time.time() + timeout
        while not cond():
            if p.poll() is not None:
                raise AssertionError(f"greta exited ({p.returncode}) while waiting for {what}: {err.decode()}")
            if time.time() > end:
                p.kill()
                raise AssertionError(f"timed out waiting for {what}: {err.decode()}")
            time.sleep(0.05)

    try:
        p.stdin.write(b"Tell me a very long story about a dragon.\n")
        p.stdin.flush()
        wait_for(lambda: len(out) > 20, "the first reply to start")
        p.send_signal(signal.SIGINT)
        wait_for(lambda: err.count(b"interrupted") == 1, "the first reply to stop")
        n1 = len(out)
        # The process is back at the prompt: a second message is answered.
        p.stdin.write(b"Now tell me about a cat.\n")
        p.stdin.flush()
        wait_for(lambda: len(out) > n1 + 20, "the second reply to start")
        p.send_signal(signal.SIGINT)
        wait_for(lambda: err.count(b"interrupted") == 2, "the second reply to stop")
        p.stdin.close()
        assert p.wait(timeout=120) == 0, err.decode()
    finally:
        if p.poll() is None:
            p.kill()
    for t in threads:
        t.join(timeout=5)
    assert b"error" not in err, err.decode()
