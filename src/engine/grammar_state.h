// The grammar side of one constrained request: a matcher that follows the request's output
// and a masker that turns the matcher's state into the allowed-token bitmask of its next draw.
//
// Guarantees
// - The mask allows token t iff its bytes continue the grammar (grammar/token_mask.h); stop
//   tokens (the tokenizer's stop ids) are allowed iff the grammar can end here. Control tokens
//   and ids the tokenizer does not have are never allowed.
// - finished() is true as soon as the output is complete and nothing can follow, so a request
//   whose grammar has a single end stops without spending a step on the end token.
// - Owned by the engine thread (one request, one thread at a time).
#pragma once
#include <cstdint>
#include <memory>

#include "grammar/token_mask.h"
#include "tokenizer/tokenizer.h"

namespace greta {

// The vocabulary masks range over: the model's token ids (model_vocab may exceed the
// tokenizer's), each with the tokenizer's bytes; stop ids are the end tokens. Built once per
// engine, on its first constrained request.
std::shared_ptr<const grammar::TokenVocabulary> grammar_vocabulary(const Tokenizer& tok, int model_vocab);

class GrammarState {
 public:
  GrammarState(std::shared_ptr<const grammar::Grammar> g, std::shared_ptr<const grammar::TokenVocabulary> vocab);

  // The mask of the next draw for the current state; throws grammar::GrammarError when the
  // grammar is too ambiguous to follow (GrammarLimits).
  const grammar::TokenBitmask& compute_mask();
  const grammar::TokenBitmask& mask() const { return mask_; }
  bool mask_empty() const { return n_allowed_ == 0; }

  bool is_end_token(int32_t t) const;
  // Feeds a sampled token that is not an end token. False (state unchanged) if the grammar
  // rejects its bytes: the token was not drawn under this state's mask.
  bool accept(int32_t t);
  bool can_end() const { return matcher_.can_end(); }
  // The output is complete and no character can follow.
  bool finished() const;

 private:
  std::shared_ptr<const grammar::TokenVocabulary> vocab_;
  grammar::Matcher matcher_;
  grammar::TokenMasker masker_;
  grammar::TokenBitmask mask_;
  size_t n_allowed_ = 0;
};

}  // namespace greta
