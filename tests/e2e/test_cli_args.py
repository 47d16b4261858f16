"""A bad command line, for every `greta` command: one line `greta: error: <reason>` on stderr,
exit status 2 (the usual usage-error code), and a reason that says what is wrong with the value."""
import pytest

from conftest import run_greta

# (arguments, what the one error line must contain)
CASES = [
    (["run", "--temp", "abc"], "--temp: 'abc' is not a number"),
    (["run", "--temp", "200"], "--temp: '200' is not in [0, 100]"),
    (["run", "-n", "1.5"], "--n-predict: '1.5' is not a whole number"),
    (["run", "-n", "-3"], "--n-predict: '-3' is not in [0, 16777216]"),
    (["run", "--seed", "x"], "--seed: 'x' is not a number"),
    (["run", "--top-k", " 5"], "--top-k: ' 5' is not a number"),
    (["run", "--bogus"], "--bogus"),
    (["run", "-p", "hi", "--prompt-ids", "[1, 2]"], "--prompt excludes --prompt-ids"),
    (["run", "-p", "hi", "-f", "/etc/hostname"], "--prompt excludes --file"),
    (["chat", "--top-p", "2"], "--top-p: '2' is not in [0, 1]"),
    (["chat", "--min-p", "nan"], "--min-p: 'nan' is not a number"),
    (["info", "--frob"], "--frob"),
    (["tokenize", "--frob"], "--frob"),
    (["perplexity"], "--file is required"),
    (["perplexity", "-f", "/etc/hostname", "--chunks", "many"], "--chunks: 'many' is not a number"),
    (["bench", "-r", "0"], "--reps: '0' is not in [1, 1000]"),
    (["bench", "--batch", "8", "x"], "--batch: 'x' is not a number"),
    (["serve", "--port", "99999"], "--port: '99999' is not in [0, 65535]"),
    (["serve", "--max-running", "1e3"], "--max-running: '1e3' is not a whole number"),
    (["serve", "--kv-blocks", "16777216", "--block-size", "4096"],
     "16777216 x 4096 = 68719476736 token slots, more than the 2147483647 the KV cache can address"),
    (["run", "--kv-dtype", "fp4"], "--kv-dtype: unknown KV cache type 'fp4' (accepted: auto (the device's own"),
    (["perplexity", "-f", "/etc/hostname", "--kv-dtype", "FP8"], "unknown KV cache type 'FP8' (accepted: auto"),
    (["serve", "--kv-blocks", "64", "--kv-memory-mib", "8"], "--kv-blocks excludes --kv-memory-mib"),
    (["serve", "--kv-memory-mib", "-1"], "--kv-memory-mib: '-1' is not in"),
    (["nosuch"], "unknown command 'nosuch'; the commands are run, chat,"),
    ([], "no command; the commands are run, chat,"),
]


@pytest.mark.parametrize("args,reason", CASES, ids=[" ".join(a) or "(none)" for a, _ in CASES])
def test_bad_command_line_is_one_error_line_and_exit_2(greta_bin, args, reason):
    p = run_greta(greta_bin, *args, check=False, timeout=30)
    lines = p.stderr.splitlines()
    assert p.returncode == 2, f"exit {p.returncode}, stderr: {p.stderr!r}"
    assert len(lines) == 1, f"expected one line, got {lines!r}"
    assert lines[0].startswith("greta: error: "), lines[0]
    assert reason in lines[0], lines[0]
    assert "--help" in lines[0]  # where to look next
    assert p.stdout == ""


@pytest.mark.parametrize("cmd", ["run", "chat", "info", "tokenize", "perplexity", "bench", "serve"])
def test_help_still_exits_0(greta_bin, cmd):
    p = run_greta(greta_bin, cmd, "--help", check=False, timeout=30)
    assert p.returncode == 0 and "Usage:" in p.stdout and p.stderr == ""


def test_values_in_range_are_accepted(greta_bin):
    # Exponent form and bounds are fine for a real-valued option; the error comes from the
    # missing prompt, a later check, not from the values.
    p = run_greta(greta_bin, "run", "--temp", "1e-1", "--top-p", "1", "--seed", "18446744073709551615",
                  check=False, timeout=30)
    assert p.returncode == 1 and "no prompt" in p.stderr, p.stderr
