"""Structured outputs through the official openai client on the default model (CPU, loopback):
response_format with a pydantic model (chat.completions.parse), json_schema and json_object,
the `grammar` (GBNF) and `regex` extension fields, streaming and not, logit_bias, the 400s for
what cannot be honoured, and a small fuzz over random schemas at temperature 1. Every output
must parse and validate (jsonschema, formats checked) or have finished by length."""
import json
import random
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from test_server_api import MODEL, Server, assert_error

openai = pytest.importorskip("openai")
jsonschema = pytest.importorskip("jsonschema")
pydantic = pytest.importorskip("pydantic")

ASK = [{"role": "user", "content": "Describe a person as JSON: name, age and a few hobbies."}]


@pytest.fixture(scope="module")
def server(greta_bin, default_model):
    s = Server(greta_bin, default_model, "--ctx", 1024)
    yield s
    s.stop()


def validate(text, schema):
    """The text is one JSON value valid under the schema (formats checked)."""
    value = json.loads(text)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(value)
    return value


def check_output(text, finish_reason, schema):
    """The validated value, or None for an output cut by length."""
    if finish_reason == "length":
        return None
    assert finish_reason == "stop", finish_reason
    return validate(text, schema)


def chat(c, stream=False, **kw):
    """(text, finish_reason) of one chat completion, streamed or not."""
    args = dict(model=MODEL, messages=kw.pop("messages", ASK), max_tokens=kw.pop("max_tokens", 120), **kw)
    if not stream:
        r = c.chat.completions.create(**args)
        return r.choices[0].message.content, r.choices[0].finish_reason
    text, finish = "", None
    for chunk in c.chat.completions.create(stream=True, **args):
        for ch in chunk.choices:
            text += ch.delta.content or ""
            finish = ch.finish_reason or finish
    return text, finish


class Person(pydantic.BaseModel):
    name: str
    age: int
    hobbies: list[str] = pydantic.Field(max_length=3)


def parse_api(c):
    return c.chat.completions.parse if hasattr(c.chat.completions, "parse") else c.beta.chat.completions.parse


def test_pydantic_model_through_parse(server):
    c = server.client()
    try:
        r = parse_api(c)(model=MODEL, messages=ASK, response_format=Person, max_tokens=200, temperature=0)
    except openai.LengthFinishReasonError:
        return  # the grammar was followed but the output did not fit: allowed
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(msg.parsed, Person)
    validate(msg.content, Person.model_json_schema())


SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "population": {"type": "integer", "minimum": 0, "maximum": 100000000},
        "tags": {"type": "array", "items": {"enum": ["old", "big", "coastal"]}, "maxItems": 3},
        "id": {"type": "string", "format": "uuid"},
    },
    "required": ["city", "population", "id"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_plain_and_streamed(server, stream):
    rf = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA, "strict": True}}
    c = server.client()
    text, finish = chat(c, stream, response_format=rf, temperature=0, max_tokens=150,
                        messages=[{"role": "user", "content": "Give me a city as JSON."}])
    assert finish == "stop", text  # greedy on this prompt completes well within 150 tokens
    v = validate(text, SCHEMA)
    assert list(v)[:2] == ["city", "population"]  # required properties in the schema's order


@pytest.mark.parametrize("stream", [False, True])
def test_json_object(server, stream):
    text, finish = chat(server.client(), stream, response_format={"type": "json_object"}, temperature=0)
    if finish != "length":
        assert isinstance(json.loads(text), dict)


GBNF = r'''root ::= answer ", because " reason "."
answer ::= "yes" | "no"
reason ::= [a-z]+ (" " [a-z]+){0,6}
'''


@pytest.mark.parametrize("stream", [False, True])
def test_gbnf_grammar(server, stream):
    text, finish = chat(server.client(), stream, extra_body={"grammar": GBNF}, temperature=0.7, seed=3,
                        messages=[{"role": "user", "content": "Is the sky blue?"}])
    if finish == "stop":
        assert re.fullmatch(r"(yes|no), because [a-z]+( [a-z]+){0,6}\.", text), text


@pytest.mark.parametrize("name", ["json.gbnf", "json_arr.gbnf"])
def test_llamacpp_corpus_grammar_outputs_parse(server, root, name):
    """llama.cpp's own JSON grammars, sent as llama-server users send them: what comes out parses."""
    with open(f"{root}/tests/data/gbnf/{name}") as f:
        gbnf = f.read()
    c = server.client()
    for seed in (1, 2):
        text, finish = chat(c, seed % 2 == 0, extra_body={"grammar": gbnf}, temperature=1, seed=seed, max_tokens=80)
        if finish == "stop":
            value = json.loads(text)
            assert isinstance(value, list if name == "json_arr.gbnf" else dict), text


def test_n_choices_each_follow_the_grammar(server):
    pattern = r"[A-Z][a-z]{2,8} (is|was) [0-9]+"
    r = server.client().chat.completions.create(model=MODEL, messages=ASK, n=3, temperature=1, seed=11,
                                                max_tokens=30, extra_body={"regex": pattern})
    assert len(r.choices) == 3
    for ch in r.choices:
        assert ch.finish_reason == "length" or re.fullmatch(pattern, ch.message.content), ch.message.content


@pytest.mark.parametrize("stream", [False, True])
def test_regex_on_chat_and_completions(server, stream):
    pattern = r"(red|green|blue)-[0-9]{2,4}"
    c = server.client()
    text, finish = chat(c, stream, extra_body={"regex": pattern}, temperature=1, seed=5)
    assert finish == "stop" and re.fullmatch(pattern, text), (text, finish)  # the grammar ends by itself
    r = c.completions.create(model=MODEL, prompt="A colour code:", max_tokens=20, temperature=1, seed=9,
                             extra_body={"regex": pattern})
    assert r.choices[0].finish_reason == "stop" and re.fullmatch(pattern, r.choices[0].text)


def test_grammar_that_cannot_finish_in_time_ends_by_length(server):
    text, finish = chat(server.client(), extra_body={"regex": "a{200}"}, max_tokens=5, temperature=0)
    assert finish == "length" and set(text) <= {"a"}


def test_logit_bias(server):
    c = server.client()
    prompt = "The capital of France is"
    base = c.completions.create(model=MODEL, prompt=prompt, max_tokens=3, temperature=0, logprobs=0)
    # +100 makes one token win every draw, whatever the prompt.
    forced = c.completions.create(model=MODEL, prompt=prompt, max_tokens=3, temperature=1,
                                  logit_bias={"28": 100}, logprobs=0)
    toks = forced.choices[0].logprobs.tokens
    assert len(set(toks)) == 1 and toks[0] != base.choices[0].logprobs.tokens[0]
    other = c.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=2, temperature=0,
                                 logit_bias={"28": 100}, logprobs=0)
    assert other.choices[0].logprobs.tokens == toks[:2]


BAD = [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {}}}}},
     "response_format.json_schema.schema", "not"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}},
     "response_format.json_schema.name", "name"),
    ({"response_format": {"type": "yaml"}}, "response_format.type", "json_object"),
    ({"grammar": "root ::= [a-"}, "grammar", "line 1"),
    ({"grammar": "root ::= missing"}, "grammar", "missing"),
    ({"regex": "(?=a)b"}, "regex", "lookahead"),
    ({"regex": "a", "grammar": 'root ::= "a"'}, "regex", "only one"),
    ({"response_format": {"type": "json_object"}, "grammar": 'root ::= "a"'}, "grammar", "only one"),
    ({"logit_bias": {"1": 101}}, "logit_bias", "[-100, 100]"),
    ({"logit_bias": {"01": 1}}, "logit_bias", "decimal"),
    ({"logit_bias": {"1000000": 1}}, "logit_bias", "vocabulary"),
    ({"logit_bias": {"1": "x"}}, "logit_bias", "number"),
]


@pytest.mark.parametrize("extra,param,says", BAD)
def test_bad_constraints_are_400_naming_the_field(server, extra, param, says):
    r = server.post("/v1/chat/completions", {"messages": ASK, "max_tokens": 4, **extra})
    err = assert_error(r, 400)
    assert err["param"] == param and says in err["message"], err
    # and the server keeps serving
    assert server.post("/v1/completions", {"prompt": "Hi", "max_tokens": 1}).status_code == 200


# --- fuzz: random schemas at temperature 1 ---------------------------------------------------

def random_schema(rng, depth=0):
    kinds = ["string", "integer", "number", "boolean", "enum", "null"]
    if depth < 2:
        kinds += ["object", "array", "anyOf"]
    k = rng.choice(kinds)
    if k == "string":
        s = {"type": "string"}
        if rng.random() < 0.3:
            s["maxLength"] = rng.randint(1, 12)
        if rng.random() < 0.2:
            s["pattern"] = rng.choice(["^[a-z]+$", "^[0-9]{3}-[0-9]{2}$", "^(ab|cd)*$"])
        elif rng.random() < 0.15:
            s["format"] = rng.choice(["date", "uuid"])
        return s
    if k == "integer":
        s = {"type": "integer"}
        if rng.random() < 0.5:
            lo = rng.randint(-50, 50)
            s.update(minimum=lo, maximum=lo + rng.randint(0, 500))
        return s
    if k == "enum":
        return {"enum": rng.sample(["a", "b", 1, 2.5, True, None, "x y"], rng.randint(1, 4))}
    if k == "object":
        props = {f"k{i}": random_schema(rng, depth + 1) for i in range(rng.randint(1, 4))}
        req = [p for p in props if rng.random() < 0.6]
        return {"type": "object", "properties": props, "required": req, "additionalProperties": False}
    if k == "array":
        s = {"type": "array", "items": random_schema(rng, depth + 1)}
        s["maxItems"] = rng.randint(0, 3)
        if rng.random() < 0.5:
            s["minItems"] = rng.randint(0, s["maxItems"])
        return s
    if k == "anyOf":
        return {"anyOf": [random_schema(rng, depth + 1) for _ in range(2)]}
    return {"type": k}


def test_fuzz_random_schemas_validate_or_end_by_length(server):
    rng = random.Random(1234)
    schemas = [{"type": "object", "properties": {"v": random_schema(rng)}, "required": ["v"],
                "additionalProperties": False} for _ in range(8)]
    c = server.client()

    def one(i):
        rf = {"type": "json_schema", "json_schema": {"name": f"s{i}", "schema": schemas[i]}}
        return chat(c, i % 2 == 1, response_format=rf, temperature=1, seed=i, max_tokens=60,
                    messages=[{"role": "user", "content": "Answer in JSON."}])

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(len(schemas))))
    validated = 0
    for schema, (text, finish) in zip(schemas, results):
        try:
            validated += check_output(text, finish, schema) is not None
        except Exception as e:
            raise AssertionError(f"schema {json.dumps(schema)}\noutput {text!r} ({finish})") from e
    assert validated >= len(schemas) // 2, results  # most end by themselves: the test checks something


def test_mask_work_is_in_the_metrics(server):
    before = server.metrics()["greta_grammar_masks_total"]
    r = server.client().chat.completions.create(model=MODEL, messages=ASK, max_tokens=8, temperature=0,
                                                extra_body={"regex": "[a-z]{5,20}"})
    m = server.metrics()
    assert m["greta_grammar_masks_total"] - before >= r.usage.completion_tokens  # one mask per constrained draw
    assert m["greta_grammar_mask_seconds_total"] > 0 and m["greta_grammar_mask_wait_seconds_total"] >= 0
