// Checks sample.cu (under cuda_emu.h) against the host Sampler: final distributions and greedy
// tokens on awkward rows (ties, NaN, +-inf, all -inf, all negative, signed zeros, heavy ties)
// for every filter setting; with an argument, draws over a grid of u. See run.sh.
#include "cuda_emu.h"
#include "sample_emu.inc"  // src/backend/cuda/sample.cu, made by run.sh
#include <cstdio>
#include <map>
#include <random>
#include "runtime/sampler.h"
#include "core/dtype.h"
using namespace greta;
static int fails = 0;
#define CHECK(c, ...) do { if (!(c)) { if (fails++ < 40) { std::printf("FAIL %s:%d: ", __FILE__, __LINE__); std::printf(__VA_ARGS__); std::printf("\n"); } } } while (0)

std::vector<float> row_of(int vocab, int kind, std::mt19937& rng, float scale) {
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(vocab);
  for (auto& x : v) x = bf16_to_float(float_to_bf16(d(rng)));
  const int last = vocab - 1;
  const float inf = INFINITY, nan = NAN;
  switch (kind) {
    case 1: for (int i : {last, vocab / 2, std::min(vocab / 3 + 1, last)}) v[i] = 7.5f; break;
    case 2: for (int i = 0; i < vocab; i += 3) v[i] = nan; v[last] = nan; break;
    case 3: v[last] = inf; v[vocab / 2] = inf; break;
    case 4: std::fill(v.begin(), v.end(), -inf); break;
    case 5: std::fill(v.begin(), v.end(), nan); break;
    case 6: std::fill(v.begin(), v.end(), 1.25f); break;
    case 7: for (float& x : v) x = bf16_to_float(float_to_bf16(x - 20.0f)); break;
    case 8: for (float& x : v) x = bf16_to_float(float_to_bf16(-std::fabs(x) - 1.0f)); v[vocab / 2] = -0.0f; v[last] = 0.0f; break;
    case 9: for (float& x : v) x = bf16_to_float(float_to_bf16(std::round(x))); break;  // heavy ties
  }
  return v;
}

void run(const std::vector<float>& all, int rows, int vocab, const std::vector<cuda::SampleRowParams>& p,
         std::vector<int32_t>& tok, std::vector<float>& prob, std::vector<float>& dist) {
  std::vector<cuda::bf16> b(all.size());
  for (size_t i = 0; i < all.size(); ++i) b[i].x = float_to_bf16(all[i]);
  tok.assign(rows, -5); prob.assign(rows, -1); dist.assign(size_t(rows) * vocab, -1);
  cuda::sample_rows(b.data(), rows, vocab, p.data(), tok.data(), prob.data(), dist.data(), nullptr);
}

int main(int argc, char**) {
  std::mt19937 rng(1);
  struct S { const char* n; float t; int k; float tp, mp; };
  std::vector<S> settings = {{"greedy", 0, 0, 1, 0}, {"t0.7 k40", 0.7f, 40, 1, 0}, {"p0.9", 1, 0, 0.9f, 0},
                             {"minp0.05", 1, 0, 1, 0.05f}, {"all off", 1, 0, 1, 0}, {"k1", 0.8f, 1, 1, 0},
                             {"defaults", 0.8f, 40, 0.95f, 0.05f}, {"t1.5 k200 p0.5", 1.5f, 200, 0.5f, 0},
                             {"k3 p0.3 ties", 1.0f, 3, 0.3f, 0}};
  if (argc < 2) for (int vocab : {1, 7, 100, 1000, 2500}) {
    for (const S& s : settings) {
      const int kinds[] = {0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
      const int rows = 12;
      std::vector<float> all;
      for (int r = 0; r < rows; ++r) { auto v = row_of(vocab, kinds[r], rng, 1.0f + 4.0f * (r % 3)); all.insert(all.end(), v.begin(), v.end()); }
      std::vector<cuda::SampleRowParams> p(rows);
      for (int r = 0; r < rows; ++r) p[r] = {s.t, s.k, s.tp, s.mp, (r + 0.37) / rows};
      std::vector<int32_t> tok; std::vector<float> prob, dist;
      run(all, rows, vocab, p, tok, prob, dist);
      for (int r = 0; r < rows; ++r) {
        SamplingParams sp; sp.temperature = s.t; sp.top_k = s.k; sp.top_p = s.tp; sp.min_p = s.mp; sp.seed = 1;
        Sampler h(sp);
        std::map<int32_t, double> hd;
        for (auto& t : h.distribution(all.data() + size_t(r) * vocab, vocab, {})) hd[t.token] = t.prob;
        int shown = 0;
        double sum = 0;
        for (int i = 0; i < vocab; ++i) {
          const float dv = dist[size_t(r) * vocab + i];
          sum += dv;
          auto it = hd.find(i);
          const double hv = it == hd.end() ? 0 : it->second;
          const bool ok = (dv > 0) == (hv > 0) ? std::fabs(dv - hv) <= 2e-6 : (dv == 0 && hv < 1e-9);
          if (!ok && shown++ < 3) CHECK(false, "%s vocab %d row %d kind %d token %d: dev %g host %g", s.n, vocab, r, kinds[r], i, dv, hv);
        }
        CHECK(std::fabs(sum - 1) < 1e-4, "%s vocab %d row %d sum %g", s.n, vocab, r, sum);
        CHECK(hd.count(tok[r]), "%s vocab %d row %d: token %d not a host survivor", s.n, vocab, r, tok[r]);
        if (hd.count(tok[r])) CHECK(std::fabs(prob[r] - hd[tok[r]]) < 2e-6, "%s vocab %d row %d prob %g vs %g", s.n, vocab, r, prob[r], hd[tok[r]]);
        if (s.t <= 0) { Sampler g(sp); CHECK(tok[r] == g.sample(all.data() + size_t(r) * vocab, vocab, {}), "greedy vocab %d row %d", vocab, r); }
      }
    }
    std::printf("vocab %d done, fails so far %d\n", vocab, fails);
    std::fflush(stdout);
  }
  // u grid on one row: draws are the u-quantiles in id order, shares match host probs.
  if (argc >= 2) for (const S& s : settings) {
    const int vocab = 60, rows = 128;
    auto one = row_of(vocab, 9, rng, 3.0f);
    std::vector<float> all;
    for (int r = 0; r < rows; ++r) all.insert(all.end(), one.begin(), one.end());
    std::vector<cuda::SampleRowParams> p(rows);
    for (int r = 0; r < rows; ++r) p[r] = {s.t, s.k, s.tp, s.mp, (r + 0.5) / rows};
    std::vector<int32_t> tok; std::vector<float> prob, dist;
    run(all, rows, vocab, p, tok, prob, dist);
    SamplingParams sp; sp.temperature = s.t; sp.top_k = s.k; sp.top_p = s.tp; sp.min_p = s.mp; sp.seed = 1;
    Sampler h(sp);
    std::map<int32_t, double> hd;
    for (auto& t : h.distribution(one.data(), vocab, {})) hd[t.token] = t.prob;
    std::vector<double> cum(vocab + 1);
    for (int i = 0; i < vocab; ++i) cum[i + 1] = cum[i] + dist[i];
    std::map<int32_t, int> hits;
    for (int r = 0; r < rows; ++r) {
      const int k = tok[r]; ++hits[k];
      const double u = p[r].u;
      CHECK(hd.count(k) && u >= cum[k] - 1e-5 && u < cum[k + 1] + 1e-5, "%s grid u %g token %d [%g %g)", s.n, u, k, cum[k], cum[k + 1]);
    }
    for (auto& [id, ph] : hd) CHECK(std::fabs(double(hits[id]) / rows - ph) <= 2.0 / rows, "%s share of %d: %g vs %g", s.n, id, double(hits[id]) / rows, ph);
  }
  std::printf("total fails %d\n", fails);
  return fails != 0;
}
