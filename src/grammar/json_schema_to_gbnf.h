// JSON Schema to GBNF, for structured outputs. The grammar accepts a subset of the instances
// valid under the schema (every accepted text is valid), in a fixed shape:
// - objects list the required properties first, in the schema's order, then the optional
//   ones in order, each may be left out; additionalProperties (default false when
//   `properties` is given, true when not) adds further keys after them, never a declared name;
// - whitespace: compact, or one space / one newline plus up to 20 spaces or tabs after each
//   token, so generation cannot loop on whitespace;
// - numbers: up to 16 integral digits, 16 fraction digits; enum/const values compact JSON;
// - oneOf is treated as anyOf (a grammar cannot check that only one branch matches).
//
// Supported keywords: type (object, array, string, number, integer, boolean, null, a list of
// them, and "json_object" for any object), properties, required, additionalProperties, enum,
// const, items, minItems, maxItems, anyOf, oneOf, allOf with one entry, $ref to local
// definitions ($defs, definitions, any #/ pointer; recursion allowed), minLength, maxLength,
// pattern (see regex_to_gbnf.h), format (date-time, date, time, uuid), and
// minimum / maximum / exclusiveMinimum / exclusiveMaximum on integers. Annotations (title,
// description, default, examples, $schema, $id, $comment, deprecated, readOnly, writeOnly) are
// ignored. Anything else throws SchemaError naming the keyword and where it is in the schema.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "grammar/grammar.h"

namespace greta::grammar {

class SchemaError : public GrammarError {
 public:
  using GrammarError::GrammarError;
};

// GBNF text whose root rule is the schema. Key order matters (required properties are written
// in declared order), so the schema is an ordered_json. root_rule names the schema's rule (and
// prefixes the rules made for its parts), so that a larger grammar can embed the text under
// its own root: its other rule names must not start with root_rule.
std::string json_schema_to_gbnf(const nlohmann::ordered_json& schema, const std::string& root_rule = "root");

// Any JSON object (`response_format: {"type": "json_object"}`).
std::string json_object_gbnf();

}  // namespace greta::grammar
