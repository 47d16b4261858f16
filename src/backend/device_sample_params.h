// Per-row settings of Backend::sample: the host Sampler's chain without penalties (a request
// with penalties or logprobs samples on the host), plus the constraints the host Sampler
// applies first: an allowed-token bitmask (a grammar's) and logit_bias. Plain data: the CUDA
// sampling kernel reads an array of these as it is.
#pragma once
#include <cstdint>

namespace greta {

struct DeviceSampleParams {
  float temperature = 0;  // <= 0: greedy (argmax, lowest id on ties)
  int top_k = 0;          // <= 0 or >= vocab: off
  float top_p = 1;        // (0, 1]; 1: off
  float min_p = 0;        // [0, 1]; 0: off
  double u = 0;           // the uniform draw in [0, 1), from the request's seeded Sampler
                          // (Sampler::next_uniform), so a seed repeats its tokens run to run

  // Constraints, in host memory that stays valid until Backend::sample returns (null / 0: none).
  // allowed: [ceil(vocab / 32)] words, bit t of word t/32 set when token t may be drawn; every
  // other token is -inf. bias: bias_values[j] is added to the logit of token bias_ids[j]
  // (distinct ids in [0, vocab)) before the chain.
  const uint32_t* allowed = nullptr;
  const int32_t* bias_ids = nullptr;
  const float* bias_values = nullptr;
  int n_bias = 0;

  // Filled by the backend for its kernel, not by callers: where the row's constraints are in
  // the uploaded copy, in bytes from the start of the uploaded params array (0: none).
  int64_t allowed_at = 0;
  int64_t bias_ids_at = 0;
  int64_t bias_values_at = 0;
};

}  // namespace greta
