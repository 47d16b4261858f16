// Parser for the Jinja subset chat templates use: {{ expr }}, {% if/elif/else %},
// {% for ... in ... [if ...] %}...{% else %}, {% set %} (names, tuples, namespace attributes,
// block form), {% macro %}, {% break %}/{% continue %} (jinja2.ext.loopcontrols, which
// transformers enables) and {% generation %} (transformers' AssistantTracker: renders its body).
// Expression grammar and precedence follow jinja2's parser. Anything else -- an unknown tag,
// filter or test -- throws greta::Error naming it with line:col.
#pragma once
#include <string>

#include "chat/jinja_ast.h"

namespace greta::jinja {

Body parse_template(const std::string& source);

// Names the renderer implements (checked at parse time so errors point at the source).
bool is_known_filter(const std::string& name);
bool is_known_test(const std::string& name);

}  // namespace greta::jinja
