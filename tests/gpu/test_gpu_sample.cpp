// Sampling on the GPU (sample.cu via Backend::sample) against the host Sampler, the reference:
//  - greedy: the exact host token on awkward vocabulary sizes, with ties, NaN, +-inf rows;
//  - sampling: the final distribution the kernel draws from (test hook) has the host's
//    surviving tokens and probabilities; every token drawn for a grid of u is the u-quantile
//    of that distribution in token-id order, and each token's share of a fine u grid matches
//    its host probability;
//  - the model: greedy decoding with device sampling picks the host path's tokens.
#include <algorithm>
#include <limits>
#include <map>

#include "core/error.h"
#include "gpu_test_util.h"
#include "model/llama.h"
#include "model/sequence_runner.h"
#include "runtime/sampler.h"

namespace greta::gputest {
namespace {

class GpuSample : public GpuTest {};

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

SamplingParams host_params(const DeviceSampleParams& d) {
  SamplingParams p;
  p.temperature = d.temperature;
  p.top_k = d.top_k;
  p.top_p = d.top_p;
  p.min_p = d.min_p;
  p.repeat_penalty = 1.0f;
  p.seed = 1;
  return p;
}

// Logit rows that stress the edge cases: random values (bf16, so natural ties), a max tied at
// several ids, NaN everywhere but one row, +inf entries, all -inf, all NaN, all equal, all
// negative, a max of zeros of both signs.
std::vector<float> awkward_rows(int vocab, int kind, std::mt19937& rng) {
  std::vector<float> v = random_values(size_t(vocab), 6.0f, rng);
  const int last = vocab - 1;
  switch (kind) {
    case 0: break;
    case 1:  // ties at the max, the lowest of them not at 0
      for (int i : {last, vocab / 2, std::min(vocab / 3 + 1, last)}) v[size_t(i)] = 7.5f;
      break;
    case 2:  // NaNs, one above everything it would beat if taken as a number
      for (int i = 0; i < vocab; i += 3) v[size_t(i)] = kNaN;
      v[size_t(last)] = kNaN;
      break;
    case 3:  // +inf at two ids: a tie at the top
      v[size_t(last)] = kInf;
      v[size_t(vocab / 2)] = kInf;
      break;
    case 4: std::fill(v.begin(), v.end(), -kInf); break;
    case 5: std::fill(v.begin(), v.end(), kNaN); break;
    case 6:  // all equal
      std::fill(v.begin(), v.end(), 1.25f);
      break;
    case 7:  // every logit negative (the max too)
      for (float& x : v) x = bf16_to_float(float_to_bf16(x - 20.0f));
      break;
    case 8:  // the max is zero, -0 at a lower id than +0: they tie, the lower id wins
      for (float& x : v) x = -std::fabs(x) - 1.0f;
      v[size_t(vocab / 2)] = -0.0f;
      v[size_t(last)] = 0.0f;
      break;
  }
  return v;
}

TEST_F(GpuSample, GreedyIsTheHostArgmaxOnAwkwardRows) {
  std::mt19937 rng(5);
  constexpr int kKinds = 9;
  for (int vocab : {1, 7, 1000, 32000, 49152, 128256}) {
    // Several rows of each kind in one call, so rows cannot leak into each other.
    const int rows = 2 * kKinds;
    std::vector<float> all;
    for (int r = 0; r < rows; ++r) {
      std::vector<float> v = awkward_rows(vocab, r % kKinds, rng);
      all.insert(all.end(), v.begin(), v.end());
    }
    Tensor t = make_tensor(*gpu, rows, vocab, all);
    // The device sees bf16: the host reference gets exactly those values.
    std::vector<float> seen = read(*gpu, t);
    std::vector<DeviceSampleParams> p(static_cast<size_t>(rows));  // temperature 0: greedy
    p[1].temperature = -1.0f;                                      // negative is greedy too
    std::vector<int32_t> tok(size_t(rows), -7);
    std::vector<float> prob(size_t(rows), -1.0f);
    gpu->sample(t, p, tok.data(), prob.data());
    for (int r = 0; r < rows; ++r) {
      Sampler host(host_params(p[size_t(r)]));
      const int32_t want = host.sample(seen.data() + size_t(r) * vocab, vocab, {});
      EXPECT_EQ(tok[size_t(r)], want) << "vocab " << vocab << " row " << r << " kind " << r % kKinds;
      EXPECT_EQ(prob[size_t(r)], 1.0f) << "vocab " << vocab << " row " << r;
    }
    gpu->free(t);
  }
}

// The host Sampler's final distribution for row `row` of `seen`.
std::map<int32_t, double> host_dist(const DeviceSampleParams& d, const float* row, int vocab) {
  Sampler host(host_params(d));
  std::map<int32_t, double> m;
  for (const TokenProb& t : host.distribution(row, vocab, {})) m[t.token] = t.prob;
  return m;
}

struct Setting {
  const char* name;
  DeviceSampleParams p;
};
std::vector<Setting> settings() {
  auto mk = [](float t, int k, float tp, float mp) {
    DeviceSampleParams p;
    p.temperature = t;
    p.top_k = k;
    p.top_p = tp;
    p.min_p = mp;
    return p;
  };
  return {{"temperature 0.7 + top_k 40", mk(0.7f, 40, 1.0f, 0.0f)},
          {"top_p 0.9", mk(1.0f, 0, 0.9f, 0.0f)},
          {"min_p 0.05", mk(1.0f, 0, 1.0f, 0.05f)},
          {"all off", mk(1.0f, 0, 1.0f, 0.0f)},
          {"top_k 1", mk(0.8f, 1, 1.0f, 0.0f)},
          {"defaults (t 0.8, k 40, p 0.95, min_p 0.05)", mk(0.8f, 40, 0.95f, 0.05f)},
          {"temperature 1.5 + top_p 0.5 + top_k 200", mk(1.5f, 200, 0.5f, 0.0f)}};
}

// Kernel distribution vs host: same survivors (a host token of probability < 1e-9 may round to
// 0 in the kernel's fixed point), probabilities within 2e-6.
void expect_same_distribution(const std::map<int32_t, double>& host, const float* dev, int vocab,
                              const std::string& what) {
  int shown = 0;
  double sum = 0;
  for (int i = 0; i < vocab; ++i) {
    sum += dev[i];
    auto it = host.find(i);
    const double h = it == host.end() ? 0.0 : it->second;
    const bool ok = (dev[i] > 0) == (h > 0) ? std::fabs(dev[i] - h) <= 2e-6 : (dev[i] == 0 && h < 1e-9);
    if (!ok && shown++ < 5) ADD_FAILURE() << what << ": token " << i << " device p " << dev[i] << ", host p " << h;
  }
  EXPECT_NEAR(sum, 1.0, 1e-4) << what;
}

TEST_F(GpuSample, FinalDistributionMatchesTheHostSampler) {
  std::mt19937 rng(11);
  for (int vocab : {7, 1000, 32000, 128256}) {
    for (const Setting& s : settings()) {
      // Rows of different spreads (a flat row keeps many candidates, a peaked one few), plus
      // and awkward rows: ties at the max, NaNs, +inf, all -inf (greedy), all negative, zeros.
      const int extra[] = {1, 2, 3, 4, 7, 8};
      const int rows = 3 + 6;
      std::vector<float> all;
      for (int r = 0; r < rows; ++r) {
        std::vector<float> v = r < 3 ? random_values(size_t(vocab), 1.0f + 4.0f * r, rng)
                                     : awkward_rows(vocab, extra[r - 3], rng);
        all.insert(all.end(), v.begin(), v.end());
      }
      Tensor t = make_tensor(*gpu, rows, vocab, all);
      std::vector<float> seen = read(*gpu, t);
      std::vector<DeviceSampleParams> p(size_t(rows), s.p);
      for (int r = 0; r < rows; ++r) p[size_t(r)].u = (r + 0.5) / rows;
      std::vector<int32_t> tok(static_cast<size_t>(rows));
      std::vector<float> prob(static_cast<size_t>(rows));
      std::vector<float> dist(size_t(rows) * vocab, -1.0f);
      cuda_sample_with_distribution(*gpu, t, p, tok.data(), prob.data(), dist.data());
      for (int r = 0; r < rows; ++r) {
        const std::string what = std::string(s.name) + ", vocab " + std::to_string(vocab) + ", row " +
                                 std::to_string(r);
        const auto host = host_dist(p[size_t(r)], seen.data() + size_t(r) * vocab, vocab);
        expect_same_distribution(host, dist.data() + size_t(r) * vocab, vocab, what);
        ASSERT_TRUE(host.count(tok[size_t(r)])) << what << ": drew token " << tok[size_t(r)] << ", not a host survivor";
        EXPECT_NEAR(prob[size_t(r)], host.at(tok[size_t(r)]), 2e-6) << what;
      }
      gpu->free(t);
    }
  }
}

// One row repeated with u on a fine grid: each draw must be the u-quantile of the kernel's
// distribution in token-id order, and each survivor's share of the grid its host probability.
TEST_F(GpuSample, DrawsInvertTheDistributionOverAGridOfU) {
  std::mt19937 rng(23);
  const int grid = 4096;
  for (int vocab : {1000, 32000}) {
    for (const Setting& s : settings()) {
      const int rows = vocab <= 1000 ? grid : 256;  // 256 x 32000 bf16 = 16 MB
      std::vector<float> one = random_values(size_t(vocab), 3.0f, rng);
      std::vector<float> all;
      for (int r = 0; r < rows; ++r) all.insert(all.end(), one.begin(), one.end());
      Tensor t = make_tensor(*gpu, rows, vocab, all);
      std::vector<float> seen = read(*gpu, t);
      seen.resize(size_t(vocab));
      std::vector<DeviceSampleParams> p(size_t(rows), s.p);
      for (int r = 0; r < rows; ++r) p[size_t(r)].u = (r + 0.5) / rows;
      std::vector<int32_t> tok(static_cast<size_t>(rows));
      std::vector<float> prob(static_cast<size_t>(rows));
      std::vector<float> dist(size_t(rows) * vocab);
      cuda_sample_with_distribution(*gpu, t, p, tok.data(), prob.data(), dist.data());
      const auto host = host_dist(s.p, seen.data(), vocab);
      const std::string what = std::string(s.name) + ", vocab " + std::to_string(vocab);
      expect_same_distribution(host, dist.data(), vocab, what);
      // Cumulative kernel distribution by id: token i covers [cum[i], cum[i+1]).
      std::vector<double> cum(size_t(vocab) + 1, 0.0);
      for (int i = 0; i < vocab; ++i) cum[size_t(i) + 1] = cum[size_t(i)] + dist[size_t(i)];
      std::map<int32_t, int> hits;
      int bad = 0;
      for (int r = 0; r < rows; ++r) {
        const int32_t k = tok[size_t(r)];
        ASSERT_TRUE(k >= 0 && k < vocab) << what << ": token " << k;
        ++hits[k];
        const double u = p[size_t(r)].u;
        const bool in_set = host.count(k) > 0;
        const bool quantile = u >= cum[size_t(k)] - 1e-5 && u < cum[size_t(k) + 1] + 1e-5;
        if ((!in_set || !quantile) && bad++ < 5)
          ADD_FAILURE() << what << ": u " << u << " drew " << k << " covering [" << cum[size_t(k)] << ", "
                        << cum[size_t(k) + 1] << ")" << (in_set ? "" : ", not a host survivor");
      }
      if (rows == grid) {
        for (const auto& [id, ph] : host) {
          const double share = double(hits.count(id) ? hits.at(id) : 0) / grid;
          EXPECT_NEAR(share, ph, 1e-3) << what << ": token " << id;
        }
      }
      gpu->free(t);
    }
  }
}

TEST_F(GpuSample, RejectsBadSettings) {
  std::mt19937 rng(3);
  Tensor t = make_tensor(*gpu, 2, 100, random_values(200, 1.0f, rng));
  std::vector<int32_t> tok(2);
  std::vector<float> prob(2);
  std::vector<DeviceSampleParams> p(2);
  p[1].temperature = 1.0f;
  p[1].u = 1.0;  // u must be < 1
  EXPECT_THROW(gpu->sample(t, p, tok.data(), prob.data()), Error);
  p[1].u = 0.5;
  p[1].top_p = 0.0f;
  EXPECT_THROW(gpu->sample(t, p, tok.data(), prob.data()), Error);
  p.resize(1);  // one setting for two rows
  EXPECT_THROW(gpu->sample(t, p, tok.data(), prob.data()), Error);
  EXPECT_FALSE(cpu->supports_device_sampling());
  EXPECT_TRUE(gpu->supports_device_sampling());
  gpu->free(t);
}

// Greedy decoding of the tiny synthetic model: device sampling (graphs on, the sample kernel
// after the step's graph) picks exactly the tokens the host path picks from the copied logits.
TEST_F(GpuSample, SyntheticModelGreedyDecodeEqualsTheHostPath) {
  auto file = ModelFile::synthetic("tiny", DType::BF16, 7);
  LlamaModel m(*file, *gpu);
  const int vocab = file->config().vocab_size;
  std::vector<int32_t> prompt = {3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43, 38, 327, 950, 288, 419};
  SequenceRunner dev(m, 256, /*max_step_tokens=*/7), host(m, 256, 7);
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  Sampler dev_s(greedy), host_s(greedy);
  std::vector<int32_t> history = prompt;
  float pd = 0;
  int32_t td = dev.eval_sample(prompt, device_sample_params(dev_s), &pd);
  std::vector<float> lh = host.eval_last(prompt);
  const CudaGraphStats before = cuda_graph_stats(*gpu);
  for (int step = 0; step < 64; ++step) {
    const int32_t th = host_s.sample(lh.data(), vocab, history);
    ASSERT_EQ(td, th) << "step " << step;
    EXPECT_EQ(pd, 1.0f);
    history.push_back(th);
    td = dev.eval_sample({td}, device_sample_params(dev_s), &pd);
    lh = host.eval_last({th});
  }
  const CudaGraphStats after = cuda_graph_stats(*gpu);
  EXPECT_GT(after.replayed, before.replayed) << "decode steps should replay graphs with device sampling";
}

// Sampled (not greedy) decoding on the model: every device token is a survivor of the host
// Sampler's filters for the same logits, and its probability is the host's.
TEST_F(GpuSample, SyntheticModelSampledTokensAreHostSurvivors) {
  auto file = ModelFile::synthetic("tiny", DType::BF16, 9);
  LlamaModel m(*file, *gpu);
  const int vocab = file->config().vocab_size;
  std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8};
  SequenceRunner dev(m, 256), ref(m, 256);
  SamplingParams sp;  // defaults: t 0.8, k 40, p 0.95, min_p 0.05
  sp.seed = 42;
  Sampler s(sp);
  ASSERT_TRUE(s.device_eligible());
  std::vector<float> logits = ref.eval_last(prompt);
  float prob = 0;
  int32_t tok = dev.eval_sample(prompt, device_sample_params(s), &prob);
  for (int step = 0; step < 32; ++step) {
    const auto host = host_dist(DeviceSampleParams{sp.temperature, sp.top_k, sp.top_p, sp.min_p, 0.0}, logits.data(),
                                vocab);
    ASSERT_TRUE(host.count(tok)) << "step " << step << ": token " << tok << " is not a host survivor";
    EXPECT_NEAR(prob, host.at(tok), 2e-6) << "step " << step;
    logits = ref.eval_last({tok});
    tok = dev.eval_sample({tok}, device_sample_params(s), &prob);
  }
}

}  // namespace
}  // namespace greta::gputest
