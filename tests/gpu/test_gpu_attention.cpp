// rope_kv_write + paged attention vs the CPU backend: GQA, several sequences of different
// lengths, shuffled (non-contiguous) block tables, prompt steps, decode steps, mixed steps
// with a chunked prompt, both RoPE pairings, contexts up to 4096 and decode at 8K-128K; decode partitions merged by
// their last block (the default: a single partition written directly) and by the merge kernel;
// sliding windows (windowed and global attention over the same step), Gemma 2's soft-capping.
#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

#include "gpu_test_util.h"

namespace greta::gputest {
namespace {

struct AttnCase {
  int n_heads, n_kv, hd;
  bool neox;
};

// Runs the same steps on both backends and compares q after RoPE and the attention output.
class AttentionRunner {
 public:
  AttentionRunner(Backend& gpu, Backend& cpu, AttnCase c, int n_blocks, uint32_t seed)
      : gpu_(gpu), cpu_(cpu), c_(c), rng_(seed) {
    const KVCacheDesc d{.n_layers = 2,
                        .n_blocks = n_blocks,
                        .block_size = kBlock,
                        .n_kv_heads = c.n_kv,
                        .head_dim = c.hd};
    kvg_ = gpu.alloc_kv(d);
    kvc_ = cpu.alloc_kv(d);
    // Blocks handed out in a shuffled order so every table is non-contiguous.
    free_.resize(size_t(n_blocks));
    std::iota(free_.begin(), free_.end(), 0);
    std::shuffle(free_.begin(), free_.end(), rng_);
    rope_.neox = c.neox;
    for (int i = 0; i < c.hd / 2; ++i) rope_.inv_freq.push_back(std::pow(10000.f, -2.f * i / float(c.hd)));
  }

  RopeSpec& rope() { return rope_; }
  // Gemma 2's score cap for the attention of every later step (0: none).
  void set_softcap(float cap) { softcap_ = cap; }

  int add_seq() {
    tables_.emplace_back();
    lens_.push_back(0);
    return int(lens_.size()) - 1;
  }

  // One step: new_tokens[s] tokens for sequence s (0 = not in this step). check_attn = false
  // only fills the caches (for long contexts whose CPU prefill attention would be slow). window
  // > 0: attention checked with that sliding window, then again without one.
  void step(const std::vector<int>& new_tokens, const std::string& what, bool check_attn = true, int layer = 1,
            int window = 0) {
    Batch b;
    for (size_t s = 0; s < new_tokens.size(); ++s) {
      if (new_tokens[s] == 0) continue;
      SeqSlice sl;
      sl.token_begin = b.n_tokens();
      sl.n_tokens = new_tokens[s];
      sl.n_past = lens_[s];
      const int len = lens_[s] + new_tokens[s];
      while (int(tables_[s].size()) * kBlock < len) {
        tables_[s].push_back(free_.back());
        free_.pop_back();
      }
      sl.block_table = tables_[s];
      for (int i = 0; i < new_tokens[s]; ++i) b.tokens.push_back(0);
      b.seqs.push_back(sl);
      lens_[s] = len;
    }
    const StepPlan plan = StepPlan::build(b, kBlock);
    const int64_t n = b.n_tokens();
    const int64_t qw = int64_t(c_.n_heads) * c_.hd, kw = int64_t(c_.n_kv) * c_.hd;
    const auto qv = random_values(size_t(n * qw), 1.f, rng_);
    const auto kv = random_values(size_t(n * kw), 1.f, rng_);
    const auto vv = random_values(size_t(n * kw), 1.f, rng_);
    Tensor qg = make_tensor(gpu_, n, qw, qv), kg = make_tensor(gpu_, n, kw, kv), vg = make_tensor(gpu_, n, kw, vv);
    Tensor qc = make_tensor(cpu_, n, qw, qv), kc = make_tensor(cpu_, n, kw, kv), vc = make_tensor(cpu_, n, kw, vv);
    gpu_.begin_step(plan);
    cpu_.begin_step(plan);
    gpu_.rope_kv_write(qg, kg, vg, rope_, *kvg_, layer);
    cpu_.rope_kv_write(qc, kc, vc, rope_, *kvc_, layer);
    const std::string tag = what + " h=" + std::to_string(c_.n_heads) + "/" + std::to_string(c_.n_kv) +
                            " hd=" + std::to_string(c_.hd) + (c_.neox ? " neox" : " adj");
    report("rope q " + tag, rel_err(read(gpu_, qg), read(cpu_, qc)), kBf16Tol);
    for (int w : {window, 0}) {
      if (!check_attn) break;
      Tensor og = gpu_.alloc(n, qw), oc = cpu_.alloc(n, qw);
      poison(og);
      const float scale = 1.f / std::sqrt(float(c_.hd));
      gpu_.attention(qg, *kvg_, layer, c_.n_heads, scale, og, w, softcap_);
      cpu_.attention(qc, *kvc_, layer, c_.n_heads, scale, oc, w, softcap_);
      report("attention " + tag + (w ? " window " + std::to_string(w) : "") +
                 (softcap_ > 0.f ? " softcap " + std::to_string(softcap_) : ""),
             rel_err(read(gpu_, og), read(cpu_, oc)), 2 * kBf16Tol);
      gpu_.free(og), cpu_.free(oc);
      if (w == 0) break;
    }
    for (Tensor* t : {&qg, &kg, &vg}) gpu_.free(*t);
    for (Tensor* t : {&qc, &kc, &vc}) cpu_.free(*t);
  }

 private:
  static constexpr int kBlock = 16;
  Backend& gpu_;
  Backend& cpu_;
  AttnCase c_;
  std::mt19937 rng_;
  std::unique_ptr<KVStorage> kvg_, kvc_;
  RopeSpec rope_;
  float softcap_ = 0.f;
  std::vector<int32_t> free_;
  std::vector<std::vector<int32_t>> tables_;
  std::vector<int> lens_;
};

using GpuAttention = GpuTest;

// A CUDA backend whose decode attention merges its partitions in the last partition block
// (last = 1, the default) or in a second kernel (CudaOptions::attn_last_merge off).
std::unique_ptr<Backend> cuda_with_merge(int last) {
  CudaOptions o;
  o.attn_last_merge = last != 0;
  return make_cuda_backend(o);
}

TEST_F(GpuAttention, PromptDecodeAndMixedSteps) {
  // GQA groups 3, 4, 1, 16 and 2: every query-heads-per-block size of the decode kernel (1, 2, 4, 8).
  // head_dim 96 (Phi-3-mini): key groups of 16 lanes with 4 idle, CUDA-core prefill.
  for (int last : {1, 0})
    for (AttnCase c :
         {AttnCase{9, 3, 64, false}, AttnCase{32, 8, 128, true}, AttnCase{8, 8, 128, false}, AttnCase{16, 1, 64, true},
          AttnCase{8, 4, 256, false}, AttnCase{8, 8, 96, true}, AttnCase{12, 3, 96, true}}) {
      auto g = cuda_with_merge(last);
      const std::string m = last ? "" : "[merge kernel] ";
      AttentionRunner r(*g, *cpu, c, 512, 11);
      const int a = r.add_seq(), b = r.add_seq(), s3 = r.add_seq();
      (void)a, (void)b, (void)s3;
      r.step({37, 1, 0}, m + "prompt 37 + prompt 1");  // two prompts, one of a single token
      r.step({1, 1, 0}, m + "decode x2");              // plain decode
      r.step({1, 0, 577}, m + "decode + prompt 577");  // mixed prompt + decode
      r.step({3, 1, 1}, m + "3-token + decode x2");    // multi-token (speculative-like) decode item
      r.step({0, 200, 1}, m + "chunked prompt (n_past>0) + decode");
    }
}

TEST_F(GpuAttention, LongContextDecode) {
  // A 4096-token context: the cache is filled by prompt chunks (attention checked on the last
  // chunk only), then decode steps split the context over many partitions.
  for (int last : {1, 0})
    for (AttnCase c : {AttnCase{9, 3, 64, false}, AttnCase{32, 8, 128, true}, AttnCase{32, 32, 128, false},
                       AttnCase{32, 32, 96, true}}) {
      auto g = cuda_with_merge(last);
      const std::string m = last ? "" : "[merge kernel] ";
      AttentionRunner r(*g, *cpu, c, 600, 12);
      r.add_seq();
      r.add_seq();
      r.step({2048, 100}, m + "fill 2048 + 100", false);
      r.step({2047, 0}, m + "fill to 4095", false);
      r.step({1, 1}, m + "decode ctx 4096 + ctx 101");
      r.step({1, 300}, m + "decode ctx 4097 + prompt chunk at 101");
    }
}

TEST_F(GpuAttention, LongContexts8KTo128K) {
  // One sequence filled by 4096-token prompt chunks (unchecked), its decode attention checked
  // at 8K, 32K and 128K positions, each time next to a short sequence in the same step; GQA
  // (Llama-3's 32/8 heads) and MHA. The shuffled block table spans the whole cache.
  for (AttnCase c : {AttnCase{32, 8, 128, true}, AttnCase{16, 16, 64, false}}) {
    const int top = c.n_kv == 8 ? 131072 : 32768;
    AttentionRunner r(*gpu, *cpu, c, top / 16 + 64, 21);
    r.add_seq();
    r.add_seq();
    int len = 0;
    for (int ctx : {8192, 32768, 131072}) {
      if (ctx > top) break;
      while (len < ctx - 1) {
        const int chunk = std::min(4096, ctx - 1 - len);
        r.step({chunk, 0}, "fill", false);
        len += chunk;
      }
      r.step({1, ctx == 8192 ? 37 : 1}, "decode ctx " + std::to_string(ctx) + " + short sequence");
      ++len;
    }
  }
}

TEST_F(GpuAttention, SlidingWindow) {
  // Windows of 37 and 100 positions (not multiples of the 32-key tiles or the 16-slot blocks)
  // crossed inside a prompt, by a chunked prompt with n_past > 0, and by decode tokens, with the
  // decode context split over partitions (2500 positions); both prompt kernels (head_dim 64 / 128
  // on tensor cores, 96 / 256 on CUDA cores) and both decode merges. Each step also runs the
  // same q without a window, as a model of interleaved local and global layers does.
  for (int last : {1, 0})
    for (AttnCase c :
         {AttnCase{9, 3, 64, false}, AttnCase{32, 8, 128, true}, AttnCase{8, 8, 96, true}, AttnCase{8, 4, 256, false}})
      for (int window : {37, 100}) {
        auto g = cuda_with_merge(last);
        const std::string m = (last ? "" : "[merge kernel] ") + std::string("window ") + std::to_string(window) + ": ";
        AttentionRunner r(*g, *cpu, c, 400, 14);
        r.add_seq();
        r.add_seq();
        r.step({300, 20}, m + "prompts 300 + 20", true, 1, window);
        r.step({1, 1}, m + "decode x2", true, 1, window);
        r.step({150, 1}, m + "chunked prompt at 301 + decode", true, 1, window);
        r.step({2048, 0}, m + "fill", false);
        r.step({1, 1}, m + "decode ctx 2500 + ctx 23", true, 1, window);
      }
}

// Gemma 2's soft-capping: scores capped at 0.3 (tanh far from linear for these scores, so a kernel
// that skipped the cap misses by far more than the bound) in both prompt kernels (head_dim 64 /
// 128 on tensor cores, 96 / 256 on CUDA cores), chunked prompts, and decode over partitions, with
// and without a sliding window; and the final-logit cap against the CPU's.
TEST_F(GpuAttention, SoftCapping) {
  for (AttnCase c :
       {AttnCase{9, 3, 64, false}, AttnCase{32, 8, 128, true}, AttnCase{8, 8, 96, true}, AttnCase{8, 4, 256, false}})
    for (int window : {0, 37}) {
      const std::string m = "softcap, window " + std::to_string(window) + ": ";
      AttentionRunner r(*gpu, *cpu, c, 300, 15);
      r.set_softcap(0.3f);
      r.add_seq();
      r.add_seq();
      r.step({200, 20}, m + "prompts 200 + 20", true, 1, window);
      r.step({90, 1}, m + "chunked prompt at 201 + decode", true, 1, window);
      r.step({1600, 0}, m + "fill", false);
      r.step({1, 1}, m + "decode ctx 1892 + ctx 23", true, 1, window);
    }
  std::mt19937 rng(16);
  const std::vector<float> logits = random_values(size_t(3 * 1000), 40.f, rng);
  Tensor xg = make_tensor(*gpu, 3, 1000, logits), xc = make_tensor(*cpu, 3, 1000, logits);
  Tensor og = gpu->alloc(3, 1000), oc = cpu->alloc(3, 1000);
  poison(og);
  gpu->softcap(xg, 30.f, og);
  cpu->softcap(xc, 30.f, oc);
  report("final-logit softcap 30", rel_err(read(*gpu, og), read(*cpu, oc)), kBf16Tol);
  EXPECT_THROW(gpu->softcap(xg, 0.f, og), Error);
  for (Tensor t : {xg, og}) gpu->free(t);
  for (Tensor t : {xc, oc}) cpu->free(t);
}

TEST_F(GpuAttention, RopeTableChangesBetweenSteps) {
  // LongRoPE (model/longrope.h): a step rotates with the short or the long frequency table, so
  // the backend sees another inv_freq between steps (uploaded again) and, in this test, back.
  auto g = make_cuda_backend();
  AttentionRunner r(*g, *cpu, AttnCase{8, 2, 64, true}, 256, 13);
  r.add_seq();
  const std::vector<float> short_freq = r.rope().inv_freq;
  std::vector<float> long_freq = short_freq;
  for (size_t i = 0; i < long_freq.size(); ++i) long_freq[i] /= 1.f + 0.5f * float(i);
  r.step({40}, "short table, prompt");
  r.rope().inv_freq = long_freq;
  r.step({1}, "long table, decode");
  r.step({1}, "long table, decode again");
  r.rope().inv_freq = short_freq;
  r.step({1}, "short table again, decode");
}

}  // namespace
}  // namespace greta::gputest
