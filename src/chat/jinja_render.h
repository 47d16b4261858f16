// Executes a parsed template. Scoping follows jinja2: each for-loop iteration and each macro
// call gets a fresh scope (a `set` inside a loop is gone after the iteration, hence
// namespace()); `if` shares its enclosing scope. Undefined values render as "" and are falsy,
// but arithmetic, attribute access or calls on them raise, as with jinja2's default Undefined.
#pragma once
#include <string>

#include "chat/jinja_ast.h"

namespace greta::jinja {

// Renders `program` with the given top-level variables. Errors throw greta::Error with
// line:col; raise_exception(msg) throws TemplateRaise carrying msg unchanged.
std::string render_program(const Body& program, const Dict& variables);

}  // namespace greta::jinja
