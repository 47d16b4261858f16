// The engine on the GPU, where steps whose requests are all eligible sample on the device:
// a greedy request must produce the host path's tokens (same model, same backend), a seeded
// sampled request must repeat itself, and steps that mix in a request with penalties or
// logprobs (host sampling) must still serve every request. Needs the default model (skips
// without it, and without a GPU).
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>

#include "gpu_test_util.h"
#include "greta/engine.h"
#include "model/llama.h"
#include "model/sequence_runner.h"
#include "tokenizer/tokenizer.h"

namespace greta::gputest {
namespace {

std::string default_model() { return std::string(GRETA_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"; }

struct Outputs {
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, std::vector<TokenEvent>> events;
  int finished = 0;
  EventCallback callback() {
    return [this](const TokenEvent& ev) {
      {
        std::lock_guard<std::mutex> lk(mu);
        events[ev.request_id].push_back(ev);
        finished += ev.finished;
      }
      cv.notify_all();
    };
  }
  bool wait(int n) {
    std::unique_lock<std::mutex> lk(mu);
    return cv.wait_for(lk, std::chrono::seconds(120), [&] { return finished >= n; });
  }
  std::vector<int32_t> tokens(uint64_t id) {
    std::lock_guard<std::mutex> lk(mu);
    std::vector<int32_t> t;
    for (const TokenEvent& e : events[id])
      if (e.token >= 0) t.push_back(e.token);
    return t;
  }
  TokenEvent last(uint64_t id) {
    std::lock_guard<std::mutex> lk(mu);
    return events[id].back();
  }
};

class GpuEngineSample : public GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    if (!std::filesystem::exists(default_model())) GTEST_SKIP() << "default model missing: " << default_model();
    file = ModelFile::open(default_model());
    model = std::make_unique<LlamaModel>(*file, *gpu);
    tok = file->load_tokenizer();
  }
  GenerationRequest request(const std::string& text, int max_tokens, float temperature, uint64_t seed) {
    GenerationRequest r;
    r.prompt = tok->encode(text, tok->add_bos, true);
    r.max_tokens = max_tokens;
    r.ignore_eos = true;
    r.sampling.temperature = temperature;
    r.sampling.seed = seed;
    return r;
  }
  std::unique_ptr<ModelFile> file;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tok;
};

TEST_F(GpuEngineSample, GreedyRequestEqualsTheHostPath) {
  GenerationRequest r = request("The capital of France is", 24, 0.0f, 1);
  // Host path: the same model on the same GPU, logits copied back, host Sampler.
  std::vector<int32_t> want;
  {
    SequenceRunner run(*model, int(r.prompt.size()) + r.max_tokens + 1, 512, 16);
    Sampler s(r.sampling);
    std::vector<int32_t> history = r.prompt;
    std::vector<float> logits = run.eval_last(r.prompt);
    for (int i = 0; i < r.max_tokens; ++i) {
      want.push_back(s.sample(logits.data(), model->config().vocab_size, history));
      history.push_back(want.back());
      if (i + 1 < r.max_tokens) logits = run.eval_last({want.back()});
    }
  }
  Outputs out;
  Engine e(*model, *tok);
  const uint64_t id = e.submit(r, out.callback());
  ASSERT_TRUE(out.wait(1));
  EXPECT_EQ(out.tokens(id), want);
  EXPECT_EQ(out.last(id).finish_reason, greta::FinishReason::Length);
}

TEST_F(GpuEngineSample, SeededSamplingRepeatsAndMixedStepsServeEveryone) {
  GenerationRequest sampled = request("Once upon a time", 32, 0.8f, 1234);  // defaults: top-k/p, min-p
  std::vector<int32_t> first;
  for (int run = 0; run < 2; ++run) {
    Outputs out;
    Engine e(*model, *tok);
    const uint64_t id = e.submit(sampled, out.callback());
    ASSERT_TRUE(out.wait(1));
    const std::vector<int32_t> got = out.tokens(id);
    ASSERT_EQ(got.size(), 32u);
    for (int32_t t : got) EXPECT_TRUE(t >= 0 && t < model->config().vocab_size);
    if (run == 0) first = got;
    else EXPECT_EQ(got, first) << "the same seed must give the same tokens";
  }
  // Together with a request that has a penalty and one that wants logprobs: those steps
  // sample on the host; every request still gets all its tokens.
  GenerationRequest pen = request("def fibonacci(n):", 16, 0.7f, 7);
  pen.sampling.repeat_penalty = 1.2f;
  GenerationRequest lp = request("1, 2, 3,", 16, 0.0f, 1);
  lp.logprobs = true;
  Outputs out;
  Engine e(*model, *tok);
  const uint64_t a = e.submit(sampled, out.callback()), b = e.submit(pen, out.callback()),
                 c = e.submit(lp, out.callback());
  ASSERT_TRUE(out.wait(3));
  EXPECT_EQ(out.tokens(a).size(), 32u);
  EXPECT_EQ(out.tokens(b).size(), 16u);
  EXPECT_EQ(out.tokens(c).size(), 16u);
  std::lock_guard<std::mutex> lk(out.mu);
  for (const TokenEvent& ev : out.events[c])
    if (ev.token >= 0) EXPECT_TRUE(std::isfinite(ev.logprob) && ev.logprob <= 0.0f);
}

}  // namespace
}  // namespace greta::gputest
