#include "server/tool_calls.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <random>
#include <set>

#include "grammar/json_schema_to_gbnf.h"
#include "server/openai_json.h"

namespace greta::server {

using nlohmann::json;
using nlohmann::ordered_json;

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& msg) {
  throw ApiError(400, "'" + param + "': " + msg, param);
}

// OpenAI's rule for function names: letters, digits, '_' and '-', 1 to 64 of them.
bool valid_name(const std::string& n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  return true;
}

ToolRequest::Choice parse_choice(const json& body, ToolRequest& t) {
  auto it = body.find("tool_choice");
  if (it == body.end() || it->is_null()) return ToolRequest::Choice::Auto;
  if (it->is_string()) {
    const std::string c = it->get<std::string>();
    if (c == "none") return ToolRequest::Choice::None;
    if (c == "auto") return ToolRequest::Choice::Auto;
    if (c == "required") return ToolRequest::Choice::Required;
    bad("tool_choice", "must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}");
  }
  if (!it->is_object() || !it->contains("function") || !(*it)["function"].is_object() ||
      !(*it)["function"].contains("name") || !(*it)["function"]["name"].is_string())
    bad("tool_choice", "expected none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}");
  if (it->contains("type") && (*it)["type"] != "function") bad("tool_choice.type", "must be function");
  t.named = (*it)["function"]["name"].get<std::string>();
  if (!find_tool(t, t.named)) bad("tool_choice.function.name", "names no function of 'tools'");
  return ToolRequest::Choice::Named;
}

// Refs a tool's parameters may use: into its own $defs / definitions, which the call grammar
// lifts to its root. Other refs ("#", other pointers) would point elsewhere there.
void check_refs(const ordered_json& v, const std::string& param) {
  if (v.is_object()) {
    if (auto r = v.find("$ref"); r != v.end()) {
      const std::string s = r->is_string() ? r->get<std::string>() : "";
      if (s.rfind("#/$defs/", 0) != 0 && s.rfind("#/definitions/", 0) != 0)
        bad(param, "$ref must point into the parameters' own $defs or definitions in a tool schema");
    }
    for (const auto& [k, x] : v.items()) check_refs(x, param);
  } else if (v.is_array()) {
    for (const auto& x : v) check_refs(x, param);
  }
}

// The text after leading whitespace and one call marker.
std::string without_marker(const std::string& text) {
  const size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  for (const char* m : {"<|python_tag|>", "[TOOL_CALLS]"})
    if (text.compare(first, std::string(m).size(), m) == 0) return text.substr(first + std::string(m).size());
  return text.substr(first);
}

}  // namespace

const ordered_json* find_tool(const ToolRequest& t, const std::string& name) {
  for (const auto& tool : t.tools)
    if (tool["function"]["name"] == name) return &tool;
  return nullptr;
}

std::string new_call_id() {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  char buf[48];
  std::snprintf(buf, sizeof buf, "call_%08llx%08llx", (unsigned long long)(salt & 0xffffffffu),
                (unsigned long long)counter.fetch_add(1));
  return buf;
}

bool call_from_json(const json& v, const ToolRequest& t, ToolCallOut& out) {
  if (!v.is_object() || !v.contains("name") || !v["name"].is_string()) return false;
  if (!find_tool(t, v["name"].get<std::string>())) return false;
  const json* args = v.contains("arguments") ? &v["arguments"] : v.contains("parameters") ? &v["parameters"] : nullptr;
  out.id = new_call_id();
  out.name = v["name"].get<std::string>();
  if (!args || args->is_null()) out.arguments = "{}";
  else if (args->is_string()) out.arguments = args->get<std::string>();  // already JSON text
  else out.arguments = dump(*args);
  return true;
}

std::vector<ToolCallOut> whole_output_calls(const std::string& text, const ToolRequest& t) {
  const json v = json::parse(without_marker(text), nullptr, false);
  std::vector<ToolCallOut> calls;
  if (v.is_discarded()) return calls;
  const json items = v.is_array() ? v : json::array({v});
  for (const json& item : items) {
    ToolCallOut call;
    if (!call_from_json(item, t, call)) return {};
    calls.push_back(std::move(call));
  }
  return calls;
}

ToolRequest parse_tools(const json& body, const std::string& text) {
  ToolRequest t;
  if (auto p = body.find("parallel_tool_calls"); p != body.end() && !p->is_null()) {
    if (!p->is_boolean()) bad("parallel_tool_calls", "expected true or false");
    t.parallel = p->get<bool>();
  }
  auto it = body.find("tools");
  const bool has = it != body.end() && !it->is_null() && !(it->is_array() && it->empty());
  if (!has) {
    if (body.contains("tool_choice") && !body["tool_choice"].is_null() && body["tool_choice"] != "none")
      bad("tool_choice", "needs 'tools'");
    return t;
  }
  if (!it->is_array()) bad("tools", "expected an array of tools");
  if (it->size() > 128) bad("tools", "at most 128 tools");
  std::set<std::string> names;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& tool = (*it)[i];
    const std::string p = "tools[" + std::to_string(i) + "]";
    if (!tool.is_object()) bad(p, "expected an object");
    if (tool.value("type", json()) != "function") bad(p + ".type", "must be function");
    auto f = tool.find("function");
    if (f == tool.end() || !f->is_object()) bad(p + ".function", "is required and must be an object");
    auto name = f->find("name");
    if (name == f->end() || !name->is_string() || !valid_name(name->get<std::string>()))
      bad(p + ".function.name", "is required: 1 to 64 letters, digits, '_' or '-'");
    if (!names.insert(name->get<std::string>()).second) bad(p + ".function.name", "two tools have this name");
    if (f->contains("description") && !(*f)["description"].is_string() && !(*f)["description"].is_null())
      bad(p + ".function.description", "expected a string");
    if (f->contains("parameters") && !(*f)["parameters"].is_object() && !(*f)["parameters"].is_null())
      bad(p + ".function.parameters", "expected a JSON Schema object");
  }
  try {
    t.tools = ordered_json::parse(text).at("tools");  // read_json accepted the body already
  } catch (const nlohmann::json::exception&) {
    bad("tools", "could not be read again in order");
  }
  t.choice = parse_choice(body, t);
  return t;
}

std::string forced_tool_call_gbnf(const ToolRequest& t) {
  ordered_json defs = ordered_json::object(), alternatives = ordered_json::array();
  for (size_t i = 0; i < t.tools.size(); ++i) {
    const ordered_json& f = t.tools[i]["function"];
    if (t.choice == ToolRequest::Choice::Named && f["name"] != t.named) continue;
    const std::string p = "tools[" + std::to_string(i) + "].function.parameters";
    ordered_json params = f.contains("parameters") && f["parameters"].is_object() ? f["parameters"]
                                                                                  : ordered_json{{"type", "object"}};
    check_refs(params, p);
    for (const char* key : {"$defs", "definitions"}) {
      if (!params.contains(key)) continue;
      if (!params[key].is_object()) bad(p, std::string(key) + " must be an object");
      for (const auto& [name, schema] : params[key].items()) {
        const std::string at = std::string(key) == "$defs" ? name : "definitions:" + name;
        if (defs.contains(at) && defs[at] != schema)
          bad(p, "defines " + std::string(key) + "/" + name + " differently from another tool");
        defs[at] = schema;
      }
    }
    try {
      grammar::json_schema_to_gbnf(params);  // names the tool whose schema is refused
    } catch (const grammar::GrammarError& e) {
      bad(p, std::string("unsupported or invalid JSON Schema: ") + e.what());
    }
    params.erase("$defs");
    params.erase("definitions");
    alternatives.push_back({{"type", "object"},
                            {"properties", {{"name", {{"const", f["name"]}}}, {"arguments", params}}},
                            {"required", {"name", "arguments"}},
                            {"additionalProperties", false}});
  }
  ordered_json call = alternatives.size() == 1 ? alternatives[0] : ordered_json{{"anyOf", alternatives}};
  // Both kinds of defs are reachable as #/$defs/..: definitions under a prefixed name.
  ordered_json lifted = ordered_json::object(), lifted_old = ordered_json::object();
  for (const auto& [name, schema] : defs.items()) {
    if (name.rfind("definitions:", 0) == 0) lifted_old[name.substr(12)] = schema;
    else lifted[name] = schema;
  }
  if (!lifted.empty()) call["$defs"] = lifted;
  if (!lifted_old.empty()) call["definitions"] = lifted_old;
  std::string g;
  try {
    g = grammar::json_schema_to_gbnf(call, "tool-call");
  } catch (const grammar::GrammarError& e) {
    bad("tools", std::string("the tools' parameter schemas do not compile together: ") + e.what());
  }
  const std::string block = "call-block ::= \"<tool_call>\\n\" tool-call \"\\n</tool_call>\"\n";
  return (t.parallel ? "root ::= call-block (\"\\n\" call-block)*\n" : "root ::= call-block\n") + block + g;
}

ordered_json history_tool_calls(const json& calls, const std::string& param) {
  if (!calls.is_array()) bad(param, "expected an array of tool calls");
  ordered_json out = ordered_json::array();
  for (size_t i = 0; i < calls.size(); ++i) {
    const json& c = calls[i];
    const std::string p = param + "[" + std::to_string(i) + "]";
    if (!c.is_object()) bad(p, "expected an object");
    if (c.contains("type") && c["type"] != "function") bad(p + ".type", "must be function");
    auto f = c.find("function");
    if (f == c.end() || !f->is_object()) bad(p + ".function", "is required and must be an object");
    auto name = f->find("name");
    if (name == f->end() || !name->is_string() || name->get<std::string>().empty())
      bad(p + ".function.name", "is required and must be a non-empty string");
    ordered_json args = ordered_json::object();
    if (auto a = f->find("arguments"); a != f->end() && !a->is_null()) {
      if (a->is_string()) {
        args = ordered_json::parse(a->get<std::string>(), nullptr, false);
        if (args.is_discarded()) bad(p + ".function.arguments", "is not valid JSON");
      } else if (a->is_object()) {
        args = ordered_json::parse(a->dump());
      } else {
        bad(p + ".function.arguments", "expected a JSON string");
      }
    }
    ordered_json call = {{"type", "function"}, {"function", {{"name", *name}, {"arguments", args}}}};
    if (c.contains("id") && c["id"].is_string()) call["id"] = c["id"];
    out.push_back(std::move(call));
  }
  return out;
}

}  // namespace greta::server
