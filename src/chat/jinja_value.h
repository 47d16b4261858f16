// Runtime values of the Jinja interpreter, with Python semantics where the rendered text
// depends on them: str() and repr() formatting (True, None, 1.0, ['a', 1]), truthiness,
// equality across int/float/bool, ordering, and json.dumps for the tojson filter.
// Lists, dicts and namespaces are shared by pointer, like Python objects: a namespace set in
// a loop body is the same object outside it.
// Every value also knows where it came from: text from the caller's data (message content) must
// never be read as special tokens by the tokenizer, while the template's own text may be. The
// provenance is conservative: anything computed from data is data.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace greta::jinja {

struct Value;
using List = std::vector<Value>;

// Insertion-ordered string-keyed map (Python dicts keep insertion order).
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  bool holds_data = false;  // Namespace: some attribute ever held caller data
  const Value* find(const std::string& key) const;
  void set(const std::string& key, Value v);
};

// Byte range [begin, end) of a string.
struct Span {
  size_t begin, end;
  bool operator==(const Span&) const = default;
};

struct Value {
  enum class Kind { Undefined, None, Bool, Int, Float, String, List, Dict, Namespace, Function };
  Kind kind = Kind::Undefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                // String text; Undefined: the name, for error messages; Function: its name
  std::shared_ptr<List> list;   // List (tuple when is_tuple)
  std::shared_ptr<Dict> dict;   // Dict and Namespace attributes
  std::shared_ptr<Value> self;  // Function: the object a method is bound to (null for globals)
  bool is_tuple = false;
  int depth = 0;                 // List/Dict/Namespace: 1 + the deepest element's depth
  bool holds_namespace = false;  // List/Dict: some element is or holds a namespace
  // Provenance (see above).
  bool data = false;             // the whole value is caller data, and so is anything taken from it
  bool holds_data = false;       // List/Dict: some element is or holds caller data
  std::vector<Span> data_spans;  // String, when !data: the byte ranges that are caller data

  static Value undefined(std::string hint = {});
  static Value none();
  static Value boolean(bool v);
  static Value integer(int64_t v);
  static Value number(double v);
  static Value string(std::string v);
  static Value make_list(List v, bool tuple = false);
  static Value make_dict(Dict d = {});
  static Value make_namespace(Dict d = {});
  static Value function(std::string name, std::shared_ptr<Value> self = nullptr);
  // Objects keep the JSON's key order: pass nlohmann::ordered_json where order matters (tojson).
  // `as_data`: the values are caller data. Throws greta::Error past the nesting depth limit.
  static Value from_json(const nlohmann::json& j, bool as_data = false);
  static Value from_json(const nlohmann::ordered_json& j, bool as_data = false);

  bool is_undefined() const { return kind == Kind::Undefined; }
  bool is_none() const { return kind == Kind::None; }
  bool is_string() const { return kind == Kind::String; }
  bool is_list() const { return kind == Kind::List; }
  bool is_dict() const { return kind == Kind::Dict; }
  bool is_number() const { return kind == Kind::Int || kind == Kind::Float || kind == Kind::Bool; }
  double as_double() const {
    return kind == Kind::Float ? f : kind == Kind::Bool ? (b ? 1 : 0) : static_cast<double>(i);
  }
  int64_t as_int() const { return kind == Kind::Bool ? (b ? 1 : 0) : i; }

  bool truthy() const;
  std::string type_name() const;  // Python's type name: 'str', 'int', 'dict', ...
};

// Bytes of the strings a list holds directly (what copying its items copies).
size_t string_bytes(const List& l);

// Provenance helpers.
bool has_data(const Value& v);                // v is, or holds, caller data
Value as_data(Value v);                       // v marked as caller data as a whole
Value with_data_of(Value v, bool from_data);  // as_data(v) when from_data, else v
// Appends the text of `v` (str(v) for non-strings) to the string `acc`, with its provenance.
// Throws greta::Error past the string size limit.
void append_text(Value& acc, const Value& v);
void append_text(Value& acc, const std::string& text, bool is_data);
// The data ranges of string s ({0, size} when it is data as a whole).
std::vector<Span> data_spans_of(const Value& s);

std::string py_str(const Value& v);   // str(v); Undefined -> ""
std::string py_repr(const Value& v);  // repr(v)
std::string py_float_repr(double d);
bool py_equal(const Value& a, const Value& b);
// <0, 0, >0; nullopt when Python would raise TypeError (e.g. str < int).
std::optional<int> py_compare(const Value& a, const Value& b);

struct JsonOptions {
  bool ensure_ascii = false;  // transformers' tojson default
  std::optional<std::string> indent;
  std::string item_sep;  // defaults as json.dumps: ", " without indent, "," with
  std::string key_sep = ": ";
  bool sort_keys = false;
};
// json.dumps(v, ...); throws greta::Error for values JSON cannot hold (Undefined, functions).
std::string py_json_dumps(const Value& v, const JsonOptions& opt);

}  // namespace greta::jinja
