// CudaBackend (cuda_backend_impl.h): token sampling on the device (sample.cu) after a step.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"

namespace greta::cuda {

namespace {

// The rows' settings with their constraints packed behind them, for one upload: the params
// array, then each row's allowed words, bias ids and bias values, every section 8-byte aligned;
// a row's *_at fields are the byte offsets of its sections from the start. Checks the
// constraints (ids in range and distinct, finite biases) and throws greta::Error naming the row.
std::vector<unsigned char> pack_sample_params(const std::vector<DeviceSampleParams>& per_row, int64_t vocab,
                                              bool* biased) {
  const size_t words = size_t((vocab + 31) / 32);
  auto align = [](size_t n) { return (n + 7) & ~size_t(7); };
  size_t bytes = align(per_row.size() * sizeof(DeviceSampleParams));
  for (const DeviceSampleParams& q : per_row) {
    if (q.allowed) bytes += align(words * 4);
    if (q.n_bias > 0) bytes += 2 * align(size_t(q.n_bias) * 4);
  }
  std::vector<unsigned char> buf(bytes);
  auto* out = reinterpret_cast<DeviceSampleParams*>(buf.data());
  size_t at = align(per_row.size() * sizeof(DeviceSampleParams));
  auto put = [&](const void* src, size_t n) {
    std::memcpy(buf.data() + at, src, n);
    const size_t here = at;
    at += align(n);
    return int64_t(here);
  };
  *biased = false;
  std::vector<int32_t> ids;
  for (size_t r = 0; r < per_row.size(); ++r) {
    DeviceSampleParams q = per_row[r];
    const std::string row = "cuda sample: row " + std::to_string(r) + ": ";
    if (q.n_bias < 0 || (q.n_bias > 0 && (!q.bias_ids || !q.bias_values)))
      throw Error(row + "logit_bias of " + std::to_string(q.n_bias) + " entries without its arrays");
    ids.assign(q.bias_ids, q.bias_ids + std::max(q.n_bias, 0));
    for (int j = 0; j < q.n_bias; ++j)
      if (ids[size_t(j)] < 0 || ids[size_t(j)] >= vocab || !std::isfinite(q.bias_values[j]))
        throw Error(row + "logit_bias entry " + std::to_string(j) + ": token " + std::to_string(ids[size_t(j)]) +
                    ", expected an id in [0, " + std::to_string(vocab) + ") and a finite bias");
    std::sort(ids.begin(), ids.end());
    if (std::adjacent_find(ids.begin(), ids.end()) != ids.end())
      throw Error(row + "logit_bias names a token twice (the biases are added in place, in parallel)");
    q.allowed_at = q.allowed ? put(q.allowed, words * 4) : 0;
    q.bias_ids_at = q.n_bias > 0 ? put(q.bias_ids, size_t(q.n_bias) * 4) : 0;
    q.bias_values_at = q.n_bias > 0 ? put(q.bias_values, size_t(q.n_bias) * 4) : 0;
    *biased = *biased || q.n_bias > 0;
    q.allowed = nullptr;  // host pointers mean nothing on the device
    q.bias_ids = nullptr;
    q.bias_values = nullptr;
    std::memcpy(static_cast<void*>(out + r), &q, sizeof q);
  }
  return buf;
}

}  // namespace

void CudaBackend::sample_rows(Tensor logits, const std::vector<DeviceSampleParams>& per_row, int32_t* tokens_out,
                              float* probs_out, float* dist) {
  expect_act(logits, logits.rows, logits.cols, "sample logits");
  const int64_t rows = logits.rows, vocab = logits.cols;
  if (int64_t(per_row.size()) != rows)
    throw Error("cuda sample: " + std::to_string(per_row.size()) + " row settings for " + std::to_string(rows) +
                " rows of logits");
  if (vocab < 1 || vocab > cuda::kSampleMaxVocab)
    throw Error("cuda sample: vocabulary of " + std::to_string(vocab) + " tokens, expected 1 to " +
                std::to_string(cuda::kSampleMaxVocab));
  for (size_t r = 0; r < per_row.size(); ++r) {
    const DeviceSampleParams& q = per_row[r];
    if (std::isnan(q.temperature) || !(q.top_p > 0.0f && q.top_p <= 1.0f) || !(q.min_p >= 0.0f && q.min_p <= 1.0f) ||
        !(q.u >= 0.0 && q.u < 1.0))
      throw Error("cuda sample: row " + std::to_string(r) + ": temperature " + std::to_string(q.temperature) +
                  ", top_p " + std::to_string(q.top_p) + ", min_p " + std::to_string(q.min_p) + ", u " +
                  std::to_string(q.u) + ": expected a number, (0, 1], [0, 1] and [0, 1)");
  }
  bool biased = false;
  const std::vector<unsigned char> packed = pack_sample_params(per_row, vocab, &biased);
  end_step();
  if (rows == 0) return;
  ws_.reserve<int32_t>(DeviceWorkspace::kSampleOut, size_t(rows) * 2);  // tokens, then probabilities
  if (dist) ws_.reserve<float>(DeviceWorkspace::kSampleDist, size_t(rows * vocab));
  const auto* dp = static_cast<const DeviceSampleParams*>(sample_stage_.put(packed.data(), packed.size(), stream_));
  auto* tok = ws_.at<int32_t>(DeviceWorkspace::kSampleOut);
  auto* prob = reinterpret_cast<float*>(tok + rows);
  float* dev_dist = dist ? ws_.at<float>(DeviceWorkspace::kSampleDist) : nullptr;
  cuda::sample_rows(static_cast<bf16*>(logits.data), int(rows), vocab, dp, biased, tok, prob, dev_dist, stream_);
  GRETA_CUDA_CHECK(cudaMemcpyAsync(tokens_out, tok, size_t(rows) * 4, cudaMemcpyDeviceToHost, stream_));
  GRETA_CUDA_CHECK(cudaMemcpyAsync(probs_out, prob, size_t(rows) * 4, cudaMemcpyDeviceToHost, stream_));
  if (dist)
    GRETA_CUDA_CHECK(cudaMemcpyAsync(dist, dev_dist, size_t(rows * vocab) * 4, cudaMemcpyDeviceToHost, stream_));
  GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace greta::cuda

namespace greta {

void cuda_sample_with_distribution(Backend& b, Tensor logits, const std::vector<DeviceSampleParams>& per_row,
                                   int32_t* tokens_out, float* probs_out, float* dist) {
  auto* cb = dynamic_cast<cuda::CudaBackend*>(&b);
  if (!cb) throw Error("cuda_sample_with_distribution: not a CUDA backend");
  cb->sample_rows(logits, per_row, tokens_out, probs_out, dist);
}

}  // namespace greta
