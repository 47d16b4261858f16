// The error type of every boundary (file parsing, CLI and HTTP input, engine requests).
// Inside the engine violated invariants are bugs (assert); anything caused by user input or
// files throws greta::Error with what, where and what was expected, and the boundary (CLI
// main, HTTP handler) turns it into a message, never an abort.
#pragma once
#include <stdexcept>
#include <string>

namespace greta {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

}  // namespace greta
