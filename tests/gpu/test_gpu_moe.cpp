// The mixture-of-experts ops on the GPU against the CPU backend: the router kernel (moe_route:
// the softmax, the top-k order, ties, renormalisation), add_rows_scaled, and the whole block
// (moe_ffn_add) on random weights through each of its paths -- the device-routed expert kernels,
// the gathered cuBLASLt GEMMs, the host-routed default for experts the kernels do not take --
// then a synthetic Qwen3-MoE model decoding like the CPU with its steps replayed from graphs.
#include <algorithm>
#include <memory>
#include <string>

#include "backend/cuda/moe_ops.h"
#include "core/error.h"
#include "gpu_test_util.h"
#include "model/llama.h"
#include "model/sequence_runner.h"

namespace greta::gputest {
namespace {

using GpuMoe = GpuTest;

std::unique_ptr<Backend> cuda_with_moe_gemm_min_tokens(int tokens) {
  CudaOptions o;
  o.moe_gemm_min_tokens = tokens;
  return make_cuda_backend(o);
}

// Router logits [n, E] (bf16 values, so both backends read the same numbers) with ties: row 0
// all equal, row 1 a third of its experts tied at the top, every third row pairs of equal
// neighbours, row 3 half its experts at -inf (probability 0, tied).
std::vector<float> logits_with_ties(int64_t n, int E, std::mt19937& rng) {
  std::vector<float> v = random_values(size_t(n * E), 4.0f, rng);
  for (int e = 0; e < E; ++e) v[size_t(e)] = 0.5f;
  for (int e = 0; e < E; e += 3) v[size_t(E + e)] = 8.0f;
  for (int64_t t = 2; t < n; t += 3)
    for (int e = 0; e + 1 < E; e += 2) v[size_t(t * E + e + 1)] = v[size_t(t * E + e)];
  for (int e = 0; e < E / 2; ++e) v[size_t(3 * E + e)] = -INFINITY;
  return v;
}

TEST_F(GpuMoe, RouterMatchesTheCpu) {
  std::mt19937 rng(5);
  const int64_t n = 37;
  for (int E : {8, 60, 128, 256})
    for (int k : {1, 2, 8, 32}) {
      if (k > E) continue;
      const std::vector<float> v = logits_with_ties(n, E, rng);
      Tensor lg = make_tensor(*gpu, n, E, v), lc = make_tensor(*cpu, n, E, v);
      for (bool renorm : {false, true}) {
        SCOPED_TRACE(std::to_string(E) + " experts, top " + std::to_string(k) + (renorm ? ", renormalised" : ""));
        std::vector<int32_t> ig(size_t(n * k), -1), ic(size_t(n * k));
        std::vector<float> wg(size_t(n * k), -1.0f), wc(size_t(n * k));
        gpu->moe_route(lg, k, renorm, ig.data(), wg.data());
        cpu->moe_route(lc, k, renorm, ic.data(), wc.data());
        for (int j = 0; j < k; ++j) EXPECT_EQ(ig[size_t(j)], j) << "all-equal row: ties go to the lower id";
        for (size_t i = 0; i < ig.size(); ++i) {
          ASSERT_EQ(ig[i], ic[i]) << "token " << i / size_t(k) << " choice " << i % size_t(k);
          EXPECT_NEAR(wg[i], wc[i], 2e-6f * std::fabs(wc[i]) + 1e-7f) << "token " << i / size_t(k);
        }
      }
      gpu->free(lg);
      cpu->free(lc);
    }
}

// The grouping the expert kernels read (moe_ops.h, MoeRouting) from the router kernel itself:
// per-expert counts, offsets and the used list against the CPU's choices; every pair placed once,
// in token order within its expert.
TEST_F(GpuMoe, RoutingGroupsThePairsByExpert) {
  std::mt19937 rng(8);
  for (int E : {8, 60, 128})
    for (int k : {1, 2, 8})
      for (int64_t n : {1, 5, 300}) {
        SCOPED_TRACE(std::to_string(n) + " tokens, " + std::to_string(E) + " experts, top " + std::to_string(k));
        const int64_t P = n * k;
        const std::vector<float> v = random_values(size_t(n * E), 4.0f, rng);
        Tensor lc = make_tensor(*cpu, n, E, v);
        std::vector<int32_t> want_ids(static_cast<size_t>(P));
        std::vector<float> want_w(static_cast<size_t>(P));
        cpu->moe_route(lc, k, true, want_ids.data(), want_w.data());
        cpu->free(lc);
        // fp32 logits, routing arrays and their host copies
        std::vector<void*> dev;
        auto dalloc = [&](size_t bytes) {
          void* p = nullptr;
          EXPECT_EQ(cudaMalloc(&p, std::max<size_t>(bytes, 4)), cudaSuccess);
          dev.push_back(p);
          return p;
        };
        auto* logits = static_cast<float*>(dalloc(v.size() * 4));
        ASSERT_EQ(cudaMemcpy(logits, v.data(), v.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
        cuda::MoeRouting r;
        r.ids = static_cast<int32_t*>(dalloc(size_t(P) * 4));
        r.weights = static_cast<float*>(dalloc(size_t(P) * 4));
        r.pos = static_cast<int32_t*>(dalloc(size_t(P) * 4));
        r.pair_token = static_cast<int32_t*>(dalloc(size_t(P) * 4));
        r.counts = static_cast<int32_t*>(dalloc(size_t(E) * 4));
        r.offsets = static_cast<int32_t*>(dalloc(size_t(E + 1) * 4));
        r.used = static_cast<int32_t*>(dalloc(size_t(E) * 4));
        r.n_used = static_cast<int32_t*>(dalloc(4));
        cudaStream_t stream = nullptr;  // the kernels' launch (PDL) as the backend makes it: on a stream
        ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
        cuda::moe_route(logits, 0, n, E, k, 1, 1, r, stream);
        ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
        cudaStreamDestroy(stream);
        auto get = [](const int32_t* p, size_t count) {
          std::vector<int32_t> h(count);
          EXPECT_EQ(cudaMemcpy(h.data(), p, count * 4, cudaMemcpyDeviceToHost), cudaSuccess);
          return h;
        };
        const auto ids = get(r.ids, size_t(P)), pos = get(r.pos, size_t(P)), tok = get(r.pair_token, size_t(P));
        const auto counts = get(r.counts, size_t(E)), offsets = get(r.offsets, size_t(E + 1));
        const auto used = get(r.used, size_t(E)), n_used = get(r.n_used, 1);
        for (void* p : dev) cudaFree(p);
        ASSERT_EQ(ids, want_ids);
        std::vector<int32_t> hist(static_cast<size_t>(E)), want_used;
        for (int32_t e : want_ids) ++hist[size_t(e)];
        for (int e = 0; e < E; ++e)
          if (hist[size_t(e)] > 0) want_used.push_back(e);
        EXPECT_EQ(counts, hist);
        ASSERT_EQ(n_used[0], int32_t(want_used.size()));
        EXPECT_EQ(std::vector<int32_t>(used.begin(), used.begin() + n_used[0]), want_used);
        int32_t at = 0;
        for (int e = 0; e < E; ++e) {
          EXPECT_EQ(offsets[size_t(e)], at) << "expert " << e;
          at += hist[size_t(e)];
        }
        EXPECT_EQ(offsets[size_t(E)], int32_t(P));
        std::vector<int> placed(static_cast<size_t>(P));
        for (int64_t i = 0; i < P; ++i) {
          const int32_t q = pos[size_t(i)], e = want_ids[size_t(i)];
          ASSERT_TRUE(q >= offsets[size_t(e)] && q < offsets[size_t(e)] + hist[size_t(e)]) << "pair " << i;
          ++placed[size_t(q)];
          EXPECT_EQ(tok[size_t(q)], int32_t(i / k)) << "pair " << i;
        }
        for (int64_t q = 0; q < P; ++q) EXPECT_EQ(placed[size_t(q)], 1) << "grouped slot " << q;
        for (int e = 0; e < E; ++e)  // token order within an expert
          for (int32_t q = offsets[size_t(e)] + 1; q < offsets[size_t(e) + 1]; ++q)
            EXPECT_LT(tok[size_t(q - 1)], tok[size_t(q)]) << "expert " << e;
      }
}

TEST_F(GpuMoe, RouterRefusesWhatItCannotRoute) {
  std::mt19937 rng(6);
  Tensor lg = make_tensor(*gpu, 2, 8, random_values(16, 1.0f, rng));
  std::vector<int32_t> ids(64);
  std::vector<float> w(64);
  EXPECT_THROW(gpu->moe_route(lg, 0, true, ids.data(), w.data()), Error);
  EXPECT_THROW(gpu->moe_route(lg, 9, true, ids.data(), w.data()), Error);
  Tensor wide = gpu->alloc(1, 300);  // more experts than the kernel holds
  EXPECT_THROW(gpu->moe_route(wide, 2, true, ids.data(), w.data()), Error);
  gpu->free(lg);
  gpu->free(wide);
}

TEST_F(GpuMoe, AddRowsScaledMatchesTheCpuWithRepeatedRows) {
  std::mt19937 rng(7);
  const int64_t m = 5, cols = 96, rows_out = 8;
  const auto xv = random_values(size_t(m * cols), 1.0f, rng), ov = random_values(size_t(rows_out * cols), 1.0f, rng);
  const std::vector<int32_t> rows = {3, 0, 3, 7, 1};
  const std::vector<float> weights = {0.25f, -1.5f, 0.75f, 2.0f, 0.125f};
  Tensor xg = make_tensor(*gpu, m, cols, xv), og = make_tensor(*gpu, rows_out, cols, ov);
  Tensor xc = make_tensor(*cpu, m, cols, xv), oc = make_tensor(*cpu, rows_out, cols, ov);
  gpu->add_rows_scaled(xg, rows, weights, og);
  cpu->add_rows_scaled(xc, rows, weights, oc);
  report("add_rows_scaled m=5 cols=96 (row 3 twice)", rel_err(read(*gpu, og), read(*cpu, oc)), kBf16Tol);
  EXPECT_THROW(gpu->add_rows_scaled(xg, {3, 0, 3, 8, 1}, weights, og), Error);  // row 8 of 8
  for (Tensor t : {xg, og}) gpu->free(t);
  for (Tensor t : {xc, oc}) cpu->free(t);
}

// One block's weights as a model file holds them: the router bf16 (logits of std ~2 on inputs
// in [-1, 1]), the experts in `type`.
struct MoeCase {
  int64_t d, f;
  int experts, k;
  bool renorm;
};
struct BlockWeights {
  std::unique_ptr<HostWeight> router;
  std::vector<std::unique_ptr<HostWeight>> mats;  // gate, up, down of each expert
  BlockWeights(const MoeCase& c, DType type, std::mt19937& rng) {
    router = std::make_unique<HostWeight>(DType::BF16, std::vector<int64_t>{c.experts, c.d},
                                          random_values(size_t(c.experts * c.d), 6.0f / std::sqrt(float(c.d)), rng));
    const float in_scale = 1.7f / std::sqrt(float(c.d)), down_scale = 1.7f / std::sqrt(float(c.f));
    for (int e = 0; e < c.experts; ++e) {
      mats.push_back(std::make_unique<HostWeight>(type, std::vector<int64_t>{c.f, c.d},
                                                  random_values(size_t(c.f * c.d), in_scale, rng)));
      mats.push_back(std::make_unique<HostWeight>(type, std::vector<int64_t>{c.f, c.d},
                                                  random_values(size_t(c.f * c.d), in_scale, rng)));
      mats.push_back(std::make_unique<HostWeight>(type, std::vector<int64_t>{c.d, c.f},
                                                  random_values(size_t(c.d * c.f), down_scale, rng)));
    }
  }
};
struct BlockOn {  // the weights uploaded to one backend
  std::unique_ptr<Weight> router;
  std::vector<std::unique_ptr<Weight>> owned;
  std::vector<Backend::Expert> experts;
  BlockOn(Backend& b, const BlockWeights& w) : router(b.upload(w.router->t)) {
    for (const auto& m : w.mats) owned.push_back(b.upload(m->t));
    for (size_t e = 0; e + 2 < owned.size(); e += 3)
      experts.push_back({owned[e].get(), owned[e + 1].get(), owned[e + 2].get()});
  }
};

// x + the block's output for h, on backend b.
std::vector<float> run_block(Backend& b, const BlockOn& w, const MoeCase& c, int64_t n, const std::vector<float>& hv,
                             const std::vector<float>& xv) {
  Tensor h = make_tensor(b, n, c.d, hv), x = make_tensor(b, n, c.d, xv);
  const Backend::MoeScratch s{b.alloc(n, c.experts), b.alloc(n, c.d), b.alloc(n, c.f), b.alloc(n, c.f),
                              b.alloc(n, c.d)};
  b.moe_ffn_add(Backend::NormedRows{x, nullptr, 0.0f, h, nullptr}, *w.router, w.experts, c.k, c.renorm, s, x);
  std::vector<float> out = read(b, x);
  for (Tensor t : {h, x, s.logits, s.rows, s.gate, s.up, s.out}) b.free(t);
  return out;
}

std::vector<float> minus(std::vector<float> a, const std::vector<float>& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] -= b[i];
  return a;
}

// The block on each GPU backend against `ref` for every token count. The block's own output
// (x after minus x before) is compared, so an expert missing or counted twice shows at full size.
void check_block(const MoeCase& c, DType type, const std::vector<int64_t>& token_counts,
                 const std::vector<std::pair<std::string, Backend*>>& gpus, Backend& ref, double tol) {
  std::mt19937 rng(uint32_t(c.d * 31 + c.f * 7 + c.experts));
  const BlockWeights w(c, type, rng);
  const BlockOn on_ref(ref, w);
  std::vector<std::unique_ptr<BlockOn>> on_gpu;
  for (const auto& g : gpus) on_gpu.push_back(std::make_unique<BlockOn>(*g.second, w));
  for (int64_t n : token_counts) {
    const auto hv = random_values(size_t(n * c.d), 1.0f, rng), xv = random_values(size_t(n * c.d), 0.05f, rng);
    const std::vector<float> want = minus(run_block(ref, on_ref, c, n, hv, xv), xv);
    for (size_t i = 0; i < gpus.size(); ++i) {
      const std::vector<float> got = minus(run_block(*gpus[i].second, *on_gpu[i], c, n, hv, xv), xv);
      report("moe_ffn_add " + gpus[i].first + " " + std::string(dtype_name(type)) + " n=" + std::to_string(n) +
                 " d=" + std::to_string(c.d) + " f=" + std::to_string(c.f) + " E=" + std::to_string(c.experts) +
                 " k=" + std::to_string(c.k) + (c.renorm ? " renorm" : ""),
             rel_err(got, want), tol);
    }
  }
}

// Every path on bf16 experts: the default split (kernels below 256 tokens, GEMMs from 256 on,
// outside graphs as here), every count through the GEMMs, every count through the kernels. The
// GEMMs take widths that are multiples of 128 (the third shape); the others stay on the kernels.
TEST_F(GpuMoe, BlockMatchesTheCpuOnAwkwardShapes) {
  auto gemms = cuda_with_moe_gemm_min_tokens(1), kernels = cuda_with_moe_gemm_min_tokens(1 << 20);
  const std::vector<std::pair<std::string, Backend*>> gpus = {{"default", gpu.get()},
                                                              {"gemm", gemms.get()},
                                                              {"kernels", kernels.get()}};
  for (const MoeCase& c :
       {MoeCase{96, 80, 8, 2, true}, MoeCase{256, 136, 60, 4, false}, MoeCase{384, 128, 16, 3, true}})
    check_block(c, DType::BF16, {1, 3, 8, 40, 300}, gpus, *cpu, 2e-2);
}

// Qwen3-30B-A3B's expert shape (dim 2048, experts of 768, 8 a token), 64 of its 128 experts.
TEST_F(GpuMoe, BlockMatchesTheCpuOnAQwen3MoeLayer) {
  auto gemms = cuda_with_moe_gemm_min_tokens(1), kernels = cuda_with_moe_gemm_min_tokens(1 << 20);
  check_block(MoeCase{2048, 768, 64, 8, true}, DType::BF16, {1, 3, 8, 40, 300},
              {{"default", gpu.get()}, {"gemm", gemms.get()}, {"kernels", kernels.get()}}, *cpu, 2e-2);
}

// Experts the device kernels do not take run Backend's default, routed on the host through this
// backend's moe_route and add_rows_scaled: packed Q8_0 experts (against the CPU's exact matmuls
// on the same blocks) and bf16 rows of 100 values (not whole 16-byte granules). That path routes
// on bf16 logits (the matmul's output), which may move a near-tie to another expert than the
// CPU's fp32 logits pick, so here every expert is chosen (k = n_experts): the selection itself
// is RouterMatchesTheCpu's.
TEST_F(GpuMoe, OtherExpertsRunRoutedOnTheHost) {
  auto exact = make_cpu_backend({.n_threads = 0, .exact_matmul = true});
  check_block(MoeCase{256, 128, 6, 6, true}, DType::Q8_0, {1, 40}, {{"host-routed", gpu.get()}}, *exact, 3e-2);
  auto fresh = make_cuda_backend();
  check_block(MoeCase{100, 72, 5, 5, false}, DType::BF16, {1, 9}, {{"host-routed", fresh.get()}}, *cpu, 2e-2);
}

TEST_F(GpuMoe, BlockRefusesARouterThatDoesNotMatchTheExperts) {
  std::mt19937 rng(9);
  const MoeCase c{96, 80, 4, 2, true};
  const BlockWeights w(c, DType::BF16, rng);
  BlockOn on(*gpu, w);
  on.experts.pop_back();  // 4 router rows, 3 experts
  const auto v = random_values(size_t(c.d), 1.0f, rng);
  EXPECT_THROW(run_block(*gpu, on, c, 1, v, v), Error);
}

// The synthetic Qwen3-MoE model (4 layers, dim 512, 8 experts of 256, top 2) decoding greedily
// on both backends from a chunked prompt; its decode steps go through graphs. bf16 activations
// may move a router's near-tie to another expert, which moves that step's logits by more than
// bf16 rounding: a few steps may exceed the dense models' bound, not most.
TEST_F(GpuMoe, SyntheticQwen3MoeDecodesLikeTheCpu) {
  auto file = ModelFile::synthetic("tiny-qwen3moe", DType::BF16, 7);
  LlamaModel gm(*file, *gpu), cm(*file, *cpu);
  const int vocab = file->config().vocab_size;
  const std::vector<int32_t> prompt = {3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43, 38, 327, 950, 288, 419};
  SequenceRunner g(gm, 128, /*max_step_tokens=*/7), c(cm, 128, 7);
  std::vector<int32_t> want(prompt.size());
  for (size_t i = 0; i < want.size(); ++i) want[i] = int32_t(i);
  std::vector<float> lg = g.eval(prompt, want), lc = c.eval(prompt, want);
  double worst = rel_err(lg, lc);
  int same = 0, off = worst > 3e-2;  // evaluations past the dense bound
  const int steps = 24;
  for (int s = 0; s < steps; ++s) {
    const std::vector<float> rg(lg.end() - vocab, lg.end()), rc(lc.end() - vocab, lc.end());
    const double err = rel_err(rg, rc);
    worst = std::max(worst, err);
    off += err > 3e-2;
    const int tc = int(std::max_element(rc.begin(), rc.end()) - rc.begin());
    same += tc == int(std::max_element(rg.begin(), rg.end()) - rg.begin());
    lg = g.eval_last({tc});
    lc = c.eval_last({tc});
  }
  const CudaGraphStats gs = cuda_graph_stats(*gpu);
  std::printf(
      "rel_err model logits (tiny-qwen3moe, bf16, %d decode steps) worst %.3g, %d past 3e-2; greedy tokens "
      "equal %d/%d; graph steps captured %lld, replayed %lld\n",
      steps, worst, off, same, steps, static_cast<long long>(gs.captured), static_cast<long long>(gs.replayed));
  EXPECT_LE(off, 3);
  EXPECT_GE(same, steps - 3);
  EXPECT_GT(gs.replayed, 0) << "mixture-of-experts decode steps are captured into graphs";
}

}  // namespace
}  // namespace greta::gputest
