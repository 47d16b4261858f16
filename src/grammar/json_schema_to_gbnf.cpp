#include "grammar/json_schema_to_gbnf.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "grammar/integer_range_gbnf.h"
#include "grammar/regex_to_gbnf.h"

namespace greta::grammar {
namespace {

using json = nlohmann::ordered_json;

// Rules every grammar may use; a schema rule never takes one of these names.
const std::map<std::string, std::string>& primitives() {
  static const std::map<std::string, std::string> p = {
      {"space", R"(| " " | "\n" [ \t]{0,20})"},
      {"char", R"([^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" [0-9a-fA-F]{4}))"},
      {"key-char", R"([^"\\\x7F\x00-\x1F])"},
      {"string", R"("\"" char* "\"" space)"},
      {"integral-part", R"([0] | [1-9] [0-9]{0,15})"},
      {"decimal-part", R"([0-9]{1,16})"},
      {"number", R"(("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)? space)"},
      {"integer", R"(("-"? integral-part) space)"},
      {"boolean", R"(("true" | "false") space)"},
      {"null", R"("null" space)"},
      {"value", R"(object | array | string | number | boolean | null)"},
      {"object", R"("{" space ( string ":" space value ("," space string ":" space value)* )? "}" space)"},
      {"array", R"("[" space ( value ("," space value)* )? "]" space)"},
      {"date", R"([0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [12] [0-9] | "3" [01] ))"},
      {"time",
       R"(( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" ( [0-5] [0-9] | "60" ) ( "." [0-9]{1,6} )? ( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ))"},
      {"date-time", R"(date "T" time)"},
      {"uuid", R"([0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12})"},
  };
  return p;
}

const std::set<std::string>& annotations() {
  static const std::set<std::string> a = {"title", "description", "default",      "examples", "$schema",
                                          "$id",   "$comment",    "deprecated",   "readOnly", "writeOnly",
                                          "$defs", "definitions", "discriminator"};
  return a;
}

const std::set<std::string>& supported() {
  static const std::set<std::string> s = {"type",
                                          "properties",
                                          "required",
                                          "additionalProperties",
                                          "enum",
                                          "const",
                                          "items",
                                          "minItems",
                                          "maxItems",
                                          "anyOf",
                                          "oneOf",
                                          "allOf",
                                          "$ref",
                                          "minLength",
                                          "maxLength",
                                          "pattern",
                                          "format",
                                          "minimum",
                                          "maximum",
                                          "exclusiveMinimum",
                                          "exclusiveMaximum",
                                          "uniqueItems"};
  return s;
}

std::string seq(std::initializer_list<std::string> parts) {
  std::string out;
  for (const std::string& p : parts)
    if (!p.empty()) out += (out.empty() ? "" : " ") + p;
  return out;
}

class Converter {
 public:
  Converter(const json& root, std::string root_rule) : root_(root), root_rule_(std::move(root_rule)) {
    for (const auto& [name, body] : primitives()) used_.insert(name);
    used_.insert(root_rule_);
    ref_rules_["#"] = root_rule_;
  }

  std::string run() {
    const std::string body = visit(root_, root_rule_, "", 0);
    std::string out = root_rule_ + " ::= " + body + "\n";
    for (const auto& [name, rule] : rules_) out += name + " ::= " + rule + "\n";
    // Primitives are added with what they use, so the text is closed under references.
    for (const std::string& name : primitive_order_) out += name + " ::= " + primitives().at(name) + "\n";
    return out;
  }

 private:
  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    throw SchemaError("json schema at '" + (path.empty() ? std::string("/") : path) + "': " + what);
  }

  std::string prim(const std::string& name) {
    static const std::map<std::string, std::vector<std::string>> deps = {
        {"string", {"char", "space"}},
        {"number", {"integral-part", "decimal-part", "space"}},
        {"integer", {"integral-part", "space"}},
        {"boolean", {"space"}},
        {"null", {"space"}},
        {"value", {"object", "array", "string", "number", "boolean", "null"}},
        {"object", {"space", "string", "value"}},
        {"array", {"space", "value"}},
        {"date-time", {"date", "time"}},
    };
    if (primitive_set_.insert(name).second) {
      primitive_order_.push_back(name);
      auto it = deps.find(name);
      if (it != deps.end())
        for (const std::string& d : it->second) prim(d);
    }
    return name;
  }

  // A new rule name from a hint (property name, definition name): GBNF name characters only.
  std::string fresh(const std::string& hint) {
    std::string base;
    for (char c : hint) base += (std::isalnum(uint8_t(c)) || c == '-') ? c : '-';
    if (base.empty()) base = "rule";
    std::string name = base;
    for (int n = 2; used_.count(name); ++n) name = base + "-" + std::to_string(n);
    used_.insert(name);
    return name;
  }

  std::string add_rule(const std::string& hint, const std::string& body) {
    const std::string name = fresh(hint);
    rules_.emplace_back(name, body);
    return name;
  }

  std::string literal_value(const json& v) { return seq({gbnf_literal(v.dump()), prim("space")}); }

  std::string resolve_ref(const std::string& ref, const std::string& path, int depth) {
    auto it = ref_rules_.find(ref);
    if (it != ref_rules_.end()) return it->second;
    if (ref.rfind("#/", 0) != 0)
      fail(path, "$ref '" + ref + "' is not supported: only local references (#/$defs/Name, #/definitions/Name)");
    json::json_pointer ptr;
    try {
      ptr = json::json_pointer(ref.substr(1));
    } catch (const std::exception& e) {
      fail(path, "$ref '" + ref + "' is not a valid JSON pointer");
    }
    if (!root_.contains(ptr)) fail(path, "$ref '" + ref + "' points to nothing in the schema");
    const std::string name = fresh(ref.substr(ref.find_last_of('/') + 1));
    ref_rules_[ref] = name;  // before visiting: a recursive reference finds it
    const size_t slot = rules_.size();
    rules_.emplace_back(name, "");
    const std::string body = visit(root_.at(ptr), name, ref.substr(1), depth + 1);
    rules_[slot].second = body;
    return name;
  }

  std::string visit(const json& s, const std::string& name, const std::string& path, int depth) {
    if (depth > 64) fail(path, "schema nested deeper than 64 levels");
    if (s.is_boolean()) {
      if (!s.get<bool>()) fail(path, "the schema `false` accepts nothing");
      return prim("value");
    }
    if (!s.is_object()) fail(path, "a schema must be an object or a boolean");
    for (const auto& [key, v] : s.items())
      if (!supported().count(key) && !annotations().count(key))
        fail(path, "unsupported JSON Schema keyword '" + key + "'");

    if (s.contains("$ref")) {
      for (const auto& [key, v] : s.items())
        if (key != "$ref" && supported().count(key)) fail(path, "'" + key + "' next to $ref is not supported");
      if (!s["$ref"].is_string()) fail(path + "/$ref", "must be a string");
      return resolve_ref(s["$ref"].get<std::string>(), path, depth);
    }
    if (s.contains("const")) return literal_value(s["const"]);
    if (s.contains("enum")) {
      if (!s["enum"].is_array() || s["enum"].empty()) fail(path + "/enum", "must be a non-empty array");
      std::string out = "(";
      for (size_t i = 0; i < s["enum"].size(); ++i) out += (i ? " | " : " ") + literal_value(s["enum"][i]);
      return out + " )";
    }
    for (const char* key : {"anyOf", "oneOf"}) {
      if (!s.contains(key)) continue;
      const json& alts = s[key];
      if (!alts.is_array() || alts.empty()) fail(path + "/" + key, "must be a non-empty array");
      for (const auto& [k, v] : s.items())
        if (k != key && supported().count(k))
          fail(path, std::string("'") + k + "' next to " + key + " is not supported");
      std::string out = "(";
      for (size_t i = 0; i < alts.size(); ++i) {
        const std::string sub = path + "/" + key + "/" + std::to_string(i);
        out += (i ? " | " : " ") + visit(alts[i], name + "-" + std::to_string(i), sub, depth + 1);
      }
      return out + " )";
    }
    if (s.contains("allOf")) {
      if (!s["allOf"].is_array() || s["allOf"].size() != 1 || s.size() > 1 + count_annotations(s))
        fail(path, "allOf is supported only with a single schema and nothing next to it");
      return visit(s["allOf"][0], name, path + "/allOf/0", depth + 1);
    }

    std::vector<std::string> types;
    if (s.contains("type")) {
      const json& t = s["type"];
      if (t.is_string()) types.push_back(t.get<std::string>());
      else if (t.is_array() && !t.empty())
        for (const json& x : t) {
          if (!x.is_string()) fail(path + "/type", "must be a string or an array of strings");
          types.push_back(x.get<std::string>());
        }
      else fail(path + "/type", "must be a string or a non-empty array of strings");
    } else if (s.contains("properties") || s.contains("additionalProperties") || s.contains("required")) {
      types = {"object"};
    } else if (s.contains("items") || s.contains("minItems") || s.contains("maxItems")) {
      types = {"array"};
    } else if (s.contains("minLength") || s.contains("maxLength") || s.contains("pattern") || s.contains("format")) {
      types = {"string"};
    } else if (s.contains("minimum") || s.contains("maximum") || s.contains("exclusiveMinimum") ||
               s.contains("exclusiveMaximum")) {
      types = {"number"};
    } else {
      return prim("value");
    }
    std::string out = types.size() > 1 ? "(" : "";
    for (size_t i = 0; i < types.size(); ++i) {
      const std::string one = typed(s, types[i], types.size() > 1 ? name + "-" + types[i] : name, path, depth);
      out += types.size() > 1 ? (i ? " | " : " ") + one : one;
    }
    return types.size() > 1 ? out + " )" : out;
  }

  static size_t count_annotations(const json& s) {
    size_t n = 0;
    for (const auto& [k, v] : s.items()) n += annotations().count(k);
    return n;
  }

  static std::optional<uint64_t> count_keyword(const json& s, const char* key, const std::string& path) {
    if (!s.contains(key)) return std::nullopt;
    const json& v = s[key];
    if (!v.is_number_integer() || v.get<int64_t>() < 0)
      throw SchemaError("json schema at '" + path + "/" + key + "': must be a non-negative integer");
    return v.get<uint64_t>();
  }

  std::string typed(const json& s, const std::string& type, const std::string& name, const std::string& path,
                    int depth) {
    if (type == "object") return object(s, name, path, depth);
    if (type == "json_object") return prim("object");
    if (type == "array") return array(s, name, path, depth);
    if (type == "string") return string_rule(s, name, path);
    if (type == "integer") return integer(s, path);
    if (type == "number") {
      for (const char* k : {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
        if (s.contains(k)) fail(path, std::string("'") + k + "' is supported only on integers, not on type number");
      return prim("number");
    }
    if (type == "boolean") return prim("boolean");
    if (type == "null") return prim("null");
    fail(path + "/type", "unknown type '" + type + "'");
  }

  std::string integer(const json& s, const std::string& path) {
    std::optional<int64_t> lo, hi;
    auto bound = [&](const char* key, bool lower, bool exclusive) {
      if (!s.contains(key)) return;
      const json& v = s[key];
      if (!v.is_number()) fail(path + "/" + key, "must be a number");
      const double x = v.get<double>();
      if (std::fabs(x) > 9.0e15) fail(path + "/" + key, "bounds beyond 9e15 are not supported");
      int64_t b = lower ? int64_t(exclusive ? std::floor(x) + 1 : std::ceil(x))
                        : int64_t(exclusive ? std::ceil(x) - 1 : std::floor(x));
      if (lower) lo = lo ? std::max(*lo, b) : b;
      else hi = hi ? std::min(*hi, b) : b;
    };
    bound("minimum", true, false);
    bound("exclusiveMinimum", true, true);
    bound("maximum", false, false);
    bound("exclusiveMaximum", false, true);
    if (!lo && !hi) return prim("integer");
    if (lo && hi && *lo > *hi) fail(path, "no integer lies between the minimum and the maximum");
    return "(" + integer_range_gbnf(lo, hi) + ") " + prim("space");
  }

  std::string string_rule(const json& s, const std::string& name, const std::string& path) {
    const auto min = count_keyword(s, "minLength", path), max = count_keyword(s, "maxLength", path);
    if (min && max && *min > *max) fail(path, "minLength is above maxLength");
    const bool lengths = min || max;
    if (s.contains("pattern")) {
      if (lengths) fail(path, "pattern together with minLength/maxLength is not supported");
      if (s.contains("format")) fail(path, "pattern together with format is not supported");
      if (!s["pattern"].is_string()) fail(path + "/pattern", "must be a string");
      std::string body;
      try {
        body = regex_to_gbnf(s["pattern"].get<std::string>(), prim("char"));
      } catch (const SchemaError&) {
        throw;
      } catch (const GrammarError& e) {
        fail(path + "/pattern", e.what());
      }
      return add_rule(name, seq({"\"\\\"\"", body, "\"\\\"\"", prim("space")}));
    }
    if (s.contains("format")) {
      if (lengths) fail(path, "format together with minLength/maxLength is not supported");
      const std::string f = s["format"].is_string() ? s["format"].get<std::string>() : "";
      if (f != "date-time" && f != "date" && f != "time" && f != "uuid")
        fail(path + "/format",
             "format '" + s["format"].dump() + "' is not supported (date-time, date, time, uuid are)");
      return seq({"\"\\\"\"", prim(f), "\"\\\"\"", prim("space")});
    }
    if (!lengths) return prim("string");
    if (max && *max > 10000) fail(path + "/maxLength", "above 10000 is not supported");
    if (min && *min > 10000) fail(path + "/minLength", "above 10000 is not supported");
    const std::string rep = "{" + std::to_string(min.value_or(0)) + "," + (max ? std::to_string(*max) : std::string()) +
                            "}";
    return seq({"\"\\\"\"", prim("char") + rep, "\"\\\"\"", prim("space")});
  }

  std::string array(const json& s, const std::string& name, const std::string& path, int depth) {
    if (s.contains("uniqueItems") && s["uniqueItems"] != false) fail(path, "uniqueItems is not supported");
    const uint64_t min = count_keyword(s, "minItems", path).value_or(0);
    const auto max = count_keyword(s, "maxItems", path);
    if (max && min > *max) fail(path, "minItems is above maxItems");
    if ((max && *max > 10000) || min > 10000) fail(path, "minItems/maxItems above 10000 are not supported");
    std::string item = prim("value");
    if (s.contains("items")) {
      const json& it = s["items"];
      if (it.is_array()) fail(path + "/items", "tuple items (an array of schemas) are not supported");
      if (it.is_boolean() && !it.get<bool>()) {
        if (min > 0) fail(path, "items false with minItems above 0 accepts nothing");
        return seq({"\"[\"", prim("space"), "\"]\"", prim("space")});
      }
      item = visit(it, name + "-item", path + "/items", depth + 1);
      if (item.find(' ') != std::string::npos) item = add_rule(name + "-item", item);
    }
    std::string list;
    if (!max || *max > 0) {
      const std::string more = "( \",\" " + prim("space") + " " + item + " )";
      const uint64_t lo = min > 0 ? min - 1 : 0;
      const std::string rep = "{" + std::to_string(lo) + "," + (max ? std::to_string(*max - 1) : std::string()) + "}";
      list = item + " " + more + rep;
      if (min == 0) list = "( " + list + " )?";
    }
    return seq({"\"[\"", prim("space"), list, "\"]\"", prim("space")});
  }

  // The content of a key that is none of `names`, from a trie of their code points: at each
  // node, continue along a name, leave all names with another character, or stop where no
  // name ends. Keys use no escapes: an escaped key could spell a declared name.
  std::string key_excluding(const std::vector<std::string>& names, const std::string& path) {
    struct Node {
      std::map<uint32_t, Node> next;
      bool end = false;
    };
    Node trie;
    for (const std::string& n : names) {
      Node* at = &trie;
      Utf8Partial p;
      uint32_t cp = 0;
      for (char c : n) {
        Utf8Step step = utf8_feed(p, uint8_t(c), cp);
        if (step == Utf8Step::Invalid) fail(path, "property name is not valid UTF-8");
        if (step == Utf8Step::Complete) at = &at->next[cp];
      }
      at->end = true;
    }
    auto build = [&](auto&& self, const Node& node) -> std::string {
      std::vector<std::string> alts;
      std::string excluded;
      for (const auto& [cp, child] : node.next) {
        char buf[16];
        std::snprintf(buf, sizeof buf, cp < 0x10000 ? "\\u%04X" : "\\U%08X", cp);
        excluded += buf;
        // A name character a key cannot hold raw never matches the key class anyway.
        if (cp < 0x20 || cp == '"' || cp == '\\' || cp == 0x7F) continue;
        alts.push_back(seq({"[" + std::string(buf) + "]", self(self, child)}));
      }
      alts.push_back("[^\"\\\\\\x7F\\x00-\\x1F" + excluded + "] " + prim("key-char") + "*");
      if (!node.end) alts.push_back("\"\"");
      std::string out = "(";
      for (size_t i = 0; i < alts.size(); ++i) out += (i ? " | " : " ") + alts[i];
      return out + " )";
    };
    return build(build, trie);
  }

  std::string object(const json& s, const std::string& name, const std::string& path, int depth) {
    for (const char* k : {"minProperties", "maxProperties", "patternProperties", "propertyNames"})
      if (s.contains(k)) fail(path, std::string("'") + k + "' is not supported");
    struct Entry {
      std::string kv;
      bool required;
    };
    std::vector<Entry> entries;
    std::vector<std::string> names;
    std::set<std::string> required;
    if (s.contains("required")) {
      if (!s["required"].is_array()) fail(path + "/required", "must be an array of property names");
      for (const json& r : s["required"]) {
        if (!r.is_string()) fail(path + "/required", "must be an array of property names");
        required.insert(r.get<std::string>());
      }
    }
    const json props = s.value("properties", json::object());
    if (!props.is_object()) fail(path + "/properties", "must be an object");
    for (const std::string& r : required)
      if (!props.contains(r)) fail(path + "/required", "required property '" + r + "' is not in properties");
    // Required first, in declared order, then the optional ones in declared order.
    for (int pass = 0; pass < 2; ++pass) {
      for (const auto& [key, sub] : props.items()) {
        const bool req = required.count(key) > 0;
        if (req != (pass == 0)) continue;
        const std::string value = visit(sub, name + "-" + key, path + "/properties/" + key, depth + 1);
        const std::string kv = seq({gbnf_literal(json(key).dump()), prim("space"), "\":\"", prim("space"), value});
        entries.push_back({add_rule(name + "-" + key + "-kv", kv), req});
        names.push_back(key);
      }
    }
    std::string additional;
    const bool has_ap = s.contains("additionalProperties");
    const json ap = has_ap ? s["additionalProperties"] : json(!s.contains("properties"));
    if (!(ap.is_boolean() && !ap.get<bool>())) {
      const std::string value = ap.is_boolean()
                                    ? prim("value")
                                    : visit(ap, name + "-additional", path + "/additionalProperties", depth + 1);
      const std::string key = seq({"\"\\\"\"", key_excluding(names, path), "\"\\\"\"", prim("space")});
      additional = add_rule(name + "-additional-kv", seq({key, "\":\"", prim("space"), value}));
    }
    // rest[i]: entries i.. after something was written (each comma-prefixed);
    // first[i]: entries i.. when nothing was written yet.
    const std::string comma = "\",\" " + prim("space");
    std::string rest = additional.empty() ? "" : "( " + comma + " " + additional + " )*";
    std::string first = additional.empty() ? "" : "( " + additional + " ( " + comma + " " + additional + " )* )?";
    for (size_t i = entries.size(); i-- > 0;) {
      const Entry& e = entries[i];
      const std::string after = rest.empty() ? "" : add_rule(name + "-rest", rest);
      if (e.required) {
        first = seq({e.kv, after});
        rest = seq({comma, e.kv, after});
      } else {
        first = first.empty() ? "( " + seq({e.kv, after}) + " )?"
                              : "( " + seq({e.kv, after}) + " | " + add_rule(name + "-first", first) + " )";
        rest = seq({"( " + comma + " " + e.kv + " )?", after});
      }
    }
    return seq({"\"{\"", prim("space"), first, "\"}\"", prim("space")});
  }

  const json& root_;
  std::vector<std::pair<std::string, std::string>> rules_;
  std::string root_rule_;
  std::set<std::string> used_;
  std::map<std::string, std::string> ref_rules_;
  std::set<std::string> primitive_set_;
  std::vector<std::string> primitive_order_;
};

}  // namespace

std::string json_schema_to_gbnf(const nlohmann::ordered_json& schema, const std::string& root_rule) {
  try {
    return Converter(schema, root_rule).run();
  } catch (const nlohmann::json::exception& e) {
    throw SchemaError(std::string("json schema: ") + e.what());
  }
}

std::string json_object_gbnf() { return json_schema_to_gbnf(nlohmann::ordered_json{{"type", "json_object"}}); }

}  // namespace greta::grammar
