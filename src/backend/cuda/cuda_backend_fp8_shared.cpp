// CudaBackend (cuda_backend_impl.h): FP8 W8A8 matmuls in two steps, the input quantized per token
// into the workspace, then the weights' GEMMs on that copy. weight_gemm runs both for one weight;
// q, k and v (and gate and up) read the same normed rows h, so here h is quantized once for all of
// them instead of once per matrix, and greta's W8A8 kernel (when its switch takes the step) runs
// them as one launch.
// The values are those of each weight's own GEMM of h: bit for bit on cuBLASLt; on the W8A8
// kernel up to fp32 summation order (one launch splits k by its total rows).
#include <algorithm>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/launch_commands.h"
#include "backend/cuda/quant_planes.h"

namespace greta::cuda {

bool CudaBackend::fp8_gemm_takes(const CudaWeight& w, int64_t n) const {
  return w.row_scale != nullptr && n > gemv_limit(w);
}

std::optional<W8A8GemmPlan> CudaBackend::w8a8_plan(std::span<const Fp8Target> targets, int64_t n) const {
  if (n > std::min<int64_t>(opt_.w8a8_gemm_max_tokens, kW8A8MaxTokens) || targets.empty() || targets.size() > 3)
    return std::nullopt;
  int64_t ms[3] = {};
  for (size_t i = 0; i < targets.size(); ++i) ms[i] = targets[i].w->n_out;
  return w8a8_gemm_plan(n, {ms[0], ms[1], ms[2]}, targets[0].w->n_in, dev_.n_sms);
}

void CudaBackend::fp8_reserve_gemm(std::span<const Fp8Target> targets, int64_t n) {
  if (const auto plan = w8a8_plan(targets, n)) {
    ws_.reserve<float>(DeviceWorkspace::kSplitPartials, w8a8_gemm_scratch_floats(*plan));
    ws_.reserve<int32_t>(DeviceWorkspace::kSplitCounters, w8a8_gemm_counters(*plan));
  }
}

void CudaBackend::fp8_quantize_input(const bf16* x, int64_t n, int64_t k) {
  ws_.reserve<uint8_t>(DeviceWorkspace::kFp8Acts, size_t(n * k));
  ws_.reserve<float>(DeviceWorkspace::kFp8Scales, size_t(n));
  launch(&quantize_tokens_e4m3, x, n, k, ws_.at<uint8_t>(DeviceWorkspace::kFp8Acts),
         ws_.at<float>(DeviceWorkspace::kFp8Scales), stream_);
}

void CudaBackend::fp8_gemm_quantized(std::span<const Fp8Target> targets, int64_t n, bool accumulate) {
  const auto* xq = static_cast<const uint8_t*>(ws_.at<uint8_t>(DeviceWorkspace::kFp8Acts));
  const auto* xs = static_cast<const float*>(ws_.at<float>(DeviceWorkspace::kFp8Scales));
  const auto quants = [](const CudaWeight& w) {
    return static_cast<const uint8_t*>(w.data) + quant_planes(DType::F8_B64, w.n_out, w.n_in).q;
  };
  if (const auto plan = w8a8_plan(targets, n)) {  // its scratch was reserved with the quantized input
    W8A8GemmArgs a;
    a.xq = xq;
    a.x_scale = xs;
    W8A8Seg* segs[3] = {&a.seg0, &a.seg1, &a.seg2};
    for (size_t i = 0; i < targets.size(); ++i) {
      const CudaWeight& w = *targets[i].w;
      *segs[i] = W8A8Seg{quants(w), static_cast<const float*>(w.row_scale), targets[i].bias, targets[i].out, w.n_out};
    }
    a.scratch = ws_.at<float>(DeviceWorkspace::kSplitPartials);
    a.counters = ws_.at<int32_t>(DeviceWorkspace::kSplitCounters);
    a.k = targets[0].w->n_in;
    a.n = int32_t(n);
    a.accumulate = int32_t(accumulate);
    launch(&w8a8_gemm, a, *plan, stream_);
    return;
  }
  for (const Fp8Target& t : targets) {
    const CudaWeight& w = *t.w;
    launch(&fp8_gemm_quantized_cmd, gemm_.get(), xq, xs, quants(w), static_cast<const float*>(w.row_scale), t.out, n,
           w.n_out, w.n_in, int(accumulate), stream_);
    if (t.bias) launch(&add_bias_rows, t.out, t.bias, n, w.n_out, stream_);
  }
}

bool CudaBackend::fp8_normed_matmul(const NormedRows& in, std::initializer_list<MatmulTarget> targets) {
  const int64_t n = in.h.rows, k = in.h.cols;
  if (targets.size() > 3) return false;
  Fp8Target ft[3];
  size_t count = 0;
  for (const MatmulTarget& t : targets) {
    const CudaWeight& w = weight2d(*t.w, "normed_matmul");
    if (!fp8_gemm_takes(w, n) || w.n_in != k) return false;
    expect_act(t.out, n, w.n_out, "normed_matmul out");
    const float* b = t.bias ? static_cast<const float*>(weight1d(*t.bias, w.n_out, "normed_matmul bias").data)
                            : nullptr;
    ft[count++] = Fp8Target{&w, b, act(t.out)};
  }
  const Tensor h = normed_rows(in);
  fp8_reserve_gemm({ft, count}, n);
  fp8_quantize_input(act(h), n, k);
  fp8_gemm_quantized({ft, count}, n, false);
  return true;
}

bool CudaBackend::fp8_normed_gated(const NormedRows& in, const Weight& w_gate, const Weight& w_up, Tensor gate,
                                   Tensor out, void (Backend::*act_mul)(Tensor, Tensor, Tensor)) {
  const int64_t n = in.h.rows, k = in.h.cols;
  const CudaWeight& wg = weight2d(w_gate, "normed gated gate");
  const CudaWeight& wu = weight2d(w_up, "normed gated up");
  if (!fp8_gemm_takes(wg, n) || !fp8_gemm_takes(wu, n) || wg.n_in != k || wu.n_in != k || wg.n_out != wu.n_out)
    return false;
  expect_act(gate, n, wg.n_out, "normed gated gate");
  expect_act(out, n, wu.n_out, "normed gated out");
  const Tensor h = normed_rows(in);
  const Fp8Target ft[2] = {{&wg, nullptr, act(gate)}, {&wu, nullptr, act(out)}};
  fp8_reserve_gemm(ft, n);
  fp8_quantize_input(act(h), n, k);
  fp8_gemm_quantized(ft, n, false);
  (this->*act_mul)(gate, out, out);
  return true;
}

void CudaBackend::normed_geglu(const NormedRows& in, const Weight& w_gate, const Weight& w_up, Tensor gate,
                               Tensor out) {
  if (!fp8_normed_gated(in, w_gate, w_up, gate, out, &Backend::gelu_mul) &&
      !int8_normed_gated(in, w_gate, w_up, gate, out, &Backend::gelu_mul))
    Backend::normed_geglu(in, w_gate, w_up, gate, out);
}

}  // namespace greta::cuda
