#include "engine/grammar_state.h"

#include <algorithm>
#include <bit>

namespace greta {

std::shared_ptr<const grammar::TokenVocabulary> grammar_vocabulary(const Tokenizer& tok, int model_vocab) {
  std::vector<std::string> tokens(size_t(std::max(model_vocab, 0)));
  const int n = std::min(model_vocab, int(tok.vocab_size()));
  for (int i = 0; i < n; ++i)
    if (!tok.is_special(i)) tokens[size_t(i)] = tok.token_bytes(i);
  std::vector<int32_t> ends;
  for (int32_t id : tok.stop_ids)
    if (id >= 0 && id < model_vocab) ends.push_back(id);
  return std::make_shared<const grammar::TokenVocabulary>(std::move(tokens), std::move(ends));
}

GrammarState::GrammarState(std::shared_ptr<const grammar::Grammar> g,
                           std::shared_ptr<const grammar::TokenVocabulary> vocab)
    : vocab_(vocab), matcher_(std::move(g)), masker_(std::move(vocab)) {}

const grammar::TokenBitmask& GrammarState::compute_mask() {
  masker_.compute(matcher_, mask_);
  n_allowed_ = 0;
  for (uint32_t w : mask_) n_allowed_ += size_t(std::popcount(w));
  return mask_;
}

bool GrammarState::is_end_token(int32_t t) const {
  const auto& e = vocab_->eos_ids();
  return std::find(e.begin(), e.end(), t) != e.end();
}

bool GrammarState::accept(int32_t t) {
  if (t < 0 || size_t(t) >= vocab_->size()) return false;
  const std::string& bytes = vocab_->token(t);
  return !bytes.empty() && matcher_.accept_bytes(bytes);
}

bool GrammarState::finished() const {
  if (!matcher_.can_end()) return false;
  const auto& st = matcher_.stacks();
  return std::all_of(st.begin(), st.end(), [](const grammar::Stack& s) { return s.empty(); });
}

}  // namespace greta
