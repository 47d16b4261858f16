// Tool calling for chat completions: the `tools` and `tool_choice` fields, the grammar that
// forces a call when tool_choice is "required" or names a function, and the parsing of the
// model's calls into OpenAI's tool_calls: Hermes / Qwen `<tool_call>{"name": ..., "arguments":
// {...}}</tool_call>` blocks, else a whole output that is one call object or an array of them
// ({"name", "arguments" or "parameters"}), after an optional `<|python_tag|>` (Llama 3.1/3.2) or
// `[TOOL_CALLS]` (Mistral) marker.
//
// Guarantees
// - A tool without a name, a malformed tool or tool_choice, a tool_choice naming no tool, or
//   tool_choice without tools is an ApiError 400 naming the field.
// - tools reach the chat template as the `tools` variable (object keys sorted, as the
//   template's other variables); with tool_choice "none" they are not rendered and nothing is
//   parsed as a call. An assistant message's tool_calls in the history reach the template with
//   their arguments as objects (history_tool_calls).
// - A forced call's arguments follow the function's `parameters` schema (JSON Schema, the
//   subset of grammar/json_schema_to_gbnf.h; a feature outside it is a 400).
// - parse_tool_calls never throws: text that does not parse as a call stays content.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace greta::server {

struct ToolRequest {
  enum class Choice { None, Auto, Required, Named };
  nlohmann::ordered_json tools = nlohmann::ordered_json::array();  // as the template gets them
  Choice choice = Choice::None;                                    // None also when the request has no tools
  std::string named;                                               // Choice::Named: the function

  bool active() const { return choice != Choice::None; }  // calls may come out
  bool forced() const { return choice == Choice::Required || choice == Choice::Named; }
};

// Reads tools and tool_choice from a chat body (`text`: its source, re-read for key order).
// Throws ApiError(400).
ToolRequest parse_tools(const nlohmann::json& body, const std::string& text);

// GBNF for a forced call: one `<tool_call>\n{"name": N, "arguments": A}\n</tool_call>` block,
// N one of the allowed functions and A valid under its parameters; the grammar is then
// complete, so the request ends there. Throws ApiError(400) when a parameters schema does not
// compile.
std::string forced_tool_call_gbnf(const ToolRequest& t);

struct ToolCallOut {
  std::string id;  // call_...
  std::string name;
  std::string arguments;  // JSON text, as OpenAI sends it
};

struct ParsedOutput {
  std::string content;  // the text outside the calls
  std::vector<ToolCallOut> calls;
};

// The calls in a finished output. Only functions of `t` count; ids come from make_id.
ParsedOutput parse_tool_calls(const std::string& text, const ToolRequest& t);

// An assistant message's tool_calls from the request history, as chat templates take them:
// [{"id", "type": "function", "function": {"name", "arguments": <object>}}], the arguments
// JSON text the client sent parsed into an object (templates print it with tojson). Throws
// ApiError(400) naming `param` on a malformed call.
nlohmann::ordered_json history_tool_calls(const nlohmann::json& calls, const std::string& param);

// The part of `text` that may be streamed as content now: everything before a `<tool_call>`
// tag or before a tail that could still become one; nothing when the text opens like a
// whole-output call (`{`, `[`, a marker, or the start of one).
size_t streamable_prefix(const std::string& text);

}  // namespace greta::server
