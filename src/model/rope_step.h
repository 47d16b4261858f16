// The length by which a step chooses its RoPE table, for the scalings whose table depends on how
// long the sequence is (LongRoPE's two sets, dynamic NTK's base): the longest sequence of the
// step after it, or its whole prompt where known (SeqSlice::n_prompt), so a long prompt cut into
// chunks is rotated as transformers' single prompt forward (max(position_ids) + 1) rotates it.
#pragma once
#include <algorithm>
#include <cstdint>

#include "runtime/batch.h"

namespace greta {

inline int64_t rope_step_length(const Batch& b) {
  int64_t longest = 0;
  for (const SeqSlice& s : b.seqs) longest = std::max({longest, int64_t(s.n_past) + s.n_tokens, int64_t(s.n_prompt)});
  return longest;
}

}  // namespace greta
