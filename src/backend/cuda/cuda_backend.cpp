// CudaBackend (cuda_backend_impl.h): memory, weight upload, step plans, RoPE and attention.
#include "backend/cuda/cuda_backend_impl.h"

#include <algorithm>
#include <string>

namespace greta::cuda {

std::unique_ptr<Weight> CudaBackend::upload(const HostTensor& w) {
  auto out = std::make_unique<CudaWeight>();
  out->flush = flush_hook_;
  const int64_t cols = w.cols(), rows = w.rows();
  if (w.shape.empty() || rows <= 0 || cols <= 0) throw Error("cuda upload: tensor '" + w.name + "' has an empty shape");
  if (cols % block_elems(w.dtype) != 0)
    throw Error("cuda upload: tensor '" + w.name + "' row length " + std::to_string(cols) +
                " is not a multiple of the " + std::string(dtype_name(w.dtype)) + " block size");
  const size_t rb = row_bytes(w.dtype, cols);
  if (w.nbytes < rb * size_t(rows))
    throw Error("cuda upload: tensor '" + w.name + "' has " + std::to_string(w.nbytes) + " bytes, expected " +
                std::to_string(rb * size_t(rows)));
  flush();  // the upload below synchronizes the stream; recorded launches go first
  out->n_out = rows;
  out->n_in = cols;
  if (w.shape.size() == 1) {
    // Norm scales and biases: small, kept in f32 so the epilogues add them at full precision.
    std::vector<float> f(static_cast<size_t>(cols));
    dequantize_row(w.dtype, w.data, f.data(), cols);
    out->dtype = DType::F32;
    out->n_out = 1;
    GRETA_CUDA_CHECK(cudaMalloc(&out->data, f.size() * 4));
    GRETA_CUDA_CHECK(cudaMemcpy(out->data, f.data(), f.size() * 4, cudaMemcpyHostToDevice));
    return out;
  }
  if (!cuda::convert_supported(w.dtype))
    throw Error("cuda upload: tensor '" + w.name + "' has unsupported type " + std::string(dtype_name(w.dtype)));
  out->dtype = DType::BF16;
  GRETA_CUDA_CHECK(cudaMalloc(&out->data, size_t(rows * cols) * sizeof(bf16)));
  upload_.convert(w.dtype, w.data, rb, rows, cols, static_cast<bf16*>(out->data), stream_);
  GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host bytes may be unmapped after return
  return out;
}

double CudaBackend::measure_bandwidth_gbs() {
  flush();
  return cuda::measure_copy_bandwidth_gbs(stream_);
}

std::unique_ptr<KVStorage> CudaBackend::alloc_kv(const KVCacheDesc& d) {
  if (d.n_layers <= 0 || d.n_blocks <= 0 || d.block_size <= 0 || d.n_kv_heads <= 0 || d.head_dim <= 0)
    throw Error("cuda alloc_kv: every KV cache dimension must be positive");
  if (!cuda::attention_head_dim_supported(d.head_dim))
    throw Error("cuda alloc_kv: head_dim " + std::to_string(d.head_dim) + " not supported (64, 128, 256)");
  auto kv = std::make_unique<CudaKV>();
  kv->flush = flush_hook_;
  kv->desc = d;
  kv->dtype = DType::BF16;
  const size_t per = size_t(d.n_blocks) * d.block_size * d.n_kv_heads * d.head_dim;  // values per pool
  GRETA_CUDA_CHECK(cudaMalloc(&kv->mem, per * 2 * size_t(d.n_layers) * sizeof(bf16)));
  auto* base = static_cast<bf16*>(kv->mem);
  for (int l = 0; l < d.n_layers; ++l) {
    cuda::KVLayerDev L;
    L.k = base + size_t(2 * l) * per;
    L.v = base + size_t(2 * l + 1) * per;
    L.n_blocks = d.n_blocks;
    L.block_size = d.block_size;
    L.n_kv_heads = d.n_kv_heads;
    L.head_dim = d.head_dim;
    kv->layers.push_back(L);
  }
  return kv;
}

void CudaBackend::begin_step(const StepPlan& p) {
  flush();  // a step that ended without to_host (no logits wanted)
  deferring_ = false;
  // The host packs every per-step array into one buffer (step_plan.h); one upload, then the
  // device view points into it.
  const cuda::PackedStep ps = cuda::pack_step(p, kDecodeMaxNewTokens, kDecodeCtxBucket, packed_);
  max_slot_ = ps.max_slot;
  max_block_ = ps.max_block;
  const auto* dev = static_cast<const int32_t*>(plan_stage_.put(packed_.data(), packed_.size() * 4, stream_));
  step_ = cuda::bind_step(ps, dev);
  const int n = step_.n_tokens;
  have_step_ = true;
  deferring_ = graphs_on_ && step_.n_prefill == 0 && n <= kGraphMaxTokens;
  prof_.active = prof_.on && step_.n_prefill == 0 && n <= kGraphMaxTokens;  // decode steps of any batch
  if (prof_.active) {
    GRETA_CUDA_CHECK(cudaEventRecord(prof_.ev[0], stream_));
    prof_.t0 = std::chrono::steady_clock::now();
    prof_.tokens = n;
  }
}

void CudaBackend::rope_kv_write(Tensor q, Tensor k, Tensor v, const RopeSpec& rope, KVStorage& kv, int layer) {
  const cuda::KVLayerDev& L = prepare_rope(q, k, v, rope, kv, layer);
  launch(&rope_kv_cmd, act(q), act(k), static_cast<const bf16*>(act(v)), int(q.cols / L.head_dim),
         static_cast<const float*>(inv_freq_dev_), rope.neox, step_, L, stream_);
}

// rope_kv_write's checks, and the RoPE frequencies uploaded when they change.
const cuda::KVLayerDev& CudaBackend::prepare_rope(Tensor q, Tensor k, Tensor v, const RopeSpec& rope, KVStorage& kv,
                                                  int layer) {
  if (!have_step_) throw Error("cuda rope_kv_write: called before begin_step");
  const auto& L = kv_layer(kv, layer, "rope_kv_write");
  const int64_t n = step_.n_tokens, hd = L.head_dim;
  if (q.cols % hd != 0) throw Error("cuda rope_kv_write: q width " + std::to_string(q.cols) + " is not a multiple of head_dim");
  expect_act(q, n, q.cols, "rope_kv_write q");
  expect_act(k, n, int64_t(L.n_kv_heads) * hd, "rope_kv_write k");
  expect_act(v, n, int64_t(L.n_kv_heads) * hd, "rope_kv_write v");
  if (int64_t(rope.inv_freq.size()) != hd / 2)
    throw Error("cuda rope_kv_write: RopeSpec has " + std::to_string(rope.inv_freq.size()) + " frequencies, head_dim/2 = " +
                std::to_string(hd / 2));
  if (max_slot_ >= int64_t(L.n_blocks) * L.block_size)
    throw Error("cuda rope_kv_write: slot " + std::to_string(max_slot_) + " outside the KV pool");
  if (rope.inv_freq != inv_freq_host_) {
    flush();
    GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));  // earlier kernels may read the old table
    GRETA_CUDA_CHECK(cudaFree(inv_freq_dev_));
    inv_freq_dev_ = nullptr;
    GRETA_CUDA_CHECK(cudaMalloc(&inv_freq_dev_, rope.inv_freq.size() * 4));
    GRETA_CUDA_CHECK(cudaMemcpy(inv_freq_dev_, rope.inv_freq.data(), rope.inv_freq.size() * 4, cudaMemcpyHostToDevice));
    inv_freq_host_ = rope.inv_freq;
  }
  return L;
}

void CudaBackend::attention(Tensor q, const KVStorage& kv, int layer, int n_heads, float scale, Tensor out) {
  if (!have_step_) throw Error("cuda attention: called before begin_step");
  const auto& L = kv_layer(kv, layer, "attention");
  if (n_heads <= 0 || n_heads % L.n_kv_heads != 0)
    throw Error("cuda attention: n_heads " + std::to_string(n_heads) + " is not a multiple of n_kv_heads " +
                std::to_string(L.n_kv_heads));
  expect_act(q, step_.n_tokens, int64_t(n_heads) * L.head_dim, "attention q");
  expect_act(out, step_.n_tokens, int64_t(n_heads) * L.head_dim, "attention out");
  if (max_block_ >= L.n_blocks)
    throw Error("cuda attention: block " + std::to_string(max_block_) + " outside the KV pool of " +
                std::to_string(L.n_blocks) + " blocks");
  if (skip_ & cuda::kSkipAttention) return;  // GRETA_CUDA_SKIP: timing experiments only
  const size_t need = cuda::attention_decode_scratch_floats(step_, n_heads, L.head_dim, L.n_kv_heads, n_sms_);
  grow(scratch_, scratch_floats_, need, false);
  int32_t* arrivals = nullptr;
  if (attn_last_merge_) {  // counters start at zero; the kernel leaves them zero
    grow(arrivals_, arrivals_n_, cuda::attention_decode_arrivals(step_, n_heads, L.n_kv_heads), true);
    arrivals = arrivals_;
  }
  launch(&attention_cmd, static_cast<const bf16*>(act(q)), act(out), step_, L, n_heads, scale, scratch_, arrivals, n_sms_,
         prefill_tc_, stream_);
}

}  // namespace greta::cuda

namespace greta {

using cuda::CudaBackend;

bool cuda_device_present() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

std::unique_ptr<Backend> make_cuda_backend(int device) { return std::make_unique<CudaBackend>(device, cuda::graphs_from_env()); }
std::unique_ptr<Backend> make_cuda_backend(int device, bool use_graphs) {
  return std::make_unique<CudaBackend>(device, use_graphs);
}

CudaGraphStats cuda_graph_stats(const Backend& b) {
  const auto* cb = dynamic_cast<const CudaBackend*>(&b);
  if (!cb) throw Error("cuda_graph_stats: not a CUDA backend");
  const auto s = cb->graph_stats();
  return CudaGraphStats{s.eager, s.captured, s.replayed};
}

}  // namespace greta
