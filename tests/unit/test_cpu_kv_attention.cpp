// CPU attention over the FP8 (e4m3, a scale per row) and BF16 KV caches, through the backend:
// against a float64 reference computed from the same stored rows (what the cache holds, read back
// with load_kv_row), for prompts, a chunked prompt continuing over the cache, decode tokens, the
// long-context decode split over threads, sliding windows and the soft cap; and FP8 against BF16
// on the same inputs within the bound stated below. (The F16 cache's llama.cpp arithmetic is
// tested in test_cpu_ops.cpp.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kv_rows.h"

using namespace greta;

namespace {

struct KvCase {
  int n_heads = 6, n_kv = 2, hd = 64, block_size = 16;
  int history = 40;  // prompt tokens of sequence A in step 1
  int window = 0;    // sliding window (0: none)
  float softcap = 0.0f;
  int threads = 1;
  bool check_history = true;  // compare step 1's outputs too (a long history is only written)
};

// What one run of a case gives: the outputs of every checked token, and the float64 reference.
struct KvRun {
  std::vector<float> out;
  std::vector<double> ref;
};

KvRun run_case(const KvCase& c, KVCacheDType type) {
  auto be = make_cpu_backend({.n_threads = c.threads, .kv_dtype = type});
  const DType t = be->kv_dtype();
  const int H = c.history, bs = c.block_size, qd = c.n_heads * c.hd, kd = c.n_kv * c.hd;
  const int n_blocks = (H + 16) / bs + 8;
  auto kv = be->alloc_kv(KVCacheDesc{1, n_blocks, bs, c.n_kv, c.hd});
  RopeSpec identity;  // angle 0 everywhere: cos 1, sin 0, so q and k go into the cache as given
  identity.inv_freq.assign(size_t(c.hd / 2), 0.0f);
  // Blocks handed out in a scattered order; sequence A takes tables[0], B tables[1].
  std::mt19937 rng(11);
  std::vector<int32_t> order(static_cast<size_t>(n_blocks));
  for (int i = 0; i < n_blocks; ++i) order[size_t(i)] = i;
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<int32_t> table_a, table_b;
  auto grow = [&](std::vector<int32_t>& tb, int len) {
    while (int(tb.size()) * bs < len) tb.push_back(order[table_a.size() + table_b.size()]);
    return tb;
  };
  // The reference's view of the cache: per sequence and position, the rows as stored.
  std::vector<std::vector<double>> ka, va, kb, vb;
  std::normal_distribution<float> nd(0.0f, 1.0f);
  KvRun run;
  const double scale = 1.0 / std::sqrt(double(c.hd));

  auto step = [&](const Batch& b, std::vector<std::vector<std::vector<double>>*> kseq,
                  std::vector<std::vector<std::vector<double>>*> vseq, bool check) {
    const int n = b.n_tokens();
    const StepPlan plan = StepPlan::build(b, bs);
    be->begin_step(plan);
    std::vector<float> q(size_t(n) * qd), k(size_t(n) * kd), v(size_t(n) * kd);
    for (auto* x : {&q, &k, &v})
      for (float& e : *x) e = nd(rng);
    Tensor tq = be->alloc(n, qd), tk = be->alloc(n, kd), tv = be->alloc(n, kd), to = be->alloc(n, qd);
    std::copy(q.begin(), q.end(), static_cast<float*>(tq.data));
    std::copy(k.begin(), k.end(), static_cast<float*>(tk.data));
    std::copy(v.begin(), v.end(), static_cast<float*>(tv.data));
    be->rope_kv_write(tq, tk, tv, identity, *kv, 0);
    // The stored rows, through the cache's own write and read.
    std::vector<uint8_t> pool(size_t(kd) * 4);
    std::vector<float> scales(static_cast<size_t>(c.n_kv)), row(static_cast<size_t>(kd));
    auto stored = [&](const float* x) {
      cpu::store_kv_rows(t, x, c.n_kv, c.hd, pool.data(), scales.data(), 0);
      for (int h = 0; h < c.n_kv; ++h) cpu::load_kv_row(t, pool.data(), scales.data(), h, c.hd, row.data() + h * c.hd);
      return std::vector<double>(row.begin(), row.end());
    };
    for (int i = 0; i < n; ++i) {
      const int s = plan.token_seq[size_t(i)], pos = plan.positions[size_t(i)];
      auto& ks = *kseq[size_t(s)];
      auto& vs = *vseq[size_t(s)];
      ks.resize(std::max(ks.size(), size_t(pos) + 1));
      vs.resize(ks.size());
      ks[size_t(pos)] = stored(k.data() + size_t(i) * kd);
      vs[size_t(pos)] = stored(v.data() + size_t(i) * kd);
    }
    if (check) {
      be->attention(tq, *kv, 0, c.n_heads, float(scale), to, c.window, c.softcap);
      std::vector<float> out(size_t(n) * qd);
      be->to_host(to, out.data());
      run.out.insert(run.out.end(), out.begin(), out.end());
      for (int i = 0; i < n; ++i) {
        const int s = plan.token_seq[size_t(i)], pos = plan.positions[size_t(i)];
        const auto &ks = *kseq[size_t(s)], &vs = *vseq[size_t(s)];
        const int lo = c.window > 0 ? std::max(0, pos + 1 - c.window) : 0;
        for (int h = 0; h < c.n_heads; ++h) {
          const int g = h / (c.n_heads / c.n_kv);
          std::vector<double> w(size_t(pos) + 1, 0.0);
          double mx = -1e300, sum = 0;
          for (int j = lo; j <= pos; ++j) {
            double d = 0;
            for (int e = 0; e < c.hd; ++e)
              d += double(q[size_t(i) * qd + size_t(h * c.hd + e)]) * ks[size_t(j)][size_t(g * c.hd + e)];
            d *= scale;
            w[size_t(j)] = c.softcap > 0 ? c.softcap * std::tanh(d / c.softcap) : d;
            mx = std::max(mx, w[size_t(j)]);
          }
          for (int j = lo; j <= pos; ++j) sum += (w[size_t(j)] = std::exp(w[size_t(j)] - mx));
          for (int e = 0; e < c.hd; ++e) {
            double o = 0;
            for (int j = lo; j <= pos; ++j) o += w[size_t(j)] / sum * vs[size_t(j)][size_t(g * c.hd + e)];
            run.ref.push_back(o);
          }
        }
      }
    }
    for (Tensor* x : {&tq, &tk, &tv, &to}) be->free(*x);
  };

  // Step 1: sequence A's prompt (H tokens) and sequence B's (3 tokens).
  Batch b1;
  b1.tokens.assign(size_t(H) + 3, 0);
  b1.seqs.push_back(SeqSlice{0, H, 0, grow(table_a, H), H + 5});
  b1.seqs.push_back(SeqSlice{H, 3, 0, grow(table_b, 3)});
  step(b1, {&ka, &kb}, {&va, &vb}, c.check_history);
  // Step 2: the rest of A's prompt, 5 tokens over the cache (a chunked prefill), and B's first
  // decode token.
  Batch b2;
  b2.tokens.assign(6, 0);
  b2.seqs.push_back(SeqSlice{0, 5, H, grow(table_a, H + 5), H + 5});
  b2.seqs.push_back(SeqSlice{5, 1, 3, grow(table_b, 4)});
  step(b2, {&ka, &kb}, {&va, &vb}, true);
  // Step 3: A decodes alone (past 3072 positions the backend splits its heads over the threads).
  Batch b3;
  b3.tokens.assign(1, 0);
  b3.seqs.push_back(SeqSlice{0, 1, H + 5, grow(table_a, H + 6)});
  step(b3, {&ka}, {&va}, true);
  return run;
}

// Outputs are convex combinations of N(0,1) values: errors are judged against magnitude 0.1.
void expect_matches_reference(const KvRun& r, const char* what) {
  ASSERT_EQ(r.out.size(), r.ref.size());
  int bad = 0;
  for (size_t i = 0; i < r.out.size(); ++i)
    if (!(std::fabs(r.out[i] - r.ref[i]) <= 2e-5 * (std::fabs(r.ref[i]) + 0.1)) && bad++ < 5)
      ADD_FAILURE() << what << ": out[" << i << "] = " << r.out[i] << ", reference " << r.ref[i];
  EXPECT_EQ(bad, 0) << what;
}

}  // namespace

TEST(CpuKvAttention, Fp8AndBf16MatchTheirStoredRows) {
  for (KVCacheDType t : {KVCacheDType::FP8, KVCacheDType::BF16}) {
    KvCase c;
    expect_matches_reference(run_case(c, t), "gqa 6/2, hd 64");
    c.n_heads = 4;
    c.n_kv = 4;
    c.hd = 40;  // not a multiple of 16: the scalar dot and the tail loops
    c.block_size = 4;
    expect_matches_reference(run_case(c, t), "mha, hd 40, blocks of 4");
    c = KvCase{};
    c.n_heads = 4;
    c.n_kv = 1;
    c.hd = 256;  // Gemma's head size
    expect_matches_reference(run_case(c, t), "mqa 4/1, hd 256");
    c = KvCase{};
    c.window = 9;  // crossed inside the prompt, the chunk and by the decode tokens
    c.threads = 2;
    expect_matches_reference(run_case(c, t), "sliding window 9");
    c.window = 0;
    c.softcap = 3.0f;
    expect_matches_reference(run_case(c, t), "soft cap");
  }
}

TEST(CpuKvAttention, Fp8LongDecodeSplitOverThreads) {
  // One decode token after 3100 positions: with 2 threads each head is cut over the pool. Equal to
  // the reference and, bit for bit, to 1 thread; also with a window that starts mid-chunk.
  for (int window : {0, 1001}) {
    KvCase c;
    c.n_heads = 2;
    c.n_kv = 1;
    c.history = 3100;
    c.check_history = false;
    c.window = window;
    const KvRun one = run_case(c, KVCacheDType::FP8);
    expect_matches_reference(one, "fp8, 3100 positions");
    c.threads = 2;
    EXPECT_EQ(one.out, run_case(c, KVCacheDType::FP8).out) << "window " << window;
  }
}

TEST(CpuKvAttention, Fp8AgainstBf16Cache) {
  // The same inputs through both caches (q, k, v ~ N(0, 1), head_dim 64). e4m3 keeps 3 mantissa
  // bits, bf16 8: half an e4m3 step is up to 2^-4 of a value, in every K and V value, and an
  // output that is one V row (a token's first position) carries that error whole, while scores
  // move by q . dk. The stated tolerance: |fp8 - bf16| <= 0.2 (|bf16| + 0.5) for every output and
  // 0.02 on the mean |fp8 - bf16|; measured here 0.12 and 0.010-0.012.
  KvCase c;
  c.threads = 2;
  for (int window : {0, 9}) {
    c.window = window;
    const KvRun f = run_case(c, KVCacheDType::FP8), b = run_case(c, KVCacheDType::BF16);
    ASSERT_EQ(f.out.size(), b.out.size());
    double mean_diff = 0, max_rel = 0;
    for (size_t i = 0; i < f.out.size(); ++i) {
      const double d = std::fabs(double(f.out[i]) - double(b.out[i]));
      max_rel = std::max(max_rel, d / (std::fabs(double(b.out[i])) + 0.5));
      mean_diff += d / double(f.out.size());
    }
    EXPECT_LE(max_rel, 0.2) << "window " << window;
    EXPECT_LE(mean_diff, 0.02) << "window " << window;
    EXPECT_GT(mean_diff, 0.0) << "the two caches must differ (FP8 rounds)";
  }
}
