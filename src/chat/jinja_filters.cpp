// jinja2 filters, Python methods and template globals (see jinja_builtins.h).
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <ctime>

#include "chat/jinja_builtins.h"
#include "chat/jinja_lexer.h"
#include "chat/jinja_limits.h"
#include "chat/jinja_parser.h"
#include "chat/jinja_pystr.h"

namespace greta::jinja {

namespace {

const Value* arg(const Args& a, size_t idx, const char* name) { return a.get(idx, name); }
std::optional<std::string> opt_str(const Args& a, size_t idx, const char* name) {
  const Value* v = a.get(idx, name);
  if (!v || v->is_none() || v->is_undefined()) return std::nullopt;
  return py_str(*v);
}
int64_t int_of(const Args& a, size_t idx, const char* name, int64_t dflt) {
  const Value* v = a.get(idx, name);
  if (!v || v->is_none()) return dflt;
  if (v->kind != Value::Kind::Int && v->kind != Value::Kind::Bool)
    throw Error("'" + v->type_name() + "' object cannot be interpreted as an integer");
  return v->as_int();
}
bool bool_of(const Args& a, size_t idx, const char* name, bool dflt) {
  const Value* v = a.get(idx, name);
  return v ? v->truthy() : dflt;
}

Value str_list(const std::vector<std::string>& parts) {
  List l;
  for (const auto& p : parts) l.push_back(Value::string(p));
  return Value::make_list(std::move(l));
}

// Attribute path "a.b" or index "0" as jinja2's make_attrgetter resolves it.
Value attr_path(const Value& item, const std::string& path) {
  Value cur = item;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    bool digits = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
    cur = py_getitem(cur, digits ? Value::integer(std::stoll(part)) : Value::string(part));
    if (dot == std::string::npos) return cur;
    start = dot + 1;
  }
}

Args shift(const Args& a, size_t n) {
  Args r;
  r.pos.assign(a.pos.begin() + std::min(n, a.pos.size()), a.pos.end());
  r.kw = a.kw;
  return r;
}

Value tojson(const Value& v, const Args& a) {
  // transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
  JsonOptions o;
  o.ensure_ascii = bool_of(a, 0, "ensure_ascii", false);
  if (const Value* ind = arg(a, 1, "indent"); ind && !ind->is_none()) {
    if (ind->is_string()) {
      o.indent = ind->s;
    } else {
      const int64_t w = std::max<int64_t>(0, ind->as_int());
      check_string_size(uint64_t(w));
      o.indent = std::string(static_cast<size_t>(w), ' ');
    }
  }
  if (const Value* sep = arg(a, 2, "separators"); sep && !sep->is_none()) {
    if (!sep->is_list() || sep->list->size() != 2) throw Error("tojson separators must be a pair");
    o.item_sep = py_str((*sep->list)[0]);
    o.key_sep = py_str((*sep->list)[1]);
  }
  o.sort_keys = bool_of(a, 3, "sort_keys", false);
  return Value::string(py_json_dumps(v, o));
}

Value do_indent(const Value& v, const Args& a) {
  const Value* w = arg(a, 0, "width");
  const int64_t width = w ? std::max<int64_t>(0, w->as_int()) : 4;
  if (!(w && w->is_string())) check_string_size(uint64_t(width));
  std::string ind = (w && w->is_string()) ? w->s : std::string(static_cast<size_t>(width), ' ');
  bool first = bool_of(a, 1, "first", false), blank = bool_of(a, 2, "blank", false);
  auto lines = py_splitlines(py_str(v) + "\n");
  std::string rv;
  for (size_t k = 0; k < lines.size(); ++k) {
    check_string_size(rv.size() + ind.size() + lines[k].size());
    if (k) rv += "\n";
    bool indent_it = k > 0 && (blank || !lines[k].empty());
    rv += (indent_it ? ind : "") + lines[k];
  }
  return Value::string(first ? ind + rv : rv);
}

Value sort_filter(const Value& v, const Args& a) {
  bool reverse = bool_of(a, 0, "reverse", false), case_sensitive = bool_of(a, 1, "case_sensitive", false);
  auto attr = opt_str(a, 2, "attribute");
  std::vector<Value> items = py_iterate(v);
  auto key = [&](const Value& x) {
    Value k = attr ? attr_path(x, *attr) : x;
    return (!case_sensitive && k.is_string()) ? Value::string(py_lower(k.s)) : k;
  };
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    charge_steps(1);
    auto c = py_compare(key(x), key(y));
    if (!c) throw Error("'<' not supported between '" + x.type_name() + "' and '" + y.type_name() + "'");
    return reverse ? *c > 0 : *c < 0;
  });
  return Value::make_list(std::move(items));
}

Value select_filter(const std::string& name, const Value& v, const Args& a) {
  bool by_attr = name == "selectattr" || name == "rejectattr";
  bool keep = name == "select" || name == "selectattr";
  size_t off = 0;
  std::optional<std::string> attr;
  if (by_attr) {
    if (a.pos.empty()) throw Error(name + " needs an attribute name");
    attr = py_str(a.pos[0]);
    off = 1;
  }
  std::optional<std::string> test;
  if (a.pos.size() > off) test = py_str(a.pos[off]);
  if (test && !is_known_test(*test)) throw Error("unsupported test '" + *test + "'");
  Args targs = shift(a, off + 1);
  List out;
  for (const Value& item : py_iterate(v)) {
    Value x = attr ? attr_path(item, *attr) : item;
    bool ok = test ? apply_test(*test, x, targs) : x.truthy();
    if (ok == keep) out.push_back(item);
  }
  return Value::make_list(std::move(out));
}

Value map_filter(const Value& v, const Args& a) {
  List out;
  if (a.pos.empty()) {
    const Value* at = arg(a, 99, "attribute");
    if (!at) throw Error("map needs a filter name or attribute=");
    const Value* dflt = arg(a, 99, "default");
    for (const Value& item : py_iterate(v)) {
      Value x = attr_path(item, py_str(*at));
      out.push_back((x.is_undefined() && dflt) ? *dflt : x);
    }
  } else {
    std::string f = py_str(a.pos[0]);
    if (!is_known_filter(f)) throw Error("unsupported filter '" + f + "'");
    Args fargs = shift(a, 1);
    for (const Value& item : py_iterate(v)) out.push_back(apply_filter(f, item, fargs));
  }
  return Value::make_list(std::move(out));
}

Value items_of(const Value& v) {
  if (v.is_undefined()) return Value::make_list({});
  if (!v.is_dict()) throw Error("items filter needs a mapping, got '" + v.type_name() + "'");
  List l;
  for (const auto& kv : v.dict->items) l.push_back(Value::make_list({Value::string(kv.first), kv.second}, true));
  return Value::make_list(std::move(l));
}

// int(d) for a float: NaN and infinities give the default (jinja2's int filter catches
// Python's ValueError/OverflowError); values past 64 bits are an error rather than UB.
Value float_to_int(double d, int64_t dflt) {
  if (!std::isfinite(d)) return Value::integer(dflt);
  if (!(d > -9223372036854775808.0 && d < 9223372036854775808.0))
    throw Error("integer " + py_float_repr(d) + " does not fit in 64 bits");
  return Value::integer(static_cast<int64_t>(d));
}

Value to_int(const Value& v, const Args& a) {
  int64_t dflt = int_of(a, 0, "default", 0);
  if (v.kind == Value::Kind::Int || v.kind == Value::Kind::Bool) return Value::integer(v.as_int());
  if (v.kind == Value::Kind::Float) return float_to_int(v.f, dflt);
  if (v.is_string()) {
    std::string s = py_strip(v.s, std::nullopt, true, true);
    try {
      size_t used = 0;
      int64_t r = std::stoll(s, &used, static_cast<int>(int_of(a, 1, "base", 10)));
      if (used == s.size()) return Value::integer(r);
    } catch (const std::exception&) {
    }
    try {
      size_t used = 0;
      double d = std::stod(s, &used);
      if (used == s.size()) return float_to_int(d, dflt);
    } catch (const std::exception&) {
    }
  }
  return Value::integer(dflt);
}

Value to_float(const Value& v, const Args& a) {
  const Value* d = arg(a, 0, "default");
  double dflt = d ? d->as_double() : 0.0;
  if (v.is_number()) return Value::number(v.as_double());
  if (v.is_string()) {
    std::string s = py_strip(v.s, std::nullopt, true, true);
    try {
      size_t used = 0;
      double r = std::stod(s, &used);
      if (used == s.size()) return Value::number(r);
    } catch (const std::exception&) {
    }
  }
  return Value::number(dflt);
}

}  // namespace

static const char* const kFilters[] = {"trim",    "upper",  "lower",  "length",  "count",   "first",      "last",
                                       "default", "d",      "tojson", "join",    "replace", "capitalize", "title",
                                       "string",  "int",    "float",  "list",    "items",   "selectattr", "rejectattr",
                                       "select",  "reject", "map",    "indent",  "reverse", "sort",       "abs",
                                       "safe",    "sum",    "unique", "dictsort"};

bool is_known_filter(const std::string& n) {
  return std::find_if(std::begin(kFilters), std::end(kFilters), [&](const char* x) { return n == x; }) !=
         std::end(kFilters);
}

Value apply_filter(const std::string& n, const Value& v, const Args& a) {
  if (n == "default" || n == "d") {
    const Value* dv = arg(a, 0, "default_value");
    bool boolean = bool_of(a, 1, "boolean", false);
    if (v.is_undefined() || (boolean && !v.truthy())) return dv ? *dv : Value::string("");
    return v;
  }
  if (n == "length" || n == "count") {
    if (v.is_undefined()) return Value::integer(0);
    if (v.is_string()) return Value::integer(static_cast<int64_t>(py_len(v.s)));
    if (v.is_list()) return Value::integer(static_cast<int64_t>(v.list->size()));
    if (v.is_dict()) return Value::integer(static_cast<int64_t>(v.dict->items.size()));
    throw Error("object of type '" + v.type_name() + "' has no len()");
  }
  if (n == "string") return Value::string(py_str(v));
  if (n == "safe") return v.is_string() ? v : Value::string(py_str(v));
  if (n == "trim") return Value::string(py_strip(py_str(v), opt_str(a, 0, "chars"), true, true));
  if (n == "upper") return Value::string(py_upper(py_str(v)));
  if (n == "lower") return Value::string(py_lower(py_str(v)));
  if (n == "capitalize") return Value::string(py_capitalize(py_str(v)));
  if (n == "title") return Value::string(jinja_title_filter(py_str(v)));
  if (n == "replace") {
    if (a.pos.size() < 2) throw Error("replace needs old and new strings");
    return Value::string(py_replace(py_str(v), py_str(a.pos[0]), py_str(a.pos[1]), int_of(a, 2, "count", -1)));
  }
  if (n == "tojson") return tojson(v, a);
  if (n == "indent") return do_indent(v, a);
  if (n == "int") return to_int(v, a);
  if (n == "float") return to_float(v, a);
  if (n == "abs") {
    if (v.kind == Value::Kind::Float) return Value::number(std::abs(v.f));
    if (v.is_number()) {
      if (v.as_int() == INT64_MIN)
        throw Error("integer overflow: abs(" + std::to_string(INT64_MIN) + ") does not fit in 64 bits");
      return Value::integer(std::abs(v.as_int()));
    }
    throw Error("bad operand type for abs(): '" + v.type_name() + "'");
  }
  if (n == "items") return items_of(v);
  if (n == "dictsort") {
    Value l = items_of(v);
    std::stable_sort(l.list->begin(), l.list->end(), [](const Value& x, const Value& y) {
      return py_lower((*x.list)[0].s) < py_lower((*y.list)[0].s);
    });
    return l;
  }
  if (n == "selectattr" || n == "rejectattr" || n == "select" || n == "reject") return select_filter(n, v, a);
  if (n == "map") return map_filter(v, a);
  if (n == "sort") return sort_filter(v, a);
  if (n == "join") {
    std::string sep = a.get(0, "d") ? py_str(*a.get(0, "d")) : "";
    auto attr = opt_str(a, 1, "attribute");
    std::string out;
    bool first = true;
    for (const Value& item : py_iterate(v)) {
      out += (first ? "" : sep) + py_str(attr ? attr_path(item, *attr) : item);
      check_string_size(out.size());
      first = false;
    }
    return Value::string(out);
  }
  if (n == "sum") {
    auto attr = opt_str(a, 0, "attribute");
    Value total = a.get(1, "start") ? *a.get(1, "start") : Value::integer(0);
    for (const Value& item : py_iterate(v)) total = binary_op("+", total, attr ? attr_path(item, *attr) : item);
    return total;
  }
  // Filters over the items of a sequence.
  std::vector<Value> items = py_iterate(v);
  if (n == "list") return Value::make_list(std::move(items));
  if (n == "first" || n == "last") {
    if (items.empty()) return Value::undefined("No " + n + " item, sequence was empty.");
    return n == "first" ? items.front() : items.back();
  }
  if (n == "reverse") {
    std::reverse(items.begin(), items.end());
    if (v.is_string()) {
      std::string s;
      for (const Value& c : items) s += c.s;
      return Value::string(s);
    }
    return Value::make_list(std::move(items));
  }
  if (n == "unique") {
    List out;
    for (const Value& x : items) {
      auto same = [&](const Value& y) {
        return (x.is_string() && y.is_string()) ? py_lower(x.s) == py_lower(y.s) : py_equal(x, y);
      };
      charge_steps(int64_t(out.size()));
      if (std::none_of(out.begin(), out.end(), same)) out.push_back(x);
    }
    return Value::make_list(std::move(out));
  }
  throw Error("unsupported filter '" + n + "'");
}

// ---- globals ------------------------------------------------------------------------------
bool is_global_function(const std::string& n) {
  return n == "range" || n == "namespace" || n == "raise_exception" || n == "strftime_now" || n == "dict";
}

Value call_global(const std::string& n, const Args& a) {
  if (n == "raise_exception") throw TemplateRaise(a.pos.empty() ? std::string() : py_str(a.pos[0]));
  if (n == "range") {
    if (a.pos.empty() || a.pos.size() > 3) throw Error("range expected 1 to 3 arguments");
    int64_t start = 0, stop, step = 1;
    if (a.pos.size() == 1) {
      stop = int_of(a, 0, "", 0);
    } else {
      start = int_of(a, 0, "", 0);
      stop = int_of(a, 1, "", 0);
      if (a.pos.size() == 3) step = int_of(a, 2, "", 1);
    }
    if (step == 0) throw Error("range() arg 3 must not be zero");
    // Python's len(range(...)), in 128 bits so no bound or step overflows.
    const __int128 span = step > 0 ? __int128(stop) - start : __int128(start) - stop;
    const __int128 mag = step > 0 ? __int128(step) : -__int128(step);
    const __int128 count = span <= 0 ? 0 : (span + mag - 1) / mag;
    check_list_size(count > __int128(SIZE_MAX >> 1) ? SIZE_MAX : size_t(count));
    List l;
    l.reserve(size_t(count));
    for (__int128 k = 0; k < count; ++k) l.push_back(Value::integer(int64_t(start + k * step)));
    return Value::make_list(std::move(l));
  }
  if (n == "namespace" || n == "dict") {
    Dict d;
    for (const Value& p : a.pos) {
      if (!p.is_dict()) throw Error(n + "() positional argument must be a mapping");
      for (const auto& kv : p.dict->items) d.set(kv.first, kv.second);
    }
    for (const auto& kv : a.kw) d.set(kv.first, kv.second);
    return n == "dict" ? Value::make_dict(std::move(d)) : Value::make_namespace(std::move(d));
  }
  if (n == "strftime_now") {
    std::string fmt = a.pos.empty() ? "" : py_str(a.pos[0]);
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);  // Python's datetime.now() is local, naive time
    char buf[512];
    size_t len = std::strftime(buf, sizeof buf, fmt.c_str(), &tm);
    return Value::string(std::string(buf, len));
  }
  throw Error("'" + n + "' is not callable");
}

// ---- methods ------------------------------------------------------------------------------
static Value str_method(const std::string& s, const std::string& n, const Args& a) {
  if (n == "strip" || n == "lstrip" || n == "rstrip")
    return Value::string(py_strip(s, opt_str(a, 0, "chars"), n != "rstrip", n != "lstrip"));
  if (n == "split") return str_list(py_split(s, opt_str(a, 0, "sep"), int_of(a, 1, "maxsplit", -1)));
  if (n == "rsplit") return str_list(py_rsplit(s, opt_str(a, 0, "sep"), int_of(a, 1, "maxsplit", -1)));
  if (n == "splitlines") return str_list(py_splitlines(s));
  if (n == "startswith" || n == "endswith") {
    const Value* p = arg(a, 0, "prefix");
    if (!p) throw Error(n + "() takes at least 1 argument");
    std::vector<Value> opts = p->is_list() ? *p->list : std::vector<Value>{*p};
    for (const Value& o : opts) {
      if (!o.is_string()) throw Error(n + " first arg must be str or a tuple of str, not " + o.type_name());
      bool hit = n == "startswith" ? s.compare(0, o.s.size(), o.s) == 0
                                   : (s.size() >= o.s.size() && s.compare(s.size() - o.s.size(), o.s.size(), o.s) == 0);
      if (hit) return Value::boolean(true);
    }
    return Value::boolean(false);
  }
  if (n == "upper") return Value::string(py_upper(s));
  if (n == "lower") return Value::string(py_lower(s));
  if (n == "title") return Value::string(py_str_title(s));
  if (n == "capitalize") return Value::string(py_capitalize(s));
  if (n == "replace") {
    if (a.pos.size() < 2) throw Error("replace() takes at least 2 arguments");
    return Value::string(py_replace(s, py_str(a.pos[0]), py_str(a.pos[1]), int_of(a, 2, "count", -1)));
  }
  if (n == "find" || n == "rfind")
    return Value::integer(py_find(s, a.pos.empty() ? "" : py_str(a.pos[0]), n == "rfind"));
  if (n == "count") return Value::integer(py_count(s, a.pos.empty() ? "" : py_str(a.pos[0])));
  if (n == "join") {
    if (a.pos.empty()) throw Error("join() takes exactly one argument");
    std::string out;
    bool first = true;
    for (const Value& x : py_iterate(a.pos[0])) {
      if (!x.is_string()) throw Error("sequence item: expected str instance, " + x.type_name() + " found");
      out += (first ? "" : s) + x.s;
      check_string_size(out.size());
      first = false;
    }
    return Value::string(out);
  }
  auto all = [&](auto pred) {
    auto cps = py_codepoints(s);
    return Value::boolean(!cps.empty() && std::all_of(cps.begin(), cps.end(), pred));
  };
  if (n == "isdigit") return all([](uint32_t c) { return c >= '0' && c <= '9'; });
  if (n == "isalpha") return all([](uint32_t c) { return (c | 32) >= 'a' && (c | 32) <= 'z'; });
  if (n == "isalnum")
    return all([](uint32_t c) { return ((c | 32) >= 'a' && (c | 32) <= 'z') || (c >= '0' && c <= '9'); });
  if (n == "isspace") return all([](uint32_t c) { return py_isspace(c); });
  if (n == "isupper") return Value::boolean(py_upper(s) == s && py_lower(s) != s);
  if (n == "islower") return Value::boolean(py_lower(s) == s && py_upper(s) != s);
  throw Error("'str' object has no attribute '" + n + "'");
}

Value call_method(const Value& self, const std::string& n, const Args& a) {
  if (self.is_string()) return str_method(self.s, n, a);
  if (self.is_dict()) {
    if (n == "items") return items_of(self);
    if (n == "keys") return Value::make_list(py_iterate(self));
    if (n == "values") {
      List l;
      for (const auto& kv : self.dict->items) l.push_back(kv.second);
      return Value::make_list(std::move(l));
    }
    if (n == "get") {
      if (a.pos.empty()) throw Error("get expected at least 1 argument");
      const Value* v = a.pos[0].is_string() ? self.dict->find(a.pos[0].s) : nullptr;
      return v ? *v : (a.pos.size() > 1 ? a.pos[1] : Value::none());
    }
  }
  if (self.is_list() && !a.pos.empty()) {
    charge_steps(int64_t(self.list->size()));
    if (n == "count")
      return Value::integer(
          std::count_if(self.list->begin(), self.list->end(), [&](const Value& x) { return py_equal(x, a.pos[0]); }));
    if (n == "index") {
      for (size_t k = 0; k < self.list->size(); ++k)
        if (py_equal((*self.list)[k], a.pos[0])) return Value::integer(static_cast<int64_t>(k));
      throw Error("ValueError: " + py_repr(a.pos[0]) + " is not in list");
    }
  }
  throw Error("'" + self.type_name() + "' object has no method '" + n + "'");
}

}  // namespace greta::jinja
