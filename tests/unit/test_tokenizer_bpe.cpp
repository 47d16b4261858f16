// BPE algorithms on small hand-made vocabularies: merge order, byte fallback, special tokens,
// streaming decode. Parity with Hugging Face on real vocabularies is tests/e2e/test_tokenizer_parity.py.
#include <gtest/gtest.h>

#include <algorithm>

#include "core/error.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/unicode.h"

namespace greta {
namespace {

using Ids = std::vector<int32_t>;

// Byte-level vocabulary: the 256 single-byte pieces (ids 0..255, byte b has id b), then `extra`.
BpeTokenizer::Config byte_level_config(const std::vector<std::string>& extra) {
  BpeTokenizer::Config c;
  c.kind = BpeKind::ByteLevel;
  c.pre = PreTokenizer::GPT2;
  const auto alpha = gpt2_byte_alphabet();
  for (int b = 0; b < 256; ++b) {
    std::string s;
    utf8_append(s, alpha[b]);
    c.pieces.push_back(s);
  }
  for (const auto& e : extra) c.pieces.push_back(e);
  return c;
}

int32_t id_of(const BpeTokenizer::Config& c, const std::string& p) {
  for (size_t i = 0; i < c.pieces.size(); ++i)
    if (c.pieces[i] == p) return static_cast<int32_t>(i);
  ADD_FAILURE() << "no piece " << p;
  return -1;
}

TEST(TokenizerBpe, MergesApplyInRankOrderNotTextOrder) {
  auto c = byte_level_config({"ab", "bc", "abc"});
  const int32_t a = 'a', b = 'b', cc = 'c', ab = id_of(c, "ab"), bc = id_of(c, "bc"), abc = id_of(c, "abc");
  {
    // (b,c) ranks before (a,b): "abc" -> a + bc, then (a,bc) -> abc.
    BpeTokenizer t(c, {{b, cc, bc}, {a, b, ab}, {a, bc, abc}});
    EXPECT_EQ(t.encode("abc", false, false), (Ids{abc}));
  }
  {
    // (a,b) first and no (ab,c) merge: stuck at ab + c even though "abc" is in the vocabulary.
    BpeTokenizer t(c, {{a, b, ab}, {b, cc, bc}, {a, bc, abc}});
    EXPECT_EQ(t.encode("abc", false, false), (Ids{ab, cc}));
  }
}

TEST(TokenizerBpe, EqualRanksMergeLeftmostFirst) {
  auto c = byte_level_config({"aa"});
  const int32_t aa = id_of(c, "aa");
  BpeTokenizer t(c, {{'a', 'a', aa}});
  EXPECT_EQ(t.encode("aaa", false, false), (Ids{aa, 'a'}));
  EXPECT_EQ(t.encode("aaaaa", false, false), (Ids{aa, aa, 'a'}));
}

TEST(TokenizerBpe, ByteLevelSpellsSpacesAndRoundTrips) {
  // " hi" is one pre-token; the space is byte 0x20 spelled U+0120 (Ġ).
  auto c = byte_level_config({"\xC4\xA0h", "\xC4\xA0hi"});
  const int32_t sp_h = id_of(c, "\xC4\xA0h"), sp_hi = id_of(c, "\xC4\xA0hi");
  BpeTokenizer t(c, {{0x20, 'h', sp_h}, {sp_h, 'i', sp_hi}});
  EXPECT_EQ(t.encode("a hi", false, false), (Ids{'a', sp_hi}));
  EXPECT_EQ(t.decode(t.encode("a hi\t\xC3\xA9!", false, false)), "a hi\t\xC3\xA9!");
  EXPECT_EQ(t.token_bytes(sp_hi), " hi");
}

// Bytes plus a control token <|end|> (id 256) and a user-defined added token <tool> (id 257).
BpeTokenizer end_tool_tokenizer() {
  auto c = byte_level_config({"<|end|>", "<tool>"});
  const int32_t end = id_of(c, "<|end|>"), tool = id_of(c, "<tool>");
  c.types.assign(c.pieces.size(), TokenType::Normal);
  c.special.assign(c.pieces.size(), false);
  c.types[end] = TokenType::Control;
  c.special[end] = true;
  c.types[tool] = TokenType::UserDefined;
  BpeTokenizer t(c, {});
  t.add_special_text("<|end|>", end, true);
  t.add_special_text("<tool>", tool, false);
  return t;
}

TEST(TokenizerBpe, SpecialTokensOnlyWhenParsingSpecial) {
  const BpeTokenizer t = end_tool_tokenizer();
  const int32_t end = 256, tool = 257;
  EXPECT_EQ(t.encode("x<|end|>", false, true), (Ids{'x', end}));
  const Ids plain = t.encode("x<|end|>", false, false);
  EXPECT_EQ(plain.size(), 8u);  // x < | end | > as bytes (no merges), not the control token
  EXPECT_EQ(t.decode(plain), "x<|end|>");
  // User-defined (non-special added) tokens are always recognised, and not skipped by decode.
  EXPECT_EQ(t.encode("<tool>", false, false), (Ids{tool}));
  EXPECT_EQ(t.decode({tool, end}), "<tool>");
  EXPECT_EQ(t.decode({tool, end}, false), "<tool><|end|>");
}

TEST(TokenizerBpe, MarkedRangesParseNoSpecialTokens) {
  const BpeTokenizer t = end_tool_tokenizer();
  const int32_t end = 256, tool = 257;
  const std::string text = "<|end|>x<|end|>y<|end|>";  // markup, data, markup
  const Ids marked = t.encode_marked(text, false, {{7, 15}});
  EXPECT_EQ(marked.front(), end);
  EXPECT_EQ(marked.back(), end);
  EXPECT_EQ(std::count(marked.begin(), marked.end(), end), 2);
  EXPECT_EQ(t.decode(marked, false), text);
  // A special token that only partly lies in a range is not recognised either.
  const Ids straddling = t.encode_marked(text, false, {{10, 11}});
  EXPECT_EQ(std::count(straddling.begin(), straddling.end(), end), 2);
  // Outside any range it is the plain encode(parse_special = true); inside, parse_special = false.
  EXPECT_EQ(t.encode_marked(text, true, {}), t.encode(text, true, true));
  EXPECT_EQ(t.encode_marked(text, false, {{0, text.size()}}), t.encode(text, false, false));
  // User-defined added tokens are text-level tokens: recognised everywhere, as encode() does.
  EXPECT_EQ(t.encode_marked("<tool>", false, {{0, 6}}), (Ids{tool}));
  EXPECT_THROW(t.encode_marked(text, false, {{5, 3}}), Error);
  EXPECT_THROW(t.encode_marked(text, false, {{4, 6}, {2, 3}}), Error);
  EXPECT_THROW(t.encode_marked(text, false, {{0, 99}}), Error);
}

TEST(TokenizerBpe, SpecialTokensLongestMatchWins) {
  auto c = byte_level_config({"<a>", "<a>b"});
  BpeTokenizer t(c, {});
  t.add_special_text("<a>", id_of(c, "<a>"), true);
  t.add_special_text("<a>b", id_of(c, "<a>b"), true);
  EXPECT_EQ(t.encode("<a>bc", false, true), (Ids{id_of(c, "<a>b"), 'c'}));
}

// SentencePiece-style vocabulary: <unk>, <s>, </s>, <0x00>..<0xFF>, then `extra`.
BpeTokenizer::Config spm_config(const std::vector<std::string>& extra) {
  BpeTokenizer::Config c;
  c.kind = BpeKind::SentencePiece;
  c.spm_prefix = SpmPrefix::First;
  c.pieces = {"<unk>", "<s>", "</s>"};
  c.types = {TokenType::Unknown, TokenType::Control, TokenType::Control};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    c.pieces.push_back(buf);
    c.types.push_back(TokenType::Byte);
  }
  for (const auto& e : extra) {
    c.pieces.push_back(e);
    c.types.push_back(TokenType::Normal);
  }
  c.special.assign(c.pieces.size(), false);
  c.special[0] = c.special[1] = c.special[2] = true;
  c.unk_id = 0;
  return c;
}

TEST(TokenizerSpm, SpacePrefixMergesAndByteFallback) {
  const std::string sp = "\xE2\x96\x81";
  auto c = spm_config({sp, "h", "i", sp + "h", sp + "hi"});
  const int32_t h = id_of(c, "h"), i = id_of(c, "i"), s = id_of(c, sp), sh = id_of(c, sp + "h"),
                shi = id_of(c, sp + "hi");
  BpeTokenizer t(c, {{sh, i, shi}, {s, h, sh}});
  t.bos_id = 1;
  // "hi é" -> ▁hi ▁ é, and é (not in the vocabulary) falls back to its UTF-8 bytes.
  EXPECT_EQ(t.encode("hi \xC3\xA9", true, false), (Ids{1, shi, s, 3 + 0xC3, 3 + 0xA9}));
  EXPECT_EQ(t.decode(t.encode("hi \xC3\xA9", true, false)), "hi \xC3\xA9");
  // Text that already starts with a space gets no second prefix (Metaspace prepend_scheme=first).
  EXPECT_EQ(t.encode(" hi", false, false), (Ids{shi}));
  // Only the start of the text is prefixed, not text after a special token.
  t.add_special_text("</s>", 2, true);
  EXPECT_EQ(t.encode("hi</s>hi", false, true), (Ids{shi, 2, h, i}));
}

TEST(TokenizerSpm, UnknownWithoutByteTokensFusesToOneUnk) {
  const std::string sp = "\xE2\x96\x81";
  BpeTokenizer::Config c;
  c.kind = BpeKind::SentencePiece;
  c.spm_prefix = SpmPrefix::None;
  c.pieces = {"<unk>", "a"};
  c.unk_id = 0;
  BpeTokenizer t(c, {});
  EXPECT_EQ(t.encode("a\xC3\xA9\xC3\xA9"
                     "a",
                     false, false),
            (Ids{1, 0, 1}));
}

}  // namespace
}  // namespace greta
