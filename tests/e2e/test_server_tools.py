"""Tool calling through the official openai client on the default model with the built-in
qwen2 template (Hermes-style <tool_call> blocks; SmolLM2 shares its ChatML tokens): tools are
rendered into the prompt, a named or required tool_choice yields calls whose arguments
validate against the function's parameters (jsonschema), streamed and not, tool_choice none
renders no tools, and bad tools are 400s naming the field. Streamed argument deltas and
parallel calls are test_server_tools_stream.py."""
import json

import pytest

from test_server_api import MODEL, Server, assert_error

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                            "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
ADD = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
       "required": ["a", "b"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "add", "description": "Adds two integers", "parameters": ADD}}]
PARAMS = {"get_weather": WEATHER, "add": ADD}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server(greta_bin, default_model):
    s = Server(greta_bin, default_model, "--ctx", 2048, "--chat-template", "qwen2")
    yield s
    s.stop()


def call(c, stream, **kw):
    """(content, [(name, arguments)], finish_reason, usage) of one chat completion."""
    args = dict(model=MODEL, messages=ASK, tools=TOOLS, **{"max_tokens": 100, "temperature": 0, **kw})
    if not stream:
        r = c.chat.completions.create(**args)
        ch = r.choices[0]
        calls = [(t.function.name, t.function.arguments) for t in ch.message.tool_calls or []]
        if calls:
            assert all(t.type == "function" and t.id.startswith("call_") for t in ch.message.tool_calls)
        return ch.message.content, calls, ch.finish_reason, r.usage
    content, calls, finish = "", [], None
    for chunk in c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **args):
        for ch in chunk.choices:
            content += ch.delta.content or ""
            for t in ch.delta.tool_calls or []:  # a call's first delta names it, the rest extend its arguments
                if t.index == len(calls):
                    assert t.id.startswith("call_") and t.type == "function"
                    calls.append([t.function.name, ""])
                calls[t.index][1] += t.function.arguments or ""
            finish = ch.finish_reason or finish
    return content or None, [tuple(x) for x in calls], finish, None


@pytest.mark.parametrize("parallel", [None, False])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "add"}}])
def test_forced_call_follows_the_parameters(server, stream, choice, parallel):
    extra = {} if parallel is None else {"parallel_tool_calls": parallel}
    content, calls, finish, _ = call(server.client(), stream, tool_choice=choice, **extra)
    assert finish == "tool_calls" and calls and not content, (content, calls, finish)
    if parallel is False:
        assert len(calls) == 1, calls
    for name, arguments in calls:
        if isinstance(choice, dict):
            assert name == "add"
        jsonschema.validate(json.loads(arguments), PARAMS[name])


@pytest.mark.parametrize("stream", [False, True])
def test_auto_answers_with_text_or_calls(server, stream):
    content, calls, finish, _ = call(server.client(), stream, tool_choice="auto", temperature=1, seed=3)
    if calls:
        assert finish == "tool_calls"
        for name, arguments in calls:
            assert name in PARAMS and isinstance(json.loads(arguments), dict)
    else:
        assert finish in ("stop", "length") and content


def test_tools_are_rendered_unless_choice_is_none(server):
    c = server.client()
    _, _, _, with_tools = call(c, False, max_tokens=1)
    _, calls, _, without = call(c, False, max_tokens=1, tool_choice="none")
    assert not calls
    assert with_tools.prompt_tokens > without.prompt_tokens + 50  # the tool signatures are in the prompt


def test_a_call_and_its_result_go_back_through_the_template(server):
    c = server.client()
    first = c.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, max_tokens=60, temperature=0,
                                      tool_choice={"type": "function", "function": {"name": "get_weather"}})
    msg = first.choices[0].message
    assert msg.tool_calls
    history = ASK + [msg.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "{\"temperature\": 21}"}]
    second = c.chat.completions.create(model=MODEL, messages=history, tools=TOOLS, max_tokens=5, temperature=0)
    assert second.choices[0].finish_reason in ("stop", "length", "tool_calls")
    # The call and the result are in the prompt now.
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + 20


BAD = [
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function.name"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice.function.name"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
    ({"tools": TOOLS, "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "not": {}}}}],
      "tool_choice": "required"}, "tools[0].function.parameters"),
]


@pytest.mark.parametrize("extra,param", BAD)
def test_bad_tools_are_400_naming_the_field(server, extra, param):
    err = assert_error(server.post("/v1/chat/completions", {"messages": ASK, "max_tokens": 2, **extra}), 400)
    assert err["param"] == param, err
