// The library the renderer calls into: jinja2's filters and tests, Python methods on str,
// dict and list, the globals transformers provides (raise_exception, strftime_now, namespace,
// dict) plus jinja2's range, and jinja2's sandboxed getattr/getitem/iteration rules.
// Errors throw greta::Error with a message only; the renderer adds line:col.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "chat/jinja_value.h"
#include "core/error.h"

namespace greta::jinja {

// raise_exception(msg) from a template: the renderer passes it on unchanged.
class TemplateRaise : public Error {
 public:
  explicit TemplateRaise(const std::string& msg) : Error(msg) {}
};

struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  // Argument `idx` (positional) or `name` (keyword), else nullptr.
  const Value* get(size_t idx, const char* name) const;
};

[[noreturn]] void undefined_error(const Value& v);

Value apply_filter(const std::string& name, const Value& input, const Args& args);
bool apply_test(const std::string& name, const Value& input, const Args& args);
bool is_global_function(const std::string& name);
Value call_global(const std::string& name, const Args& args);
Value call_method(const Value& self, const std::string& name, const Args& args);

Value py_getattr(const Value& obj, const std::string& name);  // obj.name
Value py_getitem(const Value& obj, const Value& key);         // obj[key]
std::vector<Value> py_iterate(const Value& v);                // for x in v
Value binary_op(const std::string& op, const Value& a, const Value& b);
bool contains(const Value& container, const Value& item);  // item in container

}  // namespace greta::jinja
