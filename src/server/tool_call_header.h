// The opening of one tool call object as models write it, read from a prefix of the output so
// that the call can be announced (id, name) before its arguments are generated:
//
//   { ["type": "function",] "name": "<tool>", ("arguments" | "parameters"): <first char of value>
//
// with any whitespace between the tokens. Key orders other than this one are not streamable;
// the caller reads such objects whole once they end (server/tool_calls.h call_from_json).
//
// Guarantees
// - Partial only while some continuation of `s` can still complete the header; Mismatch as soon
//   as none can (a name that is not a tool of the request, a name longer than 64 characters or
//   with characters outside OpenAI's [A-Za-z0-9_-], other keys, a header past kMaxCallHeader).
// - Complete exactly when the arguments value's first character has arrived and can start a
//   JSON value ({ [ " - digit t f n); value_at is its index.
// - Never throws; reads only `s`.
//
// Mistral's tokenizer v7/v11+ form (Mistral Small 3.x, Magistral, Devstral) writes no object:
// after its `[TOOL_CALLS]` marker comes the bare name, an optional `[CALL_ID]id`, `[ARGS]` and
// the arguments value. scan_mistral_header reads what follows the marker:
//
//   <tool> [ "[CALL_ID]" <id> ] "[ARGS]" <first char of value>
//
// with the same statuses (whitespace allowed around the tokens, the id ignored: the server
// gives each call its own).
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

#include "server/tool_calls.h"

namespace greta::server {

// Longest header read before giving up on it: the keys, a 64-character name and whitespace.
constexpr size_t kMaxCallHeader = 512;

struct CallHeader {
  enum class Status { Partial, Mismatch, Complete };
  Status status = Status::Partial;
  std::string name;     // Complete: a tool of the request
  size_t value_at = 0;  // Complete: where the arguments value starts
};

CallHeader scan_call_header(std::string_view s, const ToolRequest& t);
CallHeader scan_mistral_header(std::string_view s, const ToolRequest& t);

}  // namespace greta::server
