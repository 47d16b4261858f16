"""Reading and printing the JSON lines the benchmarks write (one object per line; other lines,
such as log output mixed into a file, are skipped). Imported by the table tools next to it."""
import json


def read_json_lines(path):
    """Every JSON object of the file, in order; lines that are not one are left out."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def bench_row(r, var=None):
    """One `greta bench` line as a table row: model, what was measured, tokens/s, then TTFT for a
    prefill or the share of the device bandwidth for a decode, and the same-run output check.
    With var (an A/B run's switch), the row starts with VAR=value from the line's "ab" field."""
    what = r["measure"] + (f" b{r['batch']}" if r.get("batch", 1) > 1 else "") + f" p{r['prompt_len']}"
    speed = f"{r['tokens_per_s']:9.1f} tok/s"
    if "ttft_ms" in r:
        extra = f"ttft {r['ttft_ms']:.1f} ms"
    else:
        extra = f"{r.get('pct_of_bandwidth', 0):5.1f}% of {r.get('device_bandwidth_gb_s', 0):.0f} GB/s"
    head = f"{var}={r.get('ab', '?')} " if var else ""
    return (f"{head}{r['model']:24s} {what:24s} {speed} {extra:28s} check {r['check']} "
            f"(max diff {r['check_max_logit_diff']:.3g})")
