// Helpers shared by the grammar tests: whole-text acceptance and language checks.
#pragma once
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "grammar/grammar.h"

namespace greta::grammar {

// The grammar matches all of `text` (and can end there).
inline bool accepts(const std::shared_ptr<const Grammar>& g, const std::string& text) {
  Matcher m(g);
  return m.accept_bytes(text) && m.can_end();
}

// Every `good` text is accepted and every `bad` one rejected; `what` names the grammar.
inline void expect_language(const std::shared_ptr<const Grammar>& g, const std::string& what,
                            const std::vector<std::string>& good, const std::vector<std::string>& bad) {
  for (const auto& s : good) EXPECT_TRUE(accepts(g, s)) << "should accept \"" << s << "\" by\n" << what;
  for (const auto& s : bad) EXPECT_FALSE(accepts(g, s)) << "should reject \"" << s << "\" by\n" << what;
}

// A grammar of the llama.cpp corpus in tests/data/gbnf.
inline std::string read_corpus(const std::string& name) {
  std::ifstream f(std::string(GRETA_SOURCE_DIR) + "/tests/data/gbnf/" + name);
  EXPECT_TRUE(f.good()) << name;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace greta::grammar
