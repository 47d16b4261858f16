// gpu_attention_bench: split-K paged decode attention speed, one JSON line per case.
//
// Bytes counted = the K and V rows every query token must read (n_seqs x ctx x n_kv x hd x 2
// x 2 bytes); percent of the device-to-device copy bandwidth measured in the same run. Every
// case is checked against a naive one-block-per-(token, head) kernel (full score row in
// global memory, fp32) on the same random cache and shuffled block tables.
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
#include "gpu_attention_reference.cuh"
#include "gpu_bench_timing.h"

using greta::cuda::bf16;

int main() {
  try {
    const BenchDevice bd = bench_device();
    const std::string& dev = bd.name;
    cudaStream_t s = bd.stream;
    const cudaDeviceProp& prop = bd.prop;
    // Copy ceiling, same run.
    const size_t big = size_t(1) << 30;
    void *a, *b;
    GRETA_CUDA_CHECK(cudaMalloc(&a, big));
    GRETA_CUDA_CHECK(cudaMalloc(&b, big));
    cudaEvent_t e0, e1;
    GRETA_CUDA_CHECK(cudaEventCreate(&e0));
    GRETA_CUDA_CHECK(cudaEventCreate(&e1));
    for (int i = 0; i < 2; ++i) GRETA_CUDA_CHECK(cudaMemcpyAsync(b, a, big, cudaMemcpyDeviceToDevice, s));
    GRETA_CUDA_CHECK(cudaEventRecord(e0, s));
    for (int i = 0; i < 5; ++i) GRETA_CUDA_CHECK(cudaMemcpyAsync(b, a, big, cudaMemcpyDeviceToDevice, s));
    GRETA_CUDA_CHECK(cudaEventRecord(e1, s));
    GRETA_CUDA_CHECK(cudaEventSynchronize(e1));
    float cms = 0;
    GRETA_CUDA_CHECK(cudaEventElapsedTime(&cms, e0, e1));
    const double copy_gbs = 2.0 * big * 5 / (cms * 1e6);
    GRETA_CUDA_CHECK(cudaFree(a));
    GRETA_CUDA_CHECK(cudaFree(b));
    std::printf("{\"bench\":\"copy\",\"device\":\"%s\",\"GBps\":%.1f}\n", dev.c_str(), copy_gbs);

    struct Case {
      const char* model;
      int n_heads, n_kv, hd, ctx, n_seqs;
    };
    const Case cases[] = {{"llama3-8b", 32, 8, 128, 4096, 1},
                          {"llama3-8b", 32, 8, 128, 32768, 1},
                          {"llama3-8b", 32, 8, 128, 4096, 16},
                          {"llama2-7b", 32, 32, 128, 4096, 1},
                          {"llama2-7b", 32, 32, 128, 4096, 8},
                          {"smollm2-135m", 9, 3, 64, 8192, 1},
                          // serving-shaped: many sequences at moderate context (the serving load test's shape)
                          {"llama3-8b", 32, 8, 128, 512, 256},
                          {"llama2-7b", 32, 32, 128, 256, 32},
                          {"llama2-7b", 32, 32, 128, 32, 1},
                          {"llama2-7b", 32, 32, 128, 160, 1}};
    const int bs = 16;
    bool all_ok = true;
    std::mt19937 rng(1);
    for (const Case& c : cases) {
      const int per_seq_blocks = (c.ctx + bs - 1) / bs;
      const int n_blocks = per_seq_blocks * c.n_seqs + 7;
      std::vector<int32_t> perm(static_cast<size_t>(n_blocks));
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      // Host plan: positions | token_seq | block_begin | block_ids | decode_tokens
      const size_t ns = static_cast<size_t>(c.n_seqs);
      std::vector<int32_t> pos(ns, c.ctx - 1), tseq(ns), bb, ids, dec(ns);
      for (int i = 0; i < c.n_seqs; ++i) {
        tseq[size_t(i)] = i;
        dec[size_t(i)] = i;
        bb.push_back(i * per_seq_blocks);
        for (int j = 0; j < per_seq_blocks; ++j) ids.push_back(perm[size_t(i * per_seq_blocks + j)]);
      }
      bb.push_back(c.n_seqs * per_seq_blocks);
      std::vector<int32_t> packed;
      for (auto* v : {&pos, &tseq, &bb, &ids, &dec}) packed.insert(packed.end(), v->begin(), v->end());
      int32_t* dplan;
      GRETA_CUDA_CHECK(cudaMalloc(&dplan, packed.size() * 4));
      GRETA_CUDA_CHECK(cudaMemcpy(dplan, packed.data(), packed.size() * 4, cudaMemcpyHostToDevice));
      greta::cuda::DevStep st;
      st.positions = dplan;
      st.token_seq = dplan + c.n_seqs;
      st.block_begin = dplan + 2 * c.n_seqs;
      st.block_ids = st.block_begin + c.n_seqs + 1;
      st.decode_tokens = st.block_ids + ids.size();
      st.n_tokens = st.n_seqs = st.n_decode = c.n_seqs;
      st.block_size = bs;
      st.max_decode_ctx = c.ctx;
      const greta::cuda::KVLayerDev kv = random_kv_layer(n_blocks, bs, c.n_kv, c.hd);
      bf16 *q, *out;
      const size_t qn = size_t(c.n_seqs) * c.n_heads * c.hd;
      GRETA_CUDA_CHECK(cudaMalloc(&q, qn * 2));
      GRETA_CUDA_CHECK(cudaMalloc(&out, qn * 2));
      fill_random<<<64, 256>>>(q, int64_t(qn), 13, 2.f);
      GRETA_CUDA_LAUNCH_CHECK();
      GRETA_CUDA_CHECK(cudaDeviceSynchronize());
      const auto plan_for = [&](bool last) {
        return greta::cuda::plan_attention_decode(st, c.n_heads, c.n_kv, c.hd, prop.multiProcessorCount, last);
      };
      const size_t sf = size_t(plan_for(false).scratch_floats);
      float *scratch, *scores, *ref;
      GRETA_CUDA_CHECK(cudaMalloc(&scratch, sf * 4));
      GRETA_CUDA_CHECK(cudaMalloc(&scores, size_t(c.n_seqs) * c.n_heads * c.ctx * 4));
      GRETA_CUDA_CHECK(cudaMalloc(&ref, qn * 4));
      int32_t* arrivals;  // the last-block merge's counters, zero between launches
      const size_t na = std::max<size_t>(1, size_t(plan_for(true).arrivals));
      GRETA_CUDA_CHECK(cudaMalloc(&arrivals, na * 4));
      GRETA_CUDA_CHECK(cudaMemset(arrivals, 0, na * 4));
      const float scale = 1.f / std::sqrt(float(c.hd));
      // Each variant of the kernel's plan (keys per lane group per iteration; partitions merged
      // by a second kernel or by the last partition block where the plan allows it), checked,
      // then timed.
      struct Variant {
        int keys;
        bool last;
      };
      for (const Variant vr : {Variant{0, true}, Variant{0, false}, Variant{2, false}, Variant{4, false}}) {
        const int keys = vr.keys;  // 0: the production choice
        greta::cuda::AttentionDecodePlan plan = plan_for(vr.last);
        if (keys != 0) plan.keys = keys;
        int32_t* arr = plan.last_merge ? arrivals : nullptr;
        GRETA_CUDA_CHECK(cudaMemsetAsync(out, 0xff, qn * 2, s));
        greta::cuda::attention_decode(q, out, st, kv, plan, c.n_heads, scale, 0.f, 0, scratch, arr, s);
        naive_attention_rows<<<dim3(unsigned(c.n_seqs), unsigned(c.n_heads)), 128, 0, s>>>(
            q, kv.k, kv.v, st.decode_tokens, st.token_seq, st.positions, st.block_begin, st.block_ids, c.ctx, c.n_heads,
            c.n_kv, c.hd, bs, scale, scores, ref);
        GRETA_CUDA_LAUNCH_CHECK();
        GRETA_CUDA_CHECK(cudaStreamSynchronize(s));
        std::vector<uint16_t> ho(qn);
        std::vector<float> hr(qn);
        GRETA_CUDA_CHECK(cudaMemcpy(ho.data(), out, qn * 2, cudaMemcpyDeviceToHost));
        GRETA_CUDA_CHECK(cudaMemcpy(hr.data(), ref, qn * 4, cudaMemcpyDeviceToHost));
        double num = 0, den = 0;
        for (size_t i = 0; i < qn; ++i) {
          const double d = double(greta::bf16_to_float(ho[i])) - hr[i];
          num += d * d;
          den += double(hr[i]) * hr[i];
        }
        const double rel = std::sqrt(num / std::max(den, 1e-30));
        const bool ok = std::isfinite(rel) && rel < 2e-2;
        all_ok = all_ok && ok;
        // Time: graph of 20 launches (partition + merge kernels each, or partition alone).
        const double ms = median_graph_ms(
            [&](int) {
              greta::cuda::attention_decode(q, out, st, kv, plan, c.n_heads, scale, 0.f, 0, scratch, arr, s);
            },
            s, 11, 20);
        const double bytes = double(c.n_seqs) * c.ctx * c.n_kv * c.hd * 2 * 2;
        const double gbs = bytes / (ms * 1e6);
        std::printf(
            "{\"bench\":\"decode_attention\",\"device\":\"%s\",\"model\":\"%s\",\"heads\":%d,\"kv_heads\":%d,"
            "\"head_dim\":%d,\"ctx\":%d,\"seqs\":%d,\"keys\":%d,\"merge\":\"%s\",\"us\":%.2f,\"GBps\":%.1f,\"pct_"
            "copy\":%.1f,\"rel_err\":%.2e,"
            "\"ok\":%s}\n",
            dev.c_str(), c.model, c.n_heads, c.n_kv, c.hd, c.ctx, c.n_seqs, keys, plan.last_merge ? "last" : "kernel",
            ms * 1e3, gbs, 100 * gbs / copy_gbs, rel, ok ? "true" : "false");
      }
      for (void* p : {(void*)dplan, (void*)kv.k, (void*)kv.v, (void*)q, (void*)out, (void*)scratch, (void*)scores,
                      (void*)ref, (void*)arrivals})
        GRETA_CUDA_CHECK(cudaFree(p));
    }
    return all_ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_attention_bench: %s\n", e.what());
    return 2;
  }
}
