// CudaBackend (cuda_backend_impl.h): token sampling on the device (sample.cu) after a step.
#include <cmath>
#include <string>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"

namespace greta::cuda {

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
  end_step();
  if (rows == 0) return;
  ws_.reserve<int32_t>(DeviceWorkspace::kSampleOut, size_t(rows) * 2);  // tokens, then probabilities
  if (dist) ws_.reserve<float>(DeviceWorkspace::kSampleDist, size_t(rows * vocab));
  const auto* dp = static_cast<const DeviceSampleParams*>(
      sample_stage_.put(per_row.data(), per_row.size() * sizeof(DeviceSampleParams), stream_));
  auto* tok = ws_.at<int32_t>(DeviceWorkspace::kSampleOut);
  auto* prob = reinterpret_cast<float*>(tok + rows);
  float* dev_dist = dist ? ws_.at<float>(DeviceWorkspace::kSampleDist) : nullptr;
  cuda::sample_rows(static_cast<const bf16*>(logits.data), int(rows), vocab, dp, tok, prob, dev_dist, stream_);
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
