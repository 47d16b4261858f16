#include "backend/cuda/persistent_trace.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/persistent_step.h"

namespace greta::cuda {

int64_t* PersistentTrace::step(int n_phases, int per_layer, int blocks, cudaStream_t s) {
  if (!on_) return nullptr;
  if (n_phases != n_phases_ || blocks != blocks_ || per_layer != per_layer_) {
    const size_t bytes = size_t(n_phases) * blocks * kPersistentTraceFields * sizeof(int64_t);
    GRETA_CUDA_CHECK(cudaStreamSynchronize(s));  // a queued step may still add to the old sums
    if (buf_.size() < bytes) buf_.reset(bytes);
    GRETA_CUDA_CHECK(cudaMemsetAsync(buf_.get(), 0, bytes, s));
    n_phases_ = n_phases;
    per_layer_ = per_layer;
    blocks_ = blocks;
    steps_ = 0;
  }
  ++steps_;
  return static_cast<int64_t*>(buf_.get());
}

PersistentTrace::~PersistentTrace() {
  if (!on_ || steps_ == 0) return;
  constexpr int kF = kPersistentTraceFields;
  std::vector<int64_t> t(size_t(n_phases_) * blocks_ * kF);
  if (cudaMemcpy(t.data(), buf_.get(), t.size() * sizeof(int64_t), cudaMemcpyDeviceToHost) != cudaSuccess) return;
  // Kinds: the phases of a layer in order, then the output projection.
  static const char* const kLayerKinds[] = {"q/k/v", "attention", "o", "gate/up", "down"};
  const int kinds = per_layer_ + 1;
  auto kind_of = [&](int ph) { return ph == n_phases_ - 1 ? per_layer_ : ph % per_layer_; };
  auto name_of = [&](int k) { return k < per_layer_ && k < 5 ? kLayerKinds[k] : "output"; };
  std::vector<double> sum(size_t(kinds) * 3, 0.0);
  std::vector<int> count(size_t(kinds), 0);
  for (int ph = 0; ph < n_phases_; ++ph) {
    const int kind = kind_of(ph);
    ++count[size_t(kind)];
    for (int b = 0; b < blocks_; ++b)
      for (int i = 0; i < 3; ++i) sum[size_t(kind) * 3 + i] += double(t[(size_t(ph) * blocks_ + b) * kF + i]);
  }
  std::fprintf(stderr,
               "greta: cuda: persistent decode step, %lld steps of the last shape, %d blocks: us per phase "
               "(mean over blocks and steps), and per step\n",
               (long long)steps_, blocks_);
  std::fprintf(stderr, "  %-10s %6s %8s %8s %8s %10s\n", "phase", "count", "wait", "stage", "work", "per step");
  double total = 0;
  for (int k = 0; k < kinds; ++k) {
    const double n = double(count[size_t(k)]) * blocks_ * double(steps_) * 1e3;  // ns -> us per phase
    const double w = sum[size_t(k) * 3] / n, st = sum[size_t(k) * 3 + 1] / n, wk = sum[size_t(k) * 3 + 2] / n;
    const double per_step = (w + st + wk) * count[size_t(k)];
    total += per_step;
    std::fprintf(stderr, "  %-10s %6d %8.2f %8.2f %8.2f %10.1f\n", name_of(k), count[size_t(k)], w, st, wk, per_step);
  }
  std::fprintf(stderr, "  %-10s %6s %8s %8s %8s %10.1f\n", "step", "", "", "", "", total);

  // Where the waits come from: a block's busy time (staging and work) per phase, its spread over
  // the blocks within a phase (mean over the kind's phases), and the spread of each block's mean
  // over those phases. Equal spreads: the same blocks are slow in every layer (a static
  // imbalance, which another split of the rows would remove); a small second one: it moves.
  std::vector<std::vector<double>> per_kind(static_cast<size_t>(kinds));
  std::fprintf(stderr, "  busy time over the blocks, us: %-10s %10s %10s %12s\n", "phase", "min", "max", "fixed part");
  for (int k = 0; k < kinds; ++k) {
    std::vector<double> per_block(size_t(blocks_), 0.0);
    double lo_sum = 0, hi_sum = 0;
    for (int ph = 0; ph < n_phases_; ++ph) {
      if (kind_of(ph) != k) continue;
      double lo = 1e300, hi = 0;
      for (int b = 0; b < blocks_; ++b) {
        const size_t at = (size_t(ph) * blocks_ + b) * kF;
        const double busy = double(t[at + 1] + t[at + 2]) / (double(steps_) * 1e3);
        per_block[size_t(b)] += busy / count[size_t(k)];
        lo = std::min(lo, busy);
        hi = std::max(hi, busy);
      }
      lo_sum += lo / count[size_t(k)];
      hi_sum += hi / count[size_t(k)];
    }
    const auto [mn, mx] = std::minmax_element(per_block.begin(), per_block.end());
    std::fprintf(stderr, "  %31s%-10s %10.2f %10.2f %12.2f\n", "", name_of(k), lo_sum, hi_sum, *mx - *mn);
    per_kind[size_t(k)] = per_block;
  }
  // Which blocks are slow: a static imbalance names the same blocks (and SMs) in every kind.
  std::fprintf(stderr, "  slowest and fastest blocks by mean busy time, us (block/SM of the last step):\n");
  for (int k = 0; k < kinds; ++k) {
    const std::vector<double>& pb = per_kind[size_t(k)];
    std::vector<int> order(static_cast<size_t>(blocks_));
    for (int b = 0; b < blocks_; ++b) order[size_t(b)] = b;
    std::sort(order.begin(), order.end(), [&](int x, int y) { return pb[size_t(x)] > pb[size_t(y)]; });
    std::fprintf(stderr, "  %-10s", name_of(k));
    const int shown = std::min(blocks_, 6);
    for (int i = 0; i < blocks_; ++i) {
      if (i == shown && blocks_ > 2 * shown) {
        std::fprintf(stderr, " ...");
        i = blocks_ - shown;
      }
      const int b = order[size_t(i)];
      const int64_t sm = t[(size_t(n_phases_ - 1) * blocks_ + b) * kF + 3];
      std::fprintf(stderr, " %d/%lld %.1f", b, (long long)sm, pb[size_t(b)]);
    }
    std::fprintf(stderr, "\n");
  }
}

}  // namespace greta::cuda
