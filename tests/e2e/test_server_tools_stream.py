"""Streamed tool calls and parallel calls through the official openai client on the default model
(built-in qwen2 template, Hermes-style <tool_call> blocks): streamed deltas, accumulated by the
client's own stream helper (ChatCompletionStreamState), give the same tool_calls as the plain
response; arguments arrive in several deltas; several calls in one response, each its own index;
parallel_tool_calls false keeps one call and stops the generation there. Where the test needs two
calls for certain, a `grammar` makes the model write two blocks (the tools stay on auto); another
makes it write Mistral's `[TOOL_CALLS]name[ARGS]{...}` form, which streams the same way."""
import json

import pytest

from test_server_api import MODEL, Server
from test_server_tools import ASK, PARAMS, TOOLS

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")

# The model chooses the numbers and the city; the grammars fix the rest.
BLOCKS = r'''
add ::= "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": " num ", \"b\": " num "}}\n</tool_call>"
weather ::= "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"" [A-Z] [a-z]{1,10} "\", \"unit\": \"celsius\"}}\n</tool_call>"
num ::= [1-9] [0-9]{0,2}
'''
TWO_CALLS = 'root ::= add "\\n" weather' + BLOCKS
TEXT_THEN_CALL = 'root ::= "Let me look that up for you. " weather' + BLOCKS
# Mistral's tokenizer v7/v11+ form: a marker per call, the bare name, [ARGS] and the value.
MISTRAL_CALLS = r'''
root ::= "Let me look that up. [TOOL_CALLS]add[ARGS]{\"a\": " num ", \"b\": " num "}[TOOL_CALLS]get_weather[ARGS]{\"city\": \"" [A-Z] [a-z]{1,10} "\", \"unit\": \"celsius\"}"
num ::= [1-9] [0-9]{0,2}
'''


@pytest.fixture(scope="module")
def server(greta_bin, default_model):
    s = Server(greta_bin, default_model, "--ctx", 2048, "--chat-template", "qwen2")
    yield s
    s.stop()


def args_of(**kw):
    return dict(model=MODEL, messages=ASK, tools=TOOLS, **{"max_tokens": 120, "temperature": 0, "seed": 5, **kw})


def plain(c, **kw):
    """(content, [(name, arguments)], finish_reason, completion_tokens), ids checked."""
    r = c.chat.completions.create(**args_of(**kw))
    m = r.choices[0].message
    calls = m.tool_calls or []
    assert all(t.type == "function" and t.id.startswith("call_") for t in calls)
    assert len({t.id for t in calls}) == len(calls)
    return m.content, [(t.function.name, t.function.arguments) for t in calls], r.choices[0].finish_reason, \
        r.usage.completion_tokens


def streamed(c, **kw):
    """The same through client.chat.completions.stream, whose ChatCompletionStreamState
    accumulates the deltas by index. Also returns the argument deltas per call index, and
    checks the wire form: a call's first delta has id, type and name, later ones only arguments,
    and no content arrives once the calls began."""
    extra = kw.pop("extra_body", {})
    deltas, raw_starts = {}, {}
    calls_began = False
    with c.chat.completions.stream(**args_of(**kw), stream_options={"include_usage": True},
                                   extra_body=extra) as s:
        for event in s:
            if event.type == "chunk":
                for ch in event.chunk.choices:
                    if ch.delta.content:
                        assert not calls_began, ch.delta.content
                    for t in ch.delta.tool_calls or []:
                        calls_began = True
                        if t.index not in raw_starts:
                            raw_starts[t.index] = t
                            assert t.id.startswith("call_") and t.type == "function" and t.function.name
                            assert t.function.arguments == ""
                        else:
                            assert t.id is None and t.function.name is None
            elif event.type == "tool_calls.function.arguments.delta":
                deltas.setdefault(event.index, []).append(event.arguments_delta)
        final = s.get_final_completion()
    m = final.choices[0].message
    calls = [(t.function.name, t.function.arguments) for t in m.tool_calls or []]
    assert [raw_starts[i].id for i in range(len(calls))] == [t.id for t in m.tool_calls or []]
    for i, (_, arguments) in enumerate(calls):
        assert "".join(deltas.get(i, [])) == arguments
    return m.content, calls, final.choices[0].finish_reason, final.usage.completion_tokens, deltas


@pytest.mark.parametrize("choice", ["auto", "required", {"type": "function", "function": {"name": "get_weather"}}])
def test_streamed_deltas_reassemble_to_the_plain_response(server, choice):
    c = server.client()
    content, calls, finish, tokens = plain(c, tool_choice=choice)
    s_content, s_calls, s_finish, s_tokens, _ = streamed(c, tool_choice=choice)
    assert (s_content or None, s_calls, s_finish, s_tokens) == (content or None, calls, finish, tokens)
    if choice != "auto":
        assert calls and finish == "tool_calls"


def test_arguments_arrive_in_several_deltas(server):
    _, calls, finish, _, deltas = streamed(server.client(),
                                           tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert finish == "tool_calls" and calls[0][0] == "get_weather", calls
    jsonschema.validate(json.loads(calls[0][1]), PARAMS["get_weather"])
    assert len(deltas[0]) > 3, deltas  # the arguments as the model wrote them, token by token
    assert "<tool_call>" not in calls[0][1] and "</tool_call>" not in calls[0][1]


@pytest.mark.parametrize("stream", [False, True])
def test_parallel_calls_each_have_their_index(server, stream):
    c = server.client()
    got = (streamed if stream else plain)(c, tool_choice="auto", extra_body={"grammar": TWO_CALLS})
    content, calls, finish = got[:3]
    assert finish == "tool_calls" and not content, got
    assert [name for name, _ in calls] == ["add", "get_weather"], calls
    for name, arguments in calls:
        jsonschema.validate(json.loads(arguments), PARAMS[name])
    if stream:
        assert sorted(got[4]) == [0, 1]
        assert (got[0] or None, got[1:4]) == (None, plain(c, tool_choice="auto", extra_body={"grammar": TWO_CALLS})[1:])


def test_text_before_a_call_streams_as_content(server):
    c = server.client()
    pieces, saw_call = [], False
    for chunk in c.chat.completions.create(**args_of(tool_choice="auto", extra_body={"grammar": TEXT_THEN_CALL}),
                                           stream=True):
        for ch in chunk.choices:
            if ch.delta.content:
                assert not saw_call
                pieces.append(ch.delta.content)
            saw_call = saw_call or bool(ch.delta.tool_calls)
    assert saw_call and len(pieces) > 3, pieces  # the text went out as it came, before the call
    assert "".join(pieces) == "Let me look that up for you."  # the markup, and the space before it, are not content
    content, calls, finish, _ = plain(c, tool_choice="auto", extra_body={"grammar": TEXT_THEN_CALL})
    assert content == "Let me look that up for you." and finish == "tool_calls" and calls[0][0] == "get_weather"


@pytest.mark.parametrize("stream", [False, True])
def test_mistral_marker_calls_stream_like_blocks(server, stream):
    c = server.client()
    got = (streamed if stream else plain)(c, tool_choice="auto", extra_body={"grammar": MISTRAL_CALLS})
    content, calls, finish = got[:3]
    assert content == "Let me look that up." and finish == "tool_calls", got
    assert [name for name, _ in calls] == ["add", "get_weather"], calls
    for name, arguments in calls:
        jsonschema.validate(json.loads(arguments), PARAMS[name])
    if stream:
        assert len(got[4][0]) > 3 and len(got[4][1]) > 3, got[4]  # the arguments came token by token
        assert got[:4] == plain(c, tool_choice="auto", extra_body={"grammar": MISTRAL_CALLS})
    one = plain(c, tool_choice="auto", parallel_tool_calls=False, extra_body={"grammar": MISTRAL_CALLS})
    assert one[1] == calls[:1] and one[2] == "tool_calls", one


@pytest.mark.parametrize("stream", [False, True])
def test_parallel_tool_calls_false_keeps_one_call_and_stops_there(server, stream):
    c = server.client()
    both = plain(c, tool_choice="auto", extra_body={"grammar": TWO_CALLS})
    got = (streamed if stream else plain)(c, tool_choice="auto", parallel_tool_calls=False,
                                          extra_body={"grammar": TWO_CALLS})
    content, calls, finish, tokens = got[:4]
    assert finish == "tool_calls" and not content, got
    assert calls == both[1][:1]
    # The generation was stopped once the first call was complete: the second was never written.
    assert tokens < both[3] - 10, (tokens, both[3])


@pytest.mark.parametrize("stream", [False, True])
def test_forced_call_with_parallel_calls_off_is_one_call(server, stream):
    got = (streamed if stream else plain)(server.client(), tool_choice="required", parallel_tool_calls=False)
    assert got[2] == "tool_calls" and len(got[1]) == 1, got
