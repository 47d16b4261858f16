// Constrained decoding requests: `response_format` json_object / json_schema, and the
// extension fields `grammar` (GBNF, llama.cpp's format) and `regex` (the output matches it
// whole), read from a request body and compiled into the grammar the engine enforces.
//
// Guarantees
// - At most one constraint per request; a second is a 400 that names both fields.
// - Every malformed field, unsupported JSON Schema keyword, invalid GBNF or unsupported regex
//   feature is an ApiError 400 whose message names the field and the problem (the compiler's
//   own message: keyword and JSON pointer, or line and column).
// - Compiled grammars are cached by source text (GrammarCache); schemas keep the client's key
//   order, which decides the order of the generated properties.
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "grammar/grammar.h"
#include "server/grammar_cache.h"

namespace greta::server {

struct ConstraintSpec {
  enum class Kind { None, JsonObject, JsonSchema, Gbnf, Regex };
  Kind kind = Kind::None;
  std::string source;  // JsonSchema: the schema as JSON text (key order kept); Gbnf, Regex: the text
  std::string param;   // the request field it came from, for errors
};

// Reads the constraint fields of a request body (`body`, already parsed; `text`, its source,
// re-read for the schema's key order). Throws ApiError(400).
ConstraintSpec parse_constraint(const nlohmann::json& body, const std::string& text);

// The compiled grammar of a constraint (null for Kind::None), through `cache` when it is not
// null. Throws ApiError(400) naming the constraint's field when it does not compile.
std::shared_ptr<const grammar::Grammar> compile_constraint(const ConstraintSpec& spec, GrammarCache* cache);

}  // namespace greta::server
