// gpu_prefill_attention_bench: causal prompt attention over the paged cache, one JSON line per
// case and kernel.
//
// FLOPs counted the standard way for causal attention: 4 x head_dim x heads x (query, key) pairs
// a query sees (its own position and every earlier one, or its window), i.e. ~2 N^2 d H for one
// N-token prompt. Every case is checked in the same run against a naive fp32 kernel (full score
// row in global memory) on a sample of query rows spread over the prompt, on a random cache
// behind a shuffled block table. A prefix already in the cache (chunked prefill, prefix hit) is
// a case of its own. "tc" is the engine's kernel, "tc_wWsS" other shapes of its template (W warps,
// S key tiles in flight), all timed in the same run; the CUDA-core kernel up to 2048 tokens. The
// kernel before the cp.async / ldmatrix rewrite is measured in docs/notes/attention.md.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/attention_prefill_tc.cuh"
#include "gpu_attention_reference.cuh"
#include "gpu_bench_timing.h"

using greta::cuda::bf16;

namespace {

// Other shapes of the production kernel template: warps (16 query rows each) and key tiles in flight.
template <int HD, int W, int ST>
void allow_variant() {
  GRETA_CUDA_CHECK(cudaFuncSetAttribute(greta::cuda::prefill_tc::prefill_tc_kernel<HD, W, ST>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(greta::cuda::prefill_tc::TcShape<HD, W, ST>::kBytes)));
}
template <int W, int ST>
void tc_variant(const bf16* q, bf16* out, const greta::cuda::DevStep& st, const greta::cuda::KVLayerDev& kv,
                int n_heads, float scale, float softcap, int window, cudaStream_t s) {
  static const bool allowed = [] {
    allow_variant<64, W, ST>();
    allow_variant<128, W, ST>();
    return true;
  }();
  (void)allowed;
  if (kv.head_dim == 64) greta::cuda::prefill_tc::launch<64, W, ST>(q, out, st, kv, n_heads, scale, softcap, window, s);
  else greta::cuda::prefill_tc::launch<128, W, ST>(q, out, st, kv, n_heads, scale, softcap, window, s);
  GRETA_CUDA_LAUNCH_CHECK();
}

struct Case {
  const char* model;
  int n_heads, n_kv, hd;
  int n_seqs, prefix, n_new;  // each sequence: `prefix` cached positions, then n_new new tokens
};

}  // namespace

int main() {
  try {
    const BenchDevice bd = bench_device();
    const std::string& dev = bd.name;
    cudaStream_t s = bd.stream;
    greta::cuda::attention_prefill_tc_setup();
    const Case cases[] = {{"llama2-7b", 32, 32, 128, 1, 0, 512},    {"llama2-7b", 32, 32, 128, 1, 0, 2048},
                          {"llama2-7b", 32, 32, 128, 1, 0, 8192},   {"llama3-8b", 32, 8, 128, 1, 0, 2048},
                          {"llama3-8b", 32, 8, 128, 1, 0, 8192},    {"llama3-8b", 32, 8, 128, 1, 0, 16384},
                          {"llama3-8b", 32, 8, 128, 1, 8192, 2048}, {"llama3-8b", 32, 8, 128, 4, 0, 1024},
                          {"smollm2-135m", 9, 3, 64, 1, 0, 2048},   {"llama3.2-1b", 32, 8, 64, 1, 0, 8192}};
    const int bs = 16;
    bool all_ok = true;
    std::mt19937 rng(1);
    for (const Case& c : cases) {
      const int ctx = c.prefix + c.n_new;
      const int per_seq_blocks = (ctx + bs - 1) / bs;
      const int n_blocks = per_seq_blocks * c.n_seqs + 7;
      std::vector<int32_t> perm(static_cast<size_t>(n_blocks));
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      const int n_tokens = c.n_seqs * c.n_new;
      // Host plan: positions | token_seq | block_begin | block_ids | prefill_seqs
      std::vector<int32_t> pos, tseq, bb, ids, pre;
      for (int i = 0; i < c.n_seqs; ++i) {
        for (int t = 0; t < c.n_new; ++t) {
          pos.push_back(c.prefix + t);
          tseq.push_back(i);
        }
        bb.push_back(i * per_seq_blocks);
        for (int j = 0; j < per_seq_blocks; ++j) ids.push_back(perm[size_t(i * per_seq_blocks + j)]);
        pre.insert(pre.end(), {i, i * c.n_new, c.n_new});
      }
      bb.push_back(c.n_seqs * per_seq_blocks);
      // Sampled rows for the check: the first and last rows of each sequence and random ones.
      std::vector<int32_t> rows, row_seq;
      for (int i = 0; i < c.n_seqs; ++i) {
        std::vector<int> local = {0, 1, 15, 16, 63, 64, c.n_new - 1};
        std::uniform_int_distribution<int> pick(0, c.n_new - 1);
        for (int k = 0; k < 24; ++k) local.push_back(pick(rng));
        for (int t : local) {
          rows.push_back(i * c.n_new + std::min(t, c.n_new - 1));
          row_seq.push_back(i);
        }
      }
      std::vector<int32_t> packed;
      for (auto* v : {&pos, &tseq, &bb, &ids, &pre, &rows, &row_seq}) packed.insert(packed.end(), v->begin(), v->end());
      int32_t* dplan;
      GRETA_CUDA_CHECK(cudaMalloc(&dplan, packed.size() * 4));
      GRETA_CUDA_CHECK(cudaMemcpy(dplan, packed.data(), packed.size() * 4, cudaMemcpyHostToDevice));
      greta::cuda::DevStep st;
      st.positions = dplan;
      st.token_seq = dplan + n_tokens;
      st.block_begin = st.token_seq + n_tokens;
      st.block_ids = st.block_begin + c.n_seqs + 1;
      st.prefill_seqs = st.block_ids + ids.size();
      const int32_t* drows = st.prefill_seqs + pre.size();
      const int32_t* drow_seq = drows + rows.size();
      st.n_tokens = n_tokens;
      st.n_seqs = st.n_prefill = c.n_seqs;
      st.max_prefill_tokens = c.n_new;
      st.block_size = bs;
      const greta::cuda::KVLayerDev kv = random_kv_layer(n_blocks, bs, c.n_kv, c.hd);
      bf16 *q, *out;
      const size_t qn = size_t(n_tokens) * c.n_heads * c.hd;
      GRETA_CUDA_CHECK(cudaMalloc(&q, qn * 2));
      GRETA_CUDA_CHECK(cudaMalloc(&out, qn * 2));
      fill_random<<<2048, 256>>>(q, int64_t(qn), 13, 2.f);
      GRETA_CUDA_LAUNCH_CHECK();
      const size_t nr = rows.size(), rn = nr * c.n_heads * c.hd;
      float *scores, *ref;
      GRETA_CUDA_CHECK(cudaMalloc(&scores, nr * c.n_heads * size_t(ctx) * 4));
      GRETA_CUDA_CHECK(cudaMalloc(&ref, rn * 4));
      const float scale = 1.f / std::sqrt(float(c.hd));
      naive_attention_rows<<<dim3(unsigned(nr), unsigned(c.n_heads)), 128, 0, s>>>(
          q, kv.k, kv.v, drows, drow_seq, st.positions, st.block_begin, st.block_ids, ctx, c.n_heads, c.n_kv, c.hd, bs,
          scale, scores, ref);
      GRETA_CUDA_LAUNCH_CHECK();
      std::vector<float> hr(rn);
      GRETA_CUDA_CHECK(cudaMemcpyAsync(hr.data(), ref, rn * 4, cudaMemcpyDeviceToHost, s));
      GRETA_CUDA_CHECK(cudaStreamSynchronize(s));
      // Visible (query, key) pairs: causal, every sequence alike.
      double pairs = 0;
      for (int t = 0; t < c.n_new; ++t) pairs += c.prefix + t + 1;
      pairs *= c.n_seqs;
      const double flops = 4.0 * c.hd * c.n_heads * pairs;

      struct Kernel {
        const char* name;
        void (*run)(const bf16*, bf16*, const greta::cuda::DevStep&, const greta::cuda::KVLayerDev&, int, float, float,
                    int, cudaStream_t);
      };
      std::vector<Kernel> kernels;
      if (greta::cuda::attention_prefill_tc_supported(c.hd)) {
        kernels.push_back({"tc", greta::cuda::attention_prefill_tc});
        kernels.push_back({"tc_w4s2", tc_variant<4, 2>});
        kernels.push_back({"tc_w4s3", tc_variant<4, 3>});
        kernels.push_back({"tc_w8s3", tc_variant<8, 3>});
      }
      if (c.n_new <= 2048 && c.prefix == 0) kernels.push_back({"cuda_cores", greta::cuda::attention_prefill});
      for (const Kernel& k : kernels) {
        GRETA_CUDA_CHECK(cudaMemsetAsync(out, 0xff, qn * 2, s));
        k.run(q, out, st, kv, c.n_heads, scale, 0.f, 0, s);
        GRETA_CUDA_CHECK(cudaStreamSynchronize(s));
        double num = 0, den = 0;
        std::vector<uint16_t> row(size_t(c.n_heads) * c.hd);
        for (size_t r = 0; r < nr; ++r) {
          GRETA_CUDA_CHECK(
              cudaMemcpy(row.data(), out + size_t(rows[r]) * row.size(), row.size() * 2, cudaMemcpyDeviceToHost));
          for (size_t i = 0; i < row.size(); ++i) {
            const double d = double(greta::bf16_to_float(row[i])) - hr[r * row.size() + i];
            num += d * d;
            den += double(hr[r * row.size() + i]) * hr[r * row.size() + i];
          }
        }
        const double rel = std::sqrt(num / std::max(den, 1e-30));
        const bool ok = std::isfinite(rel) && rel < 2e-2;
        all_ok = all_ok && ok;
        const int inner = flops > 5e11 ? 2 : 8;
        const double ms = median_graph_ms([&](int) { k.run(q, out, st, kv, c.n_heads, scale, 0.f, 0, s); }, s, 7,
                                          inner);
        std::printf(
            "{\"bench\":\"prefill_attention\",\"device\":\"%s\",\"kernel\":\"%s\",\"model\":\"%s\",\"heads\":%d,"
            "\"kv_heads\":%d,\"head_dim\":%d,\"seqs\":%d,\"prefix\":%d,\"new_tokens\":%d,\"us\":%.1f,"
            "\"TFLOPs\":%.1f,\"rel_err\":%.2e,\"ok\":%s}\n",
            dev.c_str(), k.name, c.model, c.n_heads, c.n_kv, c.hd, c.n_seqs, c.prefix, c.n_new, ms * 1e3,
            flops / (ms * 1e9), rel, ok ? "true" : "false");
        std::fflush(stdout);
      }
      for (void* p : {(void*)dplan, (void*)kv.k, (void*)kv.v, (void*)q, (void*)out, (void*)scores, (void*)ref})
        GRETA_CUDA_CHECK(cudaFree(p));
    }
    return all_ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_prefill_attention_bench: %s\n", e.what());
    return 2;
  }
}
