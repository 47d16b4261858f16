// Mixture-of-experts models at load (GGUF "qwen3moe", and "llama" with experts: Mixtral): the
// expert hyper-parameters as llama.cpp reads them, its stacked expert tensors cut into one view
// per expert, what is refused; a backend without the expert ops refuses the model; the bytes a
// decode step reads count only the active experts; a prompt step and token-by-token decode agree.
// The forward is checked against llama.cpp and transformers in tests/e2e/test_moe.py.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <optional>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "cpu_delegate_test_util.h"
#include "formats/gguf.h"
#include "formats_test_util.h"
#include "model/llama.h"
#include "model/model_file.h"
#include "model/sequence_runner.h"
#include "model/synthetic.h"
#include "model_gguf_test_util.h"

namespace greta {
namespace {

using test::GGUFBuilder;
using test::TempDir;

constexpr uint32_t kF32 = 0;

struct MoeFile {
  std::string arch = "qwen3moe";
  std::optional<uint32_t> experts = 4, used = 2, expert_ffn = 8;
  uint32_t ffn = 24;  // feed_forward_length: Mixtral's experts' size
  std::optional<bool> weights_norm;
  std::optional<uint32_t> gating, shared;
  bool stacked = true;         // ffn_*_exps [experts, rows, cols], else llama.cpp's older per-expert tensors
  bool fused_gate_up = false;  // an ffn_gate_up_exps as well
  int64_t bad_up_rows = 0;     // > 0: layer 1's ffn_up_exps with this many rows per expert

  int64_t expert_rows() const { return arch == "qwen3moe" ? expert_ffn.value_or(ffn / used.value_or(1)) : ffn; }

  // dim 16, 2 layers, 2 heads of head_dim 8, 1 kv head, vocab 4, a separate output projection.
  GGUFBuilder build() const {
    GGUFBuilder g;
    const std::string a = arch + ".";
    g.kv_string("general.architecture", arch);
    g.kv(a + "block_count", GGUFType::UINT32, uint32_t(2));
    g.kv(a + "embedding_length", GGUFType::UINT32, uint32_t(16));
    g.kv(a + "feed_forward_length", GGUFType::UINT32, ffn);
    g.kv(a + "attention.head_count", GGUFType::UINT32, uint32_t(2));
    g.kv(a + "attention.head_count_kv", GGUFType::UINT32, uint32_t(1));
    if (experts) g.kv(a + "expert_count", GGUFType::UINT32, *experts);
    if (used) g.kv(a + "expert_used_count", GGUFType::UINT32, *used);
    if (expert_ffn) g.kv(a + "expert_feed_forward_length", GGUFType::UINT32, *expert_ffn);
    if (weights_norm) g.kv(a + "expert_weights_norm", GGUFType::BOOL, uint8_t(*weights_norm));
    if (gating) g.kv(a + "expert_gating_func", GGUFType::UINT32, *gating);
    if (shared) g.kv(a + "expert_shared_count", GGUFType::UINT32, *shared);
    const uint64_t n = experts.value_or(4), f = uint64_t(expert_rows());
    g.tensor("token_embd.weight", {16, 4}, kF32);
    g.tensor("output_norm.weight", {16}, kF32);
    g.tensor("output.weight", {16, 4}, kF32);
    for (int l = 0; l < 2; ++l) {
      const std::string b = "blk." + std::to_string(l) + ".";
      using Dims = std::vector<uint64_t>;
      std::vector<std::pair<std::string, Dims>> plain = {
          {"attn_norm", {16}},       {"attn_q", {16, 16}}, {"attn_k", {16, 8}},      {"attn_v", {16, 8}},
          {"attn_output", {16, 16}}, {"ffn_norm", {16}},   {"ffn_gate_inp", {16, n}}};
      if (arch == "qwen3moe") plain.insert(plain.end(), {{"attn_q_norm", {8}}, {"attn_k_norm", {8}}});
      for (const auto& [name, dims] : plain) g.tensor(b + name + ".weight", dims, kF32);
      if (stacked) {  // GGUF dims are innermost first: [cols, rows, experts]
        g.tensor(b + "ffn_gate_exps.weight", {16, f, n}, kF32);
        g.tensor(b + "ffn_up_exps.weight", {16, l == 1 && bad_up_rows ? uint64_t(bad_up_rows) : f, n}, kF32);
        g.tensor(b + "ffn_down_exps.weight", {f, 16, n}, kF32);
      } else {
        for (uint64_t e = 0; e < n; ++e) {
          const std::string E = "." + std::to_string(e) + ".weight";
          g.tensor(b + "ffn_gate" + E, {16, f}, kF32);
          g.tensor(b + "ffn_up" + E, {16, f}, kF32);
          g.tensor(b + "ffn_down" + E, {f, 16}, kF32);
        }
      }
      if (fused_gate_up) g.tensor(b + "ffn_gate_up_exps.weight", {16, 2 * f, n}, kF32);
    }
    return g;
  }
};

std::unique_ptr<ModelFile> open(const MoeFile& spec, TempDir& dir) { return test::open_gguf(spec.build(), dir); }
std::string open_error(const MoeFile& spec) { return test::open_gguf_error(spec.build()); }

}  // namespace

TEST(ModelMoe, Qwen3MoeGgufLoadsExpertsAsViewsOfTheStacks) {
  TempDir dir;
  auto f = open(MoeFile{}, dir);
  const ModelConfig& c = f->config();
  EXPECT_EQ(c.arch, "qwen3moe");
  EXPECT_EQ((std::vector<int>{c.n_experts, c.n_experts_used, c.ffn_dim}), (std::vector<int>{4, 2, 8}));
  EXPECT_TRUE(c.expert_weights_norm);  // llama.cpp renormalises when the file says nothing
  EXPECT_TRUE(c.qk_norm && c.rope_neox);
  EXPECT_EQ(f->layer_tensor(0, Role::WGate), nullptr);
  EXPECT_EQ(f->router_tensor(1)->shape, (std::vector<int64_t>{4, 16}));
  // Expert 3 of layer 1: rows 24..31 of the [4 * 8, 16] up stack, the bytes themselves.
  const HostTensor* up = f->expert_tensor(1, 3, Role::WUp);
  ASSERT_NE(up, nullptr);
  EXPECT_EQ(up->name, "blk.1.ffn_up.3.weight");
  EXPECT_EQ(up->shape, (std::vector<int64_t>{8, 16}));
  for (const HostTensor* t : f->all_tensors()) EXPECT_NE(t->name, "blk.1.ffn_up_exps.weight");  // replaced by its parts
  const GGUFFile raw = GGUFFile::open((dir.path() / "m.gguf").string());
  const HostTensor* stack = raw.find_tensor("blk.1.ffn_up_exps.weight");
  ASSERT_NE(stack, nullptr);
  ASSERT_EQ(up->nbytes, size_t(8 * 16 * 4));
  EXPECT_EQ(std::memcmp(up->data, stack->data + 3 * up->nbytes, up->nbytes), 0);
  EXPECT_EQ(f->expert_tensor(0, 2, Role::WDown)->shape, (std::vector<int64_t>{16, 8}));
  EXPECT_EQ(f->matrices().size(), size_t(1 + 1 + 2 * (4 + 4 * 3)));  // embedding, output, attention + experts
}

TEST(ModelMoe, MixtralIsLlamaWithExperts) {
  TempDir d1, d2, d3;
  MoeFile mixtral;
  mixtral.arch = "llama";
  mixtral.expert_ffn.reset();
  const ModelConfig c = open(mixtral, d1)->config();
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ((std::vector<int>{c.n_experts, c.n_experts_used, c.ffn_dim}), (std::vector<int>{4, 2, 24}));
  EXPECT_TRUE(c.expert_weights_norm);
  EXPECT_FALSE(c.qk_norm || c.rope_neox);
  // The older per-expert tensors (blk.N.ffn_gate.E.weight) load as well.
  MoeFile split = mixtral;
  split.stacked = false;
  EXPECT_EQ(open(split, d2)->expert_tensor(1, 3, Role::WDown)->name, "blk.1.ffn_down.3.weight");
  // A file that says not to renormalise is honoured.
  MoeFile plain;
  plain.weights_norm = false;
  EXPECT_FALSE(open(plain, d3)->config().expert_weights_norm);
}

TEST(ModelMoe, ExpertSizeFallsBackAsInLlamaCpp) {
  TempDir dir;
  MoeFile f;  // no expert_feed_forward_length: feed_forward_length / expert_used_count
  f.expert_ffn.reset();
  f.ffn = 16;
  EXPECT_EQ(open(f, dir)->config().ffn_dim, 8);
}

TEST(ModelMoe, RefusesWhatItDoesNotRun) {
  // Each case: a change to the good file, and what the error must say.
  const std::vector<std::pair<std::function<void(MoeFile&)>, std::string>> cases = {
      {[](MoeFile& f) { f.used = 5; }, "qwen3moe.expert_used_count = 5 (expected 1 .. qwen3moe.expert_count = 4)"},
      {[](MoeFile& f) { f.experts.reset(); }, "qwen3moe.expert_count = 0"},
      {[](MoeFile& f) { f.gating = 2; }, "qwen3moe.expert_gating_func = 2 (supported: 1, softmax)"},
      {[](MoeFile& f) { f.shared = 1; }, "expert_shared_count = 1 (shared experts are not supported)"},
      {[](MoeFile& f) { f.bad_up_rows = 7; },
       "tensor 'blk.1.ffn_up_exps.weight' (layer 1 experts) has shape [4, 7, 16], expected [4, 8, 16]"},
      {[](MoeFile& f) { f.fused_gate_up = true; },
       "'blk.0.ffn_gate_up_exps.weight' (fused expert gate and up) is not supported"},
      // Qwen3 (dense) with experts: not an architecture llama.cpp runs so
      {[](MoeFile& f) { f.arch = "qwen3"; }, "qwen3 with experts (qwen3.expert_count = 4) is not supported"},
      {[](MoeFile& f) {  // a router but no expert count
         f.arch = "llama";
         f.experts.reset();
       },
       "tensor 'blk.0.ffn_gate_inp.weight' (an expert router) but no"},
  };
  for (const auto& [change, want] : cases) {
    MoeFile f;
    change(f);
    EXPECT_ERROR_HAS(open_error(f), want);
  }
}

TEST(ModelMoe, RefusedOnABackendWithoutExpertOps) {
  test::CpuWithout be("cpu without experts", {.moe = false});
  const std::string error = test::model_load_error(*ModelFile::synthetic("tiny-qwen3moe", DType::BF16, 1), be);
  EXPECT_ERROR_HAS(error, "(qwen3moe) is a mixture of experts (8 experts, 2 per token)");
  EXPECT_ERROR_HAS(error, "backend cpu without experts does not run");
  EXPECT_EQ(test::model_load_error(*ModelFile::synthetic("tiny-qwen3", DType::BF16, 1), be), "<no error>");
}

// A decode step reads the attention, the router and the 2 of 8 experts a token runs, not all 8.
TEST(ModelMoe, BytesPerTokenCountOnlyTheActiveExperts) {
  auto f = ModelFile::synthetic("tiny-qwen3moe", DType::Q8_0, 1);
  auto be = make_cpu_backend({.n_threads = 1});
  LlamaModel m(*f, *be);
  size_t all = 0, experts = 0;
  for (const HostTensor* t : f->all_tensors()) {
    if (t->name == "token_embd.weight") continue;  // one row a token: left out
    all += t->nbytes;
    const bool expert = t->name.find("ffn_gate.") != std::string::npos ||
                        t->name.find("ffn_up.") != std::string::npos || t->name.find("ffn_down.") != std::string::npos;
    if (expert) experts += t->nbytes;
  }
  ASSERT_GT(experts, all / 2);
  EXPECT_EQ(m.weight_bytes_per_token(), all - experts + experts * 2 / 8);
  EXPECT_EQ(m.matmul_dtype(), DType::Q8_0);
  EXPECT_EQ(f->router_tensor(0)->dtype, DType::BF16);  // routers stay float, as llama.cpp keeps them
}

// The prompt in one step (tokens gathered per expert, several per expert) and the same tokens
// decoded one at a time (one token per expert) give the same logits, up to summation order.
TEST(ModelMoe, PromptStepMatchesTokenByTokenDecode) {
  auto f = ModelFile::synthetic("tiny-qwen3moe", DType::F32, 3);
  auto be = make_cpu_backend({.n_threads = 2});
  LlamaModel m(*f, *be);
  const std::vector<int32_t> toks = {5, 900, 17, 333, 42, 42, 7, 612, 81, 250, 999, 3};
  std::vector<int32_t> want;
  for (int i = 0; i < int(toks.size()); ++i) want.push_back(i);
  SequenceRunner prompt(m, 64);
  const std::vector<float> all = prompt.eval(toks, want);
  SequenceRunner decode(m, 64);
  const size_t vocab = size_t(m.config().vocab_size);
  float worst = 0.0f;
  for (size_t i = 0; i < toks.size(); ++i) {
    const std::vector<float> one = decode.eval_last({toks[i]});
    for (size_t v = 0; v < vocab; ++v) worst = std::max(worst, std::abs(one[v] - all[i * vocab + v]));
  }
  // The dense tiny-qwen3 differs by the same 2e-4 (the prompt's and decode's attention sum in
  // other orders); a token routed to another token's experts moves logits by tenths.
  EXPECT_LT(worst, 1e-3f);
}

TEST(ModelMoe, SyntheticQwen3_30B_A3B) {
  const ModelConfig c = synthetic_config("qwen3-30b-a3b");
  EXPECT_EQ(c.arch, "qwen3moe");
  EXPECT_EQ((std::vector<int>{c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim, c.vocab_size,
                              c.n_experts, c.n_experts_used}),
            (std::vector<int>{48, 2048, 32, 4, 128, 768, 151936, 128, 8}));
  EXPECT_TRUE(c.qk_norm && c.expert_weights_norm && !c.tied_embeddings);
  // A backend without the expert ops refuses the shape before its 30 billion weights are made.
  test::CpuWithout be("cpu without experts", {.moe = false});
  EXPECT_THROW(LlamaModel::check_backend(c, be), Error);
  EXPECT_NO_THROW(LlamaModel::check_backend(c, *make_cpu_backend({.n_threads = 1})));
}

}  // namespace greta
