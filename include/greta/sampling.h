// Per-request sampling settings (public: requests carry them) and the log-probability pair
// that token events report. The sampler that applies them is internal (runtime/sampler.h).
#pragma once
#include <cstdint>

namespace greta {

struct SamplingParams {
  float temperature = 0.8f;     // <= 0: greedy
  int top_k = 40;               // <= 0 or >= vocab: off
  float top_p = 0.95f;          // (0, 1]; 1: off
  float min_p = 0.05f;          // [0, 1]; 0: off. Keeps p >= min_p * p_max
  float repeat_penalty = 1.0f;  // > 0; 1: off. Divides positive logits, multiplies negative
  int repeat_last_n = 64;       // history window for all penalties; 0: off, -1: all history
  float presence_penalty = 0;   // OpenAI: logit -= presence if the token occurred
  float frequency_penalty = 0;  // OpenAI: logit -= frequency * count
  // Which tokens the penalties look at. -1 (llama.cpp, `greta run`): all three penalties over the
  // last repeat_last_n tokens of prompt + generated. >= 0 (OpenAI / vLLM semantics, the server):
  // the first penalty_prompt_len tokens of the history are the prompt; presence and frequency
  // count every generated token and no prompt token, the repetition penalty applies to every
  // distinct token of prompt + generated; repeat_last_n is not used.
  int penalty_prompt_len = -1;
  uint64_t seed = 0;  // 0: random (time + random_device)

  // Throws greta::Error naming the field and its valid range (params come from users).
  void validate() const;
};

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;  // log-softmax of the raw logits
};

}  // namespace greta
