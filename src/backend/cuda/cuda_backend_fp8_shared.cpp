// CudaBackend (cuda_backend_impl.h): FP8 W8A8 matmuls in two steps, the input quantized per token
// into the workspace, then each weight's GEMM on that copy. weight_gemm runs both for one weight;
// q, k and v (and gate and up) read the same normed rows h, so here h is quantized once for all of
// them instead of once per matrix. The values are the same bit for bit: the same kernel on the
// same h.
#include <algorithm>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/launch_commands.h"
#include "backend/cuda/quant_planes.h"

namespace greta::cuda {

bool CudaBackend::fp8_gemm_takes(const CudaWeight& w, int64_t n) const {
  return w.row_scale != nullptr && n > gemv_limit(w);
}

std::optional<W8A8GemmPlan> CudaBackend::w8a8_plan(const CudaWeight& w, int64_t n) const {
  if (n > std::min<int64_t>(opt_.w8a8_gemm_max_tokens, kW8A8MaxTokens)) return std::nullopt;
  return w8a8_gemm_plan(n, w.n_out, w.n_in, dev_.n_sms);
}

void CudaBackend::fp8_reserve_gemm(const CudaWeight& w, int64_t n) {
  if (const auto plan = w8a8_plan(w, n)) {
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

void CudaBackend::fp8_gemm_quantized(const CudaWeight& w, const float* bias, bf16* out, int64_t n, bool accumulate) {
  const auto* wq = static_cast<const uint8_t*>(w.data) + quant_planes(DType::F8_B64, w.n_out, w.n_in).q;
  const auto* xq = static_cast<const uint8_t*>(ws_.at<uint8_t>(DeviceWorkspace::kFp8Acts));
  const auto* xs = static_cast<const float*>(ws_.at<float>(DeviceWorkspace::kFp8Scales));
  if (const auto plan = w8a8_plan(w, n)) {  // its scratch was reserved with the quantized input
    W8A8GemmArgs a;
    a.xq = xq;
    a.x_scale = xs;
    a.wq = wq;
    a.w_scale = static_cast<const float*>(w.row_scale);
    a.bias = bias;
    a.out = out;
    a.scratch = ws_.at<float>(DeviceWorkspace::kSplitPartials);
    a.counters = ws_.at<int32_t>(DeviceWorkspace::kSplitCounters);
    a.m = w.n_out;
    a.k = w.n_in;
    a.n = int32_t(n);
    a.accumulate = int32_t(accumulate);
    launch(&w8a8_gemm, a, *plan, stream_);
    return;
  }
  launch(&fp8_gemm_quantized_cmd, gemm_.get(), xq, xs, wq, static_cast<const float*>(w.row_scale), out, n, w.n_out,
         w.n_in, int(accumulate), stream_);
  if (bias) launch(&add_bias_rows, out, bias, n, w.n_out, stream_);
}

bool CudaBackend::fp8_normed_matmul(const NormedRows& in, std::initializer_list<MatmulTarget> targets) {
  const int64_t n = in.h.rows, k = in.h.cols;
  for (const MatmulTarget& t : targets) {
    const CudaWeight& w = weight2d(*t.w, "normed_matmul");
    if (!fp8_gemm_takes(w, n) || w.n_in != k) return false;
  }
  const Tensor h = normed_rows(in);
  for (const MatmulTarget& t : targets) fp8_reserve_gemm(weight2d(*t.w, "normed_matmul"), n);
  fp8_quantize_input(act(h), n, k);
  for (const MatmulTarget& t : targets) {
    const CudaWeight& w = weight2d(*t.w, "normed_matmul");
    expect_act(t.out, n, w.n_out, "normed_matmul out");
    const float* b = t.bias ? static_cast<const float*>(weight1d(*t.bias, w.n_out, "normed_matmul bias").data)
                            : nullptr;
    fp8_gemm_quantized(w, b, act(t.out), n, false);
  }
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
  fp8_reserve_gemm(wg, n);
  fp8_reserve_gemm(wu, n);
  fp8_quantize_input(act(h), n, k);
  fp8_gemm_quantized(wg, nullptr, act(gate), n, false);
  fp8_gemm_quantized(wu, nullptr, act(out), n, false);
  (this->*act_mul)(gate, out, out);
  return true;
}

void CudaBackend::normed_geglu(const NormedRows& in, const Weight& w_gate, const Weight& w_up, Tensor gate,
                               Tensor out) {
  if (!fp8_normed_gated(in, w_gate, w_up, gate, out, &Backend::gelu_mul))
    Backend::normed_geglu(in, w_gate, w_up, gate, out);
}

}  // namespace greta::cuda
