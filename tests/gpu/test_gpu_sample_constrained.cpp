// Constrained sampling on the GPU (allowed-token bitmasks and logit_bias through
// DeviceSampleParams) against the host Sampler given the same mask and bias:
//  - the final distribution the kernel draws from equals the host's, and greedy rows pick the
//    host's token, for masks from one allowed token to all, rows with and without constraints
//    mixed in one call;
//  - logit_bias: biases of +-100 force and ban tokens; the biased logits are chosen so that
//    logit + bias is exact in bf16 (the kernel rounds the sum to bf16, the host adds in float);
//  - bad constraints (duplicate or out-of-range ids) are refused with greta::Error;
//  - the engine on the GPU: a greedy constrained request sampled on the device gives the host
//    path's tokens (the same request with logprobs samples on the host), and sampled
//    constrained requests in one batch follow their grammars (default model; skips without).
#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>

#include "core/error.h"
#include "gpu_test_util.h"
#include "grammar/gbnf_parser.h"
#include "grammar/json_schema_to_gbnf.h"
#include "grammar/regex_to_gbnf.h"
#include "greta/engine.h"
#include "model/llama.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

namespace greta::gputest {
namespace {

class GpuSampleConstrained : public GpuTest {};

// The host settings of row i; the device gets them through device_sample_params, as the
// engine does.
SamplingParams setting(int i) {
  SamplingParams p{.temperature = 0, .top_k = 0, .top_p = 1, .min_p = 0, .seed = 1};
  switch (i % 5) {
    case 0: break;  // greedy
    case 1: p.temperature = 1.0f; break;
    case 2: p.temperature = 0.7f, p.top_k = 40; break;
    case 3: p.temperature = 1.0f, p.top_p = 0.9f; break;
    case 4: p.temperature = 0.8f, p.top_k = 40, p.top_p = 0.95f, p.min_p = 0.05f; break;
  }
  return p;
}

// A random mask with about `density` of the tokens allowed, and at least one.
std::vector<uint32_t> random_mask(int vocab, double density, std::mt19937& rng) {
  std::vector<uint32_t> m(size_t((vocab + 31) / 32), 0);
  std::uniform_real_distribution<double> u(0, 1);
  for (int t = 0; t < vocab; ++t)
    if (u(rng) < density) m[size_t(t) >> 5] |= 1u << (t & 31);
  const int one = int(rng() % uint32_t(vocab));
  m[size_t(one) >> 5] |= 1u << (one & 31);
  return m;
}

struct RowConstraints {
  std::vector<uint32_t> mask;  // empty: none
  std::vector<int32_t> ids;
  std::vector<float> values;
};

// Runs the rows on the device (distribution hook) and compares every row with the host.
void expect_matches_host(Backend& gpu, int vocab, const std::vector<float>& logits,
                         const std::vector<SamplingParams>& settings, const std::vector<RowConstraints>& c,
                         const std::string& what) {
  const int rows = int(settings.size());
  Tensor t = make_tensor(gpu, rows, vocab, logits);
  std::vector<float> seen = read(gpu, t);
  std::vector<DeviceSampleParams> p;
  for (int r = 0; r < rows; ++r) {
    const RowConstraints& rc = c[size_t(r)];
    Sampler s(settings[size_t(r)]);
    p.push_back(device_sample_params(s));
    p[size_t(r)].u = (r + 0.37) / rows;
    p[size_t(r)].allowed = rc.mask.empty() ? nullptr : rc.mask.data();
    p[size_t(r)].bias_ids = rc.ids.data();
    p[size_t(r)].bias_values = rc.values.data();
    p[size_t(r)].n_bias = int(rc.ids.size());
  }
  std::vector<int32_t> tok(size_t(rows), -7);
  std::vector<float> prob(size_t(rows), -1.0f), dist(size_t(rows) * size_t(vocab), -1.0f);
  cuda_sample_with_distribution(gpu, t, p, tok.data(), prob.data(), dist.data());
  for (int r = 0; r < rows; ++r) {
    const RowConstraints& rc = c[size_t(r)];
    const std::string row = what + ", vocab " + std::to_string(vocab) + ", row " + std::to_string(r);
    Sampler host(settings[size_t(r)]);
    std::vector<std::pair<int32_t, float>> bias;
    for (size_t j = 0; j < rc.ids.size(); ++j) bias.emplace_back(rc.ids[j], rc.values[j]);
    host.set_logit_bias(bias);
    const uint32_t* mask = rc.mask.empty() ? nullptr : rc.mask.data();
    const float* x = seen.data() + size_t(r) * size_t(vocab);
    std::map<int32_t, double> want;
    for (const TokenProb& tp : host.distribution(x, vocab, {}, mask)) want[tp.token] = tp.prob;
    int shown = 0;
    for (int i = 0; i < vocab; ++i) {
      const double d = dist[size_t(r) * size_t(vocab) + size_t(i)];
      auto it = want.find(i);
      const double h = it == want.end() ? 0.0 : it->second;
      const bool ok = (d > 0) == (h > 0) ? std::fabs(d - h) <= 2e-6 : (d == 0 && h < 1e-9);
      if (!ok && shown++ < 5) ADD_FAILURE() << row << ": token " << i << " device p " << d << ", host p " << h;
    }
    ASSERT_TRUE(want.count(tok[size_t(r)])) << row << ": drew " << tok[size_t(r)] << ", not a host survivor";
    if (mask) EXPECT_TRUE((mask[size_t(tok[size_t(r)]) >> 5] >> (tok[size_t(r)] & 31)) & 1u) << row;
    if (!(settings[size_t(r)].temperature > 0)) {
      Sampler greedy(settings[size_t(r)]);
      greedy.set_logit_bias(bias);
      EXPECT_EQ(tok[size_t(r)], greedy.sample_full(x, vocab, {}, -1, mask).token) << row;
    }
  }
  gpu.free(t);
}

TEST_F(GpuSampleConstrained, MaskedDistributionMatchesTheHostSampler) {
  std::mt19937 rng(31);
  const double densities[] = {0.0, 0.001, 0.05, 0.5, 1.0};  // 0: exactly one allowed token
  for (int vocab : {7, 1000, 49152, 128256}) {
    const int rows = 15;
    std::vector<float> all;
    std::vector<SamplingParams> p;
    std::vector<RowConstraints> c(static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r) {
      std::vector<float> v = random_values(size_t(vocab), 2.0f + float(r % 4), rng);
      all.insert(all.end(), v.begin(), v.end());
      p.push_back(setting(r));
      if (r % 3 != 2) c[size_t(r)].mask = random_mask(vocab, densities[r % 5], rng);  // every third: no mask
    }
    expect_matches_host(*gpu, vocab, all, p, c, "mask");
  }
}

TEST_F(GpuSampleConstrained, LogitBiasMatchesTheHostSampler) {
  std::mt19937 rng(37);
  for (int vocab : {7, 1000, 49152}) {
    const int rows = 10;
    std::vector<float> all;
    std::vector<SamplingParams> p;
    std::vector<RowConstraints> c(static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r) {
      std::vector<float> v = random_values(size_t(vocab), 3.0f, rng);
      RowConstraints& rc = c[size_t(r)];
      const int n = std::min(vocab, 1 + r % 4);
      for (int j = 0; j < n; ++j) {
        const int32_t id = int32_t((uint32_t(r) * 7919u + uint32_t(j) * 104729u) % uint32_t(vocab));
        if (std::find(rc.ids.begin(), rc.ids.end(), id) != rc.ids.end()) continue;
        // Integer logits and biases: every sum is an integer of at most 108, exact in bf16.
        v[size_t(id)] = float(int(rng() % 9) - 4);
        const float b = r % 3 == 0 ? 100.0f : r % 3 == 1 ? -100.0f : float(int(rng() % 11) - 5);
        rc.ids.push_back(id);
        rc.values.push_back(b);
      }
      if (r % 4 == 3) rc.mask = random_mask(vocab, 0.3, rng);  // bias and mask together
      all.insert(all.end(), v.begin(), v.end());
      p.push_back(setting(r));
    }
    expect_matches_host(*gpu, vocab, all, p, c, "bias");
  }
}

TEST_F(GpuSampleConstrained, BadConstraintsAreRefused) {
  const int vocab = 100;
  Tensor t = make_tensor(*gpu, 1, vocab, std::vector<float>(size_t(vocab), 0.5f));
  std::vector<DeviceSampleParams> p(1);
  int32_t tok = 0;
  float prob = 0;
  const int32_t twice[] = {3, 3}, outside[] = {vocab};
  const float values[] = {1.0f, 2.0f};
  p[0].bias_ids = twice;
  p[0].bias_values = values;
  p[0].n_bias = 2;
  EXPECT_THROW(gpu->sample(t, p, &tok, &prob), Error);
  p[0].bias_ids = outside;
  p[0].n_bias = 1;
  EXPECT_THROW(gpu->sample(t, p, &tok, &prob), Error);
  p[0].n_bias = 0;  // and the backend still samples afterwards
  gpu->sample(t, p, &tok, &prob);
  EXPECT_GE(tok, 0);
  EXPECT_LT(tok, vocab);
  gpu->free(t);
}

// Every request's tokens, text and finish reason, once all have finished.
struct Finished {
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, TokenEvent> last;
  std::map<uint64_t, std::vector<int32_t>> tokens;
  std::map<uint64_t, std::string> text;
  EventCallback callback() {
    return [this](const TokenEvent& ev) {
      std::lock_guard<std::mutex> lk(mu);
      if (ev.token >= 0) tokens[ev.request_id].push_back(ev.token);
      text[ev.request_id] += ev.text;
      if (ev.finished) last[ev.request_id] = ev;
      cv.notify_all();
    };
  }
  void wait(size_t n) {
    std::unique_lock<std::mutex> lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(120), [&] { return last.size() >= n; }));
  }
};

class GpuEngineConstrained : public GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    const std::string path = std::string(GRETA_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
    if (!std::filesystem::exists(path)) GTEST_SKIP() << "default model missing: " << path;
    file = ModelFile::open(path);
    model = std::make_unique<LlamaModel>(*file, *gpu);
    tok = file->load_tokenizer();
  }
  GenerationRequest request(const std::string& text, std::shared_ptr<const grammar::Grammar> g, float temperature,
                            uint64_t seed) {
    GenerationRequest r;
    r.prompt = tok->encode(text, tok->add_bos, true);
    r.max_tokens = 60;
    r.sampling.temperature = temperature;
    r.sampling.seed = seed;
    r.grammar = std::move(g);
    return r;
  }
  std::unique_ptr<ModelFile> file;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tok;
};

TEST_F(GpuEngineConstrained, GreedyConstrainedDeviceDrawEqualsTheHostPath) {
  const auto g = grammar::parse_gbnf(grammar::json_object_gbnf());
  std::vector<int32_t> got[2];
  for (int host = 0; host < 2; ++host) {  // one request alone per engine: its steps sample one way
    Engine engine(*model, *tok);
    Finished f;
    GenerationRequest r = request("A JSON object describing a cat:", g, 0.0f, 1);
    r.logit_bias = {{28, -100.0f}};  // a ban: the same on both paths whatever the rounding
    r.logprobs = host == 1;          // logprobs keep a step on the host sampler
    const uint64_t id = engine.submit(r, f.callback());
    f.wait(1);
    got[host] = f.tokens[id];
    EXPECT_NE(f.last[id].finish_reason, FinishReason::Error) << f.last[id].error;
  }
  EXPECT_EQ(got[0], got[1]);
}

TEST_F(GpuEngineConstrained, SampledConstrainedRequestsFollowTheirGrammars) {
  Engine engine(*model, *tok);
  Finished f;
  const char* pattern = "(yes|no), [0-9]{2,3}!";
  const auto rx = grammar::parse_gbnf(grammar::regex_to_gbnf_grammar(pattern));
  const auto obj = grammar::parse_gbnf(grammar::json_object_gbnf());
  std::vector<uint64_t> regex_ids, json_ids;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    regex_ids.push_back(engine.submit(request("Is it raining?", rx, 1.0f, seed), f.callback()));
    json_ids.push_back(engine.submit(request("A JSON object:", obj, 1.0f, seed), f.callback()));
  }
  f.wait(8);
  for (uint64_t id : regex_ids) {
    EXPECT_EQ(f.last[id].finish_reason, FinishReason::Stop) << f.last[id].error;
    EXPECT_TRUE(std::regex_match(f.text[id], std::regex(pattern))) << f.text[id];
  }
  for (uint64_t id : json_ids) {
    const FinishReason why = f.last[id].finish_reason;
    ASSERT_TRUE(why == FinishReason::Stop || why == FinishReason::Length) << f.last[id].error;
    if (why == FinishReason::Stop) {
      EXPECT_TRUE(nlohmann::json::parse(f.text[id]).is_object()) << f.text[id];
    }
  }
}

}  // namespace
}  // namespace greta::gputest
