#include "chat/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "chat/jinja_limits.h"
#include "chat/jinja_utf8.h"
#include "core/error.h"

namespace greta::jinja {

const Value* Dict::find(const std::string& key) const {
  for (const auto& kv : items)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

void Dict::set(const std::string& key, Value v) {
  for (auto& kv : items) {
    if (kv.first == key) {
      kv.second = std::move(v);
      return;
    }
  }
  items.emplace_back(key, std::move(v));
}

Value Value::undefined(std::string hint) {
  Value v;
  v.s = std::move(hint);
  return v;
}
Value Value::none() {
  Value v;
  v.kind = Kind::None;
  return v;
}
Value Value::boolean(bool x) {
  Value v;
  v.kind = Kind::Bool;
  v.b = x;
  return v;
}
Value Value::integer(int64_t x) {
  Value v;
  v.kind = Kind::Int;
  v.i = x;
  return v;
}
Value Value::number(double x) {
  Value v;
  v.kind = Kind::Float;
  v.f = x;
  return v;
}
Value Value::string(std::string x) {
  Value v;
  v.kind = Kind::String;
  v.s = std::move(x);
  return v;
}
// Depth, namespace and data summaries of a container from its elements.
static void summarize(Value& c, const Value& e) {
  c.depth = std::max(c.depth, e.depth + 1);
  c.holds_namespace = c.holds_namespace || e.holds_namespace || e.kind == Value::Kind::Namespace;
  c.holds_data = c.holds_data || has_data(e);
}

size_t string_bytes(const List& l) {
  size_t n = 0;
  for (const Value& e : l) n += e.s.size();
  return n;
}

Value Value::make_list(List x, bool tuple) {
  check_list_size(x.size());
  check_string_size(string_bytes(x));
  Value v;
  v.kind = Kind::List;
  v.depth = 1;
  for (const Value& e : x) summarize(v, e);
  check_depth(v.depth);
  v.list = std::make_shared<List>(std::move(x));
  v.is_tuple = tuple;
  return v;
}
Value Value::make_dict(Dict d) {
  Value v;
  v.kind = Kind::Dict;
  v.depth = 1;
  for (const auto& kv : d.items) summarize(v, kv.second);
  check_depth(v.depth);
  v.dict = std::make_shared<Dict>(std::move(d));
  return v;
}
Value Value::make_namespace(Dict d) {
  Value v = make_dict(std::move(d));
  // Namespaces are mutable: one holding another could form a cycle or grow without bound.
  if (v.holds_namespace) throw Error("a namespace cannot hold another namespace in chat templates");
  v.kind = Kind::Namespace;
  v.dict->holds_data = v.holds_data;
  v.holds_data = false;
  return v;
}
Value Value::function(std::string name, std::shared_ptr<Value> self) {
  Value v;
  v.kind = Kind::Function;
  v.s = std::move(name);
  v.self = std::move(self);
  return v;
}

template <class J>
static Value value_from_json(const J& j, bool data, int depth) {
  check_depth(depth);
  switch (j.type()) {
    case nlohmann::json::value_t::null: return with_data_of(Value::none(), data);
    case nlohmann::json::value_t::boolean: return with_data_of(Value::boolean(j.template get<bool>()), data);
    case nlohmann::json::value_t::number_integer: return with_data_of(Value::integer(j.template get<int64_t>()), data);
    case nlohmann::json::value_t::number_unsigned: {
      const uint64_t u = j.template get<uint64_t>();
      if (u > uint64_t(INT64_MAX)) throw Error("integer " + std::to_string(u) + " is too large for a chat template");
      return with_data_of(Value::integer(static_cast<int64_t>(u)), data);
    }
    case nlohmann::json::value_t::number_float: return with_data_of(Value::number(j.template get<double>()), data);
    case nlohmann::json::value_t::string: {
      check_string_size(j.template get_ref<const std::string&>().size());
      return with_data_of(Value::string(j.template get<std::string>()), data);
    }
    case nlohmann::json::value_t::array: {
      List l;
      for (const auto& e : j) l.push_back(value_from_json(e, data, depth + 1));
      return Value::make_list(std::move(l));
    }
    case nlohmann::json::value_t::object: {
      Dict d;
      // Keys of caller objects are data too: a container that holds data marks the keys it yields.
      for (auto it = j.begin(); it != j.end(); ++it)
        d.items.emplace_back(it.key(), value_from_json(it.value(), data, depth + 1));
      Value v = Value::make_dict(std::move(d));
      v.holds_data = v.holds_data || data;
      return v;
    }
    default: return Value::undefined();
  }
}

Value Value::from_json(const nlohmann::json& j, bool as_data) { return value_from_json(j, as_data, 0); }
Value Value::from_json(const nlohmann::ordered_json& j, bool as_data) { return value_from_json(j, as_data, 0); }

bool has_data(const Value& v) {
  return v.data || v.holds_data || !v.data_spans.empty() || (v.kind == Value::Kind::Namespace && v.dict->holds_data);
}

Value as_data(Value v) {
  v.data = true;
  v.data_spans.clear();
  return v;
}

Value with_data_of(Value v, bool from_data) { return from_data ? as_data(std::move(v)) : v; }

std::vector<Span> data_spans_of(const Value& s) {
  if (s.data) return {Span{0, s.s.size()}};
  return s.data_spans;
}

static void add_span(std::vector<Span>& spans, Span sp) {
  if (sp.begin == sp.end) return;
  if (!spans.empty() && spans.back().end == sp.begin) spans.back().end = sp.end;
  else spans.push_back(sp);
}

void append_text(Value& acc, const std::string& text, bool is_data) {
  check_string_size(acc.s.size() + text.size());
  if (acc.data && !is_data) acc.data_spans = data_spans_of(acc), acc.data = false;
  const size_t at = acc.s.size();
  acc.s += text;
  if (acc.data) return;
  if (is_data) {
    if (at == 0 && acc.data_spans.empty() && !text.empty()) {
      acc.data = true;  // the whole string so far
      return;
    }
    add_span(acc.data_spans, {at, acc.s.size()});
  }
}

void append_text(Value& acc, const Value& v) {
  if (!v.is_string()) return append_text(acc, py_str(v), has_data(v));
  if (v.data || v.data_spans.empty()) return append_text(acc, v.s, v.data);
  check_string_size(acc.s.size() + v.s.size());
  if (acc.data) acc.data_spans = data_spans_of(acc), acc.data = false;
  const size_t at = acc.s.size();
  acc.s += v.s;
  for (const Span& sp : v.data_spans) add_span(acc.data_spans, {sp.begin + at, sp.end + at});
}

bool Value::truthy() const {
  switch (kind) {
    case Kind::Undefined:
    case Kind::None: return false;
    case Kind::Bool: return b;
    case Kind::Int: return i != 0;
    case Kind::Float: return f != 0;
    case Kind::String: return !s.empty();
    case Kind::List: return !list->empty();
    case Kind::Dict: return !dict->items.empty();
    default: return true;
  }
}

std::string Value::type_name() const {
  switch (kind) {
    case Kind::Undefined: return "Undefined";
    case Kind::None: return "NoneType";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::String: return "str";
    case Kind::List: return is_tuple ? "tuple" : "list";
    case Kind::Dict: return "dict";
    case Kind::Namespace: return "Namespace";
    default: return "function";
  }
}

std::string py_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  // Shortest round-trip digits, laid out as Python's repr: scientific when exp < -4 or >= 16.
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);
  size_t e = sci.find('e');
  std::string mant = sci.substr(0, e);
  int exp = std::stoi(sci.substr(e + 1));
  bool neg = mant[0] == '-';
  if (neg) mant.erase(0, 1);
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  std::string out;
  if (exp < -4 || exp >= 16) {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    out += eb;
  } else if (exp < 0) {
    out = "0." + std::string(-exp - 1, '0') + digits;
  } else {
    if (static_cast<int>(digits.size()) <= exp + 1) {
      out = digits + std::string(exp + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
    }
  }
  return neg ? "-" + out : out;
}

static bool py_printable(uint32_t cp) {
  // Python's str.isprintable() is false for control, separator (except space) and unassigned
  // characters; this covers the ranges that occur in practice.
  if (cp < 0x20 || cp == 0x7f) return false;
  if (cp >= 0x80 && cp < 0xa0) return false;
  if (cp == 0xa0 || cp == 0xad || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202f) ||
      (cp >= 0x205f && cp <= 0x206f) || cp == 0x3000 || cp == 0xfeff)
    return false;
  if (cp >= 0xd800 && cp <= 0xdfff) return false;
  return true;
}

static std::string repr_string(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  char q = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, q);
  for (size_t i = 0; i < s.size();) {
    size_t n;
    uint32_t cp = utf8_decode(s, i, &n);
    if (cp == static_cast<uint32_t>(q) || cp == '\\') {
      out += '\\';
      out += static_cast<char>(cp);
    } else if (cp == '\n') {
      out += "\\n";
    } else if (cp == '\r') {
      out += "\\r";
    } else if (cp == '\t') {
      out += "\\t";
    } else if (!py_printable(cp)) {
      char b[16];
      if (cp < 0x100) std::snprintf(b, sizeof b, "\\x%02x", cp);
      else if (cp < 0x10000) std::snprintf(b, sizeof b, "\\u%04x", cp);
      else std::snprintf(b, sizeof b, "\\U%08x", cp);
      out += b;
    } else {
      out.append(s, i, n);
    }
    i += n;
  }
  out += q;
  return out;
}

std::string py_repr(const Value& v) {
  switch (v.kind) {
    case Value::Kind::String: return repr_string(v.s);
    case Value::Kind::List: {
      std::string out = v.is_tuple ? "(" : "[";
      for (size_t k = 0; k < v.list->size(); ++k) {
        charge_steps(1);
        out += (k ? ", " : "") + py_repr((*v.list)[k]);
        check_string_size(out.size());
      }
      if (v.is_tuple && v.list->size() == 1) out += ",";
      return out + (v.is_tuple ? ")" : "]");
    }
    case Value::Kind::Dict: {
      std::string out = "{";
      bool first = true;
      for (const auto& kv : v.dict->items) {
        charge_steps(1);
        out += (first ? "" : ", ") + repr_string(kv.first) + ": " + py_repr(kv.second);
        check_string_size(out.size());
        first = false;
      }
      return out + "}";
    }
    case Value::Kind::Namespace: {
      std::string out = "<Namespace {";
      bool first = true;
      for (const auto& kv : v.dict->items) {
        charge_steps(1);
        out += (first ? "" : ", ") + repr_string(kv.first) + ": " + py_repr(kv.second);
        check_string_size(out.size());
        first = false;
      }
      return out + "}>";
    }
    default: return py_str(v);
  }
}

std::string py_str(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined: return "";
    case Value::Kind::None: return "None";
    case Value::Kind::Bool: return v.b ? "True" : "False";
    case Value::Kind::Int: return std::to_string(v.i);
    case Value::Kind::Float: return py_float_repr(v.f);
    case Value::Kind::String: return v.s;
    case Value::Kind::Function: return "<function " + v.s + ">";
    default: return py_repr(v);
  }
}

bool py_equal(const Value& a, const Value& b) {
  using K = Value::Kind;
  if (a.is_number() && b.is_number()) {
    if (a.kind != K::Float && b.kind != K::Float) return a.as_int() == b.as_int();
    return a.as_double() == b.as_double();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case K::Undefined:
    case K::None: return true;
    case K::String: return a.s == b.s;
    case K::List: {
      if (a.list->size() != b.list->size() || a.is_tuple != b.is_tuple) return false;
      charge_steps(int64_t(a.list->size()));
      for (size_t k = 0; k < a.list->size(); ++k)
        if (!py_equal((*a.list)[k], (*b.list)[k])) return false;
      return true;
    }
    case K::Dict: {
      if (a.dict->items.size() != b.dict->items.size()) return false;
      charge_steps(int64_t(a.dict->items.size() * a.dict->items.size()));  // find() is a linear scan
      for (const auto& kv : a.dict->items) {
        const Value* o = b.dict->find(kv.first);
        if (!o || !py_equal(kv.second, *o)) return false;
      }
      return true;
    }
    case K::Namespace: return a.dict == b.dict;
    case K::Function: return a.s == b.s && a.self == b.self;
    default: return false;
  }
}

std::optional<int> py_compare(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind != Value::Kind::Float && b.kind != Value::Kind::Float)
      return a.as_int() < b.as_int() ? -1 : a.as_int() > b.as_int() ? 1 : 0;
    double x = a.as_double(), y = b.as_double();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    int c = a.s.compare(b.s);  // UTF-8 byte order is code point order
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_list() && b.is_list() && a.is_tuple == b.is_tuple) {
    for (size_t k = 0; k < a.list->size() && k < b.list->size(); ++k) {
      charge_steps(1);
      if (py_equal((*a.list)[k], (*b.list)[k])) continue;
      return py_compare((*a.list)[k], (*b.list)[k]);
    }
    size_t x = a.list->size(), y = b.list->size();
    return x < y ? -1 : x > y ? 1 : 0;
  }
  return std::nullopt;
}

static void json_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    size_t n;
    uint32_t cp = utf8_decode(s, i, &n);
    char b[16];
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (cp < 0x20 || (ensure_ascii && cp >= 0x7f)) {
          if (cp >= 0x10000) {
            uint32_t c = cp - 0x10000;
            std::snprintf(b, sizeof b, "\\u%04x\\u%04x", 0xd800 + (c >> 10), 0xdc00 + (c & 0x3ff));
          } else {
            std::snprintf(b, sizeof b, "\\u%04x", cp);
          }
          out += b;
        } else {
          out.append(s, i, n);
        }
    }
    i += n;
  }
  out += '"';
}

static void dumps(std::string& out, const Value& v, const JsonOptions& o, int depth) {
  auto newline = [&](int d) {
    if (!o.indent) return;
    check_string_size(out.size() + 1 + size_t(d) * o.indent->size());
    out += '\n';
    for (int k = 0; k < d; ++k) out += *o.indent;
  };
  std::string item_sep = !o.item_sep.empty() ? o.item_sep : (o.indent ? "," : ", ");
  switch (v.kind) {
    case Value::Kind::None: out += "null"; return;
    case Value::Kind::Bool: out += v.b ? "true" : "false"; return;
    case Value::Kind::Int: out += std::to_string(v.i); return;
    case Value::Kind::Float:
      if (std::isnan(v.f)) out += "NaN";
      else if (std::isinf(v.f)) out += v.f > 0 ? "Infinity" : "-Infinity";
      else out += py_float_repr(v.f);
      return;
    case Value::Kind::String: json_string(out, v.s, o.ensure_ascii); return;
    case Value::Kind::List: {
      if (v.list->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t k = 0; k < v.list->size(); ++k) {
        charge_steps(1);
        check_string_size(out.size());
        if (k) out += item_sep;
        newline(depth + 1);
        dumps(out, (*v.list)[k], o, depth + 1);
      }
      newline(depth);
      out += ']';
      return;
    }
    case Value::Kind::Dict: {
      if (v.dict->items.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : v.dict->items) items.push_back(&kv);
      if (o.sort_keys)
        std::stable_sort(items.begin(), items.end(), [](auto* x, auto* y) { return x->first < y->first; });
      out += '{';
      for (size_t k = 0; k < items.size(); ++k) {
        charge_steps(1);
        check_string_size(out.size());
        if (k) out += item_sep;
        newline(depth + 1);
        json_string(out, items[k]->first, o.ensure_ascii);
        out += o.key_sep;
        dumps(out, items[k]->second, o, depth + 1);
      }
      newline(depth);
      out += '}';
      return;
    }
    default: throw Error("Object of type " + v.type_name() + " is not JSON serializable");
  }
}

std::string py_json_dumps(const Value& v, const JsonOptions& opt) {
  std::string out;
  dumps(out, v, opt, 0);
  check_string_size(out.size());
  return out;
}

}  // namespace greta::jinja
