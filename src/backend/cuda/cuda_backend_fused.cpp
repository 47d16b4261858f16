// CudaBackend (cuda_backend_impl.h): the fused decode ops -- norm_matmul, norm_qkv_rope,
// norm_swiglu, matmul_add -- as single GEMV launches when the step is decode-sized.
#include <string>

#include "backend/cuda/cuda_backend_impl.h"

namespace greta::cuda {

// Decode-sized steps (fusion >= 1): the targets go to one GEMV launch (up to 3 matrices
// sharing x); the RMSNorm runs as its own kernel into h (level 1) or inside the GEMV as it
// loads x (level 2, h never written).
void CudaBackend::norm_matmul(Tensor x, const Weight& norm, float eps, Tensor h,
                              std::initializer_list<MatmulTarget> targets) {
  if (!gemv_fusable(x, h, targets)) {
    Backend::norm_matmul(x, norm, eps, h, targets);
    return;
  }
  cuda::GemvArgs a = fused_input(x, norm, eps, h);
  set_segments(a, x, targets);
  launch(&cuda::gemv_fused, a, eps, stream_);
}

// q, k, v in one GEMV whose epilogue applies RoPE and writes k, v to the cache.
void CudaBackend::norm_qkv_rope(Tensor x, const Weight& norm, float eps, Tensor h, const MatmulTarget& q,
                                const MatmulTarget& k, const MatmulTarget& v, const RopeSpec& rope, KVStorage& kv,
                                int layer) {
  const auto* ck = dynamic_cast<const CudaKV*>(&kv);
  if (!gemv_fusable(x, h, {q, k, v}) || !have_step_ || !ck || ck->desc.head_dim % 16 != 0 ||
      step_.n_tokens != x.rows) {
    Backend::norm_qkv_rope(x, norm, eps, h, q, k, v, rope, kv, layer);
    return;
  }
  const cuda::KVLayerDev& L = prepare_rope(q.out, k.out, v.out, rope, kv, layer);
  cuda::GemvArgs a = fused_input(x, norm, eps, h);
  set_segments(a, x, {q, k, v});
  a.rope = cuda::GemvRope{step_.positions, step_.slot, inv_freq_dev_, L.k, L.v, L.head_dim, rope.neox ? 1 : 0};
  launch(&cuda::gemv_fused, a, eps, stream_);
}

// Whether up to 3 targets over x can run as one fused GEMV launch (fusion on, few tokens,
// aligned shapes, outputs distinct from the inputs).
bool CudaBackend::gemv_fusable(Tensor x, Tensor h, std::initializer_list<MatmulTarget> targets) const {
  bool ok = fusion_ >= 1 && x.rows <= gemv_max_tokens_ && targets.size() <= 3;
  for (const MatmulTarget& t : targets)
    ok = ok && cuda::gemv_fast_path(x.data, weight2d(*t.w, "norm_matmul").data, int(x.rows), x.cols) &&
         t.out.data != x.data && t.out.data != h.data;
  return ok;
}

void CudaBackend::set_segments(cuda::GemvArgs& a, Tensor x, std::initializer_list<MatmulTarget> targets) {
  cuda::GemvSeg* segs[3] = {&a.seg0, &a.seg1, &a.seg2};
  int i = 0;
  for (const MatmulTarget& t : targets) {
    const auto& wt = weight2d(*t.w, "norm_matmul");
    if (wt.n_in != x.cols)
      throw Error("cuda norm_matmul: weight " + shape_str(wt.n_out, wt.n_in) + " does not take x " +
                  shape_str(x.rows, x.cols));
    expect_act(t.out, x.rows, wt.n_out, "norm_matmul out");
    const float* b = t.bias ? static_cast<const float*>(weight1d(*t.bias, wt.n_out, "norm_matmul bias").data) : nullptr;
    *segs[i++] = cuda::GemvSeg{static_cast<const bf16*>(wt.data), b, act(t.out), wt.n_out};
  }
}

void CudaBackend::norm_swiglu(Tensor x, const Weight& norm, float eps, Tensor h, const Weight& w_gate,
                              const Weight& w_up, Tensor gate, Tensor out) {
  const int64_t n = x.rows, k = x.cols;
  const auto& wg = weight2d(w_gate, "norm_swiglu gate");
  const auto& wu = weight2d(w_up, "norm_swiglu up");
  if (fusion_ < 1 || n > gemv_max_tokens_ || !cuda::gemv_fast_path(x.data, wg.data, int(n), k) ||
      !cuda::gemv_fast_path(x.data, wu.data, int(n), k) || out.data == x.data || out.data == h.data) {
    Backend::norm_swiglu(x, norm, eps, h, w_gate, w_up, gate, out);
    return;
  }
  if (wg.n_in != k || wu.n_in != k || wu.n_out != wg.n_out)
    throw Error("cuda norm_swiglu: gate " + shape_str(wg.n_out, wg.n_in) + " and up " + shape_str(wu.n_out, wu.n_in) +
                " do not both take x " + shape_str(n, k) + " to the same width");
  expect_act(out, n, wg.n_out, "norm_swiglu out");
  cuda::GemvArgs a = fused_input(x, norm, eps, h);
  a.seg0 = cuda::GemvSeg{static_cast<const bf16*>(wg.data), nullptr, act(out), wg.n_out};
  a.seg1 = cuda::GemvSeg{static_cast<const bf16*>(wu.data), nullptr, nullptr, wu.n_out};
  a.swiglu = 1;
  launch(&cuda::gemv_fused, a, eps, stream_);
}

// The GEMV input of a fused norm_* op: at level 3, when the GEMV that produced x is still held
// back (matmul_add), that GEMV also writes h = x * norm and the per-tile sums of squares, and
// this one reads them (kNormPre); at level 2, x with the norm folded into the loads; else
// (level 1, and level 3 when x did not come from a held GEMV, e.g. the embedding) h =
// rms_norm(x) computed by the rms_norm kernel first.
cuda::GemvArgs CudaBackend::fused_input(Tensor x, const Weight& norm, float eps, Tensor h) {
  expect_act(x, x.rows, x.cols, "norm x");
  cuda::GemvArgs a;
  a.k = x.cols;
  a.n = int32_t(x.rows);
  a.pipeline = gemv_pipe_;
  if (fusion_ >= 3 && have_pending_ && pending_.seg0.out == x.data && pending_.n == x.rows &&
      pending_.seg0.m == x.cols && x.cols % 16 == 0 && h.data != x.data) {
    pending_.next_norm_w = static_cast<const float*>(weight1d(norm, x.cols, "norm").data);
    pending_.next_h = act(h);
    pending_.next_ss = prenorm_ss_;
    a.x = act(h);
    a.norm_ss = prenorm_ss_;
    return a;
  }
  if (fusion_ == 2) {
    a.x = act(x);
    a.norm_w = static_cast<const float*>(weight1d(norm, x.cols, "norm").data);
  } else {
    rms_norm(x, norm, eps, h);
    a.x = act(h);
  }
  return a;
}

void CudaBackend::matmul_add(Tensor a, const Weight& w, Tensor tmp, Tensor x) {
  const auto& wt = weight2d(w, "matmul_add");
  if (fusion_ < 1 || a.data == x.data) {
    Backend::matmul_add(a, w, tmp, x);
    return;
  }
  expect_act(a, a.rows, wt.n_in, "matmul_add a");
  expect_act(x, a.rows, wt.n_out, "matmul_add x");
  if (a.rows > gemv_max_tokens_) {
    // Many tokens (prefill, large decode batches): cuBLASLt adds into x in its epilogue.
    launch(&lt_gemm_cmd, gemm_.get(), act(a), static_cast<const bf16*>(wt.data), act(x), a.rows, wt.n_out, wt.n_in, 1,
           stream_);
    return;
  }
  if (!cuda::gemv_fast_path(a.data, wt.data, int(a.rows), wt.n_in)) {
    Backend::matmul_add(a, w, tmp, x);
    return;
  }
  cuda::GemvArgs g;
  g.x = act(a);
  g.k = wt.n_in;
  g.n = int32_t(a.rows);
  g.seg0 = cuda::GemvSeg{static_cast<const bf16*>(wt.data), nullptr, act(x), wt.n_out};
  g.accumulate = 1;
  g.pipeline = gemv_pipe_;
  // Few row tiles (4096-row outputs: ~2 blocks per SM) keep too few loads in flight; splitting
  // a long k over 2 blocks per tile helps (H100: 4096 x 11008 80.8 -> 85.5% of copy) but not a
  // short one (4096 x 4096: 79.4 -> 74.3%), so only the down projections split (bench/NOTES.md).
  if (split_k_ && (wt.n_out + 15) / 16 <= 2 * n_sms_ && wt.n_in >= 8192) {
    grow(split_scratch_, split_floats_, cuda::gemv_split_scratch_floats(wt.n_out, int(a.rows)), false);
    grow(split_count_, split_counters_, cuda::gemv_split_counters(wt.n_out), true);  // kernels leave it zero
    g.split = 2;
    g.split_scratch = split_scratch_;
    g.split_count = split_count_;
  }
  if (fusion_ >= 3 && wt.n_out % 16 == 0) {
    // Held back until the next launch: if that is a norm_* op on this x, it hands this GEMV the
    // norm's weight first (fused_input), so the norm's work happens in this epilogue.
    grow(prenorm_ss_, prenorm_floats_, size_t(wt.n_out / 16) * cuda::kGemvMaxTokens, false);
    emit_pending();
    pending_ = g;
    have_pending_ = true;
    return;
  }
  launch(&cuda::gemv_fused, g, 0.f, stream_);
}

}  // namespace greta::cuda
