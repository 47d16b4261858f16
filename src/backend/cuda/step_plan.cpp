// Packing a StepPlan for the CUDA kernels (see step_plan.h).
#include "backend/cuda/step_plan.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace greta::cuda {

PackedStep pack_step(const StepPlan& p, int decode_max_new, int ctx_bucket, std::vector<int32_t>& packed) {
  const int n = int(p.positions.size());
  const int S = int(p.seq_len.size());
  if (p.token_seq.size() != size_t(n) || p.slot.size() != size_t(n) || p.block_begin.size() != size_t(S + 1))
    throw Error("cuda begin_step: inconsistent StepPlan sizes");
  // Split sequences between the decode and prefill attention kernels. A sequence's tokens are
  // contiguous in the batch (Batch::seqs is in token order).
  std::vector<int32_t> first(size_t(S), -1), count(size_t(S), 0);
  for (int t = 0; t < n; ++t) {
    const int s = p.token_seq[size_t(t)];
    if (s < 0 || s >= S) throw Error("cuda begin_step: token " + std::to_string(t) + " has no sequence");
    if (first[size_t(s)] < 0) first[size_t(s)] = t;
    ++count[size_t(s)];
  }
  std::vector<int32_t> decode, prefill;
  int max_ctx = 0, max_new = 0;
  for (int s = 0; s < S; ++s) {
    if (count[size_t(s)] == 0) continue;
    if (count[size_t(s)] <= decode_max_new) {
      for (int t = first[size_t(s)]; t < first[size_t(s)] + count[size_t(s)]; ++t) {
        decode.push_back(t);
        max_ctx = std::max(max_ctx, p.positions[size_t(t)] + 1);
      }
    } else {
      prefill.insert(prefill.end(), {s, first[size_t(s)], count[size_t(s)]});
      max_new = std::max(max_new, count[size_t(s)]);
    }
  }
  PackedStep r;
  for (int32_t v : p.slot) r.max_slot = std::max(r.max_slot, v);
  for (int32_t v : p.block_ids) r.max_block = std::max(r.max_block, v);
  if (max_ctx > 0) max_ctx = (max_ctx + ctx_bucket - 1) / ctx_bucket * ctx_bucket;
  packed.clear();
  auto append = [&](const std::vector<int32_t>& v) {
    const size_t at = packed.size();
    packed.insert(packed.end(), v.begin(), v.end());
    return at;
  };
  const size_t o_pos = append(p.positions), o_seq = append(p.token_seq), o_slot = append(p.slot);
  const size_t o_bb = append(p.block_begin), o_len = append(p.seq_len);
  const size_t o_dec = append(decode), o_pre = append(prefill), o_bid = append(p.block_ids);
  r.off = {o_pos, o_seq, o_slot, o_bb, o_len, o_dec, o_pre, o_bid};
  DevStep& st = r.shape;
  st.n_tokens = n;
  st.n_seqs = S;
  st.block_size = p.block_size;
  st.n_decode = int(decode.size());
  st.max_decode_ctx = max_ctx;
  st.n_prefill = int(prefill.size() / 3);
  st.max_prefill_tokens = max_new;
  return r;
}

DevStep bind_step(const PackedStep& ps, const int32_t* dev) {
  DevStep st = ps.shape;
  st.positions = dev + ps.off[0];
  st.token_seq = dev + ps.off[1];
  st.slot = dev + ps.off[2];
  st.block_begin = dev + ps.off[3];
  st.seq_len = dev + ps.off[4];
  st.decode_tokens = dev + ps.off[5];
  st.prefill_seqs = dev + ps.off[6];
  st.block_ids = dev + ps.off[7];
  return st;
}

}  // namespace greta::cuda
