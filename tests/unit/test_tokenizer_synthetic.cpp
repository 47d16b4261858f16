// The generated vocabulary of synthetic models (tokenizer/synthetic_vocab.h): exact size,
// determinism, every id decodes, any text round-trips, and the merges really compress.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "core/error.h"
#include "tokenizer/synthetic_vocab.h"

namespace greta {
namespace {

TEST(TokenizerSynthetic, ExactSizeDistinctPiecesAndSpecialIds) {
  for (int32_t n : {kSyntheticVocabMin, 1000, 32000}) {
    auto t = synthetic_tokenizer(n);
    ASSERT_EQ(t->vocab_size(), n);
    std::set<std::string> pieces;
    for (int32_t i = 0; i < n; ++i) pieces.insert(std::string(t->piece(i)));
    EXPECT_EQ(int32_t(pieces.size()), n) << "pieces must be distinct";
    EXPECT_EQ(t->bos_id, 1);
    EXPECT_EQ(t->eos_id, 2);
    EXPECT_EQ(t->stop_ids, std::vector<int32_t>{2});
    EXPECT_TRUE(t->is_special(1) && t->is_special(2) && !t->is_special(3));
  }
  EXPECT_THROW(synthetic_tokenizer(kSyntheticVocabMin - 1), Error);
}

TEST(TokenizerSynthetic, SameSizeSameVocabulary) {
  auto a = synthetic_tokenizer(5000), b = synthetic_tokenizer(5000);
  for (int32_t i = 0; i < 5000; ++i) ASSERT_EQ(a->piece(i), b->piece(i)) << i;
}

TEST(TokenizerSynthetic, EveryIdDecodesToBytes) {
  auto t = synthetic_tokenizer(4000);
  for (int32_t i = 3; i < t->vocab_size(); ++i) {
    const std::string b = t->token_bytes(i);
    ASSERT_FALSE(b.empty()) << i;
    if (i < 3 + 256) {
      ASSERT_EQ(b.size(), 1u);
      EXPECT_EQ(uint8_t(b[0]), i - 3);  // <0xNN> decodes to byte NN
    }
  }
  // A whole random id sequence decodes (invalid UTF-8 from lone bytes becomes U+FFFD).
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < 500; ++i) ids.push_back((i * 7919) % t->vocab_size());
  EXPECT_FALSE(t->decode(ids).empty());
}

TEST(TokenizerSynthetic, AnyTextRoundTrips) {
  auto t = synthetic_tokenizer(1000);
  for (const std::string s : {"Hello, world!", " leading and trailing spaces ", "tabs\tand\nnewlines\r\n",
                              "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80", "<s> is text here"}) {
    const std::vector<int32_t> ids = t->encode(s, /*add_bos=*/false, /*parse_special=*/false);
    EXPECT_EQ(t->decode(ids), s);
  }
  const std::vector<int32_t> with_bos = t->encode("hi", /*add_bos=*/true, /*parse_special=*/false);
  ASSERT_FALSE(with_bos.empty());
  EXPECT_EQ(with_bos[0], 1);
  // With parse_special the control tokens are recognised in text.
  EXPECT_EQ(t->encode("</s>", false, true), std::vector<int32_t>{2});
}

TEST(TokenizerSynthetic, MergesCompressText) {
  // Text made of the vocabulary's own pieces must encode to far fewer tokens than characters;
  // a vocabulary whose merges never fire would give one token per character.
  auto t = synthetic_tokenizer(32000);
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < 400; ++i) ids.push_back(3 + 256 + 95 + (i * 7919) % (32000 - 3 - 256 - 95));
  const std::string text = t->decode(ids);
  const std::vector<int32_t> enc = t->encode(text, false, false);
  EXPECT_EQ(t->decode(enc), text);
  EXPECT_LT(enc.size() * 2, text.size()) << enc.size() << " tokens for " << text.size() << " bytes";
  // English finds its letter pairs and triples (1000 tokens holds most pairs, 32000 all
  // pairs and many triples).
  const std::string english = "the quick brown fox jumps over the lazy dog and then it sleeps";
  for (int32_t n : {1000, 32000}) {
    const size_t got = synthetic_tokenizer(n)->encode(english, false, false).size();
    EXPECT_LT(got * 3, english.size() * 2)
        << "vocab " << n << ": " << got << " tokens for " << english.size() << " bytes";
  }
}

}  // namespace
}  // namespace greta
