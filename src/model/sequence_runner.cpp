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
  std::vector<float> out(want.size() * size_t(model_.config().vocab_size));
  run(tokens, want, out.data(), nullptr);
  return out;
}

int32_t SequenceRunner::eval_sample(const std::vector<int32_t>& tokens, const DeviceSampleParams& p, float* prob) {
  if (tokens.empty()) throw Error("eval_sample: no tokens to append");
  int32_t token = 0;
  float pr = 0;
  const Draw d{&p, &token, &pr};
  run(tokens, {int32_t(tokens.size()) - 1}, nullptr, &d);
  if (prob) *prob = pr;
  return token;
}

void SequenceRunner::run(const std::vector<int32_t>& tokens, const std::vector<int32_t>& want, float* logits,
                         const Draw* draw) {
  const int vocab = model_.config().vocab_size;
  const int n = int(tokens.size());
  if (n_past_ + n > n_ctx_)
    throw Error("context overflow: " + std::to_string(n_past_) + " tokens in context + " + std::to_string(n) +
                " new > context size " + std::to_string(n_ctx_));
  for (int32_t t : tokens)
    if (t < 0 || t >= vocab)
      throw Error("token id " + std::to_string(t) + " out of range [0, " + std::to_string(vocab) + ")");
  size_t w = 0;
  for (int begin = 0; begin < n; begin += max_step_) {
    const int len = std::min(max_step_, n - begin);
    if (!seq_.reserve(pool_, n_past_ + len)) throw Error("KV cache exhausted");
    Batch b;
    b.tokens.assign(tokens.begin() + begin, tokens.begin() + begin + len);
    SeqSlice s;
    s.token_begin = 0;
    s.n_tokens = len;
    s.n_past = n_past_;
    s.block_table = seq_.table();
    // Tokens cut into several steps: every step knows the whole run's length, as the engine's
    // prompt chunks do (LongRoPE then rotates every chunk with the set the whole prompt needs).
    if (n > max_step_) s.n_prompt = n_past_ + n;
    b.seqs.push_back(std::move(s));
    const size_t w0 = w;
    while (w < want.size() && want[w] < begin + len) b.logit_rows.push_back(want[w++] - begin);
    if (draw && !b.logit_rows.empty()) {  // only the last token is wanted: this is the final step
      const std::vector<DeviceSampleParams> per_row{*draw->p};
      model_.forward(b, *kv_, LlamaModel::DeviceDraw{per_row, draw->token, draw->prob});
    } else {
      model_.forward(b, *kv_, LlamaModel::HostLogits{logits ? logits + w0 * vocab : nullptr});
    }
    n_past_ += len;
  }
}

std::vector<float> SequenceRunner::eval_last(const std::vector<int32_t>& tokens) {
  return eval(tokens, {int32_t(tokens.size()) - 1});
}

}  // namespace greta
