// The engine on the real default model (CPU backend): batched, chunked, prefix-cached and
// preempted generation must produce exactly the tokens of each request run alone.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "backend/cpu/cpu_backend.h"
#include "greta/engine.h"
#include "model/sequence_runner.h"

namespace greta {
namespace {

std::string default_model() { return std::string(GRETA_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"; }

// Collects every event of every request; wait() blocks until all submitted ones finished.
struct Collector {
  struct Result {
    std::vector<int32_t> tokens;
    std::string text;
    std::vector<TokenEvent> events;
    bool finished = false;
    TokenEvent last;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, Result> results;
  int n_finished = 0;
  std::function<void(const TokenEvent&)> extra;  // runs on the engine thread, after recording

  EventCallback callback() {
    return [this](const TokenEvent& ev) {
      {
        std::lock_guard<std::mutex> lk(mu);
        Result& r = results[ev.request_id];
        EXPECT_FALSE(r.finished) << "event after the finish event";
        if (ev.token >= 0) r.tokens.push_back(ev.token);
        r.text += ev.text;
        r.events.push_back(ev);
        if (ev.finished) {
          r.finished = true;
          r.last = ev;
          ++n_finished;
        }
      }
      cv.notify_all();
      if (extra) extra(ev);
    };
  }
  bool wait(int n, double seconds = 60) {
    std::unique_lock<std::mutex> lk(mu);
    return cv.wait_for(lk, std::chrono::duration<double>(seconds), [&] { return n_finished >= n; });
  }
  Result get(uint64_t id) {
    std::lock_guard<std::mutex> lk(mu);
    return results[id];
  }
};

class EngineGenerate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(default_model())) return;
    file_ = ModelFile::open(default_model()).release();
    backend_ = make_cpu_backend({.n_threads = 2}).release();
    model_ = new LlamaModel(*file_, *backend_);
    tok_ = file_->load_tokenizer().release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete backend_;
    delete tok_;
    delete file_;
    refs_.clear();
  }
  void SetUp() override {
    if (!model_) GTEST_SKIP() << "default model missing: " << default_model();
  }

  static std::vector<int32_t> encode(const std::string& text) { return tok_->encode(text, tok_->add_bos, true); }

  // Greedy generation of one request alone (SequenceRunner, same block size), cached.
  static std::vector<int32_t> reference(const std::vector<int32_t>& prompt, int max_tokens, bool ignore_eos) {
    auto key = std::make_tuple(prompt, max_tokens, ignore_eos);
    auto it = refs_.find(key);
    if (it != refs_.end()) return it->second;
    SequenceRunner run(*model_, int(prompt.size()) + max_tokens + 1, 512, 16);
    SamplingParams sp;
    sp.temperature = 0;
    Sampler sampler(sp);
    std::vector<int32_t> history = prompt, out;
    std::vector<float> logits = run.eval_last(prompt);
    for (int i = 0; i < max_tokens; ++i) {
      const int32_t t = sampler.sample(logits.data(), model_->config().vocab_size, history);
      history.push_back(t);
      out.push_back(t);
      if (!ignore_eos && std::count(tok_->stop_ids.begin(), tok_->stop_ids.end(), t)) break;
      if (i + 1 < max_tokens) logits = run.eval_last({t});
    }
    refs_[key] = out;
    return out;
  }

  static GenerationRequest greedy(const std::vector<int32_t>& prompt, int max_tokens, bool ignore_eos = true) {
    GenerationRequest r;
    r.prompt = prompt;
    r.sampling.temperature = 0;
    r.max_tokens = max_tokens;
    r.ignore_eos = ignore_eos;
    return r;
  }

  static std::vector<std::vector<int32_t>> prompts() {
    const char* texts[] = {
        "The capital of France is",
        "Write a haiku about the sea.",
        "1, 2, 3, 4, 5,",
        "Once upon a time, in a small village at the edge of a dark forest, there lived an old woodcutter "
        "who had three sons. The youngest",
        "def fibonacci(n):",
        "Q: What is the boiling point of water at sea level?\nA:",
        "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick",
        "Hi",
    };
    std::vector<std::vector<int32_t>> out;
    for (const char* t : texts) out.push_back(encode(t));
    return out;
  }

  // Submits every request (half of them after the engine has started stepping) and checks
  // each output against the request run alone.
  void expect_matches_alone(const EngineConfig& cfg, int max_tokens, EngineStats* stats_out = nullptr) {
    std::vector<std::vector<int32_t>> ps = prompts();
    std::vector<std::vector<int32_t>> want;
    for (auto& p : ps) {
      // Greedy without EOS is prefix-stable: one 24-token reference serves every test here.
      std::vector<int32_t> w = reference(p, std::max(24, max_tokens), true);
      want.emplace_back(w.begin(), w.begin() + max_tokens);
    }
    Collector c;
    std::vector<uint64_t> ids;
    {
      Engine engine(*model_, *tok_, cfg);
      for (size_t i = 0; i < ps.size(); ++i) {
        if (i == ps.size() / 2)  // the rest join while the first ones are mid-flight
          while (engine.stats().steps < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        ids.push_back(engine.submit(greedy(ps[i], max_tokens), c.callback()));
      }
      ASSERT_TRUE(c.wait(int(ps.size())));
      EngineStats st = engine.stats();
      EXPECT_EQ(st.kv_blocks_used, 0);
      EXPECT_EQ(st.running, 0);
      EXPECT_EQ(st.waiting, 0);
      EXPECT_EQ(st.finished_requests, int64_t(ps.size()));
      EXPECT_EQ(st.generated_tokens, int64_t(ps.size()) * max_tokens);
      if (stats_out) *stats_out = st;
    }
    for (size_t i = 0; i < ps.size(); ++i) {
      Collector::Result r = c.get(ids[i]);
      EXPECT_EQ(r.tokens, want[i]) << "request " << i;
      EXPECT_EQ(r.last.finish_reason, greta::FinishReason::Length);
      EXPECT_EQ(r.text, tok_->decode(r.tokens)) << "request " << i;
      EXPECT_EQ(int(r.events.size()), max_tokens);  // one event per token, the last one finishing
    }
  }

  static inline ModelFile* file_ = nullptr;
  static inline Backend* backend_ = nullptr;
  static inline LlamaModel* model_ = nullptr;
  static inline Tokenizer* tok_ = nullptr;
  static inline std::map<std::tuple<std::vector<int32_t>, int, bool>, std::vector<int32_t>> refs_;
};

TEST_F(EngineGenerate, ConcurrentGreedyMatchesRunAlone) {
  EngineConfig cfg;
  cfg.kv_blocks = 128;
  EngineStats st;
  expect_matches_alone(cfg, 8, &st);
  EXPECT_EQ(st.preemptions, 0);
  // Batching happened: far fewer steps than tokens generated one request at a time.
  EXPECT_LT(st.steps, 8 * 8);
}

TEST_F(EngineGenerate, ChunkedPrefillUnderSmallBudgetMatches) {
  EngineConfig cfg;
  cfg.kv_blocks = 128;
  cfg.max_step_tokens = 8;  // long prompts take several steps, interleaved with decodes
  cfg.prefill_chunk = 5;
  cfg.max_running = 4;  // the rest wait in the queue
  EngineStats st;
  expect_matches_alone(cfg, 8, &st);
  EXPECT_GE(st.computed_tokens, st.prompt_tokens);
}

TEST_F(EngineGenerate, PreemptionUnderTinyPoolMatches) {
  EngineConfig cfg;
  cfg.kv_blocks = 6;  // 96 tokens for 8 requests of 26..54 tokens: someone must give way
  cfg.block_size = 16;
  EngineStats st;
  expect_matches_alone(cfg, 24, &st);
  EXPECT_GT(st.preemptions, 0);
  // Recomputation: more tokens went through the model than prompt + generated (less the
  // last token of each request, which is sampled but never computed).
  EXPECT_GT(st.computed_tokens, st.prompt_tokens + st.generated_tokens - 8);
}

TEST_F(EngineGenerate, PrefixCacheReusesSystemPromptAndKeepsOutputs) {
  std::string system =
      "<|im_start|>system\nYou are a helpful assistant named Greta. You answer briefly, "
      "precisely and politely, and you never make up facts you do not know.<|im_end|>\n";
  std::vector<int32_t> a = encode(system + "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
  std::vector<int32_t> b = encode(system + "<|im_start|>user\nName a color.<|im_end|>\n<|im_start|>assistant\n");
  std::vector<int32_t> sys_ids = encode(system);
  ASSERT_GE(sys_ids.size(), 32u);
  const int max_tokens = 6;
  Collector c;
  EngineConfig cfg;
  cfg.kv_blocks = 64;
  Engine engine(*model_, *tok_, cfg);
  const uint64_t ia = engine.submit(greedy(a, max_tokens), c.callback());
  ASSERT_TRUE(c.wait(1));
  EXPECT_EQ(engine.stats().prefix_hit_tokens, 0);
  const uint64_t ib = engine.submit(greedy(b, max_tokens), c.callback());
  ASSERT_TRUE(c.wait(2));
  EngineStats st = engine.stats();
  // Every full block of the shared system prompt is reused (blocks of 16 tokens).
  const int64_t shared_blocks = int64_t(sys_ids.size()) / 16;
  EXPECT_GE(st.prefix_hit_tokens, shared_blocks * 16);
  EXPECT_EQ(c.get(ib).last.cached_tokens, st.prefix_hit_tokens);
  EXPECT_GT(st.kv_blocks_cached, 0);
  EXPECT_EQ(st.kv_blocks_used, 0);
  EXPECT_EQ(c.get(ia).tokens, reference(a, max_tokens, true));
  EXPECT_EQ(c.get(ib).tokens, reference(b, max_tokens, true));
}

TEST_F(EngineGenerate, PhaseTimesAccountForTheEngineThread) {
  using Clock = std::chrono::steady_clock;
  auto phases_sum = [](const EngineStats& s) { return s.idle_s + s.schedule_s + s.forward_s + s.sample_s + s.emit_s; };
  std::vector<std::vector<int32_t>> ps = prompts();
  Collector c;
  EngineConfig cfg;
  cfg.kv_blocks = 64;
  const Clock::time_point born = Clock::now();
  Engine engine(*model_, *tok_, cfg);
  for (int i = 0; i < 3; ++i) engine.submit(greedy(ps[i], 4), c.callback());
  ASSERT_TRUE(c.wait(3));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the engine goes back to waiting
  const EngineStats a = engine.stats();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const EngineStats b = engine.stats();
  const double lived = std::chrono::duration<double>(Clock::now() - born).count();
  EXPECT_GT(a.forward_s, 0);
  for (double v : {a.idle_s, a.schedule_s, a.sample_s, a.emit_s}) EXPECT_GE(v, 0);
  // Every phase is charged to one clock started with the engine: together no more than its life.
  EXPECT_LE(phases_sum(b), lived);
  // A wait in progress counts as it happens; nothing else moves while the engine is idle.
  EXPECT_GT(b.idle_s, a.idle_s);
  EXPECT_EQ(b.forward_s, a.forward_s);
  EXPECT_EQ(b.emit_s, a.emit_s);
}

TEST_F(EngineGenerate, EosEndsWithStopAndMaxTokensWithLength) {
  std::vector<int32_t> p = encode("<|im_start|>user\nSay only the word yes.<|im_end|>\n<|im_start|>assistant\n");
  std::vector<int32_t> want = reference(p, 24, false);
  ASSERT_TRUE(!want.empty() && std::count(tok_->stop_ids.begin(), tok_->stop_ids.end(), want.back()))
      << "the model should answer and stop within 24 tokens";
  Collector c;
  Engine engine(*model_, *tok_);
  const uint64_t i1 = engine.submit(greedy(p, 24, false), c.callback());
  const uint64_t i2 = engine.submit(greedy(p, 2, false), c.callback());
  ASSERT_TRUE(c.wait(2));
  Collector::Result r1 = c.get(i1), r2 = c.get(i2);
  EXPECT_EQ(r1.tokens, want);
  EXPECT_EQ(r1.last.finish_reason, greta::FinishReason::Stop);
  EXPECT_EQ(r1.last.token, want.back());
  EXPECT_EQ(r1.last.completion_tokens, int(want.size()));
  EXPECT_EQ(r1.text, tok_->decode(want));  // the stop token adds no text
  EXPECT_EQ(r2.last.finish_reason, greta::FinishReason::Length);
  EXPECT_EQ(r2.tokens.size(), 2u);
}

TEST_F(EngineGenerate, StopStringCutsTextExactly) {
  std::vector<int32_t> p = prompts()[3];
  std::vector<int32_t> full = reference(p, 16, true);
  const std::string text = tok_->decode(full);
  ASSERT_GT(text.size(), 12u);
  // A stop string from the middle of the greedy text, spanning at least two tokens.
  const size_t at = text.size() / 2 - 2;
  const std::string stop = text.substr(at, 5);
  const size_t first = text.find(stop);  // it may occur earlier too: the earliest counts
  GenerationRequest r = greedy(p, 16);
  r.stop = {stop, "\x01never"};
  Collector c;
  Engine engine(*model_, *tok_);
  const uint64_t id = engine.submit(r, c.callback());
  ASSERT_TRUE(c.wait(1));
  Collector::Result res = c.get(id);
  EXPECT_EQ(res.last.finish_reason, greta::FinishReason::Stop);
  EXPECT_EQ(res.text, text.substr(0, first));
  EXPECT_LT(res.tokens.size(), full.size());
  EXPECT_TRUE(std::equal(res.tokens.begin(), res.tokens.end(), full.begin()));
}

TEST_F(EngineGenerate, LogprobsAndSeededSampling) {
  std::vector<int32_t> p = prompts()[0];
  GenerationRequest g = greedy(p, 4);
  g.logprobs = true;
  g.top_logprobs = 3;
  GenerationRequest s = greedy(p, 8);
  s.sampling.temperature = 0.9f;
  s.sampling.seed = 1234;
  Collector c;
  Engine engine(*model_, *tok_);
  const uint64_t ig = engine.submit(g, c.callback());
  const uint64_t s1 = engine.submit(s, c.callback());
  const uint64_t s2 = engine.submit(s, c.callback());
  ASSERT_TRUE(c.wait(3));
  for (const TokenEvent& ev : c.get(ig).events) {
    ASSERT_EQ(ev.top.size(), 3u);
    EXPECT_EQ(ev.top[0].token, ev.token);  // greedy picks the most likely raw token
    EXPECT_FLOAT_EQ(ev.top[0].logprob, ev.logprob);
    EXPECT_LE(ev.logprob, 0.0f);
    EXPECT_GE(ev.top[0].logprob, ev.top[1].logprob);
  }
  EXPECT_EQ(c.get(s1).tokens, c.get(s2).tokens);  // same seed, same tokens, even batched together
}

TEST_F(EngineGenerate, CancelFreesBlocksAtOnce) {
  EngineConfig cfg;
  cfg.kv_blocks = 64;
  cfg.max_running = 1;  // the second request stays queued
  Collector c;
  Engine engine(*model_, *tok_, cfg);
  const uint64_t running = engine.submit(greedy(prompts()[3], 200), c.callback());
  const uint64_t queued = engine.submit(greedy(prompts()[0], 200), c.callback());
  // Cancel from the engine thread itself after the third token: must be safe (no deadlock).
  c.extra = [&](const TokenEvent& ev) {
    if (ev.request_id == running && ev.completion_tokens == 3) engine.cancel(running);
  };
  ASSERT_TRUE(c.wait(1));
  Collector::Result r = c.get(running);
  EXPECT_EQ(r.last.finish_reason, greta::FinishReason::Cancelled);
  EXPECT_GE(r.tokens.size(), 3u);
  EXPECT_LT(r.tokens.size(), 10u);
  EXPECT_TRUE(engine.cancel(queued));
  ASSERT_TRUE(c.wait(2));
  EXPECT_EQ(c.get(queued).last.finish_reason, greta::FinishReason::Cancelled);
  EXPECT_FALSE(engine.cancel(queued));  // already finished
  EXPECT_FALSE(engine.cancel(987654));  // never existed
  EngineStats st = engine.stats();
  EXPECT_EQ(st.kv_blocks_used, 0);
  EXPECT_EQ(st.running, 0);
  EXPECT_EQ(st.waiting, 0);
}

TEST_F(EngineGenerate, QueueLimitRejectsWith429Kind) {
  EngineConfig cfg;
  cfg.kv_blocks = 64;
  cfg.max_running = 1;
  cfg.max_queue = 2;
  Collector c;
  Engine engine(*model_, *tok_, cfg);
  const uint64_t first = engine.submit(greedy(prompts()[0], 200), c.callback());
  while (engine.stats().running < 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  engine.submit(greedy(prompts()[1], 4), c.callback());
  engine.submit(greedy(prompts()[2], 4), c.callback());
  try {
    engine.submit(greedy(prompts()[4], 4), c.callback());
    FAIL() << "the third queued request should be refused";
  } catch (const RequestError& e) {
    EXPECT_EQ(e.kind(), RequestError::Kind::QueueFull) << e.what();
  }
  engine.cancel(first);
  ASSERT_TRUE(c.wait(3));
  // The queue drained: a new request is accepted again.
  engine.submit(greedy(prompts()[4], 2), c.callback());
  ASSERT_TRUE(c.wait(4));
}

TEST_F(EngineGenerate, InvalidRequestsAreRefused) {
  EngineConfig cfg;
  cfg.kv_blocks = 8;  // context = 128 tokens
  Engine engine(*model_, *tok_, cfg);
  EXPECT_EQ(engine.max_context(), 128);
  Collector c;
  auto kind_of = [&](GenerationRequest r) {
    try {
      engine.submit(std::move(r), c.callback());
    } catch (const RequestError& e) {
      return int(e.kind());
    }
    return -1;
  };
  const int invalid = int(RequestError::Kind::Invalid);
  EXPECT_EQ(kind_of(greedy({}, 4)), invalid);                            // empty prompt
  EXPECT_EQ(kind_of(greedy(std::vector<int32_t>(120, 5), 9)), invalid);  // 129 > 128
  EXPECT_EQ(kind_of(greedy({1, 49152}, 4)), invalid);                    // token out of range
  EXPECT_EQ(kind_of(greedy({1, 2}, 0)), invalid);                        // max_tokens 0
  GenerationRequest bad_stop = greedy({1, 2}, 4);
  bad_stop.stop = {""};
  EXPECT_EQ(kind_of(bad_stop), invalid);
  GenerationRequest bad_p = greedy({1, 2}, 4);
  bad_p.sampling.top_p = 2;
  EXPECT_EQ(kind_of(bad_p), invalid);
  EXPECT_EQ(engine.stats().finished_requests, 0);
  EXPECT_THROW(Engine(*model_, *tok_, EngineConfig{.kv_blocks = 0}), Error);
}

TEST_F(EngineGenerate, RequestLargerThanThePoolEndsWithError) {
  EngineConfig cfg;
  cfg.kv_blocks = 3;      // 48 tokens of KV
  cfg.max_context = 200;  // admits more than the pool can ever hold
  Collector c;
  Engine engine(*model_, *tok_, cfg);
  const std::vector<int32_t> p = prompts()[3];  // ~30 tokens
  ASSERT_LT(p.size(), 48u);
  const uint64_t id = engine.submit(greedy(p, 60), c.callback());
  const uint64_t huge = engine.submit(greedy(std::vector<int32_t>(100, 7), 4), c.callback());
  ASSERT_TRUE(c.wait(2));
  Collector::Result r = c.get(id);
  EXPECT_EQ(r.last.finish_reason, greta::FinishReason::Error);
  EXPECT_FALSE(r.last.error.empty());
  // It ran until the pool was full: 48 tokens in the cache, plus the token sampled from the last.
  EXPECT_EQ(int(p.size() + r.tokens.size()), 48 + 1);
  EXPECT_EQ(c.get(huge).last.finish_reason, greta::FinishReason::Error);
  EXPECT_EQ(engine.stats().kv_blocks_used, 0);
}

TEST_F(EngineGenerate, DestructionCancelsEverything) {
  Collector c;
  {
    Engine engine(*model_, *tok_);
    for (int i = 0; i < 3; ++i) engine.submit(greedy(prompts()[i], 500), c.callback());
    while (engine.stats().steps < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(c.n_finished, 3);
  for (auto& [id, r] : c.results) EXPECT_EQ(r.last.finish_reason, greta::FinishReason::Cancelled);
}

}  // namespace
}  // namespace greta

namespace greta {
namespace {

// KV slots are 32-bit: a pool whose blocks x block size would overflow them is refused with the
// product named, never wrapped around.
TEST(EngineConfigValidate, KvSlotsBeyond32BitsAreRefused) {
  EngineConfig cfg;
  cfg.kv_blocks = 1 << 24;
  cfg.block_size = 256;
  try {
    cfg.validate();
    ADD_FAILURE() << "an overflowing KV pool was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("4294967296"), std::string::npos) << e.what();
  }
  cfg.block_size = 16;
  EXPECT_NO_THROW(cfg.validate());
}

}  // namespace
}  // namespace greta
