// Token masks against the slow reference: token t is allowed iff feeding its bytes one by one
// to a copy of the matcher succeeds; EOS iff the grammar can end. Checked on every token of a
// small vocabulary with multi-byte and partial UTF-8 tokens, at states reached by random
// accepted token sequences.
#include <gtest/gtest.h>

#include <random>

#include "grammar/gbnf_parser.h"
#include "grammar/json_schema_to_gbnf.h"
#include "grammar/token_mask.h"

namespace greta::grammar {
namespace {

constexpr int32_t kEos = 0;

std::shared_ptr<TokenVocabulary> small_vocab() {
  std::vector<std::string> t = {"</s>", ""};  // EOS, and a control token with no text
  for (int b = 1; b < 256; ++b) t.push_back(std::string(1, char(b)));
  const char* more[] = {"\xC3\xA9", "\xC3", "\xA9", "ab", " a", "\"", "\":", "{\"", "\"}", "\",",
                        "\xE6\x97\xA5\xE6\x9C\xAC", "\xE6\x97", "\xE6\x97\xA5", "\xF0\x9F\x98\x80", "\xF0\x9F",
                        "\x98\x80", "\x9F\x98\x80", "12", "1.5", "-3", "e+", "true", "null", "false", "\n", "  ",
                        "\n  ", "[1", "],", "{}", "[]", "\\n", "\\\"", "\\u00", "name", " name", "\"name\"", "こん",
                        "にちは", "。", "\xE3\x81", "\xE3", "x\xE3\x81", "a\xC3", "\xC0\x80", "\xED\xA0\x80", "2024-",
                        "01-", "T12:", "00Z", "abc\"", " {", ": ", ", ", "\xF4\x90\x80\x80", "\xC3\xA9\xC3",
                        // below prefixes that stay inside a string: bytes that leave it, invalid UTF-8
                        "a\x01", "ab\xFF", "\xC3\xA9\x80", " a\\", "\xE6\x97\xA5\"",
                        // under an escape, back in a string: a subtree reached through bytes that leave it
                        "\\\"x", "\\\"xy", "\\nab", "\\nabc"};
  for (const char* s : more) t.push_back(s);
  return std::make_shared<TokenVocabulary>(t, std::vector<int32_t>{kEos});
}

// Compares the mask with the reference on every token; returns the allowed tokens.
std::vector<int32_t> check_mask(TokenMasker& masker, const TokenVocabulary& vocab, const Matcher& m,
                                const std::string& where) {
  TokenBitmask mask;
  masker.compute(m, mask);
  EXPECT_EQ(mask.size(), (vocab.size() + 31) / 32);
  std::vector<int32_t> allowed;
  for (int32_t t = 0; t < int32_t(vocab.size()); ++t) {
    bool want;
    if (t == kEos) {
      want = m.can_end();
    } else if (vocab.token(t).empty()) {
      want = false;
    } else {
      Matcher copy = m;
      want = copy.accept_bytes(vocab.token(t));
    }
    EXPECT_EQ(mask_allows(mask, t), want) << where << ": token " << t << " '" << vocab.token(t) << "'";
    if (want) allowed.push_back(t);
  }
  return allowed;
}

// Random walks: at each step check the mask, then take a random allowed token.
void random_walks(const std::shared_ptr<const Grammar>& g, int walks, int steps, uint32_t seed) {
  auto vocab = small_vocab();
  TokenMasker masker(vocab);  // one per request: its cache carries across steps
  std::mt19937 rng(seed);
  for (int w = 0; w < walks; ++w) {
    Matcher m(g);
    std::string text;
    for (int s = 0; s < steps; ++s) {
      std::vector<int32_t> allowed = check_mask(masker, *vocab, m, "after '" + text + "'");
      if (::testing::Test::HasFailure()) return;
      allowed.erase(std::remove(allowed.begin(), allowed.end(), kEos), allowed.end());
      if (allowed.empty()) break;
      const int32_t t = allowed[rng() % allowed.size()];
      ASSERT_TRUE(m.accept_bytes(vocab->token(t)));
      text += vocab->token(t);
    }
  }
}

TEST(GrammarMask, JsonGrammarMatchesReference) { random_walks(parse_gbnf(json_object_gbnf()), 12, 40, 1); }

TEST(GrammarMask, NonAsciiClassesMatchReference) {
  random_walks(parse_gbnf(R"(root ::= [ぁ-ゟ]+ ("。" [ぁ-ゟ日本]+)* [😀é]?)"), 12, 20, 2);
  random_walks(parse_gbnf(R"(root ::= ([^a-z"] | "ab" | .)* "\"")"), 12, 20, 3);
}

TEST(GrammarMask, SchemaGrammarMatchesReference) {
  auto schema = nlohmann::ordered_json::parse(R"({
    "type": "object",
    "properties": {
      "name": {"type": "string", "maxLength": 6},
      "when": {"type": "string", "format": "date-time"},
      "n": {"type": "integer", "minimum": -5, "maximum": 120},
      "tags": {"type": "array", "items": {"enum": ["a", "é", null]}, "maxItems": 3}
    },
    "required": ["name"],
    "additionalProperties": {"type": "boolean"}
  })");
  random_walks(parse_gbnf(json_schema_to_gbnf(schema)), 12, 40, 4);
}

TEST(GrammarMask, PendingPartialCodePointAndEos) {
  auto g = parse_gbnf(R"(root ::= "a" [é日]?)");
  auto vocab = small_vocab();
  TokenMasker masker(vocab);
  Matcher m(g);
  ASSERT_TRUE(m.accept_bytes("a"));
  std::vector<int32_t> allowed = check_mask(masker, *vocab, m, "after 'a'");
  EXPECT_NE(std::find(allowed.begin(), allowed.end(), kEos), allowed.end());
  ASSERT_TRUE(m.accept_bytes("\xE6\x97"));  // two of the three bytes of 日
  EXPECT_FALSE(m.can_end());
  allowed = check_mask(masker, *vocab, m, "inside 日");
  EXPECT_EQ(std::find(allowed.begin(), allowed.end(), kEos), allowed.end());
  ASSERT_EQ(allowed.size(), 1u);
  EXPECT_EQ(vocab->token(allowed[0]), "\xA5");
}

TEST(GrammarMask, MaskerFollowsAChangeOfGrammar) {
  auto vocab = small_vocab();
  TokenMasker masker(vocab);
  check_mask(masker, *vocab, Matcher(parse_gbnf(R"(root ::= "ab")")), "first grammar");
  check_mask(masker, *vocab, Matcher(parse_gbnf(R"(root ::= [0-9]+ "." [0-9])")), "second grammar");
}

TEST(GrammarMask, VocabularyRejectsAnEosIdOutsideIt) { EXPECT_THROW(TokenVocabulary({"a"}, {3}), GrammarError); }

}  // namespace
}  // namespace greta::grammar
