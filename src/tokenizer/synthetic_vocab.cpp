// The generated vocabulary of synthetic models; see synthetic_vocab.h.
#include "tokenizer/synthetic_vocab.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "core/error.h"
#include "tokenizer/bpe_tokenizer.h"

namespace greta {

namespace {

constexpr const char* kSpmSpace = "\xE2\x96\x81";  // U+2581

// splitmix64: a fixed, platform-independent sequence (std:: distributions are not portable).
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return size_t(next() % n); }
};

}  // namespace

std::unique_ptr<Tokenizer> synthetic_tokenizer(int32_t vocab_size) {
  if (vocab_size < kSyntheticVocabMin)
    throw Error("synthetic tokenizer: vocabulary of " + std::to_string(vocab_size) +
                " tokens is too small (need at least " + std::to_string(kSyntheticVocabMin) +
                " for the special, byte and base-character tokens)");
  BpeTokenizer::Config cfg;
  cfg.kind = BpeKind::SentencePiece;
  cfg.spm_prefix = SpmPrefix::None;  // exact round trips: no space is added, so none is stripped
  cfg.byte_fallback = true;
  cfg.unk_id = 0;
  cfg.pieces.reserve(size_t(vocab_size));
  cfg.types.reserve(size_t(vocab_size));
  auto add = [&](std::string p, TokenType t) {
    cfg.pieces.push_back(std::move(p));
    cfg.types.push_back(t);
  };
  add("<unk>", TokenType::Unknown);
  add("<s>", TokenType::Control);
  add("</s>", TokenType::Control);
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    add(buf, TokenType::Byte);
  }
  const int32_t first_char = int32_t(cfg.pieces.size());
  add(kSpmSpace, TokenType::Normal);
  for (char c = '!'; c <= '~'; ++c) add(std::string(1, c), TokenType::Normal);

  std::vector<BpeTokenizer::MergeSpec> merges;
  merges.reserve(size_t(vocab_size - int32_t(cfg.pieces.size())));
  // Generated pieces are lowercase letter n-grams, level by level as a learned vocabulary grows:
  // level k+1 is every level-k piece followed by one letter (level 1: the space mark and the
  // letters), taken in a seeded random order until the vocabulary is full. So all letter pairs
  // come before any triple, and English text finds its pairs and triples. The space mark only
  // ever begins a piece, as in SentencePiece vocabularies. Pieces are distinct by construction
  // (distinct prefixes of one length, each extended by each letter once).
  std::vector<int32_t> letters;  // ids of 'a'..'z'
  for (char c = 'a'; c <= 'z'; ++c) letters.push_back(first_char + 1 + (c - '!'));
  std::vector<int32_t> level{first_char};  // level 1: the space mark and the letters
  level.insert(level.end(), letters.begin(), letters.end());
  Rng rng{0x5eedc0de00000000ull ^ uint64_t(vocab_size)};
  while (int32_t(cfg.pieces.size()) < vocab_size) {
    std::vector<std::pair<int32_t, int32_t>> cand;  // (prefix id, letter id)
    cand.reserve(level.size() * 26);
    for (int32_t l : level)
      for (int32_t r : letters) cand.emplace_back(l, r);
    for (size_t i = cand.size(); i > 1; --i) std::swap(cand[i - 1], cand[rng.below(i)]);  // Fisher-Yates
    std::vector<int32_t> next;
    for (const auto& [l, r] : cand) {
      if (int32_t(cfg.pieces.size()) == vocab_size) break;
      const int32_t id = int32_t(cfg.pieces.size());
      merges.push_back({l, r, id});
      next.push_back(id);
      add(cfg.pieces[l] + cfg.pieces[r], TokenType::Normal);
    }
    level = std::move(next);
  }
  cfg.special.assign(cfg.pieces.size(), false);
  for (size_t i = 0; i < cfg.pieces.size(); ++i)
    cfg.special[i] = cfg.types[i] == TokenType::Control || cfg.types[i] == TokenType::Unknown;

  auto tok = std::make_unique<BpeTokenizer>(std::move(cfg), merges);
  for (int32_t id : {0, 1, 2}) tok->add_special_text(std::string(tok->piece(id)), id, /*needs_parse_special=*/true);
  tok->bos_id = 1;
  tok->eos_id = 2;
  tok->add_bos = true;  // as Llama models expect
  tok->collect_stop_ids({});
  return tok;
}

}  // namespace greta
