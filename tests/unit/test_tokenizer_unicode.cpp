// UTF-8 repair, categories and the hand-written pre-tokenizer regexes.
#include <gtest/gtest.h>

#include "core/error.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/unicode.h"

namespace greta {
namespace {

const std::string kFFFD = "\xEF\xBF\xBD";

TEST(TokenizerUnicode, SanitizeMatchesPythonReplace) {
  // Expected values are Python's bytes.decode("utf-8", errors="replace").
  EXPECT_EQ(utf8_sanitize("ok \xC3\xA9"), "ok \xC3\xA9");
  EXPECT_EQ(utf8_sanitize("\xE2\x82"), kFFFD);                      // truncated 3-byte: one
  EXPECT_EQ(utf8_sanitize("\xC0\x80"), kFFFD + kFFFD);              // overlong: each byte
  EXPECT_EQ(utf8_sanitize("\xED\xA0\x80"), kFFFD + kFFFD + kFFFD);  // surrogate
  EXPECT_EQ(utf8_sanitize("\xF0\x9F\x98z"), kFFFD + "z");
  EXPECT_EQ(utf8_sanitize("\xF4\x90\x80\x80"), kFFFD + kFFFD + kFFFD + kFFFD);  // > U+10FFFF
  EXPECT_EQ(utf8_sanitize(kFFFD), kFFFD);
  EXPECT_EQ(utf8_complete_prefix("ab\xF0\x9F\x98"), 2u);
  EXPECT_EQ(utf8_complete_prefix("ab\xFF"), 3u);
}

TEST(TokenizerUnicode, Categories) {
  EXPECT_TRUE(is_letter('a'));
  EXPECT_TRUE(is_letter(0x4E2D));    // 中
  EXPECT_TRUE(is_number(0x0663));    // Arabic-indic three
  EXPECT_TRUE(is_number(0x00BD));    // ½ (No)
  EXPECT_TRUE(is_punct(0x3001));     // 、
  EXPECT_FALSE(is_letter(0x1F600));  // 😀 is So
  EXPECT_TRUE(is_whitespace(0x3000));
  EXPECT_TRUE(is_whitespace(0x85));
  EXPECT_FALSE(is_whitespace(0x1C));  // Python isspace() says yes; White_Space says no
  EXPECT_FALSE(is_whitespace(0x200B));
}

std::vector<std::string> split(PreTokenizer p, const std::string& s) {
  std::vector<size_t> offs;
  const auto cps = utf8_decode(s, &offs);
  offs.push_back(s.size());
  std::vector<std::string> out;
  for (auto [a, b] : pre_tokenize(p, cps)) out.push_back(s.substr(offs[a], offs[b] - offs[a]));
  return out;
}

using V = std::vector<std::string>;

TEST(TokenizerPreTokenize, Gpt2) {
  EXPECT_EQ(split(PreTokenizer::GPT2, "Hello world's  end!!  "), (V{"Hello", " world", "'s", " ", " end", "!!", "  "}));
  EXPECT_EQ(split(PreTokenizer::GPT2, "a\tb 123x"), (V{"a", "\t", "b", " 123", "x"}));
  EXPECT_EQ(split(PreTokenizer::GPT2, "I'M"), (V{"I", "'", "M"}));  // case-sensitive
}

TEST(TokenizerPreTokenize, SmolLMIsolatesDigits) {
  EXPECT_EQ(split(PreTokenizer::SmolLM, "ab 123"), (V{"ab", " ", "1", "2", "3"}));
}

TEST(TokenizerPreTokenize, Llama3) {
  EXPECT_EQ(split(PreTokenizer::Llama3, "I'M 12345 ok\n\n  x"),
            (V{"I", "'M", " ", "123", "45", " ok", "\n\n", " ", " x"}));
  EXPECT_EQ(split(PreTokenizer::Llama3, "a ...\n\nb"), (V{"a", " ...\n\n", "b"}));
  EXPECT_EQ(split(PreTokenizer::Qwen2, "x=12"), (V{"x", "=", "1", "2"}));
}

TEST(TokenizerPreTokenize, UnknownNameListsSupported) {
  try {
    pre_tokenizer_from_name("nope");
    FAIL() << "no error for an unknown pre-tokenizer";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("smollm"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("llama-bpe"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace greta
