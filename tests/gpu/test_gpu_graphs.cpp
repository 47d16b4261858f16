// CUDA graphs for decode steps: the same steps run on two CUDA backends, one replaying step
// graphs and one launching every kernel, must give bit-identical logits (the graph path makes
// exactly the launches of the direct path; only the launch overhead differs). The steps cover
// what changes between replays of one graph: positions, slots, token ids, block tables that
// grow, the decode-attention bucket boundary at 256 positions, and a batch whose sequences
// join and leave. Each test also checks that graphs were captured and replayed, so it cannot
// pass by running everything directly.
#include <algorithm>
#include <map>

#include "batch_runner.h"
#include "gpu_test_util.h"
#include "model/llama.h"
#include "model/sequence_runner.h"

namespace greta::gputest {
namespace {

// GpuTest::SetUp skips (and says why) without a GPU; its gpu/cpu backends go unused here.
class GpuGraphs : public GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    CudaOptions no_graphs;
    no_graphs.graphs = false;
    on = make_cuda_backend();
    off = make_cuda_backend(no_graphs);
    file = ModelFile::synthetic("tiny", DType::BF16, 11);
  }
  std::unique_ptr<Backend> on, off;
  std::unique_ptr<ModelFile> file;
};

int argmax(const float* v, int n) { return int(std::max_element(v, v + n) - v); }

// Counts positions where the two runs differ (0 = bit-identical logits).
int n_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return -1;
  int d = 0;
  for (size_t i = 0; i < a.size(); ++i) d += std::memcmp(&a[i], &b[i], 4) != 0;
  return d;
}

TEST_F(GpuGraphs, OneSequenceAcrossBlocksAndTheAttentionBucket) {
  LlamaModel gm(*file, *on), em(*file, *off);
  const int vocab = file->config().vocab_size;
  // 8-token prompt chunks are decode-path steps too (recorded, graphed after a repeat).
  SequenceRunner g(gm, 512, /*max_step_tokens=*/8), e(em, 512, 8);
  std::vector<int32_t> prompt(240);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = int32_t((i * 7919 + 13) % size_t(vocab));
  std::vector<float> lg = g.eval_last(prompt), le = e.eval_last(prompt);
  ASSERT_EQ(n_diff(lg, le), 0) << "prompt logits";
  // Decode positions 240..299: new blocks at 240, 256, 272, 288; the attention split is
  // re-planned at 256 (kDecodeCtxBucket), which must start a new graph, not replay the old.
  for (int step = 0; step < 60; ++step) {
    const int tok = argmax(le.data(), vocab);
    lg = g.eval_last({tok});
    le = e.eval_last({tok});
    ASSERT_EQ(n_diff(lg, le), 0) << "decode step " << step << " (position " << 240 + step << ")";
  }
  const CudaGraphStats s = cuda_graph_stats(*on), s_off = cuda_graph_stats(*off);
  std::printf("graphs on: %lld eager, %lld captured, %lld replayed; off: %lld eager\n", (long long)s.eager,
              (long long)s.captured, (long long)s.replayed, (long long)s_off.eager);
  EXPECT_GE(s.captured, 2);  // one graph below position 256, one above
  EXPECT_GE(s.replayed, 50);
  EXPECT_EQ(s_off.captured + s_off.replayed, 0);
}

// One step of both runners, whose logits must be bit-identical; each sequence then continues
// with its greedy token.
bool step_alike(BatchRunner& g, BatchRunner& e, std::map<int, std::vector<int32_t>>& next, int step) {
  const std::vector<float> lg = g.step(next), le = e.step(next);
  const int vocab = e.model.config().vocab_size, diff = n_diff(lg, le);
  EXPECT_EQ(diff, 0) << "step " << step;
  size_t r = 0;
  for (auto& [id, toks] : next) toks = {argmax(le.data() + r++ * size_t(vocab), vocab)};
  return diff == 0;
}

TEST_F(GpuGraphs, RaggedBatchWithSequencesJoiningAndLeaving) {
  BatchRunner g(*file, *on), e(*file, *off);
  std::map<int, std::vector<int32_t>> next = {{0, {5, 17, 400, 9, 31}}, {1, std::vector<int32_t>(20, 77)}};
  for (int step = 0; step < 48; ++step) {
    if (step == 12) next[2] = {1, 2, 3};  // joins with a 3-token prompt (decode-path step)
    if (step == 30) {                     // sequence 0 finishes; its blocks go back to the pool
      next.erase(0);
      g.finish(0);
      e.finish(0);
    }
    if (step == 36) next[3] = std::vector<int32_t>(12, 8);  // a prompt chunk: a prefill step
    ASSERT_TRUE(step_alike(g, e, next, step));
  }
  const CudaGraphStats s = cuda_graph_stats(*on);
  std::printf("ragged batch, graphs on: %lld eager, %lld captured, %lld replayed\n", (long long)s.eager,
              (long long)s.captured, (long long)s.replayed);
  // Batches of 2 and 3 sequences (after sequence 0 leaves, the batch of 2 launches exactly
  // what the first one did -- same buffers, same shapes -- and replays its graph).
  EXPECT_GE(s.captured, 2);
  EXPECT_GE(s.replayed, 30);
}

// A mixture of experts (the synthetic Qwen3-MoE): its routing lives in device memory and the
// expert kernels take their weights from a device table by the routed ids, so a replayed step
// that routes otherwise than the captured one still gives the direct path's logits bit for bit.
TEST_F(GpuGraphs, MixtureOfExpertsStepsReplayBitForBit) {
  file = ModelFile::synthetic("tiny-qwen3moe", DType::BF16, 11);
  BatchRunner g(*file, *on), e(*file, *off);
  std::map<int, std::vector<int32_t>> next = {{0, {5, 17, 400, 9, 31}}, {1, {77, 3}}, {2, {1, 2, 3}}};
  for (int step = 0; step < 24; ++step) ASSERT_TRUE(step_alike(g, e, next, step));
  const CudaGraphStats s = cuda_graph_stats(*on);
  std::printf("mixture of experts, graphs on: %lld eager, %lld captured, %lld replayed\n", (long long)s.eager,
              (long long)s.captured, (long long)s.replayed);
  EXPECT_GE(s.captured, 1);
  EXPECT_GE(s.replayed, 15);
}

// Graph replays and direct launches agree with the CPU reference too (the graph path is not
// merely self-consistent): a short decode on the graphs-on backend against the CPU backend.
TEST_F(GpuGraphs, GraphReplaysMatchTheCpu) {
  auto cpu = make_cpu_backend({.n_threads = 0});
  LlamaModel gm(*file, *on), cm(*file, *cpu);
  const int vocab = file->config().vocab_size;
  SequenceRunner g(gm, 128, 8), c(cm, 128, 8);
  std::vector<float> lg = g.eval_last({3, 14, 15, 92, 65}), lc = c.eval_last({3, 14, 15, 92, 65});
  for (int step = 0; step < 12; ++step) {
    EXPECT_LT(rel_err(lg, lc), 3e-2) << "step " << step;
    const int tok = argmax(lc.data(), vocab);
    lg = g.eval_last({tok});
    lc = c.eval_last({tok});
  }
  EXPECT_GE(cuda_graph_stats(*on).replayed, 8);
}

}  // namespace
}  // namespace greta::gputest
