// The ragged batch: several sequences, prompt chunks and decode tokens mixed in one step over a
// shared paged KV cache, must give the same logits as each sequence run alone.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "model/sequence_runner.h"

namespace greta {
namespace {

std::string default_model() { return std::string(GRETA_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf"; }

class ModelBatch : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(default_model())) GTEST_SKIP() << "default model missing: " << default_model();
    file = ModelFile::open(default_model());
    backend = make_cpu_backend({.n_threads = 2});
    model = std::make_unique<LlamaModel>(*file, *backend);
  }
  std::unique_ptr<ModelFile> file;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LlamaModel> model;
};

std::vector<int32_t> tokens(int n, int seed) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = int32_t((7919LL * (i + 1) * (seed + 3)) % 49152);
  return t;
}

TEST_F(ModelBatch, RaggedBatchMatchesSequencesRunAlone) {
  const int vocab = model->config().vocab_size;
  // Three sequences: A (7-token prompt), B (20-token prompt, prefilled in two chunks), C (3 tokens).
  std::vector<std::vector<int32_t>> prompt = {tokens(7, 0), tokens(20, 1), tokens(3, 2)};
  std::vector<int32_t> next = {11, 22, 33};  // one decode token each for A and C
  // Reference: each alone, logits for every prompt token, then the decode token. Same block
  // size as the batched run, so the attention sums in the same order and the results must be
  // bit-identical: the block tables and the batch composition only change addresses. (With
  // 8-bit quantized activations, a different summation order flips roundings and moves logits
  // by tenths, which would hide real bugs behind a loose tolerance.)
  const int bs = 4;
  std::vector<std::vector<float>> ref(3), ref_next(3);
  for (int s = 0; s < 3; ++s) {
    SequenceRunner r(*model, 64, 512, bs);
    std::vector<int32_t> want;
    for (int i = 0; i < int(prompt[s].size()); ++i) want.push_back(i);
    ref[s] = r.eval(prompt[s], want);
    ref_next[s] = r.eval_last({next[s]});
  }
  // Batched: blocks from one pool, handed out in reverse so tables are not contiguous.
  auto kv = model->make_kv(32, bs);
  std::vector<std::vector<int32_t>> table(3);
  int next_block = 31;
  auto grow = [&](int s, int len) {
    while (int(table[s].size()) * bs < len) table[s].push_back(next_block--);
  };
  auto add_seq = [&](Batch& b, int s, const std::vector<int32_t>& toks, int n_past) {
    SeqSlice q;
    q.token_begin = b.n_tokens();
    q.n_tokens = int(toks.size());
    q.n_past = n_past;
    grow(s, n_past + q.n_tokens);
    q.block_table = table[s];
    for (int i = 0; i < q.n_tokens; ++i) b.logit_rows.push_back(q.token_begin + i);
    b.tokens.insert(b.tokens.end(), toks.begin(), toks.end());
    b.seqs.push_back(q);
  };
  // Step 1: A's prompt, B's first 12 tokens, C's prompt.
  Batch b1;
  add_seq(b1, 0, prompt[0], 0);
  add_seq(b1, 1, std::vector<int32_t>(prompt[1].begin(), prompt[1].begin() + 12), 0);
  add_seq(b1, 2, prompt[2], 0);
  std::vector<float> out1(b1.logit_rows.size() * vocab);
  model->forward(b1, *kv, LlamaModel::HostLogits{out1.data()});
  // Step 2: A decodes, B's remaining 8 prompt tokens, C decodes.
  Batch b2;
  add_seq(b2, 0, {next[0]}, 7);
  add_seq(b2, 1, std::vector<int32_t>(prompt[1].begin() + 12, prompt[1].end()), 12);
  add_seq(b2, 2, {next[2]}, 3);
  std::vector<float> out2(b2.logit_rows.size() * vocab);
  model->forward(b2, *kv, LlamaModel::HostLogits{out2.data()});

  double worst = 0;
  int row = 0;
  auto cmp = [&](const float* a, const float* b) {
    double w = 0;
    for (int v = 0; v < vocab; ++v) w = std::max(w, double(std::fabs(a[v] - b[v])));
    if (w > 1e-5) ADD_FAILURE() << "row " << row << " differs by " << w;
    ++row;
    worst = std::max(worst, w);
  };
  // step 1 rows: A 0..6, B 0..11, C 0..2
  for (int i = 0; i < 7; ++i) cmp(out1.data() + size_t(i) * vocab, ref[0].data() + size_t(i) * vocab);
  for (int i = 0; i < 12; ++i) cmp(out1.data() + size_t(7 + i) * vocab, ref[1].data() + size_t(i) * vocab);
  for (int i = 0; i < 3; ++i) cmp(out1.data() + size_t(19 + i) * vocab, ref[2].data() + size_t(i) * vocab);
  // step 2 rows: A next, B 12..19, C next
  cmp(out2.data(), ref_next[0].data());
  for (int i = 0; i < 8; ++i) cmp(out2.data() + size_t(1 + i) * vocab, ref[1].data() + size_t(12 + i) * vocab);
  cmp(out2.data() + size_t(9) * vocab, ref_next[2].data());
  EXPECT_LT(worst, 1e-5) << "batched logits differ from single-sequence logits";
}

TEST_F(ModelBatch, ContextOverflowAndBadTokensAreErrors) {
  SequenceRunner r(*model, 8);
  EXPECT_THROW(r.eval(tokens(9, 0), {8}), Error);
  EXPECT_THROW(r.eval({49152}, {0}), Error);
  EXPECT_THROW(r.eval({-1}, {0}), Error);
  EXPECT_EQ(r.n_past(), 0);
}

TEST(ModelFileErrors, MissingAndUnsupportedModelsAreClearErrors) {
  namespace fs = std::filesystem;
  EXPECT_THROW(ModelFile::open("/nonexistent/model.gguf"), Error);
  fs::path dir = fs::temp_directory_path() / "greta_test_unsupported_arch";
  fs::create_directories(dir);
  {
    std::FILE* f = std::fopen((dir / "config.json").c_str(), "w");
    std::fputs(R"({"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox"})", f);
    std::fclose(f);
  }
  try {
    ModelFile::open(dir.string());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported architecture"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("qwen2"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(RopeScaling, Llama3FactorsKeepHighAndSlowLowFrequencies) {
  // Llama 3.1 8B settings: theta 500000, factor 8, low 1, high 4, original 8192.
  std::vector<float> f = llama3_rope_factors(128, 500000.0f, 8.0f, 1.0f, 4.0f, 8192);
  ASSERT_EQ(f.size(), 64u);
  EXPECT_FLOAT_EQ(f[0], 1.0f);                                      // wavelength 2*pi: far below 8192/4
  EXPECT_FLOAT_EQ(f[63], 8.0f);                                     // longest wavelengths: slowed by the full factor
  for (size_t i = 1; i < f.size(); ++i) EXPECT_GE(f[i], f[i - 1]);  // monotone in between
}

}  // namespace
}  // namespace greta
