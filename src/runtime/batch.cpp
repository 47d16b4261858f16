#include "runtime/batch.h"

#include <cassert>
#include <cstddef>

namespace greta {

StepPlan StepPlan::build(const Batch& b, int32_t block_size) {
  StepPlan p;
  p.block_size = block_size;
  const size_t n = b.tokens.size();
  p.positions.resize(n);
  p.token_seq.resize(n);
  p.slot.resize(n);
  p.in_prompt.resize(n);
  p.block_begin.push_back(0);
  for (size_t s = 0; s < b.seqs.size(); ++s) {
    const SeqSlice& q = b.seqs[s];
    const int32_t len = q.n_past + q.n_tokens;
    assert(int64_t(q.block_table.size()) * block_size >= len);
    for (int32_t i = 0; i < q.n_tokens; ++i) {
      const int32_t t = q.token_begin + i;
      const int32_t pos = q.n_past + i;
      assert(t >= 0 && size_t(t) < n);
      p.positions[t] = pos;
      p.token_seq[t] = int32_t(s);
      p.slot[t] = q.block_table[pos / block_size] * block_size + pos % block_size;
      p.in_prompt[t] = q.n_prompt >= 0 ? (q.n_prompt >= 2 && pos < q.n_prompt) : q.n_tokens >= 2;
    }
    p.block_ids.insert(p.block_ids.end(), q.block_table.begin(), q.block_table.end());
    p.block_begin.push_back(int32_t(p.block_ids.size()));
    p.seq_len.push_back(len);
  }
  return p;
}

}  // namespace greta
