#include "chat/jinja_builtins.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#include "chat/jinja_limits.h"
#include "chat/jinja_parser.h"
#include "chat/jinja_pystr.h"

namespace greta::jinja {

const Value* Args::get(size_t idx, const char* name) const {
  if (idx < pos.size()) return &pos[idx];
  for (const auto& kv : kw)
    if (kv.first == name) return &kv.second;
  return nullptr;
}

void undefined_error(const Value& v) { throw Error(v.s.empty() ? "undefined value used" : v.s); }

static void require_defined(const Value& v) {
  if (v.is_undefined()) undefined_error(v);
}

static int64_t int_arg(const Args& a, size_t idx, const char* name, int64_t dflt) {
  const Value* v = a.get(idx, name);
  if (!v || v->is_none()) return dflt;
  if (v->kind != Value::Kind::Int && v->kind != Value::Kind::Bool)
    throw Error("'" + v->type_name() + "' object cannot be interpreted as an integer");
  return v->as_int();
}
std::vector<Value> py_iterate(const Value& v) {
  // What comes out of a container of caller data is data; dict keys of a container that holds
  // any data are data too (they came from the same caller object).
  switch (v.kind) {
    case Value::Kind::Undefined: return {};
    case Value::Kind::List: {
      charge_steps(int64_t(v.list->size()));
      if (!v.data) return *v.list;
      std::vector<Value> items;
      for (const Value& x : *v.list) items.push_back(as_data(x));
      return items;
    }
    case Value::Kind::Dict: {
      charge_steps(int64_t(v.dict->items.size()));
      std::vector<Value> keys;
      for (const auto& kv : v.dict->items) keys.push_back(with_data_of(Value::string(kv.first), has_data(v)));
      return keys;
    }
    case Value::Kind::String: {
      std::vector<Value> chars;
      auto cps = py_codepoints(v.s);
      check_list_size(cps.size());
      charge_steps(int64_t(cps.size()));
      for (size_t k = 0; k < cps.size(); ++k)
        chars.push_back(with_data_of(Value::string(py_from_codepoints(cps, k, k + 1)), has_data(v)));
      return chars;
    }
    default: throw Error("'" + v.type_name() + "' object is not iterable");
  }
}

static bool is_str_method(const std::string& n) {
  static const char* const names[] = {"strip",      "lstrip",   "rstrip",  "split",   "rsplit", "splitlines",
                                      "startswith", "endswith", "upper",   "lower",   "title",  "capitalize",
                                      "replace",    "find",     "rfind",   "count",   "join",   "isdigit",
                                      "isalpha",    "isalnum",  "isspace", "isupper", "islower"};
  return std::find_if(std::begin(names), std::end(names), [&](const char* x) { return n == x; }) != std::end(names);
}
static bool is_dict_method(const std::string& n) { return n == "items" || n == "keys" || n == "values" || n == "get"; }
static bool is_list_method(const std::string& n) { return n == "index" || n == "count"; }

Value py_getattr(const Value& obj, const std::string& name) {
  require_defined(obj);
  // Strings built by append: GCC 12 warns falsely (-Wrestrict) on "'" + std::string chains.
  std::string hint = "'";
  hint.append(obj.type_name()).append(" object' has no attribute '").append(name).append("'");
  switch (obj.kind) {
    case Value::Kind::Dict: {
      // Python attributes (methods) win over keys for `.name`, as in jinja2's getattr.
      if (is_dict_method(name)) return Value::function(name, std::make_shared<Value>(obj));
      const Value* v = obj.dict->find(name);
      return v ? with_data_of(*v, obj.data) : Value::undefined(hint);
    }
    case Value::Kind::Namespace: {
      const Value* v = obj.dict->find(name);
      return v ? *v : Value::undefined(hint);
    }
    case Value::Kind::String:
      if (is_str_method(name)) return Value::function(name, std::make_shared<Value>(obj));
      break;
    case Value::Kind::List:
      if (is_list_method(name)) return Value::function(name, std::make_shared<Value>(obj));
      break;
    default: break;
  }
  return Value::undefined(hint);
}

Value py_getitem(const Value& obj, const Value& key) {
  require_defined(obj);
  if (obj.is_dict() && key.is_string()) {
    if (const Value* v = obj.dict->find(key.s)) return with_data_of(*v, obj.data);
  } else if ((obj.is_list() || obj.is_string()) && (key.kind == Value::Kind::Int || key.kind == Value::Kind::Bool)) {
    int64_t n = obj.is_list() ? static_cast<int64_t>(obj.list->size()) : static_cast<int64_t>(py_len(obj.s));
    int64_t k = key.as_int() < 0 ? key.as_int() + n : key.as_int();
    if (k >= 0 && k < n) {
      if (obj.is_list()) return with_data_of((*obj.list)[k], obj.data);
      return with_data_of(Value::string(py_slice_str(obj.s, k, k + 1, 1)), has_data(obj));
    }
  }
  // jinja2 falls back to attribute lookup for string keys, then to undefined.
  if (key.is_string()) return py_getattr(obj, key.s);
  std::string hint = "'";
  hint.append(obj.type_name()).append(" object' has no element ").append(py_repr(key));
  return Value::undefined(hint);
}

bool contains(const Value& c, const Value& item) {
  switch (c.kind) {
    case Value::Kind::Undefined: return false;
    case Value::Kind::String:
      if (!item.is_string()) throw Error("'in <string>' requires string as left operand, not " + item.type_name());
      charge_search(c.s.size(), item.s.size());
      return c.s.find(item.s) != std::string::npos;
    case Value::Kind::List:
      charge_steps(int64_t(c.list->size()));
      return std::any_of(c.list->begin(), c.list->end(), [&](const Value& x) { return py_equal(x, item); });
    case Value::Kind::Dict: return item.is_string() && c.dict->find(item.s) != nullptr;
    default: throw Error("argument of type '" + c.type_name() + "' is not iterable");
  }
}

static Value arith(const std::string& op, const Value& a, const Value& b) {
  bool ints = a.kind != Value::Kind::Float && b.kind != Value::Kind::Float;
  if (op == "/") {
    if (b.as_double() == 0) throw Error("ZeroDivisionError: division by zero");
    return Value::number(a.as_double() / b.as_double());
  }
  if (ints) {
    // Python integers are unbounded; ours are 64-bit, so overflow is an error, never UB.
    int64_t x = a.as_int(), y = b.as_int(), r = 0;
    auto overflow = [&]() -> Value {
      throw Error("integer overflow: " + std::to_string(x) + " " + op + " " + std::to_string(y) +
                  " does not fit in 64 bits");
    };
    if (op == "+") return __builtin_add_overflow(x, y, &r) ? overflow() : Value::integer(r);
    if (op == "-") return __builtin_sub_overflow(x, y, &r) ? overflow() : Value::integer(r);
    if (op == "*") return __builtin_mul_overflow(x, y, &r) ? overflow() : Value::integer(r);
    if (op == "//" || op == "%") {
      if (y == 0) throw Error("ZeroDivisionError: integer division or modulo by zero");
      if (x == INT64_MIN && y == -1) return op == "%" ? Value::integer(0) : overflow();
      int64_t q = x / y;
      r = x % y;
      if (r != 0 && ((r < 0) != (y < 0))) --q, r += y;  // Python floors
      return Value::integer(op == "//" ? q : r);
    }
    if (op == "**") {
      if (y < 0) return Value::number(std::pow(static_cast<double>(x), static_cast<double>(y)));
      // Exponentiation by squaring: 64 steps at most, whatever the exponent.
      int64_t base = x;
      r = 1;
      for (int64_t e = y; e > 0; e >>= 1) {
        if ((e & 1) && __builtin_mul_overflow(r, base, &r)) return overflow();
        if (e > 1 && __builtin_mul_overflow(base, base, &base)) return overflow();
      }
      return Value::integer(r);
    }
  }
  double x = a.as_double(), y = b.as_double();
  if (op == "+") return Value::number(x + y);
  if (op == "-") return Value::number(x - y);
  if (op == "*") return Value::number(x * y);
  if (op == "//" || op == "%") {
    if (y == 0) throw Error("ZeroDivisionError: float division by zero");
    double m = std::fmod(x, y);
    if (m != 0 && ((m < 0) != (y < 0))) m += y;
    return Value::number(op == "//" ? std::floor(x / y) : m);
  }
  return Value::number(std::pow(x, y));  // **
}

Value binary_op(const std::string& op, const Value& a, const Value& b) {
  require_defined(a);
  require_defined(b);
  if (a.is_number() && b.is_number()) return arith(op, a, b);
  if (op == "+" && a.is_string() && b.is_string()) {
    Value r = a;  // keeps which bytes of each side are caller data
    append_text(r, b);
    return r;
  }
  if (op == "+" && a.is_list() && b.is_list() && a.is_tuple == b.is_tuple) {
    check_list_size(a.list->size() + b.list->size());
    List l = *a.list;
    l.insert(l.end(), b.list->begin(), b.list->end());
    return with_data_of(Value::make_list(std::move(l), a.is_tuple), a.data || b.data);
  }
  if (op == "*" && (a.is_string() || a.is_list()) && (b.kind == Value::Kind::Int || b.kind == Value::Kind::Bool)) {
    // Sized before building: "a" * 10**11 must fail at once, not after eating the memory.
    const uint64_t n = uint64_t(std::max<int64_t>(0, b.as_int()));
    const uint64_t unit = a.is_string() ? a.s.size() : a.list->size();
    const uint64_t unit_bytes = a.is_string() ? a.s.size() : string_bytes(*a.list);
    if (unit != 0 && n > active_limits().max_list_items / unit && a.is_list()) check_list_size(SIZE_MAX);
    if (unit_bytes != 0 && n > active_limits().max_string_bytes / unit_bytes) check_string_size(SIZE_MAX);
    Value r = a.is_string() ? Value::string("") : Value::make_list({}, a.is_tuple);
    if (a.is_string()) r.s.reserve(unit * n);
    else r.list->reserve(unit * n);
    for (uint64_t k = 0; k < n; ++k) {
      if (a.is_string()) r.s += a.s;
      else r.list->insert(r.list->end(), a.list->begin(), a.list->end());
    }
    if (a.is_list()) r = Value::make_list(std::move(*r.list), a.is_tuple);  // sizes and summaries
    return with_data_of(std::move(r), has_data(a));
  }
  if (op == "%" && a.is_string()) throw Error("unsupported construct: printf-style string formatting with '%'");
  throw Error("unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" + b.type_name() + "'");
}

// ---- tests --------------------------------------------------------------------------------
bool apply_test(const std::string& n, const Value& v, const Args& a) {
  using K = Value::Kind;
  auto arg0 = [&]() -> const Value& {
    if (a.pos.empty()) throw Error("test '" + n + "' needs an argument");
    return a.pos[0];
  };
  if (n == "defined") return !v.is_undefined();
  if (n == "undefined") return v.is_undefined();
  if (n == "none") return v.is_none();
  if (n == "boolean") return v.kind == K::Bool;
  if (n == "true") return v.kind == K::Bool && v.b;
  if (n == "false") return v.kind == K::Bool && !v.b;
  if (n == "integer") return v.kind == K::Int;
  if (n == "float") return v.kind == K::Float;
  if (n == "number") return v.is_number();
  if (n == "string") return v.is_string();
  if (n == "mapping") return v.is_dict();
  // Undefined is iterable (it iterates as empty) in jinja2.
  if (n == "iterable") return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
  if (n == "sequence") return v.is_undefined() || v.is_string() || v.is_list() || v.is_dict();
  if (n == "callable") return v.kind == K::Function;
  if (n == "sameas") {
    const Value& o = arg0();
    if (v.kind != o.kind) return false;
    if (v.kind == K::None || v.kind == K::Undefined) return true;
    if (v.kind == K::Bool) return v.b == o.b;
    if (v.is_list()) return v.list == o.list;
    if (v.is_dict() || v.kind == K::Namespace) return v.dict == o.dict;
    return py_equal(v, o) && v.kind != K::String;  // small ints are shared in CPython; strings vary
  }
  if (n == "eq" || n == "equalto") return py_equal(v, arg0());
  if (n == "ne") return !py_equal(v, arg0());
  if (n == "lt" || n == "lessthan" || n == "le" || n == "gt" || n == "greaterthan" || n == "ge") {
    require_defined(v);
    auto c = py_compare(v, arg0());
    if (!c) throw Error("'" + n + "' not supported between '" + v.type_name() + "' and '" + arg0().type_name() + "'");
    if (n == "lt" || n == "lessthan") return *c < 0;
    if (n == "le") return *c <= 0;
    if (n == "gt" || n == "greaterthan") return *c > 0;
    return *c >= 0;
  }
  if (n == "in") return contains(arg0(), v);
  if (n == "odd" || n == "even" || n == "divisibleby") {
    require_defined(v);
    if (v.kind != K::Int && v.kind != K::Bool) throw Error("test '" + n + "' needs an integer");
    int64_t m = n == "divisibleby" ? int_arg(a, 0, "num", 1) : 2;
    if (m == 0) throw Error("ZeroDivisionError: integer division or modulo by zero");
    const int64_t r = m == -1 ? 0 : v.as_int() % m;  // INT64_MIN % -1 is UB in C++
    return n == "odd" ? r != 0 : r == 0;
  }
  if (n == "lower") return py_lower(py_str(v)) == py_str(v);
  if (n == "upper") return py_upper(py_str(v)) == py_str(v);
  throw Error("unsupported test '" + n + "'");
}

bool is_known_test(const std::string& n) {
  static const char* const names[] = {"defined",  "undefined", "none",   "boolean",     "true",        "false",
                                      "integer",  "float",     "number", "string",      "mapping",     "iterable",
                                      "sequence", "callable",  "sameas", "eq",          "equalto",     "ne",
                                      "lt",       "lessthan",  "le",     "gt",          "greaterthan", "ge",
                                      "in",       "odd",       "even",   "divisibleby", "lower",       "upper"};
  return std::find_if(std::begin(names), std::end(names), [&](const char* x) { return n == x; }) != std::end(names);
}

}  // namespace greta::jinja
