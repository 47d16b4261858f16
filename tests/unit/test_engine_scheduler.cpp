// Scheduler alone (no model): random workloads over small pools must respect the budget and
// the KV accounting every step, always make progress, and fail only requests that cannot fit.
#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <set>

#include "engine/scheduler.h"
#include "model/model_file.h"

namespace greta {
namespace {

std::string default_model() { return std::string(GRETA_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"; }

class EngineScheduler : public ::testing::Test {
 protected:
  void SetUp() override {
    // A Sequence carries a StreamDecoder, which needs a tokenizer; nothing here decodes.
    if (!std::filesystem::exists(default_model())) GTEST_SKIP() << "default model missing: " << default_model();
    tok = ModelFile::open(default_model())->load_tokenizer();
  }
  std::unique_ptr<Sequence> seq(uint64_t id, int prompt_len, int max_tokens) {
    GenerationRequest r;
    for (int i = 0; i < prompt_len; ++i) r.prompt.push_back(int32_t((id * 131 + uint64_t(i) * 7) % 500));
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0;
    return std::make_unique<Sequence>(
        id, std::move(r), [](const TokenEvent&) {}, *tok);
  }
  static EngineConfig config(int kv_blocks, int block_size, int max_step_tokens, int prefill_chunk) {
    EngineConfig cfg;
    cfg.kv_blocks = kv_blocks;
    cfg.block_size = block_size;
    cfg.max_step_tokens = max_step_tokens;
    cfg.prefill_chunk = prefill_chunk;
    return cfg;
  }
  std::unique_ptr<Tokenizer> tok;
};

TEST_F(EngineScheduler, DecodeFirstThenChunksWithinBudget) {
  const EngineConfig cfg = config(64, 4, 10, 6);
  Scheduler s(cfg);
  s.enqueue(seq(1, 3, 5));
  ScheduledStep a = s.schedule();  // request 1 prefills alone
  ASSERT_EQ(a.seqs.size(), 1u);
  EXPECT_EQ(a.batch.n_tokens(), 3);
  ASSERT_EQ(a.sampled.size(), 1u);
  s.commit(a);
  a.sampled[0]->tokens.push_back(42);
  s.enqueue(seq(2, 20, 5));
  ScheduledStep b = s.schedule();  // 1 decodes, 2 gets a 6-token chunk (prefill_chunk)
  ASSERT_EQ(b.seqs.size(), 2u);
  EXPECT_EQ(b.batch.seqs[0].n_tokens, 1);
  EXPECT_EQ(b.batch.seqs[0].n_past, 3);
  EXPECT_EQ(b.batch.seqs[1].n_tokens, 6);
  ASSERT_EQ(b.sampled.size(), 1u);  // only the decode row needs logits
  EXPECT_EQ(b.batch.logit_rows, std::vector<int32_t>{0});
  s.commit(b);
  b.sampled[0]->tokens.push_back(43);
  ScheduledStep c = s.schedule();  // 1 decodes, 2 continues with 6 more
  ASSERT_EQ(c.seqs.size(), 2u);
  EXPECT_EQ(c.batch.seqs[1].n_past, 6);
  EXPECT_EQ(c.batch.seqs[1].n_tokens, 6);
}

// Head of line: a short request that arrives behind a long prompt being prefilled gets its
// whole prompt, hence its first token, in the next step; the long prompt keeps the rest of
// every step, and alone it fills the whole budget again.
TEST_F(EngineScheduler, ShortRequestIsNotBlockedByLongPrompt) {
  const EngineConfig cfg = config(256, 16, 64, 64);
  Scheduler s(cfg);
  s.enqueue(seq(1, 2000, 4));
  ScheduledStep a = s.schedule();  // the long prompt alone takes the whole budget
  ASSERT_EQ(a.seqs.size(), 1u);
  EXPECT_EQ(a.batch.n_tokens(), 64);
  s.commit(a);
  s.enqueue(seq(2, 6, 4));
  ScheduledStep b = s.schedule();
  ASSERT_EQ(b.seqs.size(), 2u);
  EXPECT_EQ(b.seqs[1]->id, 2u);
  EXPECT_EQ(b.batch.seqs[1].n_tokens, 6);  // the whole short prompt...
  ASSERT_EQ(b.sampled.size(), 1u);         // ...so it samples its first token now
  EXPECT_EQ(b.sampled[0]->id, 2u);
  EXPECT_EQ(b.batch.n_tokens(), 64);  // the long prompt took what the short one left
  s.commit(b);
  b.sampled[0]->tokens.push_back(7);
  ScheduledStep c = s.schedule();  // the short one decodes, the long one takes the rest
  ASSERT_EQ(c.seqs.size(), 2u);
  EXPECT_EQ(c.seqs[0]->id, 2u);
  EXPECT_EQ(c.batch.seqs[0].n_tokens, 1);
  EXPECT_EQ(c.batch.n_tokens(), 64);
  s.commit(c);
  s.remove(2);
  ScheduledStep d = s.schedule();
  EXPECT_EQ(d.batch.n_tokens(), 64);
}

// Several short requests queued behind two long prompts all get their first token within a
// few steps, long before the long prompts are done.
TEST_F(EngineScheduler, ShortRequestsFirstTokensBoundedBehindLongPrompts) {
  const EngineConfig cfg = config(1024, 16, 512, 512);
  Scheduler s(cfg);
  s.enqueue(seq(1, 8000, 4));
  s.enqueue(seq(2, 6000, 4));
  s.commit(s.schedule());
  for (uint64_t id = 3; id <= 6; ++id) s.enqueue(seq(id, 6 + int(id), 4));
  std::map<uint64_t, int> first_token_step;
  for (int step = 1; step <= 8; ++step) {
    ScheduledStep st = s.schedule();
    EXPECT_LE(st.batch.n_tokens(), cfg.max_step_tokens);
    s.commit(st);
    for (Sequence* q : st.sampled) {
      if (!first_token_step.count(q->id)) first_token_step[q->id] = step;
      q->tokens.push_back(1);
    }
  }
  for (uint64_t id = 3; id <= 6; ++id) {
    ASSERT_TRUE(first_token_step.count(id)) << "request " << id << " got no first token in 8 steps";
    EXPECT_LE(first_token_step[id], 2) << "request " << id;
  }
  EXPECT_FALSE(first_token_step.count(1));  // the long prompts are still being computed
}

TEST_F(EngineScheduler, RandomWorkloadsNeverStallAndKeepAccounting) {
  std::mt19937 rng(7);
  int64_t preemptions = 0, n_failed = 0, n_finished = 0;
  for (int trial = 0; trial < 40; ++trial) {
    EngineConfig cfg;
    cfg.block_size = 1 + int(rng() % 8);
    cfg.kv_blocks = 2 + int(rng() % 20);
    cfg.max_step_tokens = 4 + int(rng() % 30);
    cfg.max_running = 1 + int(rng() % std::min(cfg.max_step_tokens, 8));
    cfg.prefill_chunk = 1 + int(rng() % 16);
    Scheduler s(cfg);
    const int pool_tokens = cfg.kv_blocks * cfg.block_size;
    std::map<uint64_t, std::pair<int, int>> shape;  // id -> (prompt, max_tokens)
    const int n_req = 3 + int(rng() % 8);
    uint64_t next = 1;
    std::set<uint64_t> finished, failed;
    for (int step = 0; step < 5000 && int(finished.size() + failed.size()) < n_req; ++step) {
      if (next <= uint64_t(n_req) && rng() % 3 == 0) {  // arrivals between steps
        const int p = 1 + int(rng() % 40), m = 1 + int(rng() % 20);
        shape[next] = {p, m};
        s.enqueue(seq(next++, p, m));
      }
      ScheduledStep st = s.schedule();
      for (auto& f : st.failed) {
        // Only a request that cannot fit alone may fail: it needs a cache slot for every
        // token before its last one.
        const auto [p, m] = shape[f->id];
        EXPECT_GT(p + m - 1, pool_tokens) << "trial " << trial << " failed request " << f->id << " that fits";
        failed.insert(f->id);
      }
      if (st.empty()) {
        // Progress: a step that computes nothing must at least fail someone, or have no work.
        EXPECT_TRUE(!st.failed.empty() || (s.n_running() == 0 && s.n_waiting() == 0))
            << "empty step with work left, trial " << trial;
        continue;
      }
      EXPECT_LE(st.batch.n_tokens(), cfg.max_step_tokens);
      EXPECT_LE(s.n_running(), cfg.max_running);
      EXPECT_LE(s.pool().n_used(), s.pool().n_blocks());
      std::set<Sequence*> seen(st.seqs.begin(), st.seqs.end());
      EXPECT_EQ(seen.size(), st.seqs.size()) << "a sequence twice in one step";
      for (size_t i = 0; i < st.seqs.size(); ++i) {
        const SeqSlice& q = st.batch.seqs[i];
        EXPECT_EQ(q.n_past, st.seqs[i]->n_computed);
        EXPECT_GE(int(q.block_table.size()) * cfg.block_size, q.n_past + q.n_tokens);
      }
      s.commit(st);
      for (Sequence* q : st.sampled) {
        q->tokens.push_back(int32_t(q->tokens.size() % 500));
        if (q->n_generated() >= q->req.max_tokens) {
          finished.insert(q->id);
          s.remove(q->id);
        }
      }
    }
    EXPECT_EQ(int(finished.size() + failed.size()), n_req) << "trial " << trial << " did not finish";
    EXPECT_EQ(s.pool().n_used(), 0);
    EXPECT_EQ(s.pool().n_free(), s.pool().n_blocks());
    preemptions += s.preemptions();
    n_failed += int64_t(failed.size());
    n_finished += int64_t(finished.size());
  }
  // The workloads must have exercised every path.
  EXPECT_GT(preemptions, 0);
  EXPECT_GT(n_failed, 0);
  EXPECT_GT(n_finished, n_failed);
  std::printf("[ info ] %lld finished, %lld failed (too big for the pool), %lld preemptions\n", (long long)n_finished,
              (long long)n_failed, (long long)preemptions);
}

}  // namespace
}  // namespace greta
