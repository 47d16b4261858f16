// Backend::normed_qkv_rope on CUDA (one GEMV launch whose epilogue applies RoPE and writes the
// KV cache) vs the CPU backend (matmul + rope_kv_write). Every step compares q, k, v and then
// attention over the caches, so a wrong cache slot or an unrotated key shows up in the
// attention output of later steps. Both RoPE pairings, GQA, biases, head_dim 64, 96 and 128,
// several sequences with shuffled block tables. x comes from a residual add first, as in a
// layer: either matmul_add_norm (on CUDA the norm's work moves into that GEMV: the split form
// of NormedRows) or matmul_add then norm (the plain form, as after the embedding).
// normed_qkv_headnorm_rope (Qwen3: each q and k head RMS-normalized before RoPE, on CUDA in the
// RoPE kernel) runs the same steps against the CPU's head_rms_norm + rope_kv_write.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <numeric>
#include <string>
#include <vector>

#include "gpu_test_util.h"

namespace greta::gputest {
namespace {

struct QkvCase {
  int n_heads, n_kv, hd;
  bool neox, bias;
  bool head_norm = false;
};

struct Side {  // one backend's weights, cache and activations
  std::unique_ptr<Weight> norm, wq, wk, wv, bq, bk, bv, wr, q_norm, k_norm;
  std::unique_ptr<KVStorage> kv;
};

// wt: the storage of the q/k/v weights (bf16, or a block format the GPU keeps packed); tol: the
// bound of the q/k/v outputs (twice it for the cache).
void run_case(Backend& gpu, Backend& cpu, const QkvCase& c, bool split, const std::string& tag, DType wt = DType::BF16,
              double tol = kBf16Tol) {
  constexpr int kBlock = 16, kBlocks = 24, kDim = 576, kRes = 320;  // kRes: k of the residual GEMV
  std::mt19937 rng(uint32_t(c.n_heads * 131 + c.hd));
  const int64_t qw = int64_t(c.n_heads) * c.hd, kw = int64_t(c.n_kv) * c.hd;
  std::deque<HostWeight> host;
  host.emplace_back(DType::F32, std::vector<int64_t>{kDim}, random_values(kDim, 1.5f, rng));
  for (int64_t m : {qw, kw, kw})
    host.emplace_back(wt, std::vector<int64_t>{m, kDim}, random_values(size_t(m * kDim), 0.1f, rng));
  for (int64_t m : {qw, kw, kw})
    host.emplace_back(DType::F32, std::vector<int64_t>{m}, random_values(size_t(m), 0.5f, rng));
  host.emplace_back(DType::BF16, std::vector<int64_t>{kDim, kRes}, random_values(size_t(kDim * kRes), 0.1f, rng));
  if (c.head_norm)  // q_norm, k_norm: 1 +- 0.5, as trained ones vary around 1
    for (int i = 0; i < 2; ++i) {
      std::vector<float> w = random_values(size_t(c.hd), 0.5f, rng);
      for (float& x : w) x += 1.f;
      host.emplace_back(DType::F32, std::vector<int64_t>{c.hd}, w);
    }
  const KVCacheDesc d{.n_layers = 1, .n_blocks = kBlocks, .block_size = kBlock, .n_kv_heads = c.n_kv, .head_dim = c.hd};
  Side side[2];
  for (int which = 0; which < 2; ++which) {
    Backend& b = which == 0 ? gpu : cpu;
    Side& s = side[which];
    s.norm = b.upload(host[0].t);
    s.wq = b.upload(host[1].t), s.wk = b.upload(host[2].t), s.wv = b.upload(host[3].t);
    s.bq = b.upload(host[4].t), s.bk = b.upload(host[5].t), s.bv = b.upload(host[6].t);
    s.wr = b.upload(host[7].t);
    if (c.head_norm) s.q_norm = b.upload(host[8].t), s.k_norm = b.upload(host[9].t);
    s.kv = b.alloc_kv(d);
  }
  RopeSpec rope;
  rope.neox = c.neox;
  for (int i = 0; i < c.hd / 2; ++i) rope.inv_freq.push_back(std::pow(10000.f, -2.f * i / float(c.hd)));
  std::vector<int32_t> free(kBlocks);
  std::iota(free.begin(), free.end(), 0);
  std::shuffle(free.begin(), free.end(), rng);
  std::vector<std::vector<int32_t>> tables(3);
  std::vector<int> lens(3, 0);
  // Steps: tokens per sequence. The first two are prompt-like (several tokens per sequence).
  const std::vector<std::vector<int>> steps = {{5, 0, 0}, {1, 7, 0}, {1, 1, 12}, {1, 1, 1}, {1, 0, 1}, {1, 1, 1}};
  for (size_t st = 0; st < steps.size(); ++st) {
    Batch batch;
    for (int s = 0; s < 3; ++s) {
      const int nt = steps[st][size_t(s)];
      if (nt == 0) continue;
      SeqSlice sl;
      sl.token_begin = batch.n_tokens();
      sl.n_tokens = nt;
      sl.n_past = lens[size_t(s)];
      lens[size_t(s)] += nt;
      while (int(tables[size_t(s)].size()) * kBlock < lens[size_t(s)]) {
        tables[size_t(s)].push_back(free.back());
        free.pop_back();
      }
      sl.block_table = tables[size_t(s)];
      for (int i = 0; i < nt; ++i) batch.tokens.push_back(0);
      batch.seqs.push_back(sl);
    }
    const StepPlan plan = StepPlan::build(batch, kBlock);
    const int64_t n = batch.n_tokens();
    const auto xv = random_values(size_t(n * kDim), 3.f, rng), av = random_values(size_t(n * kRes), 1.f, rng);
    std::vector<float> res[2][4];  // q, k, v, attention
    for (int which = 0; which < 2; ++which) {
      Backend& b = which == 0 ? gpu : cpu;
      Side& s = side[which];
      Tensor x = make_tensor(b, n, kDim, xv), h = b.alloc(n, kDim), a = make_tensor(b, n, kRes, av);
      Tensor q = b.alloc(n, qw), k = b.alloc(n, kw), v = b.alloc(n, kw), o = b.alloc(n, qw), tmp = b.alloc(n, kDim);
      b.begin_step(plan);
      Backend::NormedRows xn;  // x += a @ wr^T, then the norm of x
      if (split) {
        xn = b.matmul_add_norm(a, *s.wr, x, *s.norm, 1e-5f, h);
      } else {
        b.matmul_add(a, *s.wr, tmp, x);
        xn = b.norm(x, *s.norm, 1e-5f, h);
      }
      const Backend::MatmulTarget tq{s.wq.get(), c.bias ? s.bq.get() : nullptr, q},
          tk{s.wk.get(), c.bias ? s.bk.get() : nullptr, k}, tv{s.wv.get(), c.bias ? s.bv.get() : nullptr, v};
      if (c.head_norm) b.normed_qkv_headnorm_rope(xn, tq, tk, tv, *s.q_norm, *s.k_norm, 1e-6f, rope, *s.kv, 0);
      else b.normed_qkv_rope(xn, tq, tk, tv, rope, *s.kv, 0);
      b.attention(q, *s.kv, 0, c.n_heads, 1.f / std::sqrt(float(c.hd)), o);
      res[which][0] = read(b, q), res[which][1] = read(b, k), res[which][2] = read(b, v), res[which][3] = read(b, o);
      for (Tensor* t : {&x, &h, &q, &k, &v, &o, &a, &tmp}) b.free(*t);
    }
    const std::string what = tag + " step " + std::to_string(st) + " (" + std::to_string(n) +
                             " tokens) h=" + std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv) +
                             " hd=" + std::to_string(c.hd) + (c.neox ? " neox" : " adj") + (c.bias ? " bias" : "") +
                             (c.head_norm ? " head_norm" : "");
    const char* names[4] = {"q", "k", "v", "attention"};
    for (int i = 0; i < 4; ++i) report(what + " " + names[i], rel_err(res[0][i], res[1][i]), i == 3 ? 2 * tol : tol);
  }
}

using GpuQkvRope = GpuTest;

TEST_F(GpuQkvRope, MatchesMatmulPlusRopeKvWrite) {
  const std::vector<QkvCase> cases = {{9, 3, 64, false, false},
                                      {32, 8, 128, true, true},
                                      {4, 4, 128, false, true},
                                      {16, 2, 64, true, false},
                                      {8, 8, 96, true, false}};  // Phi-3-mini's head size
  CudaOptions one_token;                                         // steps of more than 1 token take the plain ops
  one_token.gemv_max_tokens = 1;
  for (bool split : {true, false})
    for (const CudaOptions& o : {CudaOptions{}, one_token}) {
      auto g = make_cuda_backend(o);
      const std::string tag = std::string(split ? "matmul_add_norm" : "matmul_add + norm") +
                              " gemv<=" + std::to_string(o.gemv_max_tokens);
      for (const QkvCase& c : cases) run_case(*g, *cpu, c, split, tag);
    }
}

TEST_F(GpuQkvRope, HeadNormMatchesCpu) {
  // Qwen3-8B's heads (32/8 of 128), Qwen3-0.6B's (16/8 of 128), adjacent pairs and head_dim 64 too.
  const std::vector<QkvCase> cases = {{32, 8, 128, true, false, true},
                                      {16, 8, 128, true, false, true},
                                      {9, 3, 64, false, true, true}};
  for (bool split : {true, false}) {
    auto g = make_cuda_backend();
    for (const QkvCase& c : cases) run_case(*g, *cpu, c, split, split ? "matmul_add_norm" : "matmul_add + norm");
  }
}

TEST_F(GpuQkvRope, PackedWeights) {
  // The RoPE epilogue over weights read packed (gemv_weights.cuh WeightQuant), against the CPU
  // reading the same blocks with exact matmuls (no int8 activations). kDim (576) is a whole
  // number of these formats' blocks.
  auto exact = make_cpu_backend({.n_threads = 0, .exact_matmul = true});
  for (DType t : {DType::Q8_0, DType::Q4_1, DType::F8_B64, DType::I4_G64}) {
    auto g = make_cuda_backend();
    const std::string tag = "packed " + std::string(dtype_name(t));
    // Q4_1 and I4_G64 round their scale and min (-d z) to bf16 in the GEMV: twice the error.
    const double tol = t == DType::Q4_1 || t == DType::I4_G64 ? 2 * kBf16Tol : kBf16Tol;
    for (const QkvCase& c : {QkvCase{9, 3, 64, false, false}, QkvCase{16, 2, 128, true, true}})
      run_case(*g, *exact, c, true, tag, t, tol);
  }
}

}  // namespace
}  // namespace greta::gputest
