#include "model/sequence_runner.h"

#include <algorithm>

#include "core/error.h"

namespace greta {

SequenceRunner::SequenceRunner(LlamaModel& model, int n_ctx, int max_step_tokens, int block_size)
    : model_(model),
      n_ctx_(n_ctx),
      max_step_(std::max(1, max_step_tokens)),
      pool_((n_ctx + block_size - 1) / block_size, block_size) {
  kv_ = model_.make_kv(pool_.n_blocks(), block_size);
}

SequenceRunner::~SequenceRunner() { seq_.release_all(pool_); }

void SequenceRunner::reset() {
  seq_.release_all(pool_);
  n_past_ = 0;
}

void SequenceRunner::truncate(int n) { n_past_ = std::clamp(n, 0, n_past_); }

std::vector<float> SequenceRunner::eval(const std::vector<int32_t>& tokens, const std::vector<int32_t>& want) {
  const int vocab = model_.config().vocab_size;
  const int n = int(tokens.size());
  if (n_past_ + n > n_ctx_)
    throw Error("context overflow: " + std::to_string(n_past_) + " tokens in context + " + std::to_string(n) +
                " new > context size " + std::to_string(n_ctx_));
  for (int32_t t : tokens)
    if (t < 0 || t >= vocab)
      throw Error("token id " + std::to_string(t) + " out of range [0, " + std::to_string(vocab) + ")");
  std::vector<float> out(want.size() * size_t(vocab));
  size_t w = 0;
  for (int begin = 0; begin < n; begin += max_step_) {
    const int len = std::min(max_step_, n - begin);
    if (!seq_.reserve(pool_, n_past_ + len)) throw Error("KV cache exhausted");
    Batch b;
    b.tokens.assign(tokens.begin() + begin, tokens.begin() + begin + len);
    SeqSlice s;
    s.seq_id = 0;
    s.token_begin = 0;
    s.n_tokens = len;
    s.n_past = n_past_;
    s.block_table = seq_.table();
    b.seqs.push_back(std::move(s));
    const size_t w0 = w;
    while (w < want.size() && want[w] < begin + len) b.logit_rows.push_back(want[w++] - begin);
    model_.forward(b, *kv_, out.data() + w0 * vocab);
    n_past_ += len;
  }
  return out;
}

std::vector<float> SequenceRunner::eval_last(const std::vector<int32_t>& tokens) {
  return eval(tokens, {int32_t(tokens.size()) - 1});
}

}  // namespace greta
