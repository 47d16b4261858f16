// The host Sampler's constraints: an allowed-token bitmask (only allowed tokens are drawn, the
// distribution is the unconstrained one renormalised over them) and logit_bias (added before
// the chain; a -inf or NaN logit stays undrawable). Logprobs stay those of the raw logits.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "runtime/sampler.h"

namespace greta {
namespace {

std::vector<float> random_logits(int vocab, std::mt19937& rng) {
  std::normal_distribution<float> d(0, 2);
  std::vector<float> v(static_cast<size_t>(vocab));
  for (float& x : v) x = d(rng);
  return v;
}

std::vector<uint32_t> mask_of(int vocab, const std::vector<int32_t>& allowed) {
  std::vector<uint32_t> m(size_t((vocab + 31) / 32), 0);
  for (int32_t t : allowed) m[size_t(t) >> 5] |= 1u << (t & 31);
  return m;
}

// Every filter off: the constraints alone shape the distribution.
SamplingParams plain(float temperature, uint64_t seed) {
  return {.temperature = temperature, .top_k = 0, .top_p = 1, .min_p = 0, .seed = seed};
}

TEST(SamplerConstraints, OnlyAllowedTokensAreDrawn) {
  std::mt19937 rng(3);
  const int vocab = 300;
  const std::vector<int32_t> allowed = {0, 31, 32, 33, 150, 299};
  const std::vector<uint32_t> m = mask_of(vocab, allowed);
  for (int i = 0; i < 200; ++i) {
    const std::vector<float> x = random_logits(vocab, rng);
    Sampler s(plain(1.5f, uint64_t(i + 1)));
    const int32_t t = s.sample_full(x.data(), vocab, {}, -1, m.data()).token;
    EXPECT_NE(std::find(allowed.begin(), allowed.end(), t), allowed.end()) << t;
  }
}

TEST(SamplerConstraints, GreedyTakesTheBestAllowedToken) {
  std::vector<float> x(64, 0.0f);
  x[5] = 9;
  x[40] = 3;
  x[41] = 4;
  const auto m = mask_of(64, {40, 41, 63});
  Sampler s(plain(0, 1));
  EXPECT_EQ(s.sample_full(x.data(), 64, {}, -1, m.data()).token, 41);
  EXPECT_EQ(s.sample_full(x.data(), 64, {}, -1, nullptr).token, 5);
}

TEST(SamplerConstraints, DistributionIsRenormalisedOverTheMask) {
  std::mt19937 rng(5);
  const int vocab = 100;
  const std::vector<float> x = random_logits(vocab, rng);
  const std::vector<int32_t> allowed = {1, 7, 50, 99};
  const auto m = mask_of(vocab, allowed);
  Sampler s(plain(1, 1));
  const auto d = s.distribution(x.data(), vocab, {}, m.data());
  ASSERT_EQ(d.size(), allowed.size());
  double z = 0;
  for (int32_t t : allowed) z += std::exp(double(x[size_t(t)]));
  for (size_t i = 0; i < d.size(); ++i) {
    EXPECT_EQ(d[i].token, allowed[i]);
    EXPECT_NEAR(d[i].prob, std::exp(double(x[size_t(allowed[i])])) / z, 1e-9);
  }
}

TEST(SamplerConstraints, LogitBiasForcesAndBans) {
  std::mt19937 rng(9);
  const int vocab = 500;
  for (int i = 0; i < 50; ++i) {
    const std::vector<float> x = random_logits(vocab, rng);
    Sampler force(plain(1, uint64_t(i + 1)));
    force.set_logit_bias({{123, 100.0f}});
    EXPECT_EQ(force.sample(x.data(), vocab, {}), 123);
    Sampler greedy(plain(0, 1));
    const int32_t best = greedy.sample(x.data(), vocab, {});
    greedy.set_logit_bias({{best, -100.0f}});
    EXPECT_NE(greedy.sample(x.data(), vocab, {}), best);
  }
}

TEST(SamplerConstraints, BiasShiftsTheDistributionByExpOfIt) {
  std::vector<float> x = {0.0f, 0.0f, 0.0f};
  Sampler s(plain(1, 1));
  s.set_logit_bias({{2, std::log(2.0f)}, {7, 50.0f}});  // an id outside the row is ignored
  const auto d = s.distribution(x.data(), 3, {});
  ASSERT_EQ(d.size(), 3u);
  EXPECT_NEAR(d[2].prob, 0.5, 1e-6);
  EXPECT_NEAR(d[0].prob, 0.25, 1e-6);
}

TEST(SamplerConstraints, BiasNeverRevivesABrokenOrMaskedLogit) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {std::nanf(""), -inf, 0.0f, -1.0f};
  Sampler s(plain(1, 1));
  s.set_logit_bias({{0, 100.0f}, {1, 100.0f}, {3, 100.0f}});
  const auto m = mask_of(4, {0, 1, 2});  // 3 masked: its bias does not matter
  const auto d = s.distribution(x.data(), 4, {}, m.data());
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].token, 2);
}

TEST(SamplerConstraints, LogprobsAreTheRawModelsNotTheConstrainedOnes) {
  std::vector<float> x = {2.0f, 1.0f, 0.0f};
  const auto m = mask_of(3, {2});
  Sampler s(plain(0, 1));
  s.set_logit_bias({{2, 5.0f}});
  const SampleResult r = s.sample_full(x.data(), 3, {}, 2, m.data());
  EXPECT_EQ(r.token, 2);
  const double lse = std::log(std::exp(2.0) + std::exp(1.0) + 1.0);
  EXPECT_NEAR(r.logprob, 0.0 - lse, 1e-5);
  ASSERT_EQ(r.top.size(), 2u);
  EXPECT_EQ(r.top[0].token, 0);
}

}  // namespace
}  // namespace greta
