// Token sampling from one row of logits, in llama.cpp's common chain order:
//   constraints -> penalties -> top-k -> top-p -> min-p -> temperature -> seeded draw.
// Constraints are the request's logit_bias (added to a token's logit) and an optional
// allowed-token bitmask (a grammar's: every other token becomes -inf). Logprobs stay those of
// the raw logits, before any of the chain.
//
// Guarantees
// - Deterministic across runs and platforms for a given seed: the generator is
//   std::mt19937_64 (its output sequence is fixed by the C++ standard) and the uniform
//   draw is built here from its raw bits, never from a <random> distribution (whose
//   output is implementation-defined). Candidate order at the draw is a total order
//   (logit descending, id ascending), so std::nth_element's unspecified order never leaks.
// - Never crashes on NaN (treated as -inf), +-inf, all -inf, or a vocabulary of 1.
// - No O(V log V) sort of the vocabulary: top-k is nth_element plus a sort of the k
//   survivors; top-p finds the nucleus edge with a one-pass mass histogram and sorts only
//   the nucleus. The common case costs O(V).
// - temperature <= 0 is greedy: argmax after penalties, lowest id on ties.
// - One Sampler per sequence; not thread-safe (it owns scratch buffers and the RNG).
#pragma once
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "greta/sampling.h"

namespace greta {

struct SampleResult {
  int32_t token = 0;
  float prob = 1;  // probability of `token` in the final (filtered, tempered) distribution
  // Filled only when logprobs were requested (n_logprobs >= 0):
  float logprob = 0;              // log-softmax of the raw logits at `token`
  std::vector<TokenLogprob> top;  // n_logprobs most likely raw tokens, best first
};

struct TokenProb {
  int32_t token = 0;
  double prob = 0;
};

// Uniform double in [0, 1) from 53 random bits of one 64-bit draw. Exposed for tests.
inline double uniform01(uint64_t bits) { return double(bits >> 11) * 0x1.0p-53; }

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);  // validates p

  int32_t sample(const float* logits, int vocab, const std::vector<int32_t>& history) {
    return sample_full(logits, vocab, history, -1).token;
  }
  // logits: [vocab] raw model output; history: tokens so far (prompt + generated).
  // n_logprobs < 0: no logprobs; 0: the chosen token's; N: also the top N.
  // allowed: null, or [ceil(vocab / 32)] words, bit t of word t/32 set when token t may be
  // drawn. With nothing allowed the draw falls back to greedy over -inf (token 0): callers
  // that can meet an empty mask check it first.
  SampleResult sample_full(const float* logits, int vocab, const std::vector<int32_t>& history, int n_logprobs,
                           const uint32_t* allowed = nullptr);

  // The distribution sample() would draw from for these logits: every token left after the
  // filters with its probability, by token id (one token with probability 1 when greedy).
  // Uses no random numbers. For tests and for checking other samplers (the device's) against
  // this one.
  std::vector<TokenProb> distribution(const float* logits, int vocab, const std::vector<int32_t>& history,
                                      const uint32_t* allowed = nullptr);

  // OpenAI's logit_bias: (token id, bias) pairs added to those tokens' logits before the chain.
  // Ids outside the vocabulary of a row are ignored (the engine refuses them at submit).
  void set_logit_bias(std::vector<std::pair<int32_t, float>> bias) { bias_ = std::move(bias); }
  const std::vector<std::pair<int32_t, float>>& logit_bias() const { return bias_; }

  // True when no penalty is active (repeat 1, presence 0, frequency 0): the rest of the chain
  // needs only the logits row, so it can run where the logits are (Backend::sample). Whether
  // logprobs are wanted is the caller's to check (they stay on the host).
  bool device_eligible() const;
  // The next uniform in [0, 1) from this sampler's generator (one draw, as sample() makes for
  // temperature > 0), for a device-side draw of the same seeded stream.
  double next_uniform() { return uniform01(rng_()); }

  const SamplingParams& params() const { return p_; }
  uint64_t seed() const { return seed_; }  // the seed in use (resolved when params.seed == 0)

 private:
  struct Cand {
    float logit;
    int32_t id;
  };
  void load(const float* logits, int vocab);  // work_ = cleaned logits
  void apply_constraints(int vocab, const uint32_t* allowed);
  void apply_penalties(const std::vector<int32_t>& history, int vocab);
  void apply_openai_penalties(const std::vector<int32_t>& history, int vocab);
  bool filter(int vocab);           // work_ -> cand_ after top-k/top-p/min-p; false: greedy
  int32_t greedy(int vocab) const;  // argmax of work_, lowest id on ties
  void top_k(int k);
  void top_p_min_p();
  int32_t draw(float* prob);

  SamplingParams p_;
  uint64_t seed_;
  std::mt19937_64 rng_;
  std::vector<float> work_;  // [vocab] NaN-cleaned, penalised logits
  std::vector<Cand> cand_;   // surviving candidates
  std::vector<int32_t> window_;
  std::vector<double> mass_;  // top-p histogram scratch
  std::vector<std::pair<int32_t, float>> bias_;
};

}  // namespace greta
