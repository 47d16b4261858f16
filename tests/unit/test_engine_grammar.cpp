// Constrained generation in the engine on the default model (CPU backend): outputs follow
// their grammar (checked with std::regex and a JSON parser), a grammar that is complete ends
// the request by itself (Stop, even with ignore_eos), one that cannot finish in max_tokens
// ends by Length, and constrained and free requests share steps without affecting each other.
#include <gtest/gtest.h>

#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>

#include "backend/cpu/cpu_backend.h"
#include "engine/grammar_state.h"
#include "grammar/gbnf_parser.h"
#include "grammar/json_schema_to_gbnf.h"
#include "grammar/regex_to_gbnf.h"
#include "greta/engine.h"
#include "model/llama.h"
#include "model/model_file.h"

namespace greta {
namespace {

std::string default_model() { return std::string(GRETA_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"; }

struct Outcome {
  std::string text;
  int tokens = 0;
  FinishReason reason = FinishReason::None;
  std::string error;
};

// Runs requests together through one engine and returns each one's outcome.
class Runs {
 public:
  explicit Runs(Engine& e) : engine_(e) {}
  uint64_t submit(GenerationRequest r) {
    return engine_.submit(std::move(r), [this](const TokenEvent& ev) {
      std::lock_guard<std::mutex> lk(mu_);
      Outcome& o = out_[ev.request_id];
      o.text += ev.text;
      o.tokens = ev.completion_tokens;
      if (ev.finished) {
        o.reason = ev.finish_reason;
        o.error = ev.error;
        ++done_;
        cv_.notify_all();
      }
    });
  }
  std::map<uint64_t, Outcome> wait(int n) {
    std::unique_lock<std::mutex> lk(mu_);
    EXPECT_TRUE(cv_.wait_for(lk, std::chrono::seconds(120), [&] { return done_ >= n; }));
    return out_;
  }

 private:
  Engine& engine_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Outcome> out_;
  int done_ = 0;
};

// The default model on the CPU backend, loaded once for the whole binary run (null: missing).
struct DefaultModel {
  std::unique_ptr<ModelFile> file;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tok;
  static const DefaultModel* get() {
    static const std::unique_ptr<DefaultModel> m = []() -> std::unique_ptr<DefaultModel> {
      if (!std::filesystem::exists(default_model())) return nullptr;
      auto d = std::make_unique<DefaultModel>();
      d->file = ModelFile::open(default_model());
      d->backend = make_cpu_backend({.n_threads = 2});
      d->model = std::make_unique<LlamaModel>(*d->file, *d->backend);
      d->tok = d->file->load_tokenizer();
      return d;
    }();
    return m.get();
  }
};

class EngineGrammar : public ::testing::Test {
 protected:
  void SetUp() override {
    const DefaultModel* d = DefaultModel::get();
    if (!d) GTEST_SKIP() << "default model missing: " << default_model();
    model_ = d->model.get();
    tok_ = d->tok.get();
  }

  GenerationRequest request(const std::string& prompt, std::shared_ptr<const grammar::Grammar> g, float temperature,
                            uint64_t seed, int max_tokens) const {
    GenerationRequest r;
    r.prompt = tok_->encode(prompt, tok_->add_bos, true);
    r.sampling.temperature = temperature;
    r.sampling.seed = seed;
    r.max_tokens = max_tokens;
    r.grammar = std::move(g);
    return r;
  }

  LlamaModel* model_ = nullptr;
  const Tokenizer* tok_ = nullptr;
};

TEST_F(EngineGrammar, ConstrainedAndFreeRequestsShareStepsAndFollowTheirGrammars) {
  Engine engine(*model_, *tok_);
  Runs runs(engine);
  const char* pattern = "(yes|no), [0-9]{2,3}!";
  const auto rx = grammar::parse_gbnf(grammar::regex_to_gbnf_grammar(pattern));
  const auto obj = grammar::parse_gbnf(grammar::json_object_gbnf());
  std::vector<uint64_t> regex_ids, json_ids;
  for (uint64_t seed = 1; seed <= 3; ++seed)
    regex_ids.push_back(runs.submit(request("Answer the question: is it raining?", rx, 1.0f, seed, 30)));
  json_ids.push_back(runs.submit(request("A JSON object describing a cat:", obj, 0.0f, 1, 120)));
  json_ids.push_back(runs.submit(request("{\"name\":", obj, 1.0f, 7, 120)));
  const uint64_t free_id = runs.submit(request("The capital of France is", nullptr, 0.0f, 1, 12));
  const auto out = runs.wait(6);
  for (uint64_t id : regex_ids) {
    const Outcome& o = out.at(id);
    EXPECT_EQ(o.reason, FinishReason::Stop) << o.text << " " << o.error;
    EXPECT_TRUE(std::regex_match(o.text, std::regex(pattern))) << o.text;
  }
  for (uint64_t id : json_ids) {
    const Outcome& o = out.at(id);
    ASSERT_TRUE(o.reason == FinishReason::Stop || o.reason == FinishReason::Length) << o.error;
    if (o.reason == FinishReason::Stop) {
      EXPECT_TRUE(nlohmann::json::parse(o.text).is_object()) << o.text;
    }
  }
  EXPECT_EQ(out.at(free_id).reason, FinishReason::Length);
  EXPECT_EQ(out.at(free_id).tokens, 12);
}

TEST_F(EngineGrammar, ACompleteGrammarStopsEvenWithIgnoreEos) {
  Engine engine(*model_, *tok_);
  Runs runs(engine);
  // After "ok" the grammar may end (a stop token) or take one space, then nothing can follow.
  GenerationRequest r = request("Say ok:", grammar::parse_gbnf("root ::= \"ok\" \" \"?"), 0.0f, 1, 10);
  r.ignore_eos = true;
  const uint64_t id = runs.submit(std::move(r));
  const Outcome o = runs.wait(1).at(id);
  EXPECT_EQ(o.reason, FinishReason::Stop);
  EXPECT_TRUE(o.text == "ok" || o.text == "ok ") << o.text;
  EXPECT_LE(o.tokens, 3);
}

TEST_F(EngineGrammar, AGrammarThatCannotFinishInTimeEndsByLength) {
  Engine engine(*model_, *tok_);
  Runs runs(engine);
  const uint64_t id = runs.submit(request("Letters:", grammar::parse_gbnf("root ::= \"a\"{200}"), 1.0f, 3, 5));
  const Outcome o = runs.wait(1).at(id);
  EXPECT_EQ(o.reason, FinishReason::Length);
  EXPECT_EQ(o.tokens, 5);
  EXPECT_EQ(o.text.find_first_not_of('a'), std::string::npos) << o.text;
}

TEST_F(EngineGrammar, LogitBiasOutsideTheVocabularyIsRefused) {
  Engine engine(*model_, *tok_);
  GenerationRequest r = request("x", nullptr, 0.0f, 1, 2);
  r.logit_bias = {{model_->config().vocab_size, 1.0f}};
  EXPECT_THROW(engine.submit(r, [](const TokenEvent&) {}), RequestError);
  r.logit_bias = {{3, 1.0f}, {3, 2.0f}};
  EXPECT_THROW(engine.submit(r, [](const TokenEvent&) {}), RequestError);
}

TEST_F(EngineGrammar, StateAllowsTheEndOnlyWhereTheGrammarCanEnd) {
  const int vocab = model_->config().vocab_size;
  GrammarState st(grammar::parse_gbnf("root ::= \"ab\" \"c\"?"), grammar_vocabulary(*tok_, vocab));
  ASSERT_FALSE(tok_->stop_ids.empty());
  const int32_t end = tok_->stop_ids[0];
  auto allows = [&](int32_t t) { return grammar::mask_allows(st.mask(), t); };
  st.compute_mask();
  EXPECT_FALSE(allows(end));
  for (int32_t t : tok_->encode("ab", false, false)) ASSERT_TRUE(st.accept(t));
  st.compute_mask();
  EXPECT_TRUE(allows(end));
  EXPECT_TRUE(st.can_end());
  EXPECT_FALSE(st.finished());  // "c" may still follow
  const std::vector<int32_t> c = tok_->encode("c", false, false);
  ASSERT_EQ(c.size(), 1u);
  EXPECT_TRUE(allows(c[0]));
  ASSERT_TRUE(st.accept(c[0]));
  EXPECT_TRUE(st.finished());
  EXPECT_FALSE(st.accept(c[0]));  // nothing more is accepted
}

}  // namespace
}  // namespace greta
