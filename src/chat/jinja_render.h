// Executes a parsed template. Scoping follows jinja2: each for-loop iteration and each macro
// call gets a fresh scope (a `set` inside a loop is gone after the iteration, hence
// namespace()); `if` shares its enclosing scope. Undefined values render as "" and are falsy,
// but arithmetic, attribute access or calls on them raise, as with jinja2's default Undefined.
#pragma once
#include <string>

#include "chat/jinja_ast.h"
#include "chat/jinja_limits.h"

namespace greta::jinja {

// The rendered text, and the byte ranges of it that came from caller data (variables marked as
// data, and anything computed from them); the rest is the template's own text.
struct Rendered {
  std::string text;
  std::vector<Span> data_spans;
};

// Renders `program` with the given top-level variables. Errors throw greta::Error with
// line:col; raise_exception(msg) throws TemplateRaise carrying msg unchanged. Going past a
// limit throws greta::Error naming it.
Rendered render_program(const Body& program, const Dict& variables, const TemplateLimits& limits);

}  // namespace greta::jinja
