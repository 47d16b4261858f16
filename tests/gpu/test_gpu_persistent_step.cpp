// The persistent decode step (CudaOptions::persistent_decode, persistent_step.h) against the
// graph of kernels and against the CPU backend, step for step over a ragged batch: sequences join
// with prompts of mixed lengths (those steps hold prompt tokens and run as kernels on every
// backend), then decode together, so one run sees decode steps of 1 to 8 tokens with contexts on
// both sides of the attention partitions (64 positions and up). Models: grouped-query attention
// (4 and 3 q heads a kv head, 9 heads), plain multi-head attention with head size 128, tied
// embeddings and an odd vocabulary; Q8_0 and Q4_0 weights (the packed phases, int8 inputs). Each test checks that the
// persistent path ran, so it cannot pass on the graph path alone.
#include <algorithm>
#include <map>
#include <string>

#include "batch_runner.h"
#include "gpu_test_util.h"
#include "model/llama.h"

namespace greta::gputest {
namespace {

class GpuPersistentStep : public GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    CudaOptions o;
    o.persistent_decode = true;
    o.persistent_claimed = claimed_percent();
    pers = make_cuda_backend(o);
  }
  virtual int claimed_percent() const { return 0; }
  std::unique_ptr<Backend> pers;
};

int argmax(const float* v, int n) { return int(std::max_element(v, v + n) - v); }

// Runs `steps` steps of up to 8 sequences on the persistent, graph and CPU backends; returns
// the persistent backend's count of one-launch steps.
int64_t run_batch(const std::string& shape, Backend& pers, Backend& graph, Backend& cpu, int steps,
                  DType dtype = DType::BF16) {
  const auto file = ModelFile::synthetic(shape, dtype, 5);
  const int vocab = file->config().vocab_size;
  BatchRunner p(*file, pers, 128, 16), g(*file, graph, 128, 16), c(*file, cpu, 128, 16);
  const int prompt_len[8] = {1, 70, 5, 130, 64, 200, 33, 65};
  std::map<int, std::vector<int32_t>> next;
  for (int step = 0; step < steps; ++step) {
    if (step % 3 == 0 && step / 3 < 8) {  // sequence step / 3 joins with its prompt
      const int id = step / 3;
      std::vector<int32_t> prompt(size_t(prompt_len[id]));
      for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t((i * 7919 + 13 * size_t(id) + 1) % size_t(vocab));
      next[id] = prompt;
    }
    const std::vector<float> lp = p.step(next), lg = g.step(next), lc = c.step(next);
    const std::string what = shape + " " + std::string(dtype_name(dtype)) + " step " + std::to_string(step);
    // Packed weights: the step quantizes x to int8 at every token count, the graph path only where
    // its int8 kernels run (Q4_0: one token), and int8 rounding reaches ~3% on a tiny model's
    // logits (docs/notes/quantized-weights.md), so both bounds are that of the int8 GEMV tests.
    const bool packed = dtype != DType::BF16;
    EXPECT_LT(rel_err(lp, lg), packed ? 4e-2 : 2e-2) << what << " (" << next.size() << " sequences)";
    EXPECT_LT(rel_err(lp, lc), packed ? 4e-2 : 3e-2) << what << " against the CPU";
    size_t r = 0;
    for (auto& [id, toks] : next) toks = {argmax(lc.data() + r++ * size_t(vocab), vocab)};
  }
  return cuda_persistent_steps(pers);
}

TEST_F(GpuPersistentStep, GroupedQueryAttentionMatchesTheGraphAndTheCpu) {
  // 30 steps: 8 joins (steps 0, 3, ..., 21), the 22 others decode 1 to 8 sequences.
  EXPECT_GE(run_batch("tiny", *pers, *gpu, *cpu, 30), 22);
}

TEST_F(GpuPersistentStep, NineHeadsOverThreeKvHeadsMatch) {
  EXPECT_GE(run_batch("smollm2-135m", *pers, *gpu, *cpu, 27), 19);
}

TEST_F(GpuPersistentStep, MultiHeadAttentionWithTiedEmbeddingsMatches) {
  EXPECT_GE(run_batch("tiny-mha", *pers, *gpu, *cpu, 30), 22);
}

TEST_F(GpuPersistentStep, Q8_0WeightsMatchTheGraphAndTheCpu) {
  EXPECT_GE(run_batch("tiny", *pers, *gpu, *cpu, 30, DType::Q8_0), 22);
}

TEST_F(GpuPersistentStep, Q4_0WeightsMatchTheGraphAndTheCpu) {
  EXPECT_GE(run_batch("tiny", *pers, *gpu, *cpu, 30, DType::Q4_0), 22);
}

// Rows of 18 groups (576 values): a piece's scales start off their 16-byte boundary.
TEST_F(GpuPersistentStep, Q8_0WithUnalignedScaleRowsMatches) {
  EXPECT_GE(run_batch("smollm2-135m", *pers, *gpu, *cpu, 12, DType::Q8_0), 8);
}

// Six steps of up to two sequences: short enough for compute-sanitizer (scripts/gpu-check.sh).
TEST_F(GpuPersistentStep, ShortDecodeOfTwoSequences) { EXPECT_GE(run_batch("tiny", *pers, *gpu, *cpu, 6), 5); }

// Claimed units (CudaOptions::persistent_claimed): the last 40% of each GEMV phase's rows go to
// whichever warps finish their own first, read from global memory; gated pairs, residual rows and
// every segment of q/k/v among them.
class GpuPersistentClaims : public GpuPersistentStep {
 protected:
  int claimed_percent() const override { return 40; }
};

TEST_F(GpuPersistentClaims, GroupedQueryAttentionMatches) { EXPECT_GE(run_batch("tiny", *pers, *gpu, *cpu, 30), 22); }

TEST_F(GpuPersistentClaims, MultiHeadAttentionMatches) { EXPECT_GE(run_batch("tiny-mha", *pers, *gpu, *cpu, 30), 22); }

TEST_F(GpuPersistentClaims, Q8_0WithUnalignedScaleRowsMatches) {
  EXPECT_GE(run_batch("smollm2-135m", *pers, *gpu, *cpu, 12, DType::Q8_0), 8);
}

TEST_F(GpuPersistentClaims, Q4_0WeightsMatch) { EXPECT_GE(run_batch("tiny", *pers, *gpu, *cpu, 30, DType::Q4_0), 22); }

// A model outside the plain Llama form (Qwen3's q/k norms) runs as kernels with the switch on.
TEST_F(GpuPersistentStep, OtherModelsRunAsKernels) { EXPECT_EQ(run_batch("tiny-qwen3", *pers, *gpu, *cpu, 8), 0); }

}  // namespace
}  // namespace greta::gputest
