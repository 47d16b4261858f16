// The message a call fails with, for tests that check what a refusal says.
#pragma once
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"

namespace greta::test {

// What f() throws as greta::Error, or "<no error>".
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace greta::test

#define EXPECT_ERROR_HAS(expr, needle) EXPECT_NE(std::string(expr).find(needle), std::string::npos) << (expr)
