// Tool calling for chat completions: the `tools`, `tool_choice` and `parallel_tool_calls`
// fields, the grammar that forces a call when tool_choice is "required" or names a function,
// and the pieces that turn one call object of the model's output into an OpenAI tool call.
// Finding the calls in the output, whole or streamed, is server/tool_call_stream.h.
//
// Guarantees
// - A tool without a name, a malformed tool or tool_choice, a tool_choice naming no tool, or
//   tool_choice without tools is an ApiError 400 naming the field.
// - tools reach the chat template as the `tools` variable (object keys sorted, as the
//   template's other variables); with tool_choice "none" they are not rendered and nothing is
//   parsed as a call. An assistant message's tool_calls in the history reach the template with
//   their arguments as objects (history_tool_calls).
// - A forced call's arguments follow the function's `parameters` schema (JSON Schema, the
//   subset of grammar/json_schema_to_gbnf.h; a feature outside it is a 400). With
//   parallel_tool_calls false the grammar allows exactly one call, else one or more.
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
  bool parallel = true;  // parallel_tool_calls: false allows one call per response

  bool active() const { return choice != Choice::None; }  // calls may come out
  bool forced() const { return choice == Choice::Required || choice == Choice::Named; }
};

// Reads tools and tool_choice from a chat body (`text`: its source, re-read for key order).
// Throws ApiError(400).
ToolRequest parse_tools(const nlohmann::json& body, const std::string& text);

// GBNF for a forced call: a `<tool_call>\n{"name": N, "arguments": A}\n</tool_call>` block, N
// one of the allowed functions and A valid under its parameters. With t.parallel more blocks
// may follow, each after a newline; without, the grammar is complete after the first, so the
// request ends there. Throws ApiError(400) when a parameters schema does not compile.
std::string forced_tool_call_gbnf(const ToolRequest& t);

struct ToolCallOut {
  std::string id;  // call_...
  std::string name;
  std::string arguments;  // JSON text, as OpenAI sends it
};

// The tool of `t` named `name`, or nullptr.
const nlohmann::ordered_json* find_tool(const ToolRequest& t, const std::string& name);

// A fresh call id: call_ and 16 hex digits, unique within the process.
std::string new_call_id();

// One call from a parsed JSON object {"name", "arguments" or "parameters"} naming a tool of `t`;
// false when it is not one. Arguments given as a string are taken as the JSON text itself,
// null or absent ones as "{}", others dumped compactly.
bool call_from_json(const nlohmann::json& v, const ToolRequest& t, ToolCallOut& out);

// A whole output that is calls, read at once: after leading whitespace and an optional
// `<|python_tag|>` or `[TOOL_CALLS]` marker, one call object or an array of them (every item a
// call). Empty when the text is anything else.
std::vector<ToolCallOut> whole_output_calls(const std::string& text, const ToolRequest& t);

// An assistant message's tool_calls from the request history, as chat templates take them:
// [{"id", "type": "function", "function": {"name", "arguments": <object>}}], the arguments
// JSON text the client sent parsed into an object (templates print it with tojson). Throws
// ApiError(400) naming `param` on a malformed call.
nlohmann::ordered_json history_tool_calls(const nlohmann::json& calls, const std::string& param);

}  // namespace greta::server
