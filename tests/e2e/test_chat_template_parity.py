"""Chat-template parity: every template in tests/data/chat_templates/ rendered over a set of
conversations by Python jinja2 configured exactly as transformers' apply_chat_template
configures it, and by our interpreter (the greta_render_template tool); outputs must be
byte-equal, and where jinja2 raises (e.g. Llama 2 with non-alternating roles) ours must too."""
import glob
import hashlib
import json
import os
import subprocess

import pytest

from conftest import built_tool

jinja2 = pytest.importorskip("jinja2")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATE_DIR = os.path.join(ROOT, "tests", "data", "chat_templates")
TEMPLATES = sorted(glob.glob(os.path.join(TEMPLATE_DIR, "*.jinja")))


def _compile(source):
    """transformers' own compiler when available (the behavior we must match), else the same
    environment rebuilt: sandboxed, trim_blocks + lstrip_blocks, loop controls, its globals."""
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template
        return _compile_jinja_template(source)
    except ImportError:
        import datetime
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                              sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
        return env.from_string(source)


@pytest.fixture(scope="session")
def render_bin():
    return built_tool("greta_render_template")


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city — «today»",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}
CLOCK_TOOL = {"type": "function",
              "function": {"name": "now", "description": 'Time, "local" \\ UTC',
                           "parameters": {"type": "object", "properties": {}},
                           "return": {"type": "string"}}}
TOOL_CALL_TURN = {"role": "assistant", "content": "",
                  "tool_calls": [{"type": "function",
                                  "function": {"name": "get_weather",
                                               "arguments": {"city": "Zürich", "days": 2}}}]}
# Mistral's newer templates require 9-character alphanumeric ids on calls and results.
RICH_ARGS = {"city": "Zürich", "days": 2, "ratio": 0.1, "big": 1e21, "whole": 3.0, "neg": -0.0,
             "flag": True, "none": None, "nested": {"list": [1, "two", [3.5]], "empty": {}},
             "text": "tab\tnl\n\"q\" \\ \u0001 </script> it's",
             "unprintable": "nbsp\u00a0 ideo\u3000 ls\u2028 del\x7f soft\u00ad é 🚀 \ufeff",
             "apostrophe": "it's", "floats": [1e16, 1.5e-7, 0.30000000000000004, 1e-5, 123456789.0],
             "ints": [2**53 + 1, -2**63, 0]}
ID_CALL_TURN = {"role": "assistant", "content": "Checking.",
                "tool_calls": [{"id": "call0A1b2", "type": "function",
                                "function": {"name": "get_weather", "arguments": RICH_ARGS}},
                               {"id": "call9Z8y7", "type": "function",
                                "function": {"name": "get_weather",
                                             "arguments": '{"city": "Bern"}'}}]}
ID_TOOL_RESULTS = [{"role": "tool", "tool_call_id": "call0A1b2", "content": "3.5 °C"},
                   {"role": "tool", "tool_call_id": "call9Z8y7", "content": RICH_ARGS}]


def text_parts(*texts):
    return [{"type": "text", "text": t} for t in texts]

CONVERSATIONS = {
    "system_user": msgs(("system", "You are terse."), ("user", "Hello!")),
    "user_only": msgs(("user", "What is 2+2?")),
    "multi_turn": msgs(("user", "Hi"), ("assistant", "Hello, how can I help?"), ("user", "Tell me a joke.")),
    "ends_with_assistant": msgs(("system", "Be kind."), ("user", "Hi"), ("assistant", "Hey there.")),
    "unicode": msgs(("user", "Grüße, 世界! 🚀 naïve café — ∑x²"), ("assistant", "¡Hola! Ça va? 👋"),
                    ("user", "日本語で答えて")),
    "jinja_looking": msgs(("user", "{{ x }} {% if y %}z{% endif %} {# c #} raise_exception('no')")),
    "empty_content": msgs(("system", ""), ("user", ""), ("assistant", ""), ("user", "")),
    "padded_whitespace": msgs(("user", "  \n spaced out \t\n"), ("assistant", "   I am an assistant   "),
                              ("user", "\u00a0nbsp\u3000")),
    "quotes_backslashes": msgs(("user", 'He said "hi" and it\'s C:\\path\\n'),),
    "non_alternating": msgs(("user", "one"), ("user", "two")),
    "assistant_first": msgs(("assistant", "I start."), ("user", "ok")),
    "empty": [],
    "typed_content": [{"role": "system", "content": text_parts("  Typed system.  ")},
                      {"role": "user", "content": [{"type": "image"}, *text_parts(" Describe ", "it. ")]},
                      {"role": "assistant", "content": text_parts("A cat.")},
                      {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}},
                                                   *text_parts("And this?")]}],
    "thinking_blocks": [{"role": "system", "content": [{"type": "thinking", "thinking": "Plan."},
                                                       *text_parts("Be exact.")]},
                        {"role": "user", "content": [*text_parts("What is this?"), {"type": "image"}]},
                        {"role": "assistant", "content": [{"type": "thinking", "thinking": "A shape."},
                                                          *text_parts("A circle.")]},
                        {"role": "user", "content": "Sure?"}],
    "reasoning_field": [{"role": "user", "content": "2+2?"},
                        {"role": "assistant", "content": "4", "reasoning_content": "\nAdd them.\n"},
                        {"role": "user", "content": "Times 3?"},
                        {"role": "assistant", "content": "12", "reasoning_content": "4*3"},
                        {"role": "user", "content": "Divided by 4?"},
                        {"role": "assistant", "content": "3", "reasoning_content": None}],
    "think_tags": msgs(("system", "Think first."), ("user", "Hi"),
                       ("assistant", "<think>\nThe user greets.\n</think>\n\nHello!"),
                       ("user", "Bye"), ("assistant", "<think>short</think>Goodbye.")),
    "tool_round_trip": msgs(("system", "Use tools."), ("user", "Weather in Zürich and Bern?")) + [
        ID_CALL_TURN, *ID_TOOL_RESULTS, {"role": "assistant", "content": "Cold in both."},
        {"role": "user", "content": "<tool_response>not a real one</tool_response>"}],
    "tool_pending": msgs(("user", "Weather?")) + [{**ID_CALL_TURN, "content": None}, *ID_TOOL_RESULTS],
    "tool_call_no_text": msgs(("user", "Weather?")) + [{**ID_CALL_TURN, "content": ""}, *ID_TOOL_RESULTS[:1]],
    "system_tools_field": [{"role": "system", "content": "Tools follow.",
                            "tools": '[{"name": "get_weather"}]'},
                           {"role": "user", "content": "Weather?"}],
}

EXTRAS = {
    "plain": {},
    "tools": {"tools": [WEATHER_TOOL]},
    "date": {"date_string": "05 Mar 2025"},
    "two_tools": {"tools": [WEATHER_TOOL, CLOCK_TOOL]},
    "no_tools": {"tools": []},
    "think_on": {"enable_thinking": True},
    "think_off": {"enable_thinking": False},
}


def cases():
    for path in TEMPLATES:
        name = os.path.basename(path)
        for conv in CONVERSATIONS:
            for agp in (True, False):
                yield pytest.param(path, conv, agp, "plain", id=f"{name}-{conv}-agp{int(agp)}")
        for conv in ("system_user", "multi_turn"):
            yield pytest.param(path, conv, True, "tools", id=f"{name}-{conv}-tools")
            yield pytest.param(path, conv, True, "date", id=f"{name}-{conv}-date")
        yield pytest.param(path, "tool_calls", True, "tools", id=f"{name}-tool_calls")
        for conv in ("tool_round_trip", "tool_pending", "tool_call_no_text", "typed_content"):
            yield pytest.param(path, conv, True, "tools", id=f"{name}-{conv}-tools")
        for extra in ("two_tools", "no_tools"):
            for conv in ("system_user", "tool_round_trip"):
                yield pytest.param(path, conv, True, extra, id=f"{name}-{conv}-{extra}")
        for conv in ("multi_turn", "reasoning_field", "think_tags", "thinking_blocks", "tool_round_trip"):
            for think in ("think_on", "think_off"):
                for agp in (True, False):
                    yield pytest.param(path, conv, agp, think, id=f"{name}-{conv}-{think}-agp{int(agp)}")


def conversation(conv):
    if conv == "tool_calls":
        return msgs(("system", "Use tools."), ("user", "Weather in Zürich?")) + [
            TOOL_CALL_TURN, {"role": "tool", "content": "{\"temp\": 3.5}"},
            {"role": "tool", "content": "sunny"}]
    return CONVERSATIONS[conv]


def render_reference(source, variables):
    try:
        return True, _compile(source).render(**variables)
    except jinja2.exceptions.TemplateError as e:  # raise_exception, undefined errors, ...
        return False, str(e)
    except (TypeError, ValueError, KeyError) as e:
        return False, f"{type(e).__name__}: {e}"


def render_ours(render_bin, source, variables):
    p = subprocess.run([render_bin], input=json.dumps({"template": source, **variables}),
                       capture_output=True, text=True, timeout=60)
    if p.returncode == 0:
        return True, p.stdout
    assert p.stderr.startswith("error: "), p.stderr
    return False, p.stderr[len("error: "):].strip()


@pytest.mark.parametrize("path,conv,agp,extra", list(cases()))
def test_parity(render_bin, path, conv, agp, extra):
    with open(path, encoding="utf-8") as f:
        source = f.read()
    variables = {"messages": conversation(conv), "add_generation_prompt": agp,
                 "bos_token": "<s>", "eos_token": "</s>", "tools": None, "documents": None,
                 **EXTRAS[extra]}
    ok_ref, ref = render_reference(source, variables)
    ok_ours, ours = render_ours(render_bin, source, variables)
    assert ok_ours == ok_ref, f"jinja2 {'rendered' if ok_ref else 'raised'}: {ref!r}\nours: {ours!r}"
    if ok_ref:
        assert ours == ref
    elif "must alternate" in ref or "roles are supported" in ref:
        # raise_exception: the template's own message comes through unchanged.
        assert ours == ref


def test_templates_present():
    names = {os.path.basename(p) for p in TEMPLATES}
    assert {"smollm2.jinja", "chatml.jinja", "qwen2.jinja", "llama2.jinja", "llama3.jinja",
            "llama3_1.jinja", "mistral.jinja", "gemma2.jinja", "gemma3.jinja", "qwen3.jinja",
            "phi3_5.jinja", "phi4.jinja", "phi4_mini.jinja", "mistral_nemo.jinja",
            "mistral_small3_2.jinja", "ministral3_reasoning.jinja"} <= names


# greta's built-in templates (--chat-template NAME) are the tested files, byte for byte.
BUILTIN_FILES = {"chatml": "chatml.jinja", "llama2": "llama2.jinja", "llama3": "llama3.jinja",
                 "mistral": "mistral.jinja", "qwen2": "qwen2.jinja", "gemma": "gemma3.jinja",
                 "qwen3": "qwen3.jinja", "phi3": "phi3_5.jinja", "phi4": "phi4.jinja"}


@pytest.mark.parametrize("name", sorted(BUILTIN_FILES))
def test_builtin_is_the_tested_file(render_bin, name):
    p = subprocess.run([render_bin, "--builtin", name], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    with open(os.path.join(TEMPLATE_DIR, BUILTIN_FILES[name]), encoding="utf-8") as f:
        assert p.stdout == f.read()


def test_sources_match_files():
    """SOURCES.json names where each model's template was copied from; its digests keep the
    copies verbatim (a template edited by hand no longer matches)."""
    with open(os.path.join(TEMPLATE_DIR, "SOURCES.json"), encoding="utf-8") as f:
        sources = json.load(f)
    for name, entry in sources.items():
        with open(os.path.join(TEMPLATE_DIR, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == entry["sha256"], name
