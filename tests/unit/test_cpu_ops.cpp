// CPU backend ops other than matmul, each against a plain double-precision reference written
// here: embed, rms_norm, head_rms_norm, add, silu_mul, softcap, gather_rows, rope_kv_write (both
// pairings) and paged attention (GQA, several sequences, non-contiguous block tables, prompt +
// decode in one step, sliding window, soft cap).
// Attention's reference rounds q, K, V and the softmax weights to fp16 where the backend does
// (llama.cpp's F16-cache arithmetic) and is exact (double) everywhere else.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <utility>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "core/quant_blocks.h"

using namespace greta;

namespace {

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

Tensor upload_act(Backend& be, const std::vector<float>& v, int64_t rows, int64_t cols) {
  Tensor t = be.alloc(rows, cols);
  std::copy(v.begin(), v.end(), static_cast<float*>(t.data));
  return t;
}

std::vector<float> download(Backend& be, Tensor t) {
  std::vector<float> v(static_cast<size_t>(t.rows * t.cols));
  be.to_host(t, v.data());
  return v;
}

// |got - want| <= rel * (|want| + floor): floor is the magnitude below which an absolute error
// of rel * floor is accepted (values produced by cancellation).
void expect_close(const std::vector<float>& got, const std::vector<double>& want, double rel, const char* what,
                  double floor = 1e-2) {
  ASSERT_EQ(got.size(), want.size());
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - want[i]) <= rel * (std::fabs(want[i]) + floor)) && bad++ < 5)
      ADD_FAILURE() << what << "[" << i << "] = " << got[i] << ", reference " << want[i];
  EXPECT_EQ(bad, 0) << what;
}

}  // namespace

TEST(CpuOps, Elementwise) {
  for (int threads : {1, 2})
    for (int64_t n : {1, 3, 37})
      for (int64_t dim : {7, 576, 1536}) {
        SCOPED_TRACE("threads " + std::to_string(threads) + " n " + std::to_string(n) + " dim " + std::to_string(dim));
        auto be = make_cpu_backend({.n_threads = threads});
        const auto a = randn(size_t(n * dim), 1, 3.0f), b = randn(size_t(n * dim), 2), w = randn(size_t(dim), 3);
        HostTensor wt{"norm", DType::F32, {dim}, reinterpret_cast<const uint8_t*>(w.data()), w.size() * 4};
        auto wn = be->upload(wt);
        Tensor ta = upload_act(*be, a, n, dim), tb = upload_act(*be, b, n, dim), to = be->alloc(n, dim);

        std::vector<double> ref(a.size());
        be->rms_norm(ta, *wn, 1e-5f, to);
        for (int64_t r = 0; r < n; ++r) {
          double ss = 0;
          for (int64_t i = 0; i < dim; ++i) ss += double(a[r * dim + i]) * a[r * dim + i];
          const double s = 1.0 / std::sqrt(ss / dim + 1e-5);
          for (int64_t i = 0; i < dim; ++i) ref[r * dim + i] = a[r * dim + i] * s * w[i];
        }
        expect_close(download(*be, to), ref, 1e-5, "rms_norm");

        be->add(ta, tb, to);
        for (size_t i = 0; i < ref.size(); ++i) ref[i] = double(a[i]) + b[i];
        expect_close(download(*be, to), ref, 1e-6, "add");

        be->silu_mul(ta, tb, to);
        for (size_t i = 0; i < ref.size(); ++i) ref[i] = double(a[i]) / (1.0 + std::exp(-double(a[i]))) * b[i];
        expect_close(download(*be, to), ref, 2e-6, "silu_mul");

        be->silu_mul(ta, tb, ta);  // out aliasing gate is allowed
        expect_close(download(*be, ta), ref, 2e-6, "silu_mul in place");

        be->free(ta);
        be->free(tb);
        be->free(to);
      }
}

// Qwen3's q/k norm: every head_dim slice of a row gets its own RMS; the weight is shared by heads.
TEST(CpuOps, HeadRmsNorm) {
  auto be = make_cpu_backend({.n_threads = 2});
  const int64_t n = 3, heads = 4, hd = 128, cols = heads * hd;
  const auto x = randn(size_t(n * cols), 4, 3.0f), w = randn(size_t(hd), 5);
  HostTensor wt{"q_norm", DType::F32, {hd}, reinterpret_cast<const uint8_t*>(w.data()), w.size() * 4};
  auto wn = be->upload(wt);
  Tensor tx = upload_act(*be, x, n, cols);
  be->head_rms_norm(tx, *wn, 1e-6f);
  std::vector<double> ref(x.size());
  for (int64_t r = 0; r < n * heads; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < hd; ++i) ss += double(x[r * hd + i]) * x[r * hd + i];
    const double s = 1.0 / std::sqrt(ss / hd + 1e-6);
    for (int64_t i = 0; i < hd; ++i) ref[r * hd + i] = x[r * hd + i] * s * w[i];
  }
  expect_close(download(*be, tx), ref, 1e-5, "head_rms_norm");
  Tensor odd = be->alloc(1, 200);  // not whole heads of 128
  EXPECT_THROW(be->head_rms_norm(odd, *wn, 1e-6f), Error);
  be->free(odd);
  be->free(tx);
}

TEST(CpuOps, SiluExtremes) {
  auto be = make_cpu_backend({.n_threads = 1});
  std::vector<float> g = {-1000.0f, -100.0f, -20.0f, 0.0f, 20.0f, 100.0f, 1000.0f, 3.5f, -3.5f};
  std::vector<float> u(g.size(), 2.0f);
  Tensor tg = upload_act(*be, g, 1, int64_t(g.size())), tu = upload_act(*be, u, 1, int64_t(u.size()));
  be->silu_mul(tg, tu, tg);
  const auto out = download(*be, tg);
  for (size_t i = 0; i < g.size(); ++i) {
    const double want = double(g[i]) / (1.0 + std::exp(-double(g[i]))) * 2.0;
    EXPECT_TRUE(std::isfinite(out[i])) << g[i];
    EXPECT_NEAR(out[i], want, 1e-5 * std::fabs(want) + 1e-30) << g[i];
  }
  be->free(tg);
  be->free(tu);
}

TEST(CpuOps, EmbedEveryDtypeAndGather) {
  const int64_t vocab = 50, dim = 256;
  const auto table = randn(size_t(vocab * dim), 9);
  for (DType dt : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                   DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    SCOPED_TRACE(dtype_name(dt));
    std::vector<uint8_t> bytes(row_bytes(dt, dim) * vocab);
    for (int64_t r = 0; r < vocab; ++r)
      quantize_row(dt, table.data() + r * dim, bytes.data() + r * row_bytes(dt, dim), dim);
    HostTensor ht{"emb", dt, {vocab, dim}, bytes.data(), bytes.size()};
    auto be = make_cpu_backend({.n_threads = 2});
    auto w = be->upload(ht);
    const std::vector<int32_t> tok = {3, 0, 49, 3, 17};
    Tensor out = be->alloc(int64_t(tok.size()), dim);
    be->embed(*w, tok.data(), int(tok.size()), out);
    const auto got = download(*be, out);
    std::vector<float> want(static_cast<size_t>(dim));
    for (size_t i = 0; i < tok.size(); ++i) {
      dequantize_row(dt, bytes.data() + size_t(tok[i]) * row_bytes(dt, dim), want.data(), dim);
      for (int64_t j = 0; j < dim; ++j) ASSERT_EQ(got[i * dim + j], want[size_t(j)]) << i << " " << j;
    }
    Tensor g = be->alloc(2, dim);
    be->gather_rows(out, {4, 1}, g);
    const auto gg = download(*be, g);
    for (int64_t j = 0; j < dim; ++j) {
      EXPECT_EQ(gg[j], got[4 * dim + j]);
      EXPECT_EQ(gg[dim + j], got[1 * dim + j]);
    }
    const int32_t bad = 50;
    EXPECT_THROW(be->embed(*w, &bad, 1, g.rows_slice(0, 1)), Error);
    be->free(out);
    be->free(g);
  }
}

namespace {

// x rounded to the nearest fp16 (even on ties), as a double.
double f16(double x) { return double(fp16_to_float(float_to_fp16(float(x)))); }
// The spacing of fp16 values around x (normal range).
double fp16_step(double x) {
  int e;
  std::frexp(std::fabs(x), &e);  // |x| in [2^(e-1), 2^e)
  return std::ldexp(1.0, std::max(e - 1, -14) - 10);
}

// Reference RoPE on one head in double. The angle itself is a float, as the backend defines it
// (llama.cpp's: for geometric frequencies, angle_i = angle_{i-1} * inv_freq[1] from angle_0 = pos,
// which is what the test's frequencies are); everything after is double.
void rope_ref(std::vector<double>& x, int pos, const std::vector<float>& inv_freq, bool neox) {
  const int half = int(inv_freq.size());
  float angle = float(pos);
  for (int i = 0; i < half; ++i, angle *= inv_freq[1]) {
    const double ang = double(angle), c = std::cos(ang), s = std::sin(ang);
    const int ia = neox ? i : 2 * i, ib = neox ? i + half : 2 * i + 1;
    const double a = x[size_t(ia)], b = x[size_t(ib)];
    x[size_t(ia)] = a * c - b * s;
    x[size_t(ib)] = a * s + b * c;
  }
}

struct AttnCase {
  int n_heads = 6, n_kv = 2, hd = 16, block_size = 4;
  bool neox = false;
  int threads = 1;
  int history = 9;            // prompt length of sequence 10 in step 1
  bool decode_alone = false;  // a third step: one decode token of sequence 10, alone in its step
  int window = 0;             // sliding-window attention: the last `window` positions (0: all)
  float softcap = 0.0f;       // Gemma 2's score soft cap (0: none)
  float q_amp = 1.0f;         // q's magnitude: large enough, it makes the soft cap saturate
};

// Two steps: first fills the history of two sequences, then one step mixes a fresh prompt,
// a decode token and a 2-token continuation. Returns the second step's attention output.
std::vector<float> run_attention_case(const AttnCase& c) {
  auto be = make_cpu_backend({.n_threads = c.threads});
  KVCacheDesc d{2, 64 + c.history / c.block_size, c.block_size, c.n_kv, c.hd};
  auto kv = be->alloc_kv(d);
  RopeSpec rope;
  rope.neox = c.neox;
  for (int i = 0; i < c.hd / 2; ++i) rope.inv_freq.push_back(float(1.0 / std::pow(10000.0, 2.0 * i / c.hd)));
  const int qd = c.n_heads * c.hd, kd = c.n_kv * c.hd;
  const int layer = 1;
  // Reference cache: per sequence, per position, rotated K and V rows.
  std::map<int, std::vector<std::vector<double>>> kref, vref;

  // sids[s]: which reference sequence Batch::seqs[s] continues.
  auto step = [&](const Batch& b, const std::vector<int>& sids, uint32_t seed, bool check) {
    const int n = b.n_tokens();
    const StepPlan plan = StepPlan::build(b, c.block_size);
    be->begin_step(plan);
    const auto q = randn(size_t(n * qd), seed, c.q_amp), k = randn(size_t(n * kd), seed + 1),
               v = randn(size_t(n * kd), seed + 2);
    Tensor tq = upload_act(*be, q, n, qd), tk = upload_act(*be, k, n, kd), tv = upload_act(*be, v, n, kd);
    be->rope_kv_write(tq, tk, tv, rope, *kv, layer);
    // Reference rope of q and k; remember k/v per (seq, pos).
    std::vector<double> qrot(q.size());
    for (int t = 0; t < n; ++t) {
      const int s = plan.token_seq[size_t(t)], pos = plan.positions[size_t(t)];
      const int sid = sids[size_t(s)];
      for (int h = 0; h < c.n_heads; ++h) {
        std::vector<double> x(q.begin() + t * qd + h * c.hd, q.begin() + t * qd + (h + 1) * c.hd);
        rope_ref(x, pos, rope.inv_freq, c.neox);
        std::copy(x.begin(), x.end(), qrot.begin() + t * qd + h * c.hd);
      }
      std::vector<double> krow(static_cast<size_t>(kd)), vrow(v.begin() + t * kd, v.begin() + (t + 1) * kd);
      for (int h = 0; h < c.n_kv; ++h) {
        std::vector<double> x(k.begin() + t * kd + h * c.hd, k.begin() + t * kd + (h + 1) * c.hd);
        rope_ref(x, pos, rope.inv_freq, c.neox);
        std::copy(x.begin(), x.end(), krow.begin() + h * c.hd);
      }
      auto& ks = kref[sid];
      auto& vs = vref[sid];
      if (ks.size() <= size_t(pos)) ks.resize(size_t(pos) + 1), vs.resize(size_t(pos) + 1);
      ks[size_t(pos)] = krow;
      vs[size_t(pos)] = vrow;
    }
    // Floor 0.05: cos and sin are floats (cosf/sinf, as llama.cpp), ~6e-8 off each, so an output
    // that cancels to near zero still carries ~|x| * 1e-7 of absolute error (inputs are N(0,1)).
    expect_close(download(*be, tq), qrot, 1e-5, "rope q", 0.05 * c.q_amp);
    // The cache holds fp16 and attention rounds q to fp16 (llama.cpp's F16 cache arithmetic):
    // the reference takes the backend's rotated q and k (checked just above) and v through the
    // same rounding, so what is compared is the attention arithmetic itself.
    const auto q_be = download(*be, tq), k_be = download(*be, tk);
    for (int t = 0; t < n; ++t) {
      const int sid = sids[size_t(plan.token_seq[size_t(t)])], pos = plan.positions[size_t(t)];
      for (int i = 0; i < kd; ++i) {
        kref[sid][size_t(pos)][size_t(i)] = f16(k_be[size_t(t * kd + i)]);
        vref[sid][size_t(pos)][size_t(i)] = f16(v[size_t(t * kd + i)]);
      }
    }
    Tensor to = be->alloc(n, qd);
    const float scale = 1.0f / std::sqrt(float(c.hd));
    be->attention(tq, *kv, layer, c.n_heads, scale, to, c.window, c.softcap);
    const auto out = download(*be, to);
    if (check) {
      std::vector<double> ref(out.size()), slack(out.size(), 0.0);
      const int group = c.n_heads / c.n_kv;
      for (int t = 0; t < n; ++t) {
        const int sid = sids[size_t(plan.token_seq[size_t(t)])], pos = plan.positions[size_t(t)];
        for (int h = 0; h < c.n_heads; ++h) {
          const int g = h / group;
          const int lo = c.window > 0 ? std::max(0, pos + 1 - c.window) : 0;  // positions before: weight 0
          std::vector<double> sc(size_t(pos) + 1, 0.0);
          double mx = -1e300, sum = 0;
          for (int j = lo; j <= pos; ++j) {
            double dot = 0;
            // With a soft cap q is scaled before its fp16 rounding (llama.cpp's Gemma 2 graph), and
            // the score is cap * tanh(score / cap).
            for (int i = 0; i < c.hd; ++i) {
              const float qi = q_be[size_t(t * qd + h * c.hd + i)];
              dot += (c.softcap > 0 ? f16(qi * scale) : f16(qi)) * kref[sid][size_t(j)][size_t(g * c.hd + i)];
            }
            sc[size_t(j)] = c.softcap > 0 ? c.softcap * std::tanh(dot / c.softcap) : dot / std::sqrt(double(c.hd));
            mx = std::max(mx, sc[size_t(j)]);
          }
          for (int j = lo; j <= pos; ++j) sum += (sc[size_t(j)] = std::exp(sc[size_t(j)] - mx));
          // The weights are rounded to fp16 before they meet V, as llama.cpp rounds them. Where
          // the exact weight lies within 4e-6 (relative) of an fp16 rounding midpoint, the
          // backend's float weight may round the other way: one fp16 step of slack there.
          std::vector<double> p16(sc.size()), flip(sc.size());
          for (size_t j = 0; j < sc.size(); ++j) {
            const double p = sc[j] / sum;
            p16[j] = f16(p);
            const double other = p16[j] + (p > p16[j] ? 1 : -1) * fp16_step(p), mid = 0.5 * (p16[j] + other);
            flip[j] = std::fabs(p - mid) <= 4e-6 * p ? std::fabs(other - p16[j]) : 0.0;
          }
          for (int i = 0; i < c.hd; ++i) {
            double o = 0, sl = 0;
            for (int j = 0; j <= pos; ++j) {
              const double vj = vref[sid][size_t(j)][size_t(g * c.hd + i)];
              o += p16[size_t(j)] * vj;
              sl += flip[size_t(j)] * std::fabs(vj);
            }
            ref[size_t(t * qd + h * c.hd + i)] = o;
            slack[size_t(t * qd + h * c.hd + i)] = sl;
          }
        }
      }
      // Outputs are convex combinations of N(0,1) values: judge errors against magnitude 0.1,
      // plus the slack of possible fp16 rounding flips of the weights.
      int bad = 0;
      for (size_t i = 0; i < out.size(); ++i)
        if (!(std::fabs(out[i] - ref[i]) <= 2e-5 * (std::fabs(ref[i]) + 0.1) + slack[i]) && bad++ < 5)
          ADD_FAILURE() << "attention[" << i << "] = " << out[i] << ", reference " << ref[i] << " (slack " << slack[i]
                        << ")";
      EXPECT_EQ(bad, 0) << "attention";
    }
    be->free(tq);
    be->free(tk);
    be->free(tv);
    be->free(to);
    return out;
  };

  // Block tables from a shuffled pool, so consecutive positions land in scattered blocks.
  std::vector<int32_t> free_blocks(size_t(d.n_blocks));
  for (int i = 0; i < d.n_blocks; ++i) free_blocks[size_t(i)] = (i * 37 + 11) % d.n_blocks;  // 37 coprime to 64
  std::map<int, std::vector<int32_t>> tables;
  auto table_for = [&](int sid, int len) {
    auto& t = tables[sid];
    while (int(t.size()) * c.block_size < len) {
      t.push_back(free_blocks.back());
      free_blocks.pop_back();
    }
    return t;
  };
  // Step 1: sequence 10 (history prompt tokens) and sequence 20 (3 prompt tokens).
  const int H = c.history;
  Batch b1;
  b1.tokens.assign(size_t(H) + 3, 0);
  b1.seqs.push_back(SeqSlice{0, H, 0, table_for(10, H)});
  b1.seqs.push_back(SeqSlice{H, 3, 0, table_for(20, 3)});
  step(b1, {10, 20}, 100, !c.decode_alone);  // (a long history is checked where it is read: steps 2 and 3)
  // Step 2: a new 7-token prompt (seq 30), one decode token of seq 10 at position H and two
  // tokens of seq 20 at positions 3, 4 (crossing into a new block for block_size 4).
  Batch b2;
  b2.tokens.assign(10, 0);
  b2.seqs.push_back(SeqSlice{0, 7, 0, table_for(30, 7)});
  b2.seqs.push_back(SeqSlice{7, 1, H, table_for(10, H + 1)});
  b2.seqs.push_back(SeqSlice{8, 2, 3, table_for(20, 5)});
  const auto out2 = step(b2, {30, 10, 20}, 200, true);
  if (!c.decode_alone) return out2;
  // Step 3: sequence 10 decodes alone at position H + 1 (for long histories the backend splits
  // this one token's heads over the threads).
  Batch b3;
  b3.tokens.assign(1, 0);
  b3.seqs.push_back(SeqSlice{0, 1, H + 1, table_for(10, H + 2)});
  return step(b3, {10}, 300, true);
}

}  // namespace

TEST(CpuOps, RopeAndAttentionAdjacentPairs) {
  AttnCase c;
  c.neox = false;
  run_attention_case(c);
}

TEST(CpuOps, RopeAndAttentionNeoxPairs) {
  AttnCase c;
  c.neox = true;
  run_attention_case(c);
}

TEST(CpuOps, AttentionDefaultModelShapeAndThreads) {
  AttnCase c;
  c.n_heads = 9;
  c.n_kv = 3;
  c.hd = 64;
  c.block_size = 16;
  const auto a = run_attention_case(c);
  c.threads = 2;
  const auto b = run_attention_case(c);
  EXPECT_EQ(a, b) << "1 and 2 threads must give identical attention";
}

TEST(CpuOps, AttentionMultiQueryGroup) {
  AttnCase c;
  c.n_heads = 8;
  c.n_kv = 1;
  c.hd = 8;
  c.block_size = 1;
  run_attention_case(c);
}

TEST(CpuOps, AttentionLongDecodeSplitOverThreads) {
  // One decode token after 3100 positions (past the backend's 3072 threshold): with 2 threads
  // each head's scores, softmax and V^T p are cut over the pool; the result must equal the
  // reference and, bit for bit, the 1-thread run. (Two query heads on one kv head: the split's
  // tasks take a kv head's query heads together.) Also with a sliding window that starts inside
  // a position chunk and a lane cycle, and with a saturated soft cap.
  for (auto [window, softcap] : {std::pair{0, 0.0f}, {1001, 0.0f}, {0, 5.0f}}) {
    AttnCase c;
    c.softcap = softcap;
    c.q_amp = softcap > 0 ? 20.0f : 1.0f;
    c.n_heads = 2;
    c.n_kv = 1;
    c.hd = 64;
    c.block_size = 16;
    c.history = 3100;
    c.decode_alone = true;
    c.window = window;
    const auto a = run_attention_case(c);
    c.threads = 2;
    EXPECT_EQ(a, run_attention_case(c)) << "the split must not change the result (window " << window << ", softcap "
                                        << softcap << ")";
  }
}

TEST(CpuOps, AttentionSlidingWindow) {
  // A window of 3 positions: shorter than the prompts and the history, crossed within a step
  // (the 7-token prompt) and by the decode tokens.
  AttnCase c;
  c.window = 3;
  run_attention_case(c);
  c.n_heads = 9;
  c.n_kv = 3;
  c.hd = 64;
  c.block_size = 16;
  c.history = 40;
  c.window = 17;
  const auto a = run_attention_case(c);
  c.threads = 2;
  EXPECT_EQ(a, run_attention_case(c));
}

TEST(CpuOps, AttentionLongHistory) {
  // Hundreds of positions over many blocks: the online softmax rescales many times, and
  // larger q.k magnitudes (head_dim 64) make the running max matter.
  AttnCase c;
  c.n_heads = 9;
  c.n_kv = 3;
  c.hd = 64;
  c.block_size = 16;
  c.history = 333;
  const auto a = run_attention_case(c);
  c.threads = 2;
  EXPECT_EQ(a, run_attention_case(c)) << "position splits must not depend on the thread count";
}

TEST(CpuOps, AttentionSoftcap) {
  // Scores of magnitude ~20 capped at 5: tanh saturates, against the reference cap * tanh(s / cap)
  // before the softmax; with and without a window, in prompt and decode steps (the split decode:
  // AttentionLongDecodeSplitOverThreads).
  AttnCase c;
  c.q_amp = 20.0f;
  c.hd = 64;
  c.block_size = 16;
  c.history = 40;
  const auto uncapped = run_attention_case(c);
  c.softcap = 5.0f;
  const auto capped = run_attention_case(c);
  double diff = 0;
  for (size_t i = 0; i < capped.size(); ++i) diff = std::max(diff, double(std::fabs(capped[i] - uncapped[i])));
  EXPECT_GT(diff, 0.5) << "the cap must change the attention of these scores";
  c.window = 17;
  run_attention_case(c);
}

TEST(CpuOps, Softcap) {
  auto be = make_cpu_backend({.n_threads = 2});
  std::vector<float> x = randn(3000, 7, 40.0f);
  x[0] = 0.0f, x[1] = 1e4f, x[2] = -1e4f, x[3] = 1e-3f;
  const float cap = 30.0f;
  Tensor t = upload_act(*be, x, 3, 1000), out = be->alloc(3, 1000);
  be->softcap(t, cap, out);
  std::vector<double> want(x.size());
  for (size_t i = 0; i < x.size(); ++i) want[i] = cap * std::tanh(double(x[i]) / cap);
  expect_close(download(*be, out), want, 1e-6, "softcap", 1e-3);
  const auto got = download(*be, out);
  EXPECT_EQ(got[1], cap);
  EXPECT_EQ(got[2], -cap);
  be->softcap(t, cap, t);  // in place
  EXPECT_EQ(download(*be, t), got);
  EXPECT_TRUE(be->supports_logit_softcapping());
  for (float bad : {0.0f, -1.0f, INFINITY, NAN}) EXPECT_THROW(be->softcap(t, bad, out), Error) << bad;
  be->free(t);
  be->free(out);
}
