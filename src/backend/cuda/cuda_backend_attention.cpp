// CudaBackend (cuda_backend_impl.h): RoPE with the KV-cache write, and attention.
#include <string>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"

namespace greta::cuda {

const KVLayerDev& CudaBackend::kv_layer(const KVStorage& kv, int layer, const char* op) const {
  const auto* ck = dynamic_cast<const CudaKV*>(&kv);
  if (!ck || layer < 0 || layer >= int(ck->layers.size()))
    throw Error(std::string("cuda ") + op + ": KV storage of another backend or layer " + std::to_string(layer) +
                " out of range");
  if (ck->desc.block_size != step_.block_size)
    throw Error(std::string("cuda ") + op + ": step block size " + std::to_string(step_.block_size) +
                " != cache block size " + std::to_string(ck->desc.block_size));
  return ck->layers[size_t(layer)];
}

void CudaBackend::rope_kv_write(Tensor q, Tensor k, Tensor v, const RopeSpec& rope, KVStorage& kv, int layer) {
  const KVLayerDev& L = prepare_rope(q, k, v, rope, kv, layer);
  launch(&rope_kv_cmd, act(q), act(k), static_cast<const bf16*>(act(v)), int(q.cols / L.head_dim),
         rope_table(rope.inv_freq), rope.neox, step_, L, stream_);
}

// rope_kv_write's checks.
const KVLayerDev& CudaBackend::prepare_rope(Tensor q, Tensor k, Tensor v, const RopeSpec& rope, KVStorage& kv,
                                            int layer) {
  if (!have_step_) throw Error("cuda rope_kv_write: called before begin_step");
  const auto& L = kv_layer(kv, layer, "rope_kv_write");
  const int64_t n = step_.n_tokens, hd = L.head_dim;
  if (q.cols % hd != 0)
    throw Error("cuda rope_kv_write: q width " + std::to_string(q.cols) + " is not a multiple of head_dim");
  expect_act(q, n, q.cols, "rope_kv_write q");
  expect_act(k, n, int64_t(L.n_kv_heads) * hd, "rope_kv_write k");
  expect_act(v, n, int64_t(L.n_kv_heads) * hd, "rope_kv_write v");
  if (int64_t(rope.inv_freq.size()) != hd / 2)
    throw Error("cuda rope_kv_write: RopeSpec has " + std::to_string(rope.inv_freq.size()) +
                " frequencies, head_dim/2 = " + std::to_string(hd / 2));
  if (max_slot_ >= int64_t(L.n_blocks) * L.block_size)
    throw Error("cuda rope_kv_write: slot " + std::to_string(max_slot_) + " outside the KV pool");
  return L;
}

// A model uses one table or a few (Gemma 3's local and global layers, LongRoPE's short and long
// factors), so each stays on the device once uploaded and switching between them is free. A new
// table goes to a new buffer no queued kernel reads; only past kMaxRopeTables is the set dropped,
// after the queued work that may read it.
const float* CudaBackend::rope_table(const std::vector<float>& inv_freq) {
  for (const RopeTable& t : rope_tables_)
    if (t.host == inv_freq) return static_cast<const float*>(t.dev.get());
  if (rope_tables_.size() >= kMaxRopeTables) {
    flush();
    GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    rope_tables_.clear();
  }
  RopeTable& t = rope_tables_.emplace_back();
  t.host = inv_freq;
  t.dev.reset(inv_freq.size() * 4);
  GRETA_CUDA_CHECK(cudaMemcpy(t.dev.get(), inv_freq.data(), inv_freq.size() * 4, cudaMemcpyHostToDevice));
  return static_cast<const float*>(t.dev.get());
}

// The step's decode attention split: planned at the step's first attention call, reused by
// every later layer of the same head configuration.
const AttentionDecodePlan& CudaBackend::attention_plan(int n_heads, const KVLayerDev& L) {
  if (attn_plan_heads_ != n_heads || attn_plan_kv_heads_ != L.n_kv_heads) {
    attn_plan_ = plan_attention_decode(step_, n_heads, L.n_kv_heads, L.head_dim, dev_.n_sms, opt_.attn_last_merge);
    attn_plan_heads_ = n_heads;
    attn_plan_kv_heads_ = L.n_kv_heads;
  }
  return attn_plan_;
}

void CudaBackend::attention(Tensor q, const KVStorage& kv, int layer, int n_heads, float scale, Tensor out, int window,
                            float softcap) {
  if (!have_step_) throw Error("cuda attention: called before begin_step");
  if (!(softcap >= 0.0f)) throw Error("cuda attention: soft-cap " + std::to_string(softcap) + " is not >= 0");
  if (window < 0) throw Error("cuda attention: sliding window " + std::to_string(window) + " is negative");
  const auto& L = kv_layer(kv, layer, "attention");
  if (n_heads <= 0 || n_heads % L.n_kv_heads != 0)
    throw Error("cuda attention: n_heads " + std::to_string(n_heads) + " is not a multiple of n_kv_heads " +
                std::to_string(L.n_kv_heads));
  expect_act(q, step_.n_tokens, int64_t(n_heads) * L.head_dim, "attention q");
  expect_act(out, step_.n_tokens, int64_t(n_heads) * L.head_dim, "attention out");
  if (max_block_ >= L.n_blocks)
    throw Error("cuda attention: block " + std::to_string(max_block_) + " outside the KV pool of " +
                std::to_string(L.n_blocks) + " blocks");
  const AttentionDecodePlan& plan = attention_plan(n_heads, L);
  ws_.reserve<float>(DeviceWorkspace::kAttnPartials, size_t(plan.scratch_floats));
  ws_.reserve<int32_t>(DeviceWorkspace::kAttnArrivals, size_t(plan.arrivals));
  int32_t* arrivals = plan.last_merge ? ws_.at<int32_t>(DeviceWorkspace::kAttnArrivals) : nullptr;
  launch(&attention_cmd, static_cast<const bf16*>(act(q)), act(out), step_, L, plan, n_heads, scale, softcap, window,
         ws_.at<float>(DeviceWorkspace::kAttnPartials), arrivals, int(opt_.prefill_tc), stream_);
}

}  // namespace greta::cuda
