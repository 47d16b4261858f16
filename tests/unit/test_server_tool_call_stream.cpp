// The incremental tool-call parser on hand-written model outputs: the whole parse of each, the
// same result however the output is split (at every byte boundary, one byte at a time), what
// is held back while markup may still form, and parallel_tool_calls false.
#include <gtest/gtest.h>

#include <random>

#include "server/openai_json.h"
#include "server/tool_call_header.h"
#include "server/tool_call_stream.h"

using namespace greta::server;
using Kind = ToolStreamDelta::Kind;

namespace {

ToolRequest tools(const std::string& extra = "") {
  return parse_request(R"({"messages":[{"role":"user","content":"x"}],"tools":[
    {"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}},
    {"type":"function","function":{"name":"ping"}}])" +
                           extra + "}",
                       true)
      .tools;
}

using Calls = std::vector<std::pair<std::string, std::string>>;  // (name, arguments)

struct Result {
  std::string content;
  Calls calls;
  bool operator==(const Result&) const = default;
};

std::ostream& operator<<(std::ostream& os, const Result& r) {
  os << "content=[" << r.content << "]";
  for (const auto& [n, a] : r.calls) os << " call " << n << "(" << a << ")";
  return os;
}

Result result_of(const ParsedOutput& p) {
  Result r{p.content, {}};
  for (const auto& c : p.calls) r.calls.emplace_back(c.name, c.arguments);
  return r;
}

// The deltas of `pieces` fed in turn, applied to one result; checks that every call starts
// once, before its arguments, with a fresh id.
Result feed(const std::vector<std::string>& pieces, const ToolRequest& t) {
  ToolCallStream s(t);
  ParsedOutput out;
  std::vector<std::string> ids;
  auto apply = [&](const std::vector<ToolStreamDelta>& ds) {
    for (const auto& d : ds) {
      if (d.kind == Kind::CallStart) {
        EXPECT_EQ(d.index, int(ids.size()));
        EXPECT_EQ(d.id.rfind("call_", 0), 0u);
        for (const auto& id : ids) EXPECT_NE(id, d.id);
        ids.push_back(d.id);
      } else if (d.kind == Kind::Arguments) {
        EXPECT_LT(d.index, int(ids.size()));
        EXPECT_FALSE(d.text.empty());
      } else {
        EXPECT_FALSE(d.text.empty());
      }
    }
    apply_deltas(out, ds);
  };
  for (const auto& p : pieces) apply(s.push(p));
  apply(s.finish());
  EXPECT_EQ(s.calls(), int(out.calls.size()));
  return result_of(out);
}

struct Case {
  std::string text;
  Result expected;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      // Hermes blocks, text before, a newline between; arguments as a JSON string are its text.
      {"Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"n\": [1, {}]}}"
       "\n</tool_call>\n<tool_call>{\"name\": \"ping\", \"arguments\": \"{\\\"a\\\": 1}\"}</tool_call>",
       {"Let me check.", {{"get_weather", "{\"city\": \"Oslo\", \"n\": [1, {}]}"}, {"ping", "{\"a\": 1}"}}}},
      // No calls: the text byte for byte, whitespace and all.
      {" Plain text,  no calls. \n", {" Plain text,  no calls. \n", {}}},
      {"x < y and <tool_ca", {"x < y and <tool_ca", {}}},
      {"1 <<tool_call>{\"name\": \"ping\", \"arguments\": {}}</</tool_call>", {"1 <", {{"ping", "{}"}}}},
      {"a <tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call> b",
       {"a <tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call> b", {}}},
      {"<tool_call>{\"name\": \"ping\", \"arguments\": </tool_call>",
       {"<tool_call>{\"name\": \"ping\", \"arguments\": </tool_call>", {}}},
      {"<tool_call>{\"name\": \"pi", {"<tool_call>{\"name\": \"pi", {}}},
      {"[1] is a footnote", {"[1] is a footnote", {}}},
      {"{\"answer\": 42}", {"{\"answer\": 42}", {}}},
      {"  [TOOL_", {"  [TOOL_", {}}},
      {"[TOOL_CALLS]hello", {"[TOOL_CALLS]hello", {}}},
      // Another key order: read whole at the block's close; text after a call.
      {"<tool_call>{\"arguments\": {\"x\": [1, \"}\"]}, \"name\": \"ping\"}</tool_call>\n done",
       {"done", {{"ping", "{\"x\":[1,\"}\"]}"}}}},
      // Strings with braces, escapes and markup-like text stay inside the arguments.
      {"<tool_call>{\"name\": \"ping\", \"arguments\": {\"q\": \"a}<\\\"b\\\\\", \"r\": \"</tool_call>\"}}</tool_call>",
       {"", {{"ping", "{\"q\": \"a}<\\\"b\\\\\", \"r\": \"</tool_call>\"}"}}}},
      {"<tool_call>{\"name\": \"ping\", \"arguments\": null}</tool_call>", {"", {{"ping", "{}"}}}},
      // Cut short by max_tokens: the call stands with what was written.
      {"<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Os",
       {"", {{"get_weather", "{\"city\": \"Os"}}}},
      // A value missing its closing brace ends at the markup.
      {"<tool_call>{\"name\": \"ping\", \"arguments\": {\"a\": 1</tool_call>", {"", {{"ping", "{\"a\": 1"}}}},
      {"M\xC3\xA9t\xC3\xA9o: <tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Z\xC3\xBCrich "
       "\xE6\x9D\xB1\xE4\xBA\xAC\"}}</tool_call>",
       {"M\xC3\xA9t\xC3\xA9o:", {{"get_weather", "{\"city\": \"Z\xC3\xBCrich \xE6\x9D\xB1\xE4\xBA\xAC\"}"}}}},
      // Whole-output calls: Llama (python tag, "parameters", "type" first, several), Mistral.
      {"<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}",
       {"", {{"get_weather", "{\"city\": \"Rome\"}"}}}},
      {"{\"type\": \"function\", \"name\": \"ping\", \"parameters\": {}}; {\"name\": \"get_weather\", "
       "\"parameters\": {\"city\": \"A\"}}",
       {"", {{"ping", "{}"}, {"get_weather", "{\"city\": \"A\"}"}}}},
      {"[TOOL_CALLS] [{\"name\": \"ping\", \"arguments\": {}, \"id\": \"x{\"}, {\"name\": \"get_weather\", "
       "\"arguments\": {\"unit\": \"f\"}}]",
       {"", {{"ping", "{}"}, {"get_weather", "{\"unit\": \"f\"}"}}}},
      {" {\"name\": \"ping\", \"arguments\": {}}\nThat is all.", {"That is all.", {{"ping", "{}"}}}},
      // Text on both sides of a call: the whitespace between the two stays.
      {"First.\n<tool_call>{\"name\": \"ping\", \"arguments\": {}}</tool_call>\nSecond. ",
       {"First.\n\nSecond.", {{"ping", "{}"}}}},
      {"{\"name\": \"ping\", \"arguments\": {}} {\"name\": \"rm\"}", {"{\"name\": \"rm\"}", {{"ping", "{}"}}}},
      {"[{\"name\": \"ping\", \"arguments\": 7}]", {"", {{"ping", "7"}}}},
      // Not streamable (key order), read whole at the end.
      {"[{\"arguments\": {}, \"name\": \"ping\"}]", {"", {{"ping", "{}"}}}},
      // Mistral's tokenizer v7/v11+ form: one marker per call, an optional call id, markers in text.
      {"[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}", {"", {{"get_weather", "{\"city\": \"Paris\"}"}}}},
      {"[TOOL_CALLS]ping[ARGS]{}[TOOL_CALLS]get_weather[CALL_ID]a1B2c3D4e[ARGS]{\"q\": \"[TOOL_CALLS]x]\"}",
       {"", {{"ping", "{}"}, {"get_weather", "{\"q\": \"[TOOL_CALLS]x]\"}"}}}},
      {"Checking.\n[TOOL_CALLS]ping[ARGS] {\"a\": [1]}\nDone. [x]",
       {"Checking.\n\nDone. [x]", {{"ping", "{\"a\": [1]}"}}}},
      {" [TOOL_CALLS]ping[ARGS]\"{\\\"a\\\": 1}\"\n[TOOL_CALLS]ping[ARGS]null",
       {"", {{"ping", "{\"a\": 1}"}, {"ping", "{}"}}}},
      {"[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Os", {"", {{"get_weather", "{\"city\": \"Os"}}}},
      {"[TOOL_CALLS][TOOL_CALLS]ping[ARGS]7", {"[TOOL_CALLS]", {{"ping", "7"}}}},
      // Not a call: an unknown tool, a cut header, a name with no [ARGS]; all of it is text.
      {"[TOOL_CALLS]rm[ARGS]{}", {"[TOOL_CALLS]rm[ARGS]{}", {}}},
      {"a [TOOL_CALLS]ping[CALL_ID]x[AR", {"a [TOOL_CALLS]ping[CALL_ID]x[AR", {}}},
      {"[TOOL_CALLS]ping {}", {"[TOOL_CALLS]ping {}", {}}},
  };
  return c;
}

}  // namespace

TEST(ServerToolCallStream, WholeOutputsParse) {
  const ToolRequest t = tools();
  for (const Case& c : cases()) EXPECT_EQ(result_of(parse_tool_calls(c.text, t)), c.expected) << c.text;
}

TEST(ServerToolCallStream, EverySplitGivesTheWholeParse) {
  for (const ToolRequest& t : {tools(), tools(R"(,"parallel_tool_calls":false)")}) {
    for (const Case& c : cases()) {
      const Result whole = result_of(parse_tool_calls(c.text, t));
      for (size_t k = 0; k <= c.text.size(); ++k)
        ASSERT_EQ(feed({c.text.substr(0, k), c.text.substr(k)}, t), whole) << c.text << " split at " << k;
      std::vector<std::string> bytes;
      for (char ch : c.text) bytes.emplace_back(1, ch);
      ASSERT_EQ(feed(bytes, t), whole) << c.text << " byte by byte";
      std::mt19937 rng(7);
      for (int trial = 0; trial < 20; ++trial) {
        std::vector<std::string> pieces;
        for (size_t at = 0; at < c.text.size();) {
          const size_t n = std::uniform_int_distribution<size_t>(1, 6)(rng);
          pieces.push_back(c.text.substr(at, n));
          at += n;
        }
        ASSERT_EQ(feed(pieces, t), whole) << c.text << " random pieces, trial " << trial;
      }
    }
  }
}

// Random outputs: text, call blocks and whole-output calls with random arguments, then
// fragments of markup inserted and the end cut off at random. However they are split, the
// result is the whole parse, and an output without calls is its own content.
TEST(ServerToolCallStream, RandomOutputsSplitAnyway) {
  const std::vector<std::string> fragments = {"<tool_call>",
                                              "</tool_call>",
                                              "<tool_",
                                              "{",
                                              "}",
                                              "[",
                                              "]",
                                              "\"name\"",
                                              "\"arguments\"",
                                              "\"ping\"",
                                              ":",
                                              ",",
                                              ";",
                                              " ",
                                              "\n",
                                              "x",
                                              "\\",
                                              "\"",
                                              "<",
                                              "[TOOL_CALLS]",
                                              "[ARGS]",
                                              "[CALL_ID]",
                                              "ping",
                                              "<|python_tag|>",
                                              "null",
                                              "7",
                                              "\xC3\xA9"};
  const std::vector<std::string> values = {
      "{}", "{\"a\": [1, \"}\"]}", "\"{\\\"b\\\": 2}\"", "null", "{\"s\": \"</tool_call> \\\" {\"}", "[]"};
  std::mt19937 rng(11);
  auto pick = [&](const std::vector<std::string>& v) {
    return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng)];
  };
  auto coin = [&](int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng) == 0; };
  auto name = [&] { return std::string(coin(2) ? "ping" : "get_weather"); };
  auto call = [&] { return "{\"name\": \"" + name() + "\", \"arguments\": " + pick(values) + "}"; };
  auto mistral = [&] { return "[TOOL_CALLS]" + name() + (coin(3) ? "[CALL_ID]x9" : "") + "[ARGS]" + pick(values); };
  int with_calls = 0, without = 0;
  for (const ToolRequest& t : {tools(), tools(R"(,"parallel_tool_calls":false)")}) {
    for (int n = 0; n < 300; ++n) {
      std::string text = coin(4) ? (coin(2) ? "[TOOL_CALLS] [" + call() + ", " + call() + "]" : call()) : "";
      for (int i = std::uniform_int_distribution<int>(0, 4)(rng); i > 0; --i) {
        const int kind = std::uniform_int_distribution<int>(0, 3)(rng);
        text += kind == 0   ? "<tool_call>\n" + call() + "\n</tool_call>"
                : kind == 1 ? mistral()
                            : pick(fragments) + pick(fragments);
      }
      for (int i = std::uniform_int_distribution<int>(0, 2)(rng); i > 0; --i)
        text.insert(std::uniform_int_distribution<size_t>(0, text.size())(rng), pick(fragments));
      if (coin(4)) text.resize(std::uniform_int_distribution<size_t>(0, text.size())(rng));
      const Result whole = result_of(parse_tool_calls(text, t));
      if (whole.calls.empty()) {
        EXPECT_EQ(whole.content, text);
      }
      (whole.calls.empty() ? without : with_calls)++;
      std::vector<std::string> bytes;
      for (char ch : text) bytes.emplace_back(1, ch);
      ASSERT_EQ(feed(bytes, t), whole) << text;
      std::vector<std::string> pieces;
      for (size_t at = 0; at < text.size();) {
        const size_t k = std::uniform_int_distribution<size_t>(1, 9)(rng);
        pieces.push_back(text.substr(at, k));
        at += k;
      }
      ASSERT_EQ(feed(pieces, t), whole) << text;
    }
  }
  EXPECT_GT(with_calls, 100);
  EXPECT_GT(without, 100);
}

TEST(ServerToolCallStream, ArgumentsStreamAsTheyArrive) {
  const ToolRequest t = tools();
  ToolCallStream s(t);
  auto one = [](const std::vector<ToolStreamDelta>& d, Kind k, const std::string& text) {
    ASSERT_EQ(d.size(), 1u);
    EXPECT_EQ(d[0].kind, k);
    EXPECT_EQ(d[0].text, text);
  };
  one(s.push("Hello <tool"), Kind::Content, "Hello");  // the space waits: it may precede a call
  EXPECT_TRUE(s.push("_call>\n{\"name\": \"get_w").empty());
  const auto start = s.push("eather\", \"arguments\": {\"ci");
  ASSERT_EQ(start.size(), 2u);
  EXPECT_EQ(start[0].kind, Kind::CallStart);
  EXPECT_EQ(start[0].name, "get_weather");
  EXPECT_EQ(start[1].kind, Kind::Arguments);
  EXPECT_EQ(start[1].text, "{\"ci");
  one(s.push("ty\": \"Oslo"), Kind::Arguments, "ty\": \"Oslo");
  one(s.push("\"}}\n</tool_"), Kind::Arguments, "\"}");
  EXPECT_TRUE(s.push("call>").empty());
  EXPECT_TRUE(s.finish().empty());
  EXPECT_EQ(s.calls(), 1);

  // A held tail that turns out not to be markup is released with what follows.
  ToolCallStream u(t);
  one(u.push("Hi <tool_"), Kind::Content, "Hi");
  one(u.push("box>"), Kind::Content, " <tool_box>");
  EXPECT_TRUE(u.finish().empty());
}

TEST(ServerToolCallStream, OneCallWhenParallelCallsAreOff) {
  const ToolRequest t = tools(R"(,"parallel_tool_calls":false)");
  ToolCallStream s(t);
  s.push("<tool_call>{\"name\": \"ping\", \"arguments\": {}}");
  EXPECT_FALSE(s.done());
  s.push("</tool_call>");
  EXPECT_TRUE(s.done());  // the server stops the generation here
  EXPECT_TRUE(s.push("\n<tool_call>{\"name\": \"ping\", \"arguments\": {}}</tool_call> more").empty());
  EXPECT_TRUE(s.finish().empty());
  EXPECT_EQ(s.calls(), 1);
  const Result mistral = result_of(parse_tool_calls(
      "[TOOL_CALLS] [{\"name\": \"ping\", \"arguments\": {}}, {\"name\": \"get_weather\", \"arguments\": {}}]", t));
  EXPECT_EQ(mistral, (Result{"", {{"ping", "{}"}}}));
  EXPECT_EQ(result_of(parse_tool_calls("[{\"arguments\": {}, \"name\": \"ping\"}, {\"name\": \"ping\"}]", t)),
            (Result{"", {{"ping", "{}"}}}));

  ToolCallStream m(t);
  m.push("[TOOL_CALLS]ping[ARGS]{\"a\": 1");
  EXPECT_FALSE(m.done());
  m.push("}");
  EXPECT_TRUE(m.done());  // the value ends the call: no closing markup to wait for
  EXPECT_TRUE(m.push("[TOOL_CALLS]get_weather[ARGS]{} more").empty());
  EXPECT_TRUE(m.finish().empty());
  EXPECT_EQ(m.calls(), 1);
}

TEST(ServerToolCallStream, MistralCallsStreamAsTheyArrive) {
  const ToolRequest t = tools();
  ToolCallStream s(t);
  auto kinds = [](const std::vector<ToolStreamDelta>& d) {
    std::string k;
    for (const auto& x : d) k += x.kind == Kind::Content ? 'c' : x.kind == Kind::CallStart ? 's' : 'a';
    return k;
  };
  const auto text = s.push("Sure. [TOOL_CALLS]get_wea");
  ASSERT_EQ(kinds(text), "c");
  EXPECT_EQ(text[0].text, "Sure.");           // the space and the marker wait
  EXPECT_TRUE(s.push("ther[ARGS]").empty());  // the name is known, the arguments not begun
  const auto start = s.push(" {\"city\"");
  ASSERT_EQ(kinds(start), "sa");
  EXPECT_EQ(start[0].name, "get_weather");
  EXPECT_EQ(start[1].text, "{\"city\"");
  const auto rest = s.push(": \"Oslo\"}[TOOL_CALLS]ping[ARGS]{}");
  ASSERT_EQ(kinds(rest), "asa");
  EXPECT_EQ(rest[0].text, ": \"Oslo\"}");
  EXPECT_EQ(rest[1].index, 1);
  EXPECT_EQ(rest[2].text, "{}");
  EXPECT_TRUE(s.finish().empty());
  EXPECT_EQ(s.calls(), 2);
}

TEST(ServerToolCallStream, NothingIsACallWithToolChoiceNone) {
  const ToolRequest t = tools(R"(,"tool_choice":"none")");
  const std::string text = "<tool_call>{\"name\": \"ping\", \"arguments\": {}}</tool_call>";
  EXPECT_EQ(feed({text.substr(0, 5), text.substr(5)}, t), (Result{text, {}}));
}

TEST(ServerToolCallStream, HeadersResolveAsSoonAsTheyCan) {
  const ToolRequest t = tools();
  using S = CallHeader::Status;
  const std::vector<std::pair<std::string, S>> objects = {
      {"", S::Partial},
      {" {\"", S::Partial},
      {"{\"type\": \"function\", \"na", S::Partial},
      {"{\"name\": \"get_weather\", \"arguments\": ", S::Partial},
      {"{\"name\": \"ping\",\n\"parameters\":7", S::Complete},
      {"{\"name\": \"rm\"", S::Mismatch},   // no such tool
      {"{\"name\": \"pi ng", S::Mismatch},  // not a name
      {"{\"arguments\": {}", S::Mismatch},  // other order
      {"{\"name\": \"ping\", \"arguments\": <", S::Mismatch},
      {"{\"type\": \"code\"", S::Mismatch},
      {"{" + std::string(kMaxCallHeader, ' '), S::Mismatch},
      {"{\"name\": \"" + std::string(65, 'a'), S::Mismatch},
  };
  for (const auto& [text, status] : objects) EXPECT_EQ(scan_call_header(text, t).status, status) << text;
  const CallHeader h = scan_call_header("{\"name\": \"get_weather\", \"arguments\": {", t);
  EXPECT_EQ(h.status, S::Complete);
  EXPECT_EQ(h.name, "get_weather");
  EXPECT_EQ(h.value_at, 37u);

  const std::vector<std::pair<std::string, S>> markers = {
      {"get_weath", S::Partial},
      {"ping[CALL_", S::Partial},
      {"ping[CALL_ID]ab1[AR", S::Partial},
      {"ping[ARGS] ", S::Partial},
      {"rm[", S::Mismatch},          // no such tool
      {"[ARGS]", S::Mismatch},       // no name
      {"ping{", S::Mismatch},        // no [ARGS]
      {"ping[ARGS]<", S::Mismatch},  // no value
      {std::string(65, 'a'), S::Mismatch},
  };
  for (const auto& [text, status] : markers) EXPECT_EQ(scan_mistral_header(text, t).status, status) << text;
  const CallHeader m = scan_mistral_header("get_weather[CALL_ID]ab1[ARGS] {", t);
  EXPECT_EQ(m.status, S::Complete);
  EXPECT_EQ(m.name, "get_weather");
  EXPECT_EQ(m.value_at, 30u);
}
