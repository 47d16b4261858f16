// CPU matmul benchmark on the default model's shapes (SmolLM2-135M: dim 576, kv dim 192,
// ffn 1536, vocab 49152; Q4_1 layers, Q8_0 tied output).
//
// Prints one JSON line per measurement: shape, dtype, n, threads, time per call, and GB/s of
// weight bytes. "decode_set" runs every matmul of one decode token over 30 layers of
// distinct weights (~85 MB, more than the caches hold), i.e. the matmul part of a real token.
// Each timed configuration is first checked against a double reference on a few rows, so a
// kernel that skips work cannot report a speed.
//
// usage: cpu_matmul_bench [threads=2] [reps=200]
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "core/host_tensor.h"
#include "core/quant_blocks.h"

using namespace greta;
using Clock = std::chrono::steady_clock;

namespace {

struct W {
  std::vector<uint8_t> bytes;
  cpu::WeightView view;
};

W make_weight(DType dt, int64_t m, int64_t k, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 0.05f);
  W w;
  const size_t rb = row_bytes(dt, k);
  w.bytes.resize(rb * size_t(m));
  std::vector<float> row(static_cast<size_t>(k));
  for (int64_t r = 0; r < m; ++r) {
    for (auto& v : row) v = nd(rng);
    quantize_row(dt, row.data(), w.bytes.data() + r * rb, k);
  }
  w.view = cpu::WeightView{dt, w.bytes.data(), m, k, rb};
  return w;
}

// Checks a few output rows against double arithmetic on the dequantized weight.
void verify(const W& w, const std::vector<float>& x, const std::vector<float>& out, int64_t n) {
  const int64_t m = w.view.n_out, k = w.view.n_in;
  std::vector<float> row(static_cast<size_t>(k));
  for (int64_t r : {int64_t(0), m / 2, m - 1}) {
    dequantize_row(w.view.dtype, w.view.data + size_t(r) * w.view.row_stride, row.data(), k);
    for (int64_t i = 0; i < n; ++i) {
      double ref = 0, mag = 0;
      for (int64_t j = 0; j < k; ++j)
        ref += double(x[size_t(i * k + j)]) * row[size_t(j)], mag += std::fabs(x[size_t(i * k + j)] * row[size_t(j)]);
      if (std::fabs(out[size_t(i * m + r)] - ref) > 0.02 * mag + 1e-4) {
        std::fprintf(stderr, "VERIFY FAILED: row %lld token %lld got %g want %g\n", (long long)r, (long long)i,
                     out[size_t(i * m + r)], ref);
        std::exit(1);
      }
    }
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int reps = argc > 2 ? std::atoi(argv[2]) : 200;
  ThreadPool pool(threads);
  cpu::Scratch scratch;
  std::mt19937 rng(42);

  struct Shape {
    const char* name;
    int64_t k, m;
    DType dt;
  };
  const Shape shapes[] = {
      {"attn_q/o 576->576", 576, 576, DType::Q4_1},      {"attn_k/v 576->192", 576, 192, DType::Q4_1},
      {"ffn_gate/up 576->1536", 576, 1536, DType::Q4_1}, {"ffn_down 1536->576", 1536, 576, DType::Q4_1},
      {"output 576->49152", 576, 49152, DType::Q8_0},    {"ffn_gate/up 576->1536", 576, 1536, DType::BF16},
      {"ffn_gate/up 576->1536", 576, 1536, DType::F16},  {"768->1536 (K-quant)", 768, 1536, DType::Q4_K},
      {"768->1536 (K-quant)", 768, 1536, DType::Q6_K}};
  for (const Shape& s : shapes) {
    const W w = make_weight(s.dt, s.m, s.k, rng);
    for (int64_t n : {1, 16}) {
      std::normal_distribution<float> nd(0.0f, 1.0f);
      std::vector<float> x(static_cast<size_t>(n * s.k)), out(static_cast<size_t>(n * s.m));
      for (auto& v : x) v = nd(rng);
      cpu::matmul(x.data(), n, w.view, nullptr, out.data(), scratch, pool);
      verify(w, x, out, n);
      const int r = s.m > 10000 ? std::max(5, reps / 10) : reps;
      std::vector<double> us;
      for (int i = 0; i < r; ++i) {
        const auto t0 = Clock::now();
        cpu::matmul(x.data(), n, w.view, nullptr, out.data(), scratch, pool);
        us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      }
      const double med = median(us);
      std::printf(
          "{\"bench\":\"cpu_matmul\",\"shape\":\"%s\",\"dtype\":\"%s\",\"n\":%lld,\"threads\":%d,"
          "\"us_per_call\":%.2f,\"weight_GBps\":%.2f,\"GFLOPs\":%.1f}\n",
          s.name, std::string(dtype_name(s.dt)).c_str(), (long long)n, threads, med,
          double(w.bytes.size()) / med * 1e-3, 2.0 * n * s.m * s.k / med * 1e-3);
    }
  }

  // One decode token's matmuls: 30 layers x (q, k, v, o, gate, up, down) + output, all distinct.
  std::vector<W> layers;
  size_t total = 0;
  const int n_layers = 30;
  for (int l = 0; l < n_layers; ++l)
    for (auto [k, m] : {std::pair<int64_t, int64_t>{576, 576},
                        {576, 192},
                        {576, 192},
                        {576, 576},
                        {576, 1536},
                        {576, 1536},
                        {1536, 576}}) {
      layers.push_back(make_weight(DType::Q4_1, m, k, rng));
      total += layers.back().bytes.size();
    }
  layers.push_back(make_weight(DType::Q8_0, 49152, 576, rng));
  total += layers.back().bytes.size();
  std::vector<float> x(1536, 0.5f), out(49152);
  std::vector<double> ms;
  for (int it = 0; it < std::max(5, reps / 20); ++it) {
    const auto t0 = Clock::now();
    for (const W& w : layers) cpu::matmul(x.data(), 1, w.view, nullptr, out.data(), scratch, pool);
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  const double med = median(ms), best = *std::min_element(ms.begin(), ms.end());
  std::printf(
      "{\"bench\":\"cpu_matmul\",\"shape\":\"decode_set (30 layers + output)\",\"n\":1,\"threads\":%d,"
      "\"ms_per_token\":%.3f,\"best_ms_per_token\":%.3f,\"weight_MB\":%.1f,\"weight_GBps\":%.2f,\"tokens_per_s_matmul_"
      "only\":%.1f}\n",
      threads, med, best, total * 1e-6, double(total) / med * 1e-6, 1000.0 / med);

  // Decode attention over a paged cache (9 heads, 3 kv heads, head_dim 64, blocks of 16), as in
  // one decode token of the default model: 30 layers' worth of calls at context L.
  for (int L : {64, 256, 1024, 2048, 4096}) {
    const int n_heads = 9, n_kv = 3, hd = 64, bs = 16, n_blocks = L / bs + 1;
    std::vector<uint16_t> kc(size_t(n_blocks) * bs * n_kv * hd), vc(kc.size());  // fp16 cache
    std::vector<float> q(size_t(n_heads) * hd), o(q.size());
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto& v : kc) v = float_to_fp16(nd(rng));
    for (auto& v : vc) v = float_to_fp16(nd(rng));
    for (auto& v : q) v = nd(rng);
    StepPlan plan;
    plan.block_size = bs;
    plan.positions = {L - 1};
    plan.token_seq = {0};
    plan.block_begin = {0, n_blocks};
    for (int b = 0; b < n_blocks; ++b) plan.block_ids.push_back((b * 7) % n_blocks);  // scattered
    plan.slot = {plan.block_ids[size_t((L - 1) / bs)] * bs + (L - 1) % bs};
    plan.seq_len = {L};
    const cpu::KVLayer kv{kc.data(), vc.data(), bs, n_kv, hd};
    std::vector<double> t;
    for (int it = 0; it < 20; ++it) {
      const auto t0 = Clock::now();
      for (int l = 0; l < n_layers; ++l) cpu::attention(q.data(), 1, n_heads, 0.125f, plan, kv, o.data(), pool);
      t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    const double best = *std::min_element(t.begin(), t.end());
    std::printf(
        "{\"bench\":\"cpu_attention\",\"context\":%d,\"heads\":\"9/3x64\",\"threads\":%d,"
        "\"ms_per_token_30_layers\":%.3f,\"kv_GBps\":%.2f}\n",
        L, threads, best, double(kc.size() + vc.size()) * 2 * n_layers / best * 1e-6);
  }
  return 0;
}
