// Per-row settings of Backend::sample: the host Sampler's chain without penalties (a request
// with penalties or logprobs samples on the host). Plain data: the CUDA sampling kernel reads
// an array of these as it is.
#pragma once

namespace greta {

struct DeviceSampleParams {
  float temperature = 0;  // <= 0: greedy (argmax, lowest id on ties)
  int top_k = 0;          // <= 0 or >= vocab: off
  float top_p = 1;        // (0, 1]; 1: off
  float min_p = 0;        // [0, 1]; 0: off
  double u = 0;           // the uniform draw in [0, 1), from the request's seeded Sampler
                          // (Sampler::next_uniform), so a seed repeats its tokens run to run
};

}  // namespace greta
