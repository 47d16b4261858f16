// Parsing of untrusted JSON request bodies with bounded nesting.
//
// Guarantees
// - Never recurses per nesting level and never builds a value nested deeper than max_depth, so
//   a body like [[[[...]]]] cannot exhaust the stack here or later (copies, dumps and
//   comparisons of the result recurse, but only max_depth deep).
// - Every failure throws JsonReadError with a message that names where (the byte offset, or the
//   field path such as "messages[0].content") and what was expected; it never quotes the body.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"

namespace greta::server {

constexpr int kMaxJsonDepth = 32;  // the OpenAI request schema nests 5 deep

class JsonReadError : public Error {
 public:
  JsonReadError(std::string message, std::string field) : Error(std::move(message)), field_(std::move(field)) {}
  const std::string& field() const { return field_; }  // "" when the error has no field

 private:
  std::string field_;
};

nlohmann::json read_json(const std::string& text, int max_depth = kMaxJsonDepth);

}  // namespace greta::server
