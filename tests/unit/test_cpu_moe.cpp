// The mixture-of-experts ops on the CPU backend: the router (moe_route) on hand-checked rows --
// the softmax, the top-k order, ties, renormalisation -- and the whole block (moe_ffn_add, the
// Backend default over the CPU's ops) against a per-token computation in double.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "core/host_tensor.h"

using namespace greta;

namespace {

Tensor act(Backend& be, const std::vector<float>& v, int64_t rows, int64_t cols) {
  Tensor t = be.alloc(rows, cols);
  std::copy(v.begin(), v.end(), static_cast<float*>(t.data));
  return t;
}

struct Routed {
  std::vector<int32_t> ids;
  std::vector<float> w;
};

Routed route(const std::vector<float>& logits, int64_t rows, int k, bool renormalize) {
  auto be = make_cpu_backend({.n_threads = 1});
  const int64_t cols = int64_t(logits.size()) / rows;
  Tensor t = act(*be, logits, rows, cols);
  Routed r{std::vector<int32_t>(size_t(rows * k)), std::vector<float>(size_t(rows * k))};
  be->moe_route(t, k, renormalize, r.ids.data(), r.w.data());
  be->free(t);
  return r;
}

}  // namespace

// Logits (1, 2, 3, 0): probabilities e^l / S with S = 1 + e + e^2 + e^3 = 31.19287485; the top 2
// are expert 2 (e^3 / S = 0.6439142598) and expert 1 (e^2 / S = 0.2368828181). Renormalised over
// those two, logits one apart: sigmoid(1) = 0.7310585786 and 1 - sigmoid(1) = 0.2689414214.
TEST(CpuMoeRoute, SoftmaxTopKAndRenormalisationByHand) {
  const Routed plain = route({1, 2, 3, 0}, 1, 2, false);
  EXPECT_EQ(plain.ids, (std::vector<int32_t>{2, 1}));
  EXPECT_NEAR(plain.w[0], 0.6439142598f, 1e-6f);
  EXPECT_NEAR(plain.w[1], 0.2368828181f, 1e-6f);
  const Routed norm = route({1, 2, 3, 0}, 1, 2, true);
  EXPECT_EQ(norm.ids, (std::vector<int32_t>{2, 1}));
  EXPECT_NEAR(norm.w[0], 0.7310585786f, 1e-6f);
  EXPECT_NEAR(norm.w[1], 0.2689414214f, 1e-6f);
  // The softmax is over every expert, not only the chosen: a shift of all logits changes nothing,
  // a fifth expert lowers the plain weights but not the renormalised ones.
  const Routed shifted = route({101, 102, 103, 100}, 1, 2, false);
  EXPECT_NEAR(shifted.w[0], plain.w[0], 1e-6f);
  const Routed fifth = route({1, 2, 3, 0, 2.5f}, 1, 2, false);
  EXPECT_EQ(fifth.ids, (std::vector<int32_t>{2, 4}));
  EXPECT_LT(fifth.w[0], plain.w[0]);
  const Routed fifth_norm = route({1, 2, 3, 0, 2.5f}, 1, 2, true);
  EXPECT_NEAR(fifth_norm.w[0], 1.0f / (1.0f + std::exp(-0.5f)), 1e-6f);  // sigmoid(3 - 2.5)
}

TEST(CpuMoeRoute, TiesGoToTheLowerExpertId) {
  const Routed r = route({0.5f, 2, 2, 1, 2}, 1, 2, false);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(r.w[0], r.w[1]);
  EXPECT_EQ(route({0.5f, 2, 2, 1, 2}, 1, 3, false).ids, (std::vector<int32_t>{1, 2, 4}));
  EXPECT_EQ(route({7, 7, 7, 7}, 1, 4, true).ids, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_NEAR(route({7, 7, 7, 7}, 1, 4, true).w[3], 0.25f, 1e-7f);
}

TEST(CpuMoeRoute, RowsAreIndependentAndRowMajor) {
  // Row 0 as the hand-checked row, row 1 prefers expert 0 then 3.
  const Routed r = route({1, 2, 3, 0, /**/ 5, 1, 1, 4}, 2, 2, true);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{2, 1, 0, 3}));
  EXPECT_NEAR(r.w[0], 0.7310585786f, 1e-6f);
  EXPECT_NEAR(r.w[2], 0.7310585786f, 1e-6f);
  // Every expert chosen: the weights are the whole softmax, summing to 1 with or without renormalising.
  const Routed all = route({0.3f, -1, 2}, 1, 3, false);
  EXPECT_NEAR(all.w[0] + all.w[1] + all.w[2], 1.0f, 1e-6f);
}

TEST(CpuMoeRoute, NaNLogitsStillChooseDistinctExperts) {
  const Routed r = route({NAN, 1, 0, NAN}, 1, 3, false);
  for (int32_t id : r.ids) EXPECT_TRUE(id >= 0 && id < 4);
  EXPECT_TRUE(r.ids[0] != r.ids[1] && r.ids[1] != r.ids[2] && r.ids[0] != r.ids[2]);
}

TEST(CpuMoeRoute, RefusesKOutsideTheExperts) {
  auto be = make_cpu_backend({.n_threads = 1});
  Tensor t = act(*be, {1, 2, 3}, 1, 3);
  int32_t ids[4];
  float w[4];
  EXPECT_THROW(be->moe_route(t, 0, true, ids, w), Error);
  EXPECT_THROW(be->moe_route(t, 4, true, ids, w), Error);
  be->free(t);
}

namespace {

// A random F32 matrix [rows, cols] as a HostTensor owning its values in `store`.
HostTensor matrix(std::vector<std::vector<float>>& store, int64_t rows, int64_t cols, std::mt19937& rng, float scale) {
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float>& v = store.emplace_back(size_t(rows * cols));
  for (float& x : v) x = nd(rng);
  HostTensor t;
  t.name = "m" + std::to_string(store.size());
  t.dtype = DType::F32;
  t.shape = {rows, cols};
  t.data = reinterpret_cast<const uint8_t*>(v.data());
  t.nbytes = v.size() * sizeof(float);
  return t;
}

double dot(const float* w, const std::vector<double>& x) {
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += double(w[i]) * x[i];
  return s;
}

}  // namespace

// 7 tokens, 5 experts of 6 over a width of 8, top 2: each token's row of x gains the weighted sum
// of its two experts' SwiGLU outputs, as a per-token loop in double computes it from the same
// router choice. Run on 1 and 2 threads, renormalised or not.
TEST(CpuMoeFfn, MatchesAPerTokenComputation) {
  const int64_t n = 7, dim = 8, f = 6, n_exp = 5;
  const int k = 2;
  for (bool renorm : {false, true})
    for (int threads : {1, 2}) {
      SCOPED_TRACE(std::string(renorm ? "renormalised" : "plain") + ", threads " + std::to_string(threads));
      auto be = make_cpu_backend({.n_threads = threads});
      std::mt19937 rng(11);
      std::vector<std::vector<float>> store;
      store.reserve(64);  // HostTensors point into it
      const HostTensor router_h = matrix(store, n_exp, dim, rng, 1.0f);
      std::vector<HostTensor> gate_h, up_h, down_h;
      for (int e = 0; e < n_exp; ++e) {
        gate_h.push_back(matrix(store, f, dim, rng, 0.5f));
        up_h.push_back(matrix(store, f, dim, rng, 0.5f));
        down_h.push_back(matrix(store, dim, f, rng, 0.5f));
      }
      const HostTensor h_host = matrix(store, n, dim, rng, 1.0f), x_host = matrix(store, n, dim, rng, 1.0f);
      auto router = be->upload(router_h);
      std::vector<std::unique_ptr<Weight>> owned;
      std::vector<Backend::Expert> experts;
      for (int e = 0; e < n_exp; ++e) {
        owned.push_back(be->upload(gate_h[size_t(e)]));
        owned.push_back(be->upload(up_h[size_t(e)]));
        owned.push_back(be->upload(down_h[size_t(e)]));
        experts.push_back({owned[owned.size() - 3].get(), owned[owned.size() - 2].get(), owned.back().get()});
      }
      const float* hv = reinterpret_cast<const float*>(h_host.data);
      const float* xv = reinterpret_cast<const float*>(x_host.data);
      Tensor h = act(*be, std::vector<float>(hv, hv + n * dim), n, dim);
      Tensor x = act(*be, std::vector<float>(xv, xv + n * dim), n, dim);
      const Backend::MoeScratch s{be->alloc(n, n_exp), be->alloc(n, dim), be->alloc(n, f), be->alloc(n, f),
                                  be->alloc(n, dim)};
      be->moe_ffn_add(Backend::NormedRows{x, nullptr, 0.0f, h, nullptr}, *router, experts, k, renorm, s, x);
      std::vector<float> got(size_t(n * dim));
      be->to_host(x, got.data());

      // The router's choice from the same logits, then each token's experts in double.
      std::vector<float> logits(size_t(n * n_exp));
      for (int64_t t = 0; t < n; ++t)
        for (int e = 0; e < n_exp; ++e)
          logits[size_t(t * n_exp + e)] = float(dot(reinterpret_cast<const float*>(router_h.data) + e * dim,
                                                    std::vector<double>(hv + t * dim, hv + (t + 1) * dim)));
      const Routed r = route(logits, n, k, renorm);
      std::vector<int> used(static_cast<size_t>(n_exp));
      for (int64_t t = 0; t < n; ++t) {
        const std::vector<double> ht(hv + t * dim, hv + (t + 1) * dim);
        std::vector<double> want(xv + t * dim, xv + (t + 1) * dim);
        for (int j = 0; j < k; ++j) {
          const int e = r.ids[size_t(t * k + j)];
          used[size_t(e)]++;
          std::vector<double> a(static_cast<size_t>(f));
          for (int64_t i = 0; i < f; ++i) {
            const double g = dot(reinterpret_cast<const float*>(gate_h[size_t(e)].data) + i * dim, ht);
            const double u = dot(reinterpret_cast<const float*>(up_h[size_t(e)].data) + i * dim, ht);
            a[size_t(i)] = g / (1.0 + std::exp(-g)) * u;
          }
          for (int64_t o = 0; o < dim; ++o)
            want[size_t(o)] += double(r.w[size_t(t * k + j)]) *
                               dot(reinterpret_cast<const float*>(down_h[size_t(e)].data) + o * f, a);
        }
        for (int64_t o = 0; o < dim; ++o)
          EXPECT_NEAR(got[size_t(t * dim + o)], want[size_t(o)], 1e-4 * (1.0 + std::abs(want[size_t(o)])))
              << "token " << t << " value " << o;
      }
      int experts_with_two_or_more = 0;  // the gather runs over several tokens, not only one
      for (int c : used) experts_with_two_or_more += c >= 2;
      EXPECT_GE(experts_with_two_or_more, 2);
      for (Tensor t : {h, x, s.logits, s.rows, s.gate, s.up, s.out}) be->free(t);
    }
}

TEST(CpuMoeFfn, RefusesARouterThatDoesNotMatchTheExperts) {
  auto be = make_cpu_backend({.n_threads = 1});
  std::mt19937 rng(1);
  std::vector<std::vector<float>> store;
  store.reserve(8);
  auto router = be->upload(matrix(store, 3, 4, rng, 1.0f));
  auto w = be->upload(matrix(store, 4, 4, rng, 1.0f));
  const std::vector<Backend::Expert> two = {{w.get(), w.get(), w.get()}, {w.get(), w.get(), w.get()}};
  Tensor x = be->alloc(1, 4);
  const Backend::MoeScratch s{be->alloc(1, 3), be->alloc(1, 4), be->alloc(1, 4), be->alloc(1, 4), be->alloc(1, 4)};
  EXPECT_THROW(be->moe_ffn_add(Backend::NormedRows{x, nullptr, 0.0f, x, nullptr}, *router, two, 1, true, s, x), Error);
  for (Tensor t : {x, s.logits, s.rows, s.gate, s.up, s.out}) be->free(t);
}
