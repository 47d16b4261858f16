// A generated vocabulary for synthetic models (model/synthetic.h), which have random weights and
// no tokenizer of their own, so that everything that needs text -- `greta serve`, `greta run` --
// works on them. It is a real SentencePiece-style BPE tokenizer (tokenizer/bpe_tokenizer.h):
//   0 <unk>, 1 <s> (BOS), 2 </s> (EOS), 3..258 the byte tokens <0x00>..<0xFF>,
//   then U+2581 (SentencePiece's space) and the printable ASCII characters '!'..'~',
//   then generated lowercase letter n-grams ("ab", "\u2581th", ...; all pairs before any triple)
//   up to the vocabulary size, each an earlier piece plus one letter, with that pair as its merge
//   (rank = generation order).
// Guarantees: exactly `vocab_size` distinct pieces; every id decodes (byte tokens to their byte,
// which may be part of a UTF-8 character); every text encodes (characters outside the base set
// fall back to byte tokens) and decode(encode(text)) == text for valid UTF-8 (no space prefix is
// added, so none is stripped); the same vocab_size always gives the same vocabulary.
// The pieces are not learned from any corpus: text costs more tokens than with a real tokenizer,
// which is harmless for load tests, where prompts are token ids anyway.
#pragma once
#include <cstdint>
#include <memory>

#include "tokenizer/tokenizer.h"

namespace greta {

// Smallest vocabulary that holds the fixed part (specials, bytes, base characters).
constexpr int32_t kSyntheticVocabMin = 3 + 256 + 1 + 94;

// Throws greta::Error when vocab_size < kSyntheticVocabMin.
std::unique_ptr<Tokenizer> synthetic_tokenizer(int32_t vocab_size);

}  // namespace greta
