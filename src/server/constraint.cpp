#include "server/constraint.h"

#include "grammar/gbnf_parser.h"
#include "grammar/json_schema_to_gbnf.h"
#include "grammar/regex_to_gbnf.h"
#include "server/openai_json.h"

namespace greta::server {

using nlohmann::json;
using Kind = ConstraintSpec::Kind;

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& msg) {
  throw ApiError(400, "'" + param + "': " + msg, param);
}

bool present(const json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && !it->is_null();
}

// The schema of response_format.json_schema.schema with the client's key order.
std::string ordered_schema_text(const std::string& text) {
  try {
    const nlohmann::ordered_json body = nlohmann::ordered_json::parse(text);  // read_json accepted it already
    return body.at("response_format").at("json_schema").at("schema").dump();
  } catch (const nlohmann::json::exception&) {
    bad("response_format.json_schema.schema", "could not be read again in order");
  }
}

ConstraintSpec parse_response_format(const json& rf, const std::string& text) {
  const std::string p = "response_format";
  if (!rf.is_object()) bad(p, "expected an object");
  auto type = rf.find("type");
  if (type == rf.end() || !type->is_string()) bad(p + ".type", "is required: text, json_object or json_schema");
  const std::string t = type->get<std::string>();
  if (t == "text") return {};
  if (t == "json_object") return {Kind::JsonObject, "", p};
  if (t != "json_schema") bad(p + ".type", "must be text, json_object or json_schema");  // never quotes the value
  if (rf.contains("strict") && !rf["strict"].is_boolean() && !rf["strict"].is_null())
    bad(p + ".strict", "expected a boolean");
  auto js = rf.find("json_schema");
  if (js == rf.end() || !js->is_object()) bad(p + ".json_schema", "is required and must be an object");
  auto name = js->find("name");
  if (name == js->end() || !name->is_string() || name->get<std::string>().empty())
    bad(p + ".json_schema.name", "is required and must be a non-empty string");
  if (js->contains("strict") && !(*js)["strict"].is_boolean() && !(*js)["strict"].is_null())
    bad(p + ".json_schema.strict", "expected a boolean");
  auto schema = js->find("schema");
  if (schema == js->end() || schema->is_null()) return {Kind::JsonObject, "", p};  // no schema: any object
  if (!schema->is_object() && !schema->is_boolean()) bad(p + ".json_schema.schema", "expected a JSON Schema object");
  return {Kind::JsonSchema, ordered_schema_text(text), p + ".json_schema.schema"};
}

std::string text_field(const json& body, const char* key) {
  const json& v = body[key];
  if (!v.is_string()) bad(key, "expected a string");
  if (v.get<std::string>().empty()) bad(key, "must not be empty");
  return v.get<std::string>();
}

std::string cache_key(const ConstraintSpec& s) {
  switch (s.kind) {
    case Kind::JsonObject: return "json_object";
    case Kind::JsonSchema: return "json_schema\n" + s.source;
    case Kind::Gbnf: return "gbnf\n" + s.source;
    case Kind::Regex: return "regex\n" + s.source;
    case Kind::None: break;
  }
  return "";
}

std::shared_ptr<const grammar::Grammar> compile(const ConstraintSpec& s) {
  switch (s.kind) {
    case Kind::JsonObject: return grammar::parse_gbnf(grammar::json_object_gbnf());
    case Kind::JsonSchema:
      return grammar::parse_gbnf(grammar::json_schema_to_gbnf(nlohmann::ordered_json::parse(s.source)));
    case Kind::Gbnf: return grammar::parse_gbnf(s.source);
    case Kind::Regex: return grammar::parse_gbnf(grammar::regex_to_gbnf_grammar(s.source));
    case Kind::None: break;
  }
  return nullptr;
}

}  // namespace

ConstraintSpec parse_constraint(const json& body, const std::string& text) {
  ConstraintSpec out;
  std::string first;
  auto take = [&](ConstraintSpec s, const std::string& field) {
    if (s.kind == Kind::None) return;
    if (out.kind != Kind::None)
      bad(field,
          "only one of response_format, grammar and regex may constrain a request; got " + first + " and " + field);
    out = std::move(s);
    first = field;
  };
  if (present(body, "response_format")) take(parse_response_format(body["response_format"], text), "response_format");
  if (present(body, "grammar")) take({Kind::Gbnf, text_field(body, "grammar"), "grammar"}, "grammar");
  if (present(body, "regex")) take({Kind::Regex, text_field(body, "regex"), "regex"}, "regex");
  return out;
}

std::shared_ptr<const grammar::Grammar> compile_constraint(const ConstraintSpec& spec, GrammarCache* cache) {
  if (spec.kind == Kind::None) return nullptr;
  try {
    if (!cache) return compile(spec);
    return cache->get(cache_key(spec), [&] { return compile(spec); });
  } catch (const grammar::SchemaError& e) {
    bad(spec.param, std::string("unsupported or invalid JSON Schema: ") + e.what());
  } catch (const Error& e) {
    const char* what = spec.kind == Kind::Gbnf    ? "invalid GBNF grammar: "
                       : spec.kind == Kind::Regex ? "unsupported or invalid regex: "
                                                  : "the schema does not compile to a grammar: ";
    bad(spec.param, what + std::string(e.what()));
  } catch (const nlohmann::json::exception& e) {
    bad(spec.param, std::string("invalid JSON: ") + e.what());
  }
}

}  // namespace greta::server
