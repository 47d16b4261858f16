// Outputs sampled from the llama.cpp corpus grammars through token masks (random allowed
// tokens until the grammar may end) pass an independent checker: a JSON parser for the JSON
// grammars, std::regex for the regular ones.
#include <gtest/gtest.h>

#include <random>
#include <regex>

#include <nlohmann/json.hpp>

#include "grammar/gbnf_parser.h"
#include "grammar/token_mask.h"
#include "grammar_test_util.h"

namespace greta::grammar {
namespace {

constexpr int32_t kEos = 0;

// Single characters (ASCII, tab, newline, a few non-ASCII) and some longer tokens.
std::shared_ptr<TokenVocabulary> char_vocab() {
  std::vector<std::string> t = {"</s>", "\n", "\t"};
  for (int c = 0x20; c < 0x7F; ++c) t.push_back(std::string(1, char(c)));
  for (const char* s : {"é", "ぁ", "ア", "、", "一", "\xE3", "true", "null", "\": ", "- ", "O-O", "1. "})
    t.push_back(s);
  return std::make_shared<TokenVocabulary>(t, std::vector<int32_t>{kEos});
}

// Random walks; closing tokens are favoured so that nested grammars end. Returns the texts
// that ended with EOS.
std::vector<std::string> sample(const std::shared_ptr<const Grammar>& g, int want, uint32_t seed) {
  auto vocab = char_vocab();
  TokenMasker masker(vocab);
  std::mt19937 rng(seed);
  std::vector<std::string> out;
  for (int tries = 0; tries < 50 * want && int(out.size()) < want; ++tries) {
    Matcher m(g);
    std::string text;
    for (int step = 0; step < 400; ++step) {
      TokenBitmask mask;
      masker.compute(m, mask);
      std::vector<int32_t> allowed, closing;
      for (int32_t t = 0; t < int32_t(vocab->size()); ++t) {
        if (!mask_allows(mask, t)) continue;
        allowed.push_back(t);
        const std::string& s = vocab->token(t);
        if (t == kEos || s == "}" || s == "]" || s == "\"" || s == "\n" || s == ")") closing.push_back(t);
      }
      if (allowed.empty()) break;
      const auto& pool = !closing.empty() && rng() % 3 == 0 ? closing : allowed;
      const int32_t t = pool[rng() % pool.size()];
      if (t == kEos) {
        out.push_back(text);
        break;
      }
      EXPECT_TRUE(m.accept_bytes(vocab->token(t)));
      text += vocab->token(t);
    }
  }
  EXPECT_EQ(int(out.size()), want) << "walks that ended";
  return out;
}

TEST(GrammarCorpusSamples, JsonGrammarsProduceJson) {
  for (const char* file : {"json.gbnf", "json_arr.gbnf"}) {
    SCOPED_TRACE(file);
    for (const std::string& text : sample(parse_gbnf(read_corpus(file)), 40, 5)) {
      // nlohmann refuses numbers beyond double range (784e0868), which JSON's syntax allows:
      // exponents become 1 before checking (inside strings too, where it changes nothing).
      const std::string checked = std::regex_replace(text, std::regex("([eE][-+]?)[0-9]+"), "$011");
      EXPECT_TRUE(nlohmann::json::accept(checked)) << text;
      if (std::string(file) == "json_arr.gbnf") {
        EXPECT_TRUE(nlohmann::json::parse(checked).is_array()) << text;
      }
    }
  }
}

TEST(GrammarCorpusSamples, RegularGrammarsMatchTheirRegex) {
  // The same languages written as regexes (ECMAScript, over the sampled ASCII and UTF-8 bytes).
  const std::pair<const char*, const char*> cases[] = {
      {"list.gbnf", "(- [^\\r\\n\\x0b\\x0c]+\\n)+"},
      {"chess.gbnf", "1\\. (M) (M)\\n([1-9][0-9]?\\. (M) (M)\\n)+"},
      {"english.gbnf", "[!-~]+([ \\t\\n][!-~]+)*"},
  };
  for (const auto& [file, pattern] : cases) {
    SCOPED_TRACE(file);
    std::string p = pattern;
    const std::string move = "(([a-h]x)?[a-h][1-8](=[NBKQR])?|[NBKQR][a-h]?[1-8]?x?[a-h][1-8]|O-O(-O)?)[+#]?";
    for (size_t at; (at = p.find("(M)")) != std::string::npos;) p.replace(at, 3, move);
    const std::regex re(p, std::regex::ECMAScript);
    for (const std::string& text : sample(parse_gbnf(read_corpus(file)), 40, 6)) {
      EXPECT_TRUE(std::regex_match(text, re)) << text;
    }
  }
}

}  // namespace
}  // namespace greta::grammar
