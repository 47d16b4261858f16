// CudaBackend (cuda_backend_impl.h): the decode GEMV with its fusions (gemv_kernel.cuh) behind
// the fused ops of backend.h. A decode-sized step (at most gemv_limit tokens) runs
//   q, k, v + RoPE + KV write   one GEMV launch (normed_qkv_rope)
//   q, k, v, then per-head q/k norm + RoPE + KV write (Qwen3)
//                               one GEMV launch (normed_matmul) and one RoPE launch whose heads
//                               are normalized first (normed_qkv_headnorm_rope)
//   gate, up + SiLU             one GEMV launch (normed_swiglu)
//   o, down + residual add      one GEMV launch each, whose epilogue also writes the next
//                               RMSNorm's input x * w and its sums of squares (matmul_add_norm)
// so no norm kernel runs between layers: the consuming GEMV scales by 1/rms from those sums.
// Shapes the GEMV does not take fall back to the plain ops (Backend's defaults), and so do
// fused launches whose matrices differ in storage (a Q4_K_M file's q and k in Q4_K with v in
// Q6_K): one launch reads one weight format.
// Packed weights (quant_planes.h) run the same kernel with the format's dequantization in its
// weight loads (gemv_quant.cu).
#include <string>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/quant_planes.h"

namespace greta::cuda {

void CudaBackend::set_gemv_options(GemvArgs& a) const {
  a.pipeline = int16_t(opt_.gemv_pipeline);
  a.int8_x = int32_t(opt_.packed_int8_acts);
}

// Fills g for x += a @ w^T on the streaming GEMV, or returns false when the shape is not the
// GEMV's (too many tokens, unaligned rows) or a aliases x.
bool CudaBackend::residual_gemv(Tensor a, const CudaWeight& wt, Tensor x, GemvArgs& g) {
  expect_act(a, a.rows, wt.n_in, "matmul_add a");
  expect_act(x, a.rows, wt.n_out, "matmul_add x");
  if (a.data == x.data || !gemv_takes_weight(wt, a.data, int(a.rows), wt.n_in)) return false;
  g = GemvArgs{};
  g.x = act(a);
  g.k = wt.n_in;
  g.n = int32_t(a.rows);
  g.seg0 = GemvSeg{static_cast<const bf16*>(wt.data), nullptr, act(x), wt.n_out};
  g.accumulate = 1;
  g.wfmt = int32_t(wt.dtype);
  set_gemv_options(g);
  // Few row tiles (4096-row outputs: ~2 blocks per SM) keep too few loads in flight; splitting
  // a long k over 2 blocks per tile helps the down projections but not a short k
  // (docs/notes/gemv.md, split-K).
  // The int8 dot-product GEMV of the GGUF formats likewise, from k = packed_split_k_min.
  const bool few_tiles = (wt.n_out + 15) / 16 <= 2 * dev_.n_sms;
  const bool split_bf16 = opt_.split_k && wt.dtype == DType::BF16 && wt.n_in >= 8192;
  const bool split_dot = opt_.packed_split_k_min > 0 && opt_.packed_int8_acts && int8_dot_format(wt.dtype) &&
                         a.rows == 1 && wt.n_in >= opt_.packed_split_k_min && wt.n_in <= kGemvDotMaxK;
  if (few_tiles && (split_bf16 || split_dot)) {
    ws_.reserve<float>(DeviceWorkspace::kSplitPartials, gemv_split_scratch_floats(wt.n_out, int(a.rows)));
    ws_.reserve<int32_t>(DeviceWorkspace::kSplitCounters, gemv_split_counters(wt.n_out));
    g.split = 2;
    g.split_scratch = ws_.at<float>(DeviceWorkspace::kSplitPartials);
    g.split_count = ws_.at<int32_t>(DeviceWorkspace::kSplitCounters);
  }
  return true;
}

void CudaBackend::matmul_add(Tensor a, const Weight& w, Tensor tmp, Tensor x) {
  const auto& wt = weight2d(w, "matmul_add");
  GemvArgs g;
  if (residual_gemv(a, wt, x, g)) {
    launch(&gemv_fused, g, 0.f, stream_);
  } else if (a.rows > gemv_limit(wt) && a.data != x.data) {
    // Many tokens (prefill, large decode batches): cuBLASLt adds into x in its epilogue.
    weight_gemm(act(a), wt, act(x), a.rows, true);
  } else {
    Backend::matmul_add(a, w, tmp, x);
  }
}

Backend::NormedRows CudaBackend::matmul_add_norm(Tensor a, const Weight& w, Tensor x, const Weight& next_norm,
                                                 float eps, Tensor h) {
  const auto& wt = weight2d(w, "matmul_add_norm");
  const auto& nw = weight1d(next_norm, x.cols, "matmul_add_norm norm");
  expect_act(h, x.rows, x.cols, "matmul_add_norm h");
  GemvArgs g;
  if (h.data == x.data || wt.n_out % 16 != 0 || !residual_gemv(a, wt, x, g)) {
    matmul_add(a, w, h, x);
    return norm(x, next_norm, eps, h);
  }
  // The split form of NormedRows: this epilogue writes h = x * w and per-16-row-tile sums of
  // squares; the consuming GEMV adds the sums up and scales by 1/rms.
  ws_.reserve<float>(DeviceWorkspace::kNormSums, size_t(wt.n_out / 16) * kGemvMaxTokens);
  if (g.split == 2) {  // the reservation may have moved the split-K regions
    g.split_scratch = ws_.at<float>(DeviceWorkspace::kSplitPartials);
    g.split_count = ws_.at<int32_t>(DeviceWorkspace::kSplitCounters);
  }
  float* sums = ws_.at<float>(DeviceWorkspace::kNormSums);
  g.next_norm_w = static_cast<const float*>(nw.data);
  g.next_h = act(h);
  g.next_ss = sums;
  launch(&gemv_fused, g, 0.f, stream_);
  return NormedRows{x, &next_norm, eps, h, sums};
}

// Whether up to 3 targets over in.h can run as one GEMV launch (few tokens, aligned shapes,
// outputs distinct from the inputs).
bool CudaBackend::gemv_takes(const NormedRows& in, std::initializer_list<MatmulTarget> targets) const {
  bool ok = targets.size() <= 3;
  const DType fmt = weight2d(*targets.begin()->w, "normed_matmul").dtype;
  for (const MatmulTarget& t : targets) {
    const CudaWeight& w = weight2d(*t.w, "normed_matmul");
    ok = ok && w.dtype == fmt && gemv_takes_weight(w, in.h.data, int(in.h.rows), in.h.cols) &&
         t.out.data != in.x.data && t.out.data != in.h.data;
  }
  return ok;
}

// The GEMV reads h; in the split form it also finishes the norm from the producer's sums.
GemvArgs CudaBackend::gemv_input(const NormedRows& in) const {
  expect_act(in.h, in.x.rows, in.x.cols, "normed h");
  GemvArgs a;
  a.x = act(in.h);
  a.k = in.h.cols;
  a.n = int32_t(in.h.rows);
  set_gemv_options(a);
  a.norm_ss = in.split_ss;
  return a;
}

void CudaBackend::set_segments(GemvArgs& a, const NormedRows& in, std::initializer_list<MatmulTarget> targets) const {
  GemvSeg* segs[3] = {&a.seg0, &a.seg1, &a.seg2};
  int i = 0;
  for (const MatmulTarget& t : targets) {
    const auto& wt = weight2d(*t.w, "normed_matmul");
    if (wt.n_in != in.h.cols)
      throw Error("cuda normed_matmul: weight " + shape_str(wt.n_out, wt.n_in) + " does not take x " +
                  shape_str(in.h.rows, in.h.cols));
    expect_act(t.out, in.h.rows, wt.n_out, "normed_matmul out");
    const float* b = t.bias ? static_cast<const float*>(weight1d(*t.bias, wt.n_out, "normed_matmul bias").data)
                            : nullptr;
    *segs[i++] = GemvSeg{static_cast<const bf16*>(wt.data), b, act(t.out), wt.n_out};
    a.wfmt = int32_t(wt.dtype);  // the same for every target (gemv_takes)
  }
}

void CudaBackend::normed_matmul(const NormedRows& in, std::initializer_list<MatmulTarget> targets) {
  if (!gemv_takes(in, targets)) {
    if (!fp8_normed_matmul(in, targets) && !int8_normed_matmul(in, targets)) Backend::normed_matmul(in, targets);
    return;
  }
  GemvArgs a = gemv_input(in);
  set_segments(a, in, targets);
  launch(&gemv_fused, a, in.eps, stream_);
}

// q, k, v in one GEMV whose epilogue applies RoPE and writes k, v to the cache.
void CudaBackend::normed_qkv_rope(const NormedRows& in, const MatmulTarget& q, const MatmulTarget& k,
                                  const MatmulTarget& v, const RopeSpec& rope, KVStorage& kv, int layer) {
  const auto* ck = dynamic_cast<const CudaKV*>(&kv);
  if (!gemv_takes(in, {q, k, v}) || !have_step_ || !ck || ck->desc.head_dim % 16 != 0 || step_.n_tokens != in.h.rows) {
    Backend::normed_qkv_rope(in, q, k, v, rope, kv, layer);
    return;
  }
  const KVLayerDev& L = prepare_rope(q.out, k.out, v.out, rope, kv, layer);
  GemvArgs a = gemv_input(in);
  set_segments(a, in, {q, k, v});
  a.rope = GemvRope{step_.positions, step_.slot, rope_table(rope.inv_freq), L.k, L.v, L.head_dim, rope.neox ? 1 : 0};
  launch(&gemv_fused, a, in.eps, stream_);
}

// The head norm needs each whole head of q and k, which the GEMV's epilogue does not hold, so
// it runs in the RoPE kernel: the projections' GEMV, then one launch for norm, RoPE and KV write.
void CudaBackend::normed_qkv_headnorm_rope(const NormedRows& in, const MatmulTarget& q, const MatmulTarget& k,
                                           const MatmulTarget& v, const Weight& q_norm, const Weight& k_norm, float eps,
                                           const RopeSpec& rope, KVStorage& kv, int layer) {
  normed_matmul(in, {q, k, v});
  const KVLayerDev& L = prepare_rope(q.out, k.out, v.out, rope, kv, layer);
  const auto& qn = weight1d(q_norm, L.head_dim, "normed_qkv_headnorm_rope q_norm");
  const auto& kn = weight1d(k_norm, L.head_dim, "normed_qkv_headnorm_rope k_norm");
  launch(&rope_kv_headnorm_cmd, act(q.out), act(k.out), static_cast<const bf16*>(act(v.out)),
         int(q.out.cols / L.head_dim), static_cast<const float*>(qn.data), static_cast<const float*>(kn.data), eps,
         rope_table(rope.inv_freq), rope.neox, step_, L, stream_);
}

void CudaBackend::normed_swiglu(const NormedRows& in, const Weight& w_gate, const Weight& w_up, Tensor gate,
                                Tensor out) {
  const int64_t n = in.h.rows, k = in.h.cols;
  const auto& wg = weight2d(w_gate, "normed_swiglu gate");
  const auto& wu = weight2d(w_up, "normed_swiglu up");
  if (wg.dtype != wu.dtype || !gemv_takes_weight(wg, in.h.data, int(n), k) ||
      !gemv_takes_weight(wu, in.h.data, int(n), k) || out.data == in.x.data || out.data == in.h.data) {
    if (!fp8_normed_gated(in, w_gate, w_up, gate, out, &Backend::silu_mul) &&
        !int8_normed_gated(in, w_gate, w_up, gate, out, &Backend::silu_mul))
      Backend::normed_swiglu(in, w_gate, w_up, gate, out);
    return;
  }
  if (wg.n_in != k || wu.n_in != k || wu.n_out != wg.n_out)
    throw Error("cuda normed_swiglu: gate " + shape_str(wg.n_out, wg.n_in) + " and up " + shape_str(wu.n_out, wu.n_in) +
                " do not both take x " + shape_str(n, k) + " to the same width");
  expect_act(out, n, wg.n_out, "normed_swiglu out");
  GemvArgs a = gemv_input(in);
  a.seg0 = GemvSeg{static_cast<const bf16*>(wg.data), nullptr, act(out), wg.n_out};
  a.seg1 = GemvSeg{static_cast<const bf16*>(wu.data), nullptr, nullptr, wu.n_out};
  a.swiglu = 1;
  a.wfmt = int32_t(wg.dtype);
  launch(&gemv_fused, a, in.eps, stream_);
}

}  // namespace greta::cuda
