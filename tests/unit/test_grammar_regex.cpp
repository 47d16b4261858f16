// Regexes as grammars: whole-text grammars against std::regex (an independent matcher) on
// random strings, and the refusals.
#include <gtest/gtest.h>

#include <random>
#include <regex>

#include "grammar/gbnf_parser.h"
#include "grammar/regex_to_gbnf.h"
#include "grammar_test_util.h"

namespace greta::grammar {
namespace {

TEST(GrammarRegex, WholeTextMatchesAgreeWithStdRegex) {
  // Patterns whose meaning is the same in ECMAScript and in Python on this alphabet, each with
  // one matching text; the texts tried are random ones and that text with random edits.
  const std::pair<const char*, const char*> cases[] = {{"a(b|c)*d", "abcbd"},
                                                       {"[a-c]{2,3}x?", "abx"},
                                                       {"(ab|a)(bc|c)", "abc"},
                                                       {"[^ab]+", "xyz"},
                                                       {"\\d+(\\.\\d{1,2})?", "1.1"},
                                                       {"(a|b)*abb", "babb"},
                                                       {"x*y+z?", "xyyz"},
                                                       {".a.", "xa "},
                                                       {"\\w\\s\\W", "a -"},
                                                       {"(?:ab){0,2}c", "abc"},
                                                       {"[a\\-z]+", "a-z"},
                                                       {"^a|b$", "a"},
                                                       {"(a|)b", "ab"},
                                                       {"[\\d_]{2}", "1_"},
                                                       {"a+?b*?", "aab"},
                                                       {"(?<n>x)(?P<m>y)?", "xy"},
                                                       {"\\.\\\\", ".\\"},
                                                       {"[^\\d\\s]z", "az"},
                                                       {"a{2,}", "aaa"},
                                                       {"(ab){1,3}|x", "abab"}};
  const std::string alphabet = "abcdxyz.1 -\n_\\";
  std::mt19937 rng(11);
  for (const auto& [p, example] : cases) {
    SCOPED_TRACE(p);
    auto g = parse_gbnf(regex_to_gbnf_grammar(p));
    // std::regex has no named groups: the same pattern without the names.
    const std::regex re(std::string(p).find("?<") != std::string::npos ? "(x)(y)?" : p, std::regex::ECMAScript);
    int matched = 0;
    for (int i = 0; i < 400; ++i) {
      std::string s;
      if (i % 2) {
        for (size_t k = 0, n = rng() % 7; k < n; ++k) s += alphabet[rng() % alphabet.size()];
      } else {
        s = example;
        for (size_t e = 0, n = rng() % 3; e < n; ++e) {
          const size_t at = rng() % (s.size() + 1);
          const char c = alphabet[rng() % alphabet.size()];
          switch (rng() % 3) {
            case 0: s.insert(s.begin() + ptrdiff_t(at), c); break;
            case 1:
              if (at < s.size()) s.erase(at, 1);
              break;
            default:
              if (at < s.size()) s[at] = c;
              break;
          }
        }
      }
      const bool want = std::regex_match(s, re);
      ASSERT_EQ(accepts(g, s), want) << "text '" << s << "'";
      matched += want;
    }
    EXPECT_GT(matched, 0);  // both outcomes occur, so the comparison says something
    EXPECT_LT(matched, 400);
  }
}

TEST(GrammarRegex, TextGrammarHoldsQuotesBackslashesAndUnicode) {
  auto g = parse_gbnf(regex_to_gbnf_grammar(R"re(^"[^"]*" é+ [ぁ-ゟ]\n$)re"));
  expect_language(g, "quoted", {"\"a b\\\" éé ぁ\n"}, {"\"a\"b\" é ぁ\n", "\"\" e ぁ\n"});
  EXPECT_TRUE(accepts(parse_gbnf(regex_to_gbnf_grammar("")), ""));
}

TEST(GrammarRegex, JsonStringContentsAreEscaped) {
  // Inside a JSON string the pattern's quote, backslash and newline are written escaped.
  auto g = parse_gbnf("root ::= \"\\\"\" " + regex_to_gbnf(R"re(^a["\\\n]b$)re", "char") +
                      " \"\\\"\"\nchar ::= [^\"\\\\] | \"\\\\\" [\"\\\\n]\n");
  expect_language(g, "escaped", {R"("a\"b")", R"("a\\b")", R"("a\nb")"}, {"\"a\"b\"", "\"a\nb\"", R"("a\tb")"});
}

TEST(GrammarRegex, UnsupportedFeaturesAreNamed) {
  auto error = [](const std::string& p) {
    try {
      regex_to_gbnf_grammar(p);
    } catch (const GrammarError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(error("(a)\\1").find("backreferences"), std::string::npos);
  EXPECT_NE(error("a(?!b)").find("lookahead and lookbehind"), std::string::npos);
  EXPECT_NE(error("(?i)a").find("inline flags"), std::string::npos);
  EXPECT_NE(error("a++").find("possessive"), std::string::npos);
  EXPECT_NE(error("a$b").find("anchor $"), std::string::npos);
  EXPECT_NE(error("*a").find("nothing to repeat"), std::string::npos);
  EXPECT_NE(error("(a").find("expected ')'"), std::string::npos);
  EXPECT_NE(error("a)").find("')' without a matching '('"), std::string::npos);
  EXPECT_NE(error("[b-a]").find("end before its start"), std::string::npos);
  EXPECT_NE(error("a{3,2}").find("n below m"), std::string::npos);
  EXPECT_NE(error("\\p{L}").find("escape \\p is not supported"), std::string::npos);
  EXPECT_NE(error("a\\").find("cannot end with a backslash"), std::string::npos);
  EXPECT_NE(error("(a*)*").find("can match the empty string"), std::string::npos);
  EXPECT_NE(error("x(b|(c?)){2,}").find("can match the empty string"), std::string::npos);
  // Nullable groups repeated a bounded number of times, or non-nullable ones, are fine.
  EXPECT_TRUE(accepts(parse_gbnf(regex_to_gbnf_grammar("(a*){2}(b?c)+")), "aaccbc"));
}

}  // namespace
}  // namespace greta::grammar
