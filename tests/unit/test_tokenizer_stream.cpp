// StreamDecoder: never half a UTF-8 character, U+FFFD for bytes that cannot be valid,
// SentencePiece's leading space dropped exactly once.
#include <gtest/gtest.h>

#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/unicode.h"

namespace greta {
namespace {

// Byte-level vocabulary of the 256 single bytes only: every byte is its own token (id = byte).
BpeTokenizer bytes_only() {
  BpeTokenizer::Config c;
  c.kind = BpeKind::ByteLevel;
  const auto alpha = gpt2_byte_alphabet();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    utf8_append(s, alpha[b]);
    c.pieces.push_back(s);
  }
  return BpeTokenizer(c, {});
}

TEST(TokenizerStream, FourByteEmojiSplitOverTokensComesOutWhole) {
  BpeTokenizer t = bytes_only();
  const std::vector<int32_t> ids = t.encode("a\xF0\x9F\x98\x80!", false, false);  // a 😀 !
  ASSERT_EQ(ids.size(), 6u);
  StreamDecoder d(t);
  EXPECT_EQ(d.feed(ids[0]), "a");
  EXPECT_EQ(d.feed(ids[1]), "");
  EXPECT_EQ(d.feed(ids[2]), "");
  EXPECT_EQ(d.feed(ids[3]), "");
  EXPECT_EQ(d.feed(ids[4]), "\xF0\x9F\x98\x80");
  EXPECT_EQ(d.feed(ids[5]), "!");
  EXPECT_EQ(d.flush(), "");
}

TEST(TokenizerStream, InvalidBytesBecomeReplacementCharacters) {
  BpeTokenizer t = bytes_only();
  StreamDecoder d(t);
  EXPECT_EQ(d.feed(0xE2), "");  // could still become a 3-byte character
  EXPECT_EQ(d.feed('a'),
            "\xEF\xBF\xBD"
            "a");                           // now it cannot: U+FFFD, then 'a'
  EXPECT_EQ(d.feed(0xFF), "\xEF\xBF\xBD");  // never valid in UTF-8
  EXPECT_EQ(d.feed(0xF0), "");
  EXPECT_EQ(d.feed(0x9F), "");
  EXPECT_EQ(d.flush(), "\xEF\xBF\xBD");  // truncated at the end: one U+FFFD
  EXPECT_EQ(t.decode({0xF0, 0x9F}), "\xEF\xBF\xBD");
}

TEST(TokenizerStream, SentencePieceDropsOnlyTheFirstLeadingSpace) {
  const std::string sp = "\xE2\x96\x81";
  BpeTokenizer::Config c;
  c.kind = BpeKind::SentencePiece;
  c.spm_prefix = SpmPrefix::First;
  c.pieces = {"<s>", sp + "hi", sp + "yo"};
  c.special = {true, false, false};
  BpeTokenizer t(c, {});
  StreamDecoder d(t);
  EXPECT_EQ(d.feed(0), "");  // BOS, skipped
  EXPECT_EQ(d.feed(1), "hi");
  EXPECT_EQ(d.feed(2), " yo");
  EXPECT_EQ(t.decode({0, 1, 2}), "hi yo");
  EXPECT_EQ(t.decode({0, 1, 2}, false), "<s> hi yo");
}

}  // namespace
}  // namespace greta
