"""`greta run` on the default model: what it says when it cannot go on, and when it checks."""
import os
import re
import signal
import subprocess
import time

from conftest import run_greta

SUMMARY = re.compile(r"^greta: .* \| prompt \d+ tokens, .* \| generation (\d+) tokens, .*tokens/s$", re.M)


def test_full_context_is_reported(greta_bin, default_model):
    p = run_greta(greta_bin, "run", "-m", default_model, "-p", "Hello", "-c", "12", "-n", "50", "--ignore-eos",
                  "--temp", "0", "-t", "2", timeout=120)
    assert SUMMARY.search(p.stderr), p.stderr
    assert "the context of 12 tokens is full" in p.stderr, p.stderr


def test_no_context_message_when_the_tokens_asked_for_fit(greta_bin, default_model):
    p = run_greta(greta_bin, "run", "-m", default_model, "-p", "Hello", "-c", "64", "-n", "4", "--ignore-eos",
                  "--temp", "0", "-t", "2", timeout=120)
    assert "context" not in p.stderr, p.stderr


def test_unwritable_report_fails_before_generating(greta_bin, default_model, tmp_path):
    bad = tmp_path / "no-such-dir" / "report.json"
    p = run_greta(greta_bin, "run", "-m", default_model, "-p", "Hello", "-n", "8", "--temp", "0", "-t", "2",
                  "--report", bad, check=False, timeout=120)
    assert p.returncode == 1
    assert p.stderr.strip() == f"greta: error: cannot write report file '{bad}'", p.stderr
    assert p.stdout == ""  # nothing was generated


def test_sigint_stops_generation_and_prints_the_summary(greta_bin, default_model):
    proc = subprocess.Popen([greta_bin, "run", "-m", default_model, "-p", "Once upon a time", "-n", "100000",
                             "--ignore-eos", "--temp", "0", "-t", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.read1(64)  # the first generated text: generation is under way
        assert first, "no output before the interrupt"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = err.decode()
    assert proc.returncode == 130, err
    m = SUMMARY.search(err)
    assert m, err
    assert int(m.group(1)) < 4000  # stopped early, not at the end of the context
    assert "greta: interrupted after" in err
