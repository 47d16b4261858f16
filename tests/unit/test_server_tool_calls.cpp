// tools / tool_choice / parallel_tool_calls parsing, the forced-call grammar, parsing the model's
// calls (Hermes-style <tool_call> blocks and the whole-JSON fallback) into OpenAI tool_calls,
// and the wire form of calls. The streamed parse is test_server_tool_call_stream.cpp.
#include <gtest/gtest.h>

#include "chat/chat_template.h"
#include "grammar/gbnf_parser.h"
#include "server/openai_json.h"
#include "server/tool_call_stream.h"
#include "server/tool_calls.h"

using namespace greta;
using namespace greta::server;
using Choice = ToolRequest::Choice;

namespace {

const char* kTools = R"("tools":[
  {"type":"function","function":{"name":"get_weather","description":"d",
   "parameters":{"type":"object","properties":{"city":{"type":"string"},"unit":{"enum":["c","f"]}},
                 "required":["city","unit"]}}},
  {"type":"function","function":{"name":"ping"}}])";

ApiRequest chat(const std::string& extra) {
  return parse_request(R"({"messages":[{"role":"user","content":"x"}],)" + extra + "}", true);
}

std::string refused_param(const std::string& extra, bool is_chat = true) {
  try {
    const std::string body = is_chat ? R"({"messages":[{"role":"user","content":"x"}],)" + extra + "}"
                                     : R"({"prompt":"x",)" + extra + "}";
    ApiRequest r = parse_request(body, is_chat);
    if (r.tools.forced()) forced_tool_call_gbnf(r.tools);
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    const auto p = e.body()["error"]["param"];
    return p.is_string() ? p.get<std::string>() : "";
  }
  return "<accepted>";
}

bool accepts(const std::string& gbnf, const std::string& text) {
  grammar::Matcher m(grammar::parse_gbnf(gbnf));
  return m.accept_bytes(text) && m.can_end();
}

}  // namespace

TEST(ServerToolCalls, ToolsAndChoicesAreRead) {
  EXPECT_EQ(chat("\"stream\":false").tools.choice, Choice::None);
  const ApiRequest a = chat(kTools);
  EXPECT_EQ(a.tools.choice, Choice::Auto);
  ASSERT_EQ(a.tools.tools.size(), 2u);
  EXPECT_EQ(a.tools.tools[1]["function"]["name"], "ping");
  EXPECT_EQ(chat(std::string(kTools) + R"(,"tool_choice":"none")").tools.choice, Choice::None);
  EXPECT_EQ(chat(std::string(kTools) + R"(,"tool_choice":"required")").tools.choice, Choice::Required);
  const ApiRequest n = chat(std::string(kTools) + R"(,"tool_choice":{"type":"function","function":{"name":"ping"}})");
  EXPECT_EQ(n.tools.choice, Choice::Named);
  EXPECT_EQ(n.tools.named, "ping");
  EXPECT_EQ(chat(R"("tools":[],"tool_choice":"none")").tools.choice, Choice::None);
  EXPECT_TRUE(a.tools.parallel);  // OpenAI's default
  EXPECT_FALSE(chat(std::string(kTools) + R"(,"parallel_tool_calls":false)").tools.parallel);
  EXPECT_TRUE(chat(std::string(kTools) + R"(,"parallel_tool_calls":null)").tools.parallel);
}

TEST(ServerToolCalls, BadToolsAndChoicesAre400NamingTheField) {
  EXPECT_EQ(refused_param(R"("tools":{})"), "tools");
  EXPECT_EQ(refused_param(R"("tools":[{"type":"function","function":{}}])"), "tools[0].function.name");
  EXPECT_EQ(refused_param(R"("tools":[{"type":"function","function":{"name":""}}])"), "tools[0].function.name");
  EXPECT_EQ(refused_param(R"("tools":[{"type":"function","function":{"name":"a b"}}])"), "tools[0].function.name");
  EXPECT_EQ(refused_param(R"("tools":[{"type":"function"}])"), "tools[0].function");
  EXPECT_EQ(refused_param(R"("tools":[{"type":"code","function":{"name":"a"}}])"), "tools[0].type");
  EXPECT_EQ(refused_param(R"("tools":[{"type":"function","function":{"name":"a"}},
                                      {"type":"function","function":{"name":"a"}}])"),
            "tools[1].function.name");
  EXPECT_EQ(refused_param(R"("tools":[{"type":"function","function":{"name":"a","parameters":3}}])"),
            "tools[0].function.parameters");
  EXPECT_EQ(refused_param(std::string(kTools) + R"(,"tool_choice":"sometimes")"), "tool_choice");
  EXPECT_EQ(refused_param(std::string(kTools) + R"(,"tool_choice":{"type":"function","function":{"name":"nope"}})"),
            "tool_choice.function.name");
  EXPECT_EQ(refused_param(R"("tool_choice":"required")"), "tool_choice");
  EXPECT_EQ(refused_param(std::string(kTools) + R"(,"parallel_tool_calls":"no")"), "parallel_tool_calls");
  EXPECT_EQ(refused_param(R"("parallel_tool_calls":1)"), "parallel_tool_calls");
  EXPECT_EQ(refused_param(std::string(kTools) + R"(,"tool_choice":"required","regex":"a")"), "tool_choice");
  EXPECT_EQ(refused_param(R"("tools":[{"type":"function","function":{"name":"a"}}])", false), "tools");
  EXPECT_EQ(refused_param(R"("tools":[{"type":"function","function":{"name":"a","parameters":{"not":{}}}}],
                              "tool_choice":"required")"),
            "tools[0].function.parameters");
  EXPECT_EQ(refused_param(R"("tools":[{"type":"function","function":{"name":"a","parameters":
                              {"type":"object","properties":{"x":{"$ref":"#"}}}}}],"tool_choice":"required")"),
            "tools[0].function.parameters");
}

TEST(ServerToolCalls, ForcedCallGrammarFollowsTheParameters) {
  const std::string named = forced_tool_call_gbnf(
      chat(std::string(kTools) + R"(,"tool_choice":{"function":{"name":"get_weather"}})").tools);
  EXPECT_TRUE(accepts(named,
                      "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"unit\": "
                      "\"c\"}}\n</tool_call>"));
  EXPECT_FALSE(accepts(named, "<tool_call>\n{\"name\": \"ping\", \"arguments\": {}}\n</tool_call>"));
  EXPECT_FALSE(accepts(named,
                       "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n"
                       "</tool_call>"));  // unit is required
  const std::string any = forced_tool_call_gbnf(chat(std::string(kTools) + R"(,"tool_choice":"required")").tools);
  EXPECT_TRUE(accepts(any, "<tool_call>\n{\"name\": \"ping\", \"arguments\": {\"any\": [1]}}\n</tool_call>"));
  EXPECT_FALSE(accepts(any, "Sure! <tool_call>\n{\"name\": \"ping\", \"arguments\": {}}\n</tool_call>"));
  // Parallel calls (the default): one or more blocks, a newline between; off: exactly one.
  const std::string two =
      "<tool_call>\n{\"name\": \"ping\", \"arguments\": {}}\n</tool_call>\n"
      "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"A\", \"unit\": \"f\"}}\n"
      "</tool_call>";
  EXPECT_TRUE(accepts(any, two));
  const std::string one = forced_tool_call_gbnf(
      chat(std::string(kTools) + R"(,"tool_choice":"required","parallel_tool_calls":false)").tools);
  EXPECT_FALSE(accepts(one, two));
  EXPECT_TRUE(accepts(one, two.substr(0, two.find("\n<tool_call>", 1))));
  // Parameters with their own $defs (pydantic writes them) are lifted to the call's root.
  const std::string defs = forced_tool_call_gbnf(chat(R"("tools":[{"type":"function","function":{"name":"f",
      "parameters":{"type":"object","properties":{"p":{"$ref":"#/$defs/P"}},"required":["p"],
                    "$defs":{"P":{"type":"integer"}}}}}],"tool_choice":"required")")
                                                     .tools);
  EXPECT_TRUE(accepts(defs, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"p\": 7}}\n</tool_call>"));
  EXPECT_FALSE(accepts(defs, "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"p\": \"7\"}}\n</tool_call>"));
}

TEST(ServerToolCalls, CallsAreParsedFromTheOutput) {
  const ToolRequest t = chat(kTools).tools;
  ParsedOutput p = parse_tool_calls(
      "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"unit\": \"c\"}}"
      "\n</tool_call>\n<tool_call>{\"name\": \"ping\", \"arguments\": \"{}\"}</tool_call>",
      t);
  ASSERT_EQ(p.calls.size(), 2u);
  EXPECT_EQ(p.calls[0].name, "get_weather");
  EXPECT_EQ(nlohmann::json::parse(p.calls[0].arguments), nlohmann::json::parse(R"({"city":"Oslo","unit":"c"})"));
  EXPECT_EQ(p.calls[1].arguments, "{}");  // a string is already JSON text
  EXPECT_NE(p.calls[0].id, p.calls[1].id);
  EXPECT_EQ(p.content, "Let me check.");  // whitespace next to calls is not content

  // Not a call: unknown function, broken JSON, an unclosed block: all stay text.
  for (const char* text :
       {"<tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call>",
        "<tool_call>{\"name\": \"ping\", \"arguments\": </tool_call>", "<tool_call>{\"name\": \"pi"}) {
    const ParsedOutput q = parse_tool_calls(text, t);
    EXPECT_TRUE(q.calls.empty()) << text;
    EXPECT_EQ(q.content, text);
  }
  // The generic fallback: the whole output is one call object.
  const ParsedOutput g = parse_tool_calls(" {\"name\": \"ping\", \"parameters\": {\"x\": 1}} ", t);
  ASSERT_EQ(g.calls.size(), 1u);
  EXPECT_EQ(g.calls[0].arguments, "{\"x\": 1}");  // as the model wrote them
  EXPECT_EQ(g.content, "");
  // tool_choice none: nothing is a call.
  const ToolRequest none = chat(std::string(kTools) + R"(,"tool_choice":"none")").tools;
  EXPECT_TRUE(parse_tool_calls("<tool_call>{\"name\": \"ping\", \"arguments\": {}}</tool_call>", none).calls.empty());
}

TEST(ServerToolCalls, ResponsesCarryToolCalls) {
  ResponseMeta m{"chatcmpl-1", 1, "m", true, false};
  ChoiceOut c{"", "tool_calls", {}, {{"call_1", "ping", "{}"}}};
  const auto j = response_json(m, {c}, {});
  const auto& msg = j["choices"][0]["message"];
  EXPECT_TRUE(msg["content"].is_null());
  EXPECT_EQ(msg["tool_calls"][0]["function"]["name"], "ping");
  EXPECT_EQ(msg["tool_calls"][0]["type"], "function");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "tool_calls");
  // Streamed: the start carries id, type, name and empty arguments; pieces only index and arguments.
  const auto start = tool_delta_chunk_json(m, 0, {ToolStreamDelta::Kind::CallStart, 1, "", "call_1", "ping"}, {});
  const auto& s = start["choices"][0]["delta"]["tool_calls"][0];
  EXPECT_EQ(s, nlohmann::json::parse(
                   R"({"index":1,"id":"call_1","type":"function","function":{"name":"ping","arguments":""}})"));
  EXPECT_FALSE(start["choices"][0]["delta"].contains("content"));
  const auto piece = tool_delta_chunk_json(m, 0, {ToolStreamDelta::Kind::Arguments, 1, "{\"a", "", ""}, {});
  EXPECT_EQ(piece["choices"][0]["delta"]["tool_calls"][0],
            nlohmann::json::parse(R"({"index":1,"function":{"arguments":"{\"a"}})"));
  EXPECT_TRUE(piece["choices"][0]["finish_reason"].is_null());
}

TEST(ServerToolCalls, HistoryCallsAndResultsGoThroughTheTemplate) {
  const ApiRequest r = parse_request(R"({"messages":[
      {"role":"user","content":"Weather in Oslo?"},
      {"role":"assistant","content":null,"tool_calls":[{"id":"call_7","type":"function",
        "function":{"name":"get_weather","arguments":"{\"city\": \"Oslo\", \"unit\": \"c\"}"}}]},
      {"role":"tool","tool_call_id":"call_7","content":"{\"temperature\": 21}"}]})",
                                     true);
  ASSERT_EQ(r.messages.size(), 3u);
  const auto& calls = r.messages[1].fields.at("tool_calls");
  EXPECT_EQ(calls[0]["function"]["arguments"]["city"], "Oslo");  // parsed: templates print it with tojson
  EXPECT_EQ(r.messages[2].fields.at("tool_call_id"), "call_7");

  const ChatTemplate t = ChatTemplate::parse(*builtin_chat_template("qwen2"));
  const std::string text = t.render(r.messages, true, "", "<|im_end|>");
  EXPECT_NE(text.find("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"unit\": \"c\"}}"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("<tool_response>\n{\"temperature\": 21}\n</tool_response>"), std::string::npos) << text;

  for (const char* bad :
       {R"({"role":"user","content":"x","tool_calls":[{"function":{"name":"f"}}]})",
        R"({"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"{nope"}}]})",
        R"({"role":"assistant","tool_calls":[{"function":{"arguments":"{}"}}]})",
        R"({"role":"assistant","tool_calls":{}})", R"({"role":"tool","content":"x","tool_call_id":5})"}) {
    EXPECT_THROW(parse_request(std::string(R"({"messages":[)") + bad + "]}", true), ApiError) << bad;
  }
}

TEST(ServerToolCalls, LlamaAndMistralStyleOutputsAreCalls) {
  const ToolRequest t = chat(kTools).tools;
  const ParsedOutput llama = parse_tool_calls(
      "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}", t);
  ASSERT_EQ(llama.calls.size(), 1u);
  EXPECT_EQ(llama.calls[0].arguments, "{\"city\": \"Rome\"}");
  const ParsedOutput mistral = parse_tool_calls(
      "[TOOL_CALLS] [{\"name\": \"ping\", \"arguments\": {}}, {\"name\": \"get_weather\", \"arguments\": {}}]", t);
  ASSERT_EQ(mistral.calls.size(), 2u);
  EXPECT_EQ(mistral.calls[1].name, "get_weather");
  EXPECT_EQ(mistral.content, "");
  // An array that does not open with a call is text.
  EXPECT_TRUE(parse_tool_calls("[1, 2, 3]", t).calls.empty());
  EXPECT_EQ(parse_tool_calls("[1, 2, 3]", t).content, "[1, 2, 3]");
}
