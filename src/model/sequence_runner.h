// Runs one sequence through a model step by step over its own paged KV cache:
// the building block of `greta run`, perplexity and the parity checks.
// (The multi-user engine batches many sequences; this is the single-sequence case.)
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "model/llama.h"
#include "runtime/kv_cache.h"

namespace greta {

class SequenceRunner {
 public:
  // n_ctx: most tokens this sequence may hold; max_step_tokens: prompt chunk size per step.
  SequenceRunner(LlamaModel& model, int n_ctx, int max_step_tokens = 512, int block_size = 16);
  ~SequenceRunner();

  int n_past() const { return n_past_; }
  int n_ctx() const { return n_ctx_; }
  const BlockPool& kv_pool() const { return pool_; }  // the blocks of its cache
  // Appends `tokens` to the sequence (in steps of at most max_step_tokens) and returns the
  // logits of the tokens at the relative indices `want` (ascending), [want.size() * vocab].
  // Throws greta::Error when the context would overflow.
  std::vector<float> eval(const std::vector<int32_t>& tokens, const std::vector<int32_t>& want);
  // Logits of the last token only.
  std::vector<float> eval_last(const std::vector<int32_t>& tokens);
  // Appends `tokens` and samples the next token from the last one's logits on the device
  // (LlamaModel::DeviceDraw): only the token id and its probability (`prob`, if not null)
  // come back to the host. Needs a backend with supports_device_sampling().
  int32_t eval_sample(const std::vector<int32_t>& tokens, const DeviceSampleParams& p, float* prob = nullptr);
  void reset();
  // Keeps only the first n tokens (n >= n_past: no-op): the next eval continues at position n.
  // Attention reads positions up to its own, so the K/V rows left past n are never read
  // before being overwritten (`greta chat` reuses the common prefix of two turns this way).
  void truncate(int n);

 private:
  struct Draw {
    const DeviceSampleParams* p;
    int32_t* token;
    float* prob;
  };
  // eval's loop; with `draw`, the step holding the last token samples it on the device.
  void run(const std::vector<int32_t>& tokens, const std::vector<int32_t>& want, float* logits, const Draw* draw);

  LlamaModel& model_;
  int n_ctx_, max_step_, n_past_ = 0;
  BlockPool pool_;
  SequenceKV seq_;
  std::unique_ptr<KVStorage> kv_;
};

}  // namespace greta
