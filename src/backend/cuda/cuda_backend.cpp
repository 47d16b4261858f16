// CudaBackend: the Backend interface over the kernels in this folder. Owns one stream; every
// op is enqueued on it and checked. Host-side work per op is shape checks plus, for the few
// ops that take host data (embed tokens, gather rows, the step plan), one copy through a
// pinned staging buffer.
//
// Decode steps run as CUDA graphs (step_graph.h): between begin_step and the end of the step
// ops record their launches instead of making them, and the whole list is replayed as one
// graph when an identical list was seen before. GRETA_CUDA_GRAPHS=0 turns this off (launches
// and results are the same either way; only the launch overhead differs).
#include "backend/cuda/cuda_backend.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/matmul_lt.h"
#include "backend/cuda/step_graph.h"
#include "core/host_tensor.h"

namespace greta {
namespace {

using cuda::bf16;

std::string shape_str(int64_t r, int64_t c) { return "[" + std::to_string(r) + ", " + std::to_string(c) + "]"; }

// Runs the owning backend's recorded launches (if the backend still exists) before device
// memory they may use is freed: a step that wants no logits ends without to_host, and its
// weights or cache could be destroyed before anything else flushes it.
using FlushHook = std::weak_ptr<std::function<void()>>;
void run_flush_hook(const FlushHook& h) {
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

// Host data -> device through pinned memory, asynchronously. The pinned buffer is reused
// only after the previous copy out of it has finished (event), the device buffer is reused
// in stream order.
class Staging {
 public:
  ~Staging() {
    if (event_) cudaEventDestroy(event_);
    cudaFreeHost(host_);
    cudaFree(dev_);
  }
  void* put(const void* src, size_t bytes, cudaStream_t s) {
    if (!event_) GRETA_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
    GRETA_CUDA_CHECK(cudaEventSynchronize(event_));
    if (bytes > cap_) {
      GRETA_CUDA_CHECK(cudaStreamSynchronize(s));  // kernels may still read the old device buffer
      cudaFreeHost(host_);
      cudaFree(dev_);
      host_ = dev_ = nullptr;
      cap_ = std::max<size_t>(bytes, 4096) * 2;
      GRETA_CUDA_CHECK(cudaMallocHost(&host_, cap_));
      GRETA_CUDA_CHECK(cudaMalloc(&dev_, cap_));
    }
    if (bytes) {
      std::memcpy(host_, src, bytes);
      GRETA_CUDA_CHECK(cudaMemcpyAsync(dev_, host_, bytes, cudaMemcpyHostToDevice, s));
    }
    GRETA_CUDA_CHECK(cudaEventRecord(event_, s));
    return dev_;
  }

 private:
  void* host_ = nullptr;
  void* dev_ = nullptr;
  size_t cap_ = 0;
  cudaEvent_t event_ = nullptr;
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

// GRETA_CUDA_STEP_PROFILE=1: per-step timing of decode steps (<= 8 tokens), averaged and
// printed to stderr when the backend is destroyed. host = begin_step to to_host on the host
// (ops' checks and, with graphs, recording); tail = device time from to_host's launch/flush
// to the end of the step; step = device time from the plan upload to the end.
struct StepProfile {
  bool on = false;
  cudaEvent_t ev[3] = {nullptr, nullptr, nullptr};  // after upload, at to_host, at the end
  std::chrono::steady_clock::time_point t0;
  bool active = false;
  double host_us = 0, tail_ms = 0, step_ms = 0;
  int n = 0;
};

bool graphs_from_env() {
  const char* v = std::getenv("GRETA_CUDA_GRAPHS");
  return !(v && std::string(v) == "0");
}

// Launchers with everything by value, so that a step can record them (StepCommands).
void lt_gemm_cmd(cuda::LtGemm* g, const bf16* x, const bf16* w, bf16* out, int64_t n, int64_t m, int64_t k,
                 cudaStream_t s) {
  g->run(x, w, out, n, m, k, s);
}
void rope_kv_cmd(bf16* q, bf16* k, const bf16* v, int n_heads, const float* inv_freq, bool neox, cuda::DevStep st,
                 cuda::KVLayerDev L, cudaStream_t s) {
  cuda::rope_kv_write(q, k, v, n_heads, inv_freq, neox, st, L, s);
}
void attention_cmd(const bf16* q, bf16* out, cuda::DevStep st, cuda::KVLayerDev L, int n_heads, float scale,
                   float* scratch, int n_sms, cudaStream_t s) {
  cuda::attention_decode(q, out, st, L, n_heads, scale, scratch, n_sms, s);
  cuda::attention_prefill(q, out, st, L, n_heads, scale, s);
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, bool use_graphs) : device_(device), graphs_on_(use_graphs) {
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
      if (prof_.n > 0)
        std::fprintf(stderr, "greta cuda step profile (%s): %d decode steps, host %.1f us, tail %.3f ms, step %.3f ms\n",
                     graphs_on_ ? "graphs" : "no graphs", prof_.n, prof_.host_us / prof_.n, prof_.tail_ms / prof_.n,
                     prof_.step_ms / prof_.n);
      for (cudaEvent_t e : prof_.ev) cudaEventDestroy(e);
    }
    cudaStreamSynchronize(stream_);
    gemm_.reset();
    cudaFree(upload_buf_);
    cudaFree(scratch_);
    cudaFree(inv_freq_dev_);
    cudaFree(sample_out_);
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
    launch(&cuda::rms_norm, act(x), static_cast<const float*>(v.data), eps, act(out), x.rows, x.cols, stream_);
  }
  void matmul(Tensor x, const Weight& w, const Weight* bias, Tensor out) override {
    const auto& wt = weight2d(w, "matmul");
    expect_act(x, x.rows, wt.n_in, "matmul x");
    expect_act(out, x.rows, wt.n_out, "matmul out");
    const float* b = bias ? static_cast<const float*>(weight1d(*bias, wt.n_out, "matmul bias").data) : nullptr;
    if (x.rows <= cuda::kGemvMaxTokens) {
      launch(&cuda::gemv, act(x), static_cast<const bf16*>(wt.data), b, act(out), int(x.rows), wt.n_out, wt.n_in,
             stream_);
    } else {
      launch(&lt_gemm_cmd, gemm_.get(), act(x), static_cast<const bf16*>(wt.data), act(out), x.rows, wt.n_out, wt.n_in,
             stream_);
      if (b) launch(&cuda::add_bias_rows, act(out), b, x.rows, wt.n_out, stream_);
    }
  }
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
                   float* probs_out, float* dist);

 private:
  // The end of a step: its recorded launches run (a graph replay, a capture, or directly),
  // and the step profile, if on, is taken.
  void end_step() {
    const bool prof = prof_.active;
    prof_.active = false;
    if (prof) {
      prof_.host_us += std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - prof_.t0).count();
      GRETA_CUDA_CHECK(cudaEventRecord(prof_.ev[1], stream_));
    }
    flush();  // the step's recorded launches: a graph replay, a capture, or direct
    if (prof) {
      GRETA_CUDA_CHECK(cudaEventRecord(prof_.ev[2], stream_));
      GRETA_CUDA_CHECK(cudaEventSynchronize(prof_.ev[2]));
      float tail = 0, step = 0;
      GRETA_CUDA_CHECK(cudaEventElapsedTime(&tail, prof_.ev[1], prof_.ev[2]));
      GRETA_CUDA_CHECK(cudaEventElapsedTime(&step, prof_.ev[0], prof_.ev[2]));
      prof_.tail_ms += tail;
      prof_.step_ms += step;
      ++prof_.n;
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

  // Runs fn(args...) now, or records it while the step is deferred.
  template <class... P, class... A>
  void launch(void (*fn)(P...), const A&... args) {
    if (deferring_) cmds_.add(fn, args...);
    else fn(P(args)...);
  }
  // Runs what the step recorded so far (see step_graph.h). Called at the end of a step and
  // before anything that frees or rewrites memory the recorded launches may use.
  void flush() {
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
  Staging tokens_stage_, rows_stage_, plan_stage_;
  // Step plan: host copy (for checks), packed int32 upload, device view.
  std::vector<int32_t> packed_;
  int32_t max_slot_ = -1, max_block_ = -1;
  cuda::DevStep step_;
  bool have_step_ = false;
  // Decode attention partials, grown on demand.
  float* scratch_ = nullptr;
  size_t scratch_floats_ = 0;
  // RoPE inverse frequencies (constant per model): device copy of the last RopeSpec.
  std::vector<float> inv_freq_host_;
  float* inv_freq_dev_ = nullptr;
  // Upload staging for raw weight bytes.
  void* upload_buf_ = nullptr;
  size_t upload_cap_ = 0;
  std::vector<uint16_t> host_bf16_;
  // Device sampling: per-row settings (staged), tokens and probabilities [cap] on the device.
  Staging sample_stage_;
  void* sample_out_ = nullptr;  // int32 tokens [sample_cap_] then f32 probs [sample_cap_]
  size_t sample_cap_ = 0;
  float* sample_dist_ = nullptr;  // test hook: [rows, vocab]
  size_t sample_dist_cap_ = 0;
};

std::unique_ptr<Weight> CudaBackend::upload(const HostTensor& w) {
  auto out = std::make_unique<CudaWeight>();
  out->flush = flush_hook_;
  const int64_t cols = w.cols(), rows = w.rows();
  if (w.shape.empty() || rows <= 0 || cols <= 0) throw Error("cuda upload: tensor '" + w.name + "' has an empty shape");
  if (cols % block_elems(w.dtype) != 0)
    throw Error("cuda upload: tensor '" + w.name + "' row length " + std::to_string(cols) +
                " is not a multiple of the " + std::string(dtype_name(w.dtype)) + " block size");
  const size_t rb = row_bytes(w.dtype, cols);
  if (w.nbytes < rb * size_t(rows))
    throw Error("cuda upload: tensor '" + w.name + "' has " + std::to_string(w.nbytes) + " bytes, expected " +
                std::to_string(rb * size_t(rows)));
  flush();  // the upload below synchronizes the stream; recorded launches go first
  out->n_out = rows;
  out->n_in = cols;
  if (w.shape.size() == 1) {
    // Norm scales and biases: small, kept in f32 so the epilogues add them at full precision.
    std::vector<float> f(static_cast<size_t>(cols));
    dequantize_row(w.dtype, w.data, f.data(), cols);
    out->dtype = DType::F32;
    out->n_out = 1;
    GRETA_CUDA_CHECK(cudaMalloc(&out->data, f.size() * 4));
    GRETA_CUDA_CHECK(cudaMemcpy(out->data, f.data(), f.size() * 4, cudaMemcpyHostToDevice));
    return out;
  }
  if (!cuda::convert_supported(w.dtype))
    throw Error("cuda upload: tensor '" + w.name + "' has unsupported type " + std::string(dtype_name(w.dtype)));
  out->dtype = DType::BF16;
  GRETA_CUDA_CHECK(cudaMalloc(&out->data, size_t(rows * cols) * sizeof(bf16)));
  // Raw bytes go up in chunks of whole rows through one device buffer and are converted there;
  // stream order keeps chunk i+1's copy behind chunk i's conversion.
  constexpr size_t kChunk = size_t(64) << 20;
  const int64_t rows_per = std::max<int64_t>(1, int64_t(kChunk / rb));
  const size_t need = rb * size_t(std::min(rows, rows_per));
  if (need > upload_cap_) {
    GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    GRETA_CUDA_CHECK(cudaFree(upload_buf_));
    upload_buf_ = nullptr;
    GRETA_CUDA_CHECK(cudaMalloc(&upload_buf_, need));
    upload_cap_ = need;
  }
  for (int64_t r0 = 0; r0 < rows; r0 += rows_per) {
    const int64_t nr = std::min(rows_per, rows - r0);
    GRETA_CUDA_CHECK(cudaMemcpyAsync(upload_buf_, w.data + size_t(r0) * rb, size_t(nr) * rb, cudaMemcpyHostToDevice,
                                     stream_));
    cuda::convert_to_bf16(w.dtype, upload_buf_, static_cast<bf16*>(out->data) + r0 * cols, nr * cols, stream_);
  }
  GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host bytes may be unmapped after return
  return out;
}

double CudaBackend::measure_bandwidth_gbs() {
  // 1 GiB device-to-device copy, best of 5 after a warm-up; bytes read + written / time.
  flush();
  const size_t bytes = size_t(1) << 30;
  void *a = nullptr, *b = nullptr;
  GRETA_CUDA_CHECK(cudaMalloc(&a, bytes));
  GRETA_CUDA_CHECK(cudaMalloc(&b, bytes));
  GRETA_CUDA_CHECK(cudaMemsetAsync(a, 1, bytes, stream_));
  cudaEvent_t e0, e1;
  GRETA_CUDA_CHECK(cudaEventCreate(&e0));
  GRETA_CUDA_CHECK(cudaEventCreate(&e1));
  float best_ms = 1e30f;
  for (int i = 0; i < 6; ++i) {
    GRETA_CUDA_CHECK(cudaEventRecord(e0, stream_));
    GRETA_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream_));
    GRETA_CUDA_CHECK(cudaEventRecord(e1, stream_));
    GRETA_CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    GRETA_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    if (i > 0) best_ms = std::min(best_ms, ms);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  GRETA_CUDA_CHECK(cudaFree(a));
  GRETA_CUDA_CHECK(cudaFree(b));
  return 2.0 * double(bytes) / (double(best_ms) * 1e-3) / 1e9;
}

std::unique_ptr<KVStorage> CudaBackend::alloc_kv(const KVCacheDesc& d) {
  if (d.n_layers <= 0 || d.n_blocks <= 0 || d.block_size <= 0 || d.n_kv_heads <= 0 || d.head_dim <= 0)
    throw Error("cuda alloc_kv: every KV cache dimension must be positive");
  if (!cuda::attention_head_dim_supported(d.head_dim))
    throw Error("cuda alloc_kv: head_dim " + std::to_string(d.head_dim) + " not supported (64, 128, 256)");
  auto kv = std::make_unique<CudaKV>();
  kv->flush = flush_hook_;
  kv->desc = d;
  kv->dtype = DType::BF16;
  const size_t per = size_t(d.n_blocks) * d.block_size * d.n_kv_heads * d.head_dim;  // values per pool
  GRETA_CUDA_CHECK(cudaMalloc(&kv->mem, per * 2 * size_t(d.n_layers) * sizeof(bf16)));
  auto* base = static_cast<bf16*>(kv->mem);
  for (int l = 0; l < d.n_layers; ++l) {
    cuda::KVLayerDev L;
    L.k = base + size_t(2 * l) * per;
    L.v = base + size_t(2 * l + 1) * per;
    L.n_blocks = d.n_blocks;
    L.block_size = d.block_size;
    L.n_kv_heads = d.n_kv_heads;
    L.head_dim = d.head_dim;
    kv->layers.push_back(L);
  }
  return kv;
}

void CudaBackend::begin_step(const StepPlan& p) {
  flush();  // a step that ended without to_host (no logits wanted)
  deferring_ = false;
  const int n = int(p.positions.size());
  const int S = int(p.seq_len.size());
  if (p.token_seq.size() != size_t(n) || p.slot.size() != size_t(n) || p.block_begin.size() != size_t(S + 1))
    throw Error("cuda begin_step: inconsistent StepPlan sizes");
  // Split sequences between the decode and prefill attention kernels. A sequence's tokens are
  // contiguous in the batch (Batch::seqs is in token order).
  std::vector<int32_t> first(size_t(S), -1), count(size_t(S), 0);
  for (int t = 0; t < n; ++t) {
    const int s = p.token_seq[size_t(t)];
    if (s < 0 || s >= S) throw Error("cuda begin_step: token " + std::to_string(t) + " has no sequence");
    if (first[size_t(s)] < 0) first[size_t(s)] = t;
    ++count[size_t(s)];
  }
  std::vector<int32_t> decode, prefill;
  int max_ctx = 0, max_new = 0;
  for (int s = 0; s < S; ++s) {
    if (count[size_t(s)] == 0) continue;
    if (count[size_t(s)] <= kDecodeMaxNewTokens) {
      for (int t = first[size_t(s)]; t < first[size_t(s)] + count[size_t(s)]; ++t) {
        decode.push_back(t);
        max_ctx = std::max(max_ctx, p.positions[size_t(t)] + 1);
      }
    } else {
      prefill.insert(prefill.end(), {s, first[size_t(s)], count[size_t(s)]});
      max_new = std::max(max_new, count[size_t(s)]);
    }
  }
  max_slot_ = -1;
  for (int32_t v : p.slot) max_slot_ = std::max(max_slot_, v);
  max_block_ = -1;
  for (int32_t v : p.block_ids) max_block_ = std::max(max_block_, v);
  if (max_ctx > 0) max_ctx = (max_ctx + kDecodeCtxBucket - 1) / kDecodeCtxBucket * kDecodeCtxBucket;
  // One packed upload: positions | token_seq | slot | block_begin | seq_len | decode | prefill |
  // block_ids. The block tables go last: they grow as sequences do, and every other array
  // then keeps its address from step to step (launches that read them stay identical).
  packed_.clear();
  auto append = [&](const std::vector<int32_t>& v) {
    const size_t at = packed_.size();
    packed_.insert(packed_.end(), v.begin(), v.end());
    return at;
  };
  const size_t o_pos = append(p.positions), o_seq = append(p.token_seq), o_slot = append(p.slot);
  const size_t o_bb = append(p.block_begin), o_len = append(p.seq_len);
  const size_t o_dec = append(decode), o_pre = append(prefill), o_bid = append(p.block_ids);
  const auto* dev = static_cast<const int32_t*>(plan_stage_.put(packed_.data(), packed_.size() * 4, stream_));
  step_ = cuda::DevStep{};
  step_.positions = dev + o_pos;
  step_.token_seq = dev + o_seq;
  step_.slot = dev + o_slot;
  step_.block_begin = dev + o_bb;
  step_.block_ids = dev + o_bid;
  step_.seq_len = dev + o_len;
  step_.decode_tokens = dev + o_dec;
  step_.prefill_seqs = dev + o_pre;
  step_.n_tokens = n;
  step_.n_seqs = S;
  step_.block_size = p.block_size;
  step_.n_decode = int(decode.size());
  step_.max_decode_ctx = max_ctx;
  step_.n_prefill = int(prefill.size() / 3);
  step_.max_prefill_tokens = max_new;
  have_step_ = true;
  deferring_ = graphs_on_ && step_.n_prefill == 0 && n <= kGraphMaxTokens;
  prof_.active = prof_.on && n <= kDecodeMaxNewTokens && step_.n_prefill == 0;
  if (prof_.active) {
    GRETA_CUDA_CHECK(cudaEventRecord(prof_.ev[0], stream_));
    prof_.t0 = std::chrono::steady_clock::now();
  }
}

void CudaBackend::rope_kv_write(Tensor q, Tensor k, Tensor v, const RopeSpec& rope, KVStorage& kv, int layer) {
  if (!have_step_) throw Error("cuda rope_kv_write: called before begin_step");
  const auto& L = kv_layer(kv, layer, "rope_kv_write");
  const int64_t n = step_.n_tokens, hd = L.head_dim;
  if (q.cols % hd != 0) throw Error("cuda rope_kv_write: q width " + std::to_string(q.cols) + " is not a multiple of head_dim");
  expect_act(q, n, q.cols, "rope_kv_write q");
  expect_act(k, n, int64_t(L.n_kv_heads) * hd, "rope_kv_write k");
  expect_act(v, n, int64_t(L.n_kv_heads) * hd, "rope_kv_write v");
  if (int64_t(rope.inv_freq.size()) != hd / 2)
    throw Error("cuda rope_kv_write: RopeSpec has " + std::to_string(rope.inv_freq.size()) + " frequencies, head_dim/2 = " +
                std::to_string(hd / 2));
  if (max_slot_ >= int64_t(L.n_blocks) * L.block_size)
    throw Error("cuda rope_kv_write: slot " + std::to_string(max_slot_) + " outside the KV pool");
  if (rope.inv_freq != inv_freq_host_) {
    flush();
    GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));  // earlier kernels may read the old table
    GRETA_CUDA_CHECK(cudaFree(inv_freq_dev_));
    inv_freq_dev_ = nullptr;
    GRETA_CUDA_CHECK(cudaMalloc(&inv_freq_dev_, rope.inv_freq.size() * 4));
    GRETA_CUDA_CHECK(cudaMemcpy(inv_freq_dev_, rope.inv_freq.data(), rope.inv_freq.size() * 4, cudaMemcpyHostToDevice));
    inv_freq_host_ = rope.inv_freq;
  }
  launch(&rope_kv_cmd, act(q), act(k), static_cast<const bf16*>(act(v)), int(q.cols / hd),
         static_cast<const float*>(inv_freq_dev_), rope.neox, step_, L, stream_);
}

void CudaBackend::attention(Tensor q, const KVStorage& kv, int layer, int n_heads, float scale, Tensor out) {
  if (!have_step_) throw Error("cuda attention: called before begin_step");
  const auto& L = kv_layer(kv, layer, "attention");
  if (n_heads <= 0 || n_heads % L.n_kv_heads != 0)
    throw Error("cuda attention: n_heads " + std::to_string(n_heads) + " is not a multiple of n_kv_heads " +
                std::to_string(L.n_kv_heads));
  expect_act(q, step_.n_tokens, int64_t(n_heads) * L.head_dim, "attention q");
  expect_act(out, step_.n_tokens, int64_t(n_heads) * L.head_dim, "attention out");
  if (max_block_ >= L.n_blocks)
    throw Error("cuda attention: block " + std::to_string(max_block_) + " outside the KV pool of " +
                std::to_string(L.n_blocks) + " blocks");
  const size_t need = cuda::attention_decode_scratch_floats(step_, n_heads, L.head_dim, L.n_kv_heads, n_sms_);
  if (need > scratch_floats_) {
    flush();
    GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    GRETA_CUDA_CHECK(cudaFree(scratch_));
    scratch_ = nullptr;
    GRETA_CUDA_CHECK(cudaMalloc(&scratch_, need * 4));
    scratch_floats_ = need;
  }
  launch(&attention_cmd, static_cast<const bf16*>(act(q)), act(out), step_, L, n_heads, scale, scratch_, n_sms_,
         stream_);
}


void CudaBackend::sample_rows(Tensor logits, const std::vector<DeviceSampleParams>& per_row, int32_t* tokens_out,
                              float* probs_out, float* dist) {
  expect_act(logits, logits.rows, logits.cols, "sample logits");
  const int64_t rows = logits.rows, vocab = logits.cols;
  if (int64_t(per_row.size()) != rows)
    throw Error("cuda sample: " + std::to_string(per_row.size()) + " row settings for " + std::to_string(rows) +
                " rows of logits");
  if (vocab < 1 || vocab > cuda::kSampleMaxVocab)
    throw Error("cuda sample: vocabulary of " + std::to_string(vocab) + " tokens, expected 1 to " +
                std::to_string(cuda::kSampleMaxVocab));
  std::vector<cuda::SampleRowParams> p(per_row.size());
  for (size_t r = 0; r < per_row.size(); ++r) {
    const DeviceSampleParams& q = per_row[r];
    if (std::isnan(q.temperature) || !(q.top_p > 0.0f && q.top_p <= 1.0f) || !(q.min_p >= 0.0f && q.min_p <= 1.0f) ||
        !(q.u >= 0.0 && q.u < 1.0))
      throw Error("cuda sample: row " + std::to_string(r) + ": temperature " + std::to_string(q.temperature) +
                  ", top_p " + std::to_string(q.top_p) + ", min_p " + std::to_string(q.min_p) + ", u " +
                  std::to_string(q.u) + ": expected a number, (0, 1], [0, 1] and [0, 1)");
    p[r] = cuda::SampleRowParams{q.temperature, q.top_k, q.top_p, q.min_p, q.u};
  }
  end_step();
  if (rows == 0) return;
  if (size_t(rows) > sample_cap_) {
    GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    GRETA_CUDA_CHECK(cudaFree(sample_out_));
    sample_out_ = nullptr;
    GRETA_CUDA_CHECK(cudaMalloc(&sample_out_, size_t(rows) * 8));
    sample_cap_ = size_t(rows);
  }
  if (dist && size_t(rows * vocab) > sample_dist_cap_) {
    GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    GRETA_CUDA_CHECK(cudaFree(sample_dist_));
    sample_dist_ = nullptr;
    GRETA_CUDA_CHECK(cudaMalloc(&sample_dist_, size_t(rows * vocab) * 4));
    sample_dist_cap_ = size_t(rows * vocab);
  }
  const auto* dp = static_cast<const cuda::SampleRowParams*>(sample_stage_.put(p.data(), p.size() * sizeof(p[0]), stream_));
  auto* tok = static_cast<int32_t*>(sample_out_);
  auto* prob = reinterpret_cast<float*>(tok + sample_cap_);
  cuda::sample_rows(static_cast<const bf16*>(logits.data), int(rows), vocab, dp, tok, prob, dist ? sample_dist_ : nullptr,
                    stream_);
  GRETA_CUDA_CHECK(cudaMemcpyAsync(tokens_out, tok, size_t(rows) * 4, cudaMemcpyDeviceToHost, stream_));
  GRETA_CUDA_CHECK(cudaMemcpyAsync(probs_out, prob, size_t(rows) * 4, cudaMemcpyDeviceToHost, stream_));
  if (dist)
    GRETA_CUDA_CHECK(cudaMemcpyAsync(dist, sample_dist_, size_t(rows * vocab) * 4, cudaMemcpyDeviceToHost, stream_));
  GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

}  // namespace

bool cuda_device_present() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

std::unique_ptr<Backend> make_cuda_backend(int device) { return std::make_unique<CudaBackend>(device, graphs_from_env()); }
std::unique_ptr<Backend> make_cuda_backend(int device, bool use_graphs) {
  return std::make_unique<CudaBackend>(device, use_graphs);
}

CudaGraphStats cuda_graph_stats(const Backend& b) {
  const auto* cb = dynamic_cast<const CudaBackend*>(&b);
  if (!cb) throw Error("cuda_graph_stats: not a CUDA backend");
  const auto s = cb->graph_stats();
  return CudaGraphStats{s.eager, s.captured, s.replayed};
}

void cuda_sample_with_distribution(Backend& b, Tensor logits, const std::vector<DeviceSampleParams>& per_row,
                                   int32_t* tokens_out, float* probs_out, float* dist) {
  auto* cb = dynamic_cast<CudaBackend*>(&b);
  if (!cb) throw Error("cuda_sample_with_distribution: not a CUDA backend");
  cb->sample_rows(logits, per_row, tokens_out, probs_out, dist);
}

}  // namespace greta
