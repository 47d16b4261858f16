// Internals of the CUDA backend shared by its implementation files (cuda_backend.cpp: memory,
// upload, steps, attention; cuda_backend_fused.cpp: the fused decode ops). Not a public header:
// everything outside src/backend/cuda uses backend.h and cuda_backend.h.
//
// CudaBackend: the Backend interface over the kernels in this folder. Owns one stream; every
// op is enqueued on it and checked. Host-side work per op is shape checks plus, for the few
// ops that take host data (embed tokens, gather rows, the step plan), one copy through a
// pinned staging buffer.
//
// Decode steps run as CUDA graphs (step_graph.h): between begin_step and the end of the step
// ops record their launches instead of making them, and the whole list is replayed as one
// graph when an identical list was seen before. GRETA_CUDA_GRAPHS=0 turns this off (launches
// and results are the same either way; only the launch overhead differs).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_options.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/matmul_lt.h"
#include "backend/cuda/staging.h"
#include "backend/cuda/step_graph.h"
#include "backend/cuda/step_plan.h"
#include "backend/cuda/weight_upload.h"
#include "core/host_tensor.h"

namespace greta::cuda {

inline std::string shape_str(int64_t r, int64_t c) { return "[" + std::to_string(r) + ", " + std::to_string(c) + "]"; }

// Runs the owning backend's recorded launches (if the backend still exists) before device
// memory they may use is freed: a step that wants no logits ends without to_host, and its
// weights or cache could be destroyed before anything else flushes it.
using FlushHook = std::weak_ptr<std::function<void()>>;
inline void run_flush_hook(const FlushHook& h) {
  if (auto f = h.lock()) {
    try {
      (*f)();
    } catch (const Error&) {  // called from destructors: nothing to report to
    }
  }
}

class CudaWeight final : public Weight {
 public:
  ~CudaWeight() override {
    run_flush_hook(flush);
    cudaFree(data);
  }
  void* data = nullptr;  // bf16 [n_out, n_in] (2-D) or f32 [1, n_in] (1-D)
  FlushHook flush;
};

class CudaKV final : public KVStorage {
 public:
  ~CudaKV() override {
    run_flush_hook(flush);
    cudaFree(mem);
  }
  void* mem = nullptr;
  std::vector<cuda::KVLayerDev> layers;
  FlushHook flush;
};

// Sequences with at most this many new tokens use the split-K decode kernel (one work item
// per token); longer ones (prompts, prompt chunks) use the tiled prefill kernel.
constexpr int kDecodeMaxNewTokens = 8;
// Steps with prefill work or more tokens than this run without graphs: their launch overhead
// is small next to their work, and their shapes rarely repeat.
constexpr int kGraphMaxTokens = 256;
// The decode attention split is planned for the longest context rounded up to this, so a
// sequence's steps launch identically (and share one graph) for 256 positions at a time.
// Partitions past a token's own context exit at once, so the rounding costs ~nothing.
constexpr int kDecodeCtxBucket = 256;

// GRETA_CUDA_STEP_PROFILE=1: per-step timing of decode steps (no prefill, <= 256 tokens), averaged and
// printed to stderr when the backend is destroyed. host = begin_step to to_host on the host
// (ops' checks and, with graphs, recording); tail = device time from to_host's launch/flush
// to the end of the step; step = device time from the plan upload to the end.
struct StepProfile {
  bool on = false;
  cudaEvent_t ev[3] = {nullptr, nullptr, nullptr};  // after upload, at to_host, at the end
  std::chrono::steady_clock::time_point t0;
  bool active = false;
  int tokens = 0;  // of the step being timed
  struct Sums {
    double host_us = 0, tail_ms = 0, step_ms = 0;
    int n = 0;
  };
  std::map<int, Sums> by_tokens;  // steps grouped by their token count
};

// Launchers with everything by value, so that a step can record them (StepCommands).
inline void lt_gemm_cmd(cuda::LtGemm* g, const bf16* x, const bf16* w, bf16* out, int64_t n, int64_t m, int64_t k,
                        int accumulate, cudaStream_t s) {
  g->run(x, w, out, n, m, k, accumulate != 0, s);
}
inline void rope_kv_cmd(bf16* q, bf16* k, const bf16* v, int n_heads, const float* inv_freq, bool neox, cuda::DevStep st,
                 cuda::KVLayerDev L, cudaStream_t s) {
  cuda::rope_kv_write(q, k, v, n_heads, inv_freq, neox, st, L, s);
}
inline void attention_cmd(const bf16* q, bf16* out, cuda::DevStep st, cuda::KVLayerDev L, int n_heads, float scale,
                          float* scratch, int32_t* arrivals, int n_sms, int prefill_tc, cudaStream_t s) {
  cuda::attention_decode(q, out, st, L, n_heads, scale, scratch, arrivals, n_sms, s);
  if (prefill_tc && cuda::attention_prefill_tc_supported(L.head_dim))
    cuda::attention_prefill_tc(q, out, st, L, n_heads, scale, s);
  else
    cuda::attention_prefill(q, out, st, L, n_heads, scale, s);
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, bool use_graphs)
      : device_(device), graphs_on_(use_graphs), fusion_(cuda::fusion_from_env()),
        prefill_tc_(cuda::prefill_tc_from_env() ? 1 : 0), split_k_(cuda::split_k_from_env()),
        gemv_pipe_(cuda::gemv_pipe_from_env() ? 1 : 0),
        gemv_max_tokens_(cuda::gemv_max_tokens_from_env()), skip_(cuda::skip_from_env()),
        attn_last_merge_(cuda::attn_last_merge_from_env()) {
    int count = 0;
    GRETA_CUDA_CHECK(cudaGetDeviceCount(&count));
    if (device < 0 || device >= count)
      throw Error("cuda:" + std::to_string(device) + ": no such device (" + std::to_string(count) + " present)");
    GRETA_CUDA_CHECK(cudaSetDevice(device));
    cudaDeviceProp prop{};
    GRETA_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    name_ = "cuda:" + std::to_string(device) + " (" + prop.name + ")";
    n_sms_ = prop.multiProcessorCount;
    GRETA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    flush_hook_ = std::make_shared<std::function<void()>>([this] { flush(); });
    const char* pe = std::getenv("GRETA_CUDA_STEP_PROFILE");
    prof_.on = pe && std::string(pe) == "1";
    if (prof_.on)
      for (cudaEvent_t& e : prof_.ev) GRETA_CUDA_CHECK(cudaEventCreate(&e));
    gemm_ = std::make_unique<cuda::LtGemm>();
  }
  ~CudaBackend() override {
    try {
      flush();
    } catch (const Error&) {  // a destructor cannot report it; the work is abandoned
    }
    flush_hook_.reset();  // weights and caches that outlive the backend must not call back
    if (prof_.on) {
      for (const auto& [tokens, p] : prof_.by_tokens)
        std::fprintf(stderr,
                     "greta cuda step profile (%s): %d decode steps of %d tokens, host %.1f us, tail %.3f ms, step %.3f ms\n",
                     graphs_on_ ? "graphs" : "no graphs", p.n, tokens, p.host_us / p.n, p.tail_ms / p.n, p.step_ms / p.n);
      for (cudaEvent_t e : prof_.ev) cudaEventDestroy(e);
    }
    cudaStreamSynchronize(stream_);
    gemm_.reset();
      cudaFree(scratch_);
    cudaFree(inv_freq_dev_);
    cudaFree(sample_out_);
    cudaFree(split_scratch_);
    cudaFree(split_count_);
    cudaFree(arrivals_);
    cudaFree(prenorm_ss_);
    cudaFree(sample_dist_);
    cudaStreamDestroy(stream_);
  }

  std::string name() const override { return name_; }
  DType act_dtype() const override { return DType::BF16; }

  // ---- memory ----
  Tensor alloc(int64_t rows, int64_t cols) override {
    Tensor t;
    t.dtype = DType::BF16;
    t.rows = rows;
    t.cols = cols;
    if (rows * cols > 0) GRETA_CUDA_CHECK(cudaMalloc(&t.data, size_t(rows * cols) * sizeof(bf16)));
    return t;
  }
  void free(Tensor& t) override {
    if (t.data) {
      flush();  // recorded launches may use this memory
      GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));
      GRETA_CUDA_CHECK(cudaFree(t.data));
    }
    t.data = nullptr;
  }

  std::unique_ptr<Weight> upload(const HostTensor& w) override;
  std::unique_ptr<KVStorage> alloc_kv(const KVCacheDesc& d) override;
  void begin_step(const StepPlan& plan) override;
  double measure_bandwidth_gbs() override;

  // ---- ops ----
  void embed(const Weight& table, const int32_t* tokens, int n, Tensor out) override {
    const auto& t = weight2d(table, "embed");
    expect_act(out, n, t.n_in, "embed out");
    for (int i = 0; i < n; ++i)
      if (tokens[i] < 0 || tokens[i] >= t.n_out)
        throw Error("embed: token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                    " is outside the vocabulary [0, " + std::to_string(t.n_out) + ")");
    // A recorded step reads the staging buffer when it runs: one upload per buffer per step.
    if (tokens_pending_) flush();
    const auto* idx = static_cast<const int32_t*>(tokens_stage_.put(tokens, size_t(n) * 4, stream_));
    tokens_pending_ = deferring_;
    launch(&cuda::gather_rows, static_cast<const bf16*>(t.data), idx, act(out), int64_t(n), t.n_in, stream_);
  }
  void rms_norm(Tensor x, const Weight& w, float eps, Tensor out) override {
    const auto& v = weight1d(w, x.cols, "rms_norm");
    expect_act(x, x.rows, x.cols, "rms_norm x");
    expect_act(out, x.rows, x.cols, "rms_norm out");
    if (skip_ & cuda::kSkipNorm) return;  // GRETA_CUDA_SKIP: timing experiments only
    launch(&cuda::rms_norm, act(x), static_cast<const float*>(v.data), eps, act(out), x.rows, x.cols, stream_);
  }
  void matmul(Tensor x, const Weight& w, const Weight* bias, Tensor out) override {
    const auto& wt = weight2d(w, "matmul");
    expect_act(x, x.rows, wt.n_in, "matmul x");
    expect_act(out, x.rows, wt.n_out, "matmul out");
    const float* b = bias ? static_cast<const float*>(weight1d(*bias, wt.n_out, "matmul bias").data) : nullptr;
    if (x.rows <= gemv_max_tokens_) {
      launch(&cuda::gemv, act(x), static_cast<const bf16*>(wt.data), b, act(out), int(x.rows), wt.n_out, wt.n_in,
             gemv_pipe_, stream_);
    } else {
      launch(&lt_gemm_cmd, gemm_.get(), act(x), static_cast<const bf16*>(wt.data), act(out), x.rows, wt.n_out, wt.n_in,
             0, stream_);
      if (b) launch(&cuda::add_bias_rows, act(out), b, x.rows, wt.n_out, stream_);
    }
  }
  void norm_matmul(Tensor x, const Weight& norm, float eps, Tensor h,
                   std::initializer_list<MatmulTarget> targets) override;
  void norm_swiglu(Tensor x, const Weight& norm, float eps, Tensor h, const Weight& w_gate, const Weight& w_up,
                   Tensor gate, Tensor out) override;
  void norm_qkv_rope(Tensor x, const Weight& norm, float eps, Tensor h, const MatmulTarget& q, const MatmulTarget& k,
                     const MatmulTarget& v, const RopeSpec& rope, KVStorage& kv, int layer) override;
  void matmul_add(Tensor a, const Weight& w, Tensor tmp, Tensor x) override;
  void add(Tensor a, Tensor b, Tensor out) override {
    expect_act(b, a.rows, a.cols, "add b");
    expect_act(out, a.rows, a.cols, "add out");
    launch(&cuda::add, act(a), act(b), act(out), a.rows * a.cols, stream_);
  }
  void silu_mul(Tensor gate, Tensor up, Tensor out) override {
    expect_act(up, gate.rows, gate.cols, "silu_mul up");
    expect_act(out, gate.rows, gate.cols, "silu_mul out");
    launch(&cuda::silu_mul, act(gate), act(up), act(out), gate.rows * gate.cols, stream_);
  }
  void rope_kv_write(Tensor q, Tensor k, Tensor v, const RopeSpec& rope, KVStorage& kv, int layer) override;
  void attention(Tensor q, const KVStorage& kv, int layer, int n_heads, float scale, Tensor out) override;
  void gather_rows(Tensor x, const std::vector<int32_t>& rows, Tensor out) override {
    expect_act(out, int64_t(rows.size()), x.cols, "gather_rows out");
    for (size_t i = 0; i < rows.size(); ++i)
      if (rows[i] < 0 || rows[i] >= x.rows)
        throw Error("gather_rows: row " + std::to_string(rows[i]) + " outside [0, " + std::to_string(x.rows) + ")");
    if (rows_pending_) flush();
    const auto* idx = static_cast<const int32_t*>(rows_stage_.put(rows.data(), rows.size() * 4, stream_));
    rows_pending_ = deferring_;
    launch(&cuda::gather_rows, static_cast<const bf16*>(act(x)), idx, act(out), int64_t(rows.size()), x.cols, stream_);
  }
  void to_host(Tensor x, float* dst) override {
    end_step();
    const size_t n = size_t(x.rows * x.cols);
    if (x.dtype == DType::F32) {
      GRETA_CUDA_CHECK(cudaMemcpyAsync(dst, x.data, n * 4, cudaMemcpyDeviceToHost, stream_));
      GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));
      return;
    }
    expect_act(x, x.rows, x.cols, "to_host x");
    host_bf16_.resize(n);
    GRETA_CUDA_CHECK(cudaMemcpyAsync(host_bf16_.data(), x.data, n * 2, cudaMemcpyDeviceToHost, stream_));
    GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(host_bf16_[i]);
  }

  // Sampling runs after the step's graph, launched directly and never recorded: its per-call
  // settings (the draw u changes every step) would make every step's launch list unique.
  bool supports_device_sampling() const override { return true; }
  void sample(Tensor logits, const std::vector<DeviceSampleParams>& per_row, int32_t* tokens_out,
              float* probs_out) override {
    sample_rows(logits, per_row, tokens_out, probs_out, nullptr);
  }
  void sample_rows(Tensor logits, const std::vector<DeviceSampleParams>& per_row, int32_t* tokens_out,
                   float* probs_out, float* dist);  // cuda_backend_sample.cpp

 private:
  // The end of a step: its recorded launches run (a graph replay, a capture, or directly),
  // and the step profile, if on, is taken.
  void end_step() {
    const bool prof = prof_.active;
    prof_.active = false;
    if (prof) {
      prof_.by_tokens[prof_.tokens].host_us +=
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - prof_.t0).count();
      GRETA_CUDA_CHECK(cudaEventRecord(prof_.ev[1], stream_));
    }
    flush();  // the step's recorded launches: a graph replay, a capture, or direct
    if (prof) {
      GRETA_CUDA_CHECK(cudaEventRecord(prof_.ev[2], stream_));
      GRETA_CUDA_CHECK(cudaEventSynchronize(prof_.ev[2]));
      float tail = 0, step = 0;
      GRETA_CUDA_CHECK(cudaEventElapsedTime(&tail, prof_.ev[1], prof_.ev[2]));
      GRETA_CUDA_CHECK(cudaEventElapsedTime(&step, prof_.ev[0], prof_.ev[2]));
      StepProfile::Sums& sum = prof_.by_tokens[prof_.tokens];
      sum.tail_ms += tail;
      sum.step_ms += step;
      ++sum.n;
    }
  }

  static bf16* act(const Tensor& t) { return static_cast<bf16*>(t.data); }
  static void expect_act(const Tensor& t, int64_t rows, int64_t cols, const char* what) {
    if (t.dtype != DType::BF16 || t.rows != rows || t.cols != cols)
      throw Error(std::string("cuda ") + what + ": expected bf16 " + shape_str(rows, cols) + ", got " +
                  std::string(dtype_name(t.dtype)) + " " + shape_str(t.rows, t.cols));
  }
  static const CudaWeight& weight2d(const Weight& w, const char* op) {
    const auto* cw = dynamic_cast<const CudaWeight*>(&w);
    if (!cw || cw->dtype != DType::BF16)
      throw Error(std::string("cuda ") + op + ": weight was not uploaded to this backend as a 2-D bf16 matrix");
    return *cw;
  }
  static const CudaWeight& weight1d(const Weight& w, int64_t n, const char* op) {
    const auto* cw = dynamic_cast<const CudaWeight*>(&w);
    if (!cw || cw->dtype != DType::F32 || cw->n_in != n)
      throw Error(std::string("cuda ") + op + ": expected a 1-D weight of " + std::to_string(n) +
                  " values uploaded to this backend");
    return *cw;
  }
  cuda::GemvArgs fused_input(Tensor x, const Weight& norm, float eps, Tensor h);
  bool gemv_fusable(Tensor x, Tensor h, std::initializer_list<MatmulTarget> targets) const;
  void set_segments(cuda::GemvArgs& a, Tensor x, std::initializer_list<MatmulTarget> targets);
  const cuda::KVLayerDev& prepare_rope(Tensor q, Tensor k, Tensor v, const RopeSpec& rope, KVStorage& kv, int layer);
  const cuda::KVLayerDev& kv_layer(const KVStorage& kv, int layer, const char* op) const {
    const auto* ck = dynamic_cast<const CudaKV*>(&kv);
    if (!ck || layer < 0 || layer >= int(ck->layers.size()))
      throw Error(std::string("cuda ") + op + ": KV storage of another backend or layer " + std::to_string(layer) +
                  " out of range");
    if (ck->desc.block_size != step_.block_size)
      throw Error(std::string("cuda ") + op + ": step block size " + std::to_string(step_.block_size) +
                  " != cache block size " + std::to_string(ck->desc.block_size));
    return ck->layers[size_t(layer)];
  }

  // Device workspace grown on demand: at least `need` elements in p (capacity cap), zeroed when
  // new if `zero`. Recorded launches may use the old buffer, so they run first.
  template <class T>
  void grow(T*& p, size_t& cap, size_t need, bool zero) {
    if (need <= cap) return;
    flush();
    GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    GRETA_CUDA_CHECK(cudaFree(p));
    p = nullptr;
    GRETA_CUDA_CHECK(cudaMalloc(&p, need * sizeof(T)));
    if (zero) GRETA_CUDA_CHECK(cudaMemset(p, 0, need * sizeof(T)));
    cap = need;
  }
  // Runs fn(args...) now, or records it while the step is deferred.
  template <class... P, class... A>
  void launch(void (*fn)(P...), const A&... args) {
    emit_pending();
    if (deferring_) cmds_.add(fn, args...);
    else fn(P(args)...);
  }
  // The GEMV matmul_add held back at fusion 3 (cuda_backend_fused.cpp) goes out before anything
  // else does, so the stream order is the ops' order.
  void emit_pending() {
    if (!have_pending_) return;
    have_pending_ = false;
    if (deferring_) cmds_.add(&cuda::gemv_fused, pending_, 0.f, stream_);
    else cuda::gemv_fused(pending_, 0.f, stream_);
  }
  // Runs what the step recorded so far (see step_graph.h). Called at the end of a step and
  // before anything that frees or rewrites memory the recorded launches may use.
  void flush() {
    emit_pending();
    tokens_pending_ = rows_pending_ = false;
    if (cmds_.empty()) return;
    try {
      graphs_.run(cmds_, stream_, graphs_on_);
    } catch (...) {
      cmds_.clear();
      throw;
    }
    cmds_.clear();
  }

 public:
  cuda::StepGraphs::Stats graph_stats() const { return graphs_.stats(); }

 private:
  int device_;
  bool graphs_on_ = true;
  int fusion_ = 3;  // GRETA_CUDA_FUSION, see fusion_from_env
  int prefill_tc_ = 1;  // GRETA_CUDA_PREFILL_TC: tensor-core prefill attention where supported
  bool split_k_ = true;  // GRETA_CUDA_SPLITK: split-K for GEMVs with few row tiles
  int gemv_pipe_ = 1;    // GRETA_CUDA_GEMV_PIPE: pipelined GEMV weight stream (GemvArgs::pipeline)
  int gemv_max_tokens_ = 16;  // GRETA_CUDA_GEMV_MAX_TOKENS: GEMV up to here, cuBLASLt beyond
  int skip_ = 0;              // GRETA_CUDA_SKIP (cuda_options.h): kernels left out, timing experiments only
  bool attn_last_merge_ = true;  // GRETA_CUDA_ATTN_LAST_MERGE: decode attention merged by its last partition block
  bool deferring_ = false;  // this step's launches are recorded (decode steps with graphs on)
  bool tokens_pending_ = false, rows_pending_ = false;  // staging buffer read by a recorded launch
  cuda::StepCommands cmds_;
  cuda::StepGraphs graphs_;
  std::shared_ptr<std::function<void()>> flush_hook_;  // handed to weights and caches (weak)
  StepProfile prof_;
  std::string name_;
  int n_sms_ = 0;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<cuda::LtGemm> gemm_;
  cuda::Staging tokens_stage_, rows_stage_, plan_stage_;
  // Step plan: host copy (for checks), packed int32 upload, device view.
  std::vector<int32_t> packed_;
  int32_t max_slot_ = -1, max_block_ = -1;
  cuda::DevStep step_;
  bool have_step_ = false;
  // Decode attention partials, grown on demand.
  float* scratch_ = nullptr;
  size_t scratch_floats_ = 0;
  // Split-K GEMV workspace (matmul_add): partial sums and per-tile arrival counters.
  float* split_scratch_ = nullptr;
  int32_t* split_count_ = nullptr;
  int32_t* arrivals_ = nullptr;  // decode attention: per-token partition counters (zero between launches)
  // Fusion 3: the matmul_add GEMV held back until the next launch, and the per-tile sums of
  // squares it writes for the norm that follows ([tiles][kGemvMaxTokens]).
  cuda::GemvArgs pending_;
  bool have_pending_ = false;
  float* prenorm_ss_ = nullptr;
  size_t prenorm_floats_ = 0;
  size_t arrivals_n_ = 0;
  size_t split_floats_ = 0, split_counters_ = 0;
  // RoPE inverse frequencies (constant per model): device copy of the last RopeSpec.
  std::vector<float> inv_freq_host_;
  float* inv_freq_dev_ = nullptr;
  cuda::WeightUploader upload_;  // raw weight bytes -> device -> bf16
  std::vector<uint16_t> host_bf16_;
  // Device sampling: per-row settings (staged), tokens and probabilities [cap] on the device.
  cuda::Staging sample_stage_;
  void* sample_out_ = nullptr;  // int32 tokens [sample_cap_] then f32 probs [sample_cap_]
  size_t sample_cap_ = 0;
  float* sample_dist_ = nullptr;  // test hook: [rows, vocab]
  size_t sample_dist_cap_ = 0;
};

}  // namespace greta::cuda
