// CudaBackend (cuda_backend_impl.h): the int8 GEMM (gemm_int8.h) in two steps, the input quantized
// to int8 per 32 values into the workspace, then the weights' GEMMs on that copy. weight_gemm runs
// both for one weight; q, k and v (and gate and up) read the same normed rows h, so here h is
// quantized once for all of them instead of once per matrix. The values are those of each
// weight's own GEMM of h, bit for bit (the same quantized input, the same kernel).
#include <algorithm>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/quant_planes.h"

namespace greta::cuda {

int CudaBackend::int8_gemm_limit(DType t) const {
  if (opt_.int8_gemm_max_tokens >= 0) return opt_.int8_gemm_max_tokens;
  // Measured end to end (docs/notes/quantized-weights.md): Q8_0 past the GEMV up to 64 tokens
  // beats the packed GEMM; for the 4-bit formats the int8 path's extra work (quantizing x, a scale
  // fma a group) costs what the halved weight stream saves, so they keep the packed GEMM.
  return t == DType::Q8_0 ? int(kInt8GemmMaxTokens) : 0;
}

bool CudaBackend::int8_gemm_takes_weight(const CudaWeight& w, int64_t n) const {
  return opt_.packed_int8_acts && n > gemv_limit(w) && n <= int8_gemm_limit(w.dtype) &&
         int8_gemm_takes(w.dtype, w.n_in);
}

void CudaBackend::int8_gemms(const bf16* x, std::span<const Int8Target> targets, int64_t n, bool accumulate) {
  const int64_t k = targets[0].w->n_in;
  // Every region first: a workspace that grows is replaced, and the quantized rows with it.
  if (targets.size() > 3) throw Error("cuda int8 gemms: more than 3 weights share one input");
  Int8GemmPlan plans[3];
  size_t scratch = 0, counters = 0;
  for (size_t i = 0; i < targets.size(); ++i) {
    plans[i] = int8_gemm_plan(n, targets[i].w->n_out, k, dev_.n_sms);
    scratch = std::max(scratch, int8_gemm_scratch_floats(plans[i]));
    counters = std::max(counters, int8_gemm_counters(plans[i]));
  }
  ws_.reserve<uint8_t>(DeviceWorkspace::kInt8Acts, int8_acts_bytes(n, k));
  ws_.reserve<float>(DeviceWorkspace::kSplitPartials, scratch);
  ws_.reserve<int32_t>(DeviceWorkspace::kSplitCounters, counters);
  const Int8Acts acts = int8_acts_at(ws_.at<uint8_t>(DeviceWorkspace::kInt8Acts), n, k);
  launch(&quantize_int8_acts, targets[0].w->dtype, x, n, k, acts, stream_);
  for (size_t i = 0; i < targets.size(); ++i) {
    const Int8Target& t = targets[i];
    const CudaWeight& w = *t.w;
    Int8GemmArgs a;
    a.x = acts;
    a.w = w.data;
    a.out = t.out;
    a.scratch = ws_.at<float>(DeviceWorkspace::kSplitPartials);
    a.counters = ws_.at<int32_t>(DeviceWorkspace::kSplitCounters);
    a.m = w.n_out;
    a.k = k;
    a.n = int32_t(n);
    a.accumulate = int32_t(accumulate);
    launch(&int8_gemm, w.dtype, a, plans[i], stream_);
    if (t.bias) launch(&add_bias_rows, t.out, t.bias, n, w.n_out, stream_);
  }
}

// One quantized input serves weights whose quants unpack in the same byte order: Q8_0's bytes
// are in order, the 4-bit formats' nibbles are not (quantize_int8_acts).
static bool same_x_layout(DType a, DType b) { return byte_quants(a) == byte_quants(b); }

bool CudaBackend::int8_normed_matmul(const NormedRows& in, std::initializer_list<MatmulTarget> targets) {
  const int64_t n = in.h.rows, k = in.h.cols;
  if (targets.size() > 3) return false;
  Int8Target it[3];
  size_t count = 0;
  for (const MatmulTarget& t : targets) {
    const CudaWeight& w = weight2d(*t.w, "normed_matmul");
    if (!int8_gemm_takes_weight(w, n) || w.n_in != k || (count > 0 && !same_x_layout(w.dtype, it[0].w->dtype)))
      return false;
    expect_act(t.out, n, w.n_out, "normed_matmul out");
    const float* b = t.bias ? static_cast<const float*>(weight1d(*t.bias, w.n_out, "normed_matmul bias").data)
                            : nullptr;
    it[count++] = Int8Target{&w, b, act(t.out)};
  }
  if (count == 0) return false;
  const Tensor h = normed_rows(in);
  int8_gemms(act(h), {it, count}, n, false);
  return true;
}

bool CudaBackend::int8_normed_gated(const NormedRows& in, const Weight& w_gate, const Weight& w_up, Tensor gate,
                                    Tensor out, void (Backend::*act_mul)(Tensor, Tensor, Tensor)) {
  const int64_t n = in.h.rows, k = in.h.cols;
  const CudaWeight& wg = weight2d(w_gate, "normed gated gate");
  const CudaWeight& wu = weight2d(w_up, "normed gated up");
  if (!int8_gemm_takes_weight(wg, n) || !int8_gemm_takes_weight(wu, n) || wg.n_in != k || wu.n_in != k ||
      wg.n_out != wu.n_out || !same_x_layout(wg.dtype, wu.dtype))
    return false;
  expect_act(gate, n, wg.n_out, "normed gated gate");
  expect_act(out, n, wu.n_out, "normed gated out");
  const Tensor h = normed_rows(in);
  const Int8Target it[2] = {{&wg, nullptr, act(gate)}, {&wu, nullptr, act(out)}};
  int8_gemms(act(h), it, n, false);
  (this->*act_mul)(gate, out, out);
  return true;
}

}  // namespace greta::cuda
