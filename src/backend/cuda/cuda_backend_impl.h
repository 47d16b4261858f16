// CudaBackend: the Backend interface over the kernels in this folder. Not a public header:
// everything outside src/backend/cuda uses backend.h and cuda_backend.h. The implementation
// is split by concern: cuda_backend.cpp (memory, upload, steps, plain ops),
// cuda_backend_attention.cpp (RoPE, KV write, attention), cuda_backend_fused.cpp (the decode
// GEMV and its fusions), cuda_backend_sample.cpp (sampling on the device), cuda_backend_moe.cpp
// (mixture of experts).
//
// One stream; every op is enqueued on it and checked. Host-side work per op is shape checks
// plus, for the few ops that take host data (embed tokens, gather rows, the step plan), one
// copy through a pinned staging buffer. Decode steps are recorded and run as CUDA graphs
// (step_recorder.h); per-step scratch lives in one workspace (device_workspace.h).
#pragma once

#include <algorithm>
#include <climits>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/backend_options.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_weights.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/device_workspace.h"
#include "backend/cuda/gemm_int8.h"
#include "backend/cuda/gemm_packed.h"
#include "backend/cuda/gemm_w8a8.h"
#include "backend/cuda/launch_commands.h"
#include "backend/cuda/matmul_lt.h"
#include "backend/cuda/moe_ops.h"
#include "backend/cuda/persistent_step.h"
#include "backend/cuda/persistent_trace.h"
#include "backend/cuda/staging.h"
#include "backend/cuda/step_profiler.h"
#include "backend/cuda/step_recorder.h"
#include "backend/cuda/weight_upload.h"

namespace greta::cuda {

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

// Checks shared by the implementation files: each throws greta::Error naming the op.
inline std::string shape_str(int64_t r, int64_t c) { return "[" + std::to_string(r) + ", " + std::to_string(c) + "]"; }
void expect_act(const Tensor& t, int64_t rows, int64_t cols, const char* what);  // bf16 [rows, cols]
const CudaWeight& weight2d(const Weight& w, const char* op);                     // a 2-D matrix, bf16 or packed
const CudaWeight& weight1d(const Weight& w, int64_t n, const char* op);          // f32 [n]
inline bf16* act(const Tensor& t) { return static_cast<bf16*>(t.data); }

// The device, its name and size, and the backend's one stream.
struct DeviceContext {
  explicit DeviceContext(int device);
  ~DeviceContext();
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;
  std::string name;  // "cuda:N (card)"
  int n_sms = 0;
  cudaStream_t stream = nullptr;
};

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaOptions& o);
  ~CudaBackend() override;

  std::string name() const override { return dev_.name; }
  DType act_dtype() const override { return DType::BF16; }

  Tensor alloc(int64_t rows, int64_t cols) override;
  void free(Tensor& t) override;
  std::unique_ptr<Weight> upload(const HostTensor& w) override;
  std::unique_ptr<KVStorage> alloc_kv(const KVCacheDesc& d) override;
  DType kv_dtype() const override { return DType::BF16; }  // CudaOptions::kv_dtype other than BF16 is refused
  void begin_step(const StepPlan& plan) override;
  double measure_bandwidth_gbs() override;

  void embed(const Weight& table, const int32_t* tokens, int n, Tensor out) override;
  void rms_norm(Tensor x, const Weight& w, float eps, Tensor out) override;
  void matmul(Tensor x, const Weight& w, const Weight* bias, Tensor out) override;
  void add(Tensor a, Tensor b, Tensor out) override;
  void silu_mul(Tensor gate, Tensor up, Tensor out) override;
  void gelu_mul(Tensor gate, Tensor up, Tensor out) override;
  void scale(Tensor x, float s, Tensor out) override;
  void rope_kv_write(Tensor q, Tensor k, Tensor v, const RopeSpec& rope, KVStorage& kv, int layer) override;
  void attention(Tensor q, const KVStorage& kv, int layer, int n_heads, float scale, Tensor out, int window = 0,
                 float softcap = 0.0f) override;
  // Gemma 2: attention scores capped in every attention kernel, final logits by softcap().
  bool supports_logit_softcapping() const override { return true; }
  void softcap(Tensor x, float cap, Tensor out) override;
  void gather_rows(Tensor x, const std::vector<int32_t>& rows, Tensor out) override;
  void to_host(Tensor x, float* dst) override;

  NormedRows matmul_add_norm(Tensor a, const Weight& w, Tensor x, const Weight& next_norm, float eps,
                             Tensor h) override;
  void normed_matmul(const NormedRows& in, std::initializer_list<MatmulTarget> targets) override;
  void normed_qkv_rope(const NormedRows& in, const MatmulTarget& q, const MatmulTarget& k, const MatmulTarget& v,
                       const RopeSpec& rope, KVStorage& kv, int layer) override;
  void normed_qkv_headnorm_rope(const NormedRows& in, const MatmulTarget& q, const MatmulTarget& k,
                                const MatmulTarget& v, const Weight& q_norm, const Weight& k_norm, float eps,
                                const RopeSpec& rope, KVStorage& kv, int layer) override;
  void normed_swiglu(const NormedRows& in, const Weight& w_gate, const Weight& w_up, Tensor gate, Tensor out) override;
  void normed_geglu(const NormedRows& in, const Weight& w_gate, const Weight& w_up, Tensor gate, Tensor out) override;
  void matmul_add(Tensor a, const Weight& w, Tensor tmp, Tensor x) override;

  // Mixture of experts (cuda_backend_moe.cpp, docs/notes/moe.md): routed on the device, bf16
  // experts through the device-routed expert kernels or, in large uncaptured steps, gathered
  // cuBLASLt GEMMs; other expert formats through the default (routed on the host).
  bool supports_moe() const override { return true; }
  void moe_route(Tensor logits, int k, bool renormalize, int32_t* ids, float* weights) override;
  void add_rows_scaled(Tensor x, const std::vector<int32_t>& rows, const std::vector<float>& weights,
                       Tensor out) override;
  void moe_ffn_add(const NormedRows& in, const Weight& router, const std::vector<Expert>& experts, int top_k,
                   bool renormalize, const MoeScratch& s, Tensor x) override;

  // A step of decode tokens as one persistent launch (cuda_backend_persistent.cpp), when
  // CudaOptions::persistent_decode is on and the model and step are ones it takes.
  bool decode_step(const DecodeModel& m, const RopeSpec& rope, KVStorage& kv, Tensor x, Tensor logits) override;

  // Sampling runs after the step's graph, launched directly and never recorded: its per-call
  // settings (the draw u changes every step) would make every step's launch list unique.
  bool supports_device_sampling() const override { return true; }
  int fp8_activation_min_tokens() const override { return has_fp8_gemm_weights_ ? opt_.gemv_max_tokens + 1 : 0; }
  int int8_activation_max_tokens() const override { return int8_acts_max_tokens_; }
  void sample(Tensor logits, const std::vector<DeviceSampleParams>& per_row, int32_t* tokens_out,
              float* probs_out) override {
    sample_rows(logits, per_row, tokens_out, probs_out, nullptr);
  }
  // dist: host [rows, vocab] for the final distributions (a test hook), or null.
  void sample_rows(Tensor logits, const std::vector<DeviceSampleParams>& per_row, int32_t* tokens_out, float* probs_out,
                   float* dist);

  const StepGraphs::Stats& graph_stats() const { return rec_.stats(); }
  int64_t persistent_steps() const { return persistent_steps_; }

 private:
  // out = act(gate) * up through an elementwise kernel, shapes checked under the op's name.
  using GatedKernel = void (*)(const bf16*, const bf16*, bf16*, int64_t, cudaStream_t);
  void gated_mul(GatedKernel kernel, Tensor gate, Tensor up, Tensor out, const std::string& op);
  // A gated feed-forward input (SwiGLU, GeGLU) whose gate and up take the FP8 GEMM: h quantized
  // once for both. False (nothing run) when they do not.
  bool fp8_normed_gated(const NormedRows& in, const Weight& w_gate, const Weight& w_up, Tensor gate, Tensor out,
                        void (Backend::*act_mul)(Tensor, Tensor, Tensor));
  // The end of a step: its recorded launches run, and the step profile, if on, is taken.
  void end_step();
  // Runs what the step recorded so far; called before anything that frees or rewrites memory
  // the recorded launches may use.
  void flush() { rec_.flush(); }
  template <class... P, class... A>
  void launch(void (*fn)(P...), const A&... args) {
    rec_.launch(fn, args...);
  }

  // The most tokens the decode GEMV takes against w: CudaOptions::gemv_max_tokens for bf16 and for
  // FP8 with row scales (which have a tensor-core GEMM of their own); packed_gemv_max_tokens for
  // the other packed weights, whose batched paths read the weights less efficiently.
  int gemv_limit(const CudaWeight& w) const;
  // Whether the decode GEMV takes n tokens of x [n, k] (16-byte aligned) against w.
  bool gemv_takes_weight(const CudaWeight& w, const void* x, int n, int64_t k) const;
  // out [n, m] (+)= x [n, k] @ w^T for steps past the decode GEMV: cuBLASLt (bf16; FP8 tensor cores
  // for an F8_B64 w with row scales), the batched packed GEMM, or dequantized slices and cuBLASLt.
  void weight_gemm(const bf16* x, const CudaWeight& w, bf16* out, int64_t n, bool accumulate);
  // Whether w takes the FP8 tensor-core GEMM for n tokens (row scales, past the decode GEMV).
  bool fp8_gemm_takes(const CudaWeight& w, int64_t n) const;
  // normed_matmul over targets that all take the FP8 GEMM: h quantized once for all of them.
  // False (nothing run) when some target does not.
  bool fp8_normed_matmul(const NormedRows& in, std::initializer_list<MatmulTarget> targets);
  // One weight of an FP8 GEMM over the quantized input: out [n, w.n_out] (+)= ... @ w^T + bias
  // (bias [w.n_out] or null).
  struct Fp8Target {
    const CudaWeight* w;
    const float* bias;
    bf16* out;
  };
  // The workspace scratch of the FP8 GEMM of `targets` for n tokens, reserved before
  // fp8_quantize_input: a workspace that grows later is replaced (zeroed) and would lose the
  // quantized rows.
  void fp8_reserve_gemm(std::span<const Fp8Target> targets, int64_t n);
  // x [n, k] quantized per token into the workspace's FP8 activations and scales.
  void fp8_quantize_input(const bf16* x, int64_t n, int64_t k);
  // Each target's product with the quantized input, after fp8_quantize_input: up to 3 targets in
  // one launch of greta's W8A8 kernel (gemm_w8a8.h) for few tokens, cuBLASLt's FP8 GEMM a target
  // beyond.
  void fp8_gemm_quantized(std::span<const Fp8Target> targets, int64_t n, bool accumulate);
  // The W8A8 kernel's plan for n tokens against the targets' weights, or none (cuBLASLt) when n
  // is past it.
  std::optional<W8A8GemmPlan> w8a8_plan(std::span<const Fp8Target> targets, int64_t n) const;
  // The int8 GEMM's token limit for weights of format t: CudaOptions::int8_gemm_max_tokens, or
  // with -1 the format's measured default.
  int int8_gemm_limit(DType t) const;
  // Whether w takes the int8 GEMM for n tokens (int8_gemm_limit of its format, a GGUF format with
  // a scale per 32 values, past the decode GEMV).
  bool int8_gemm_takes_weight(const CudaWeight& w, int64_t n) const;
  // One weight of the int8 GEMM: out [n, w.n_out] (+)= x @ w^T + bias (bias [w.n_out] or null).
  struct Int8Target {
    const CudaWeight* w;
    const float* bias;
    bf16* out;
  };
  // x [n, k] quantized once, then each target's int8 GEMM over it. The targets take the int8 GEMM
  // for n tokens, share k and their quants' byte order (Q8_0 or the 4-bit formats).
  void int8_gemms(const bf16* x, std::span<const Int8Target> targets, int64_t n, bool accumulate);
  // normed_matmul / a gated feed-forward input over weights that all take the int8 GEMM: h
  // quantized once for all of them. False (nothing run) when some weight does not.
  bool int8_normed_matmul(const NormedRows& in, std::initializer_list<MatmulTarget> targets);
  bool int8_normed_gated(const NormedRows& in, const Weight& w_gate, const Weight& w_up, Tensor gate, Tensor out,
                         void (Backend::*act_mul)(Tensor, Tensor, Tensor));
  // Sets w.row_scale for the FP8 GEMM when every row of the F8_B64 weight w has one scale.
  void find_fp8_row_scales(const std::string& name, CudaWeight& w);
  // The switches every decode GEMV launch carries from the options (pipelined weight stream,
  // int8 activations for GGUF formats).
  void set_gemv_options(GemvArgs& a) const;
  // The decode GEMV's arguments for x += a @ w^T, or false when the shape is not the GEMV's.
  bool residual_gemv(Tensor a, const CudaWeight& w, Tensor x, GemvArgs& g);
  bool gemv_takes(const NormedRows& in, std::initializer_list<MatmulTarget> targets) const;
  GemvArgs gemv_input(const NormedRows& in) const;
  void set_segments(GemvArgs& a, const NormedRows& in, std::initializer_list<MatmulTarget> targets) const;
  const KVLayerDev& prepare_rope(Tensor q, Tensor k, Tensor v, const RopeSpec& rope, KVStorage& kv, int layer);
  const float* rope_table(const std::vector<float>& inv_freq);  // its device copy
  const KVLayerDev& kv_layer(const KVStorage& kv, int layer, const char* op) const;
  const AttentionDecodePlan& attention_plan(int n_heads, const KVLayerDev& L);
  // The kMoe workspace region cut for a chunk of n tokens (cuda_backend_moe.cpp).
  struct MoeLayout {
    MoeRouting r;
    float* logits = nullptr;                                                   // [n, n_experts]
    bf16 *rows = nullptr, *gate = nullptr, *hidden = nullptr, *out = nullptr;  // gathered, [P, d|f]
  };
  MoeLayout moe_layout(int64_t n, int n_experts, int k, int64_t d, int64_t f, bool gemm);
  // A layer's experts as the device kernels take them, kept per router (struct MoeTable).
  struct MoeTable;
  const MoeTable& moe_table(const Weight& router, const std::vector<Expert>& experts);
  // One chunk of tokens of moe_ffn_add's device path; gemm: the gathered cuBLASLt GEMMs.
  void moe_chunk(Tensor h, const CudaWeight& router, const MoeExpertTables& tables, const std::vector<Expert>& experts,
                 int k, bool renormalize, Tensor x, bool gemm);

  // decode_step's phase table for m, kv and the step buffers (uploaded when it changes), or why
  // the step is not taken as one launch.
  std::string persistent_plan(const DecodeModel& m, const KVStorage& kv, Tensor x, Tensor logits);

  CudaOptions opt_;
  DeviceContext dev_;  // first: destroyed last, after everything using its stream
  cudaStream_t stream_ = dev_.stream;
  StepRecorder rec_;
  StepProfiler prof_;
  DeviceWorkspace ws_;
  std::unique_ptr<LtGemm> gemm_;
  std::shared_ptr<std::function<void()>> flush_hook_;  // handed to weights and caches (weak)
  Staging tokens_stage_, rows_stage_, plan_stage_, sample_stage_;
  // The step: packed host copy, device view, and what the ops' checks need.
  std::vector<int32_t> packed_;
  DevStep step_;
  bool have_step_ = false;
  int32_t max_slot_ = -1, max_block_ = -1;
  // The decode attention split of this step (planned at its first attention call).
  AttentionDecodePlan attn_plan_;
  int attn_plan_heads_ = 0, attn_plan_kv_heads_ = 0;  // 0: not planned for this step
  // RoPE inverse-frequency tables on the device, each uploaded once (rope_table).
  struct RopeTable {
    std::vector<float> host;
    DeviceBuffer dev;
  };
  static constexpr size_t kMaxRopeTables = 8;
  std::deque<RopeTable> rope_tables_;
  WeightUploader upload_;              // raw weight bytes -> device -> bf16 or packed planes
  std::set<DType> converted_types_;    // quantized types converted to bf16 so far (said once each)
  bool has_fp8_gemm_weights_ = false;  // some weight takes the FP8 GEMM (its load-log line is said)
  int int8_acts_max_tokens_ = 0;       // int8_activation_max_tokens(): over the uploaded weights' formats
  bool said_fp8_blocks_ = false;       // an FP8 weight that cannot (said once)
  DeviceBuffer fp8_mixed_rows_;        // find_fp8_row_scales' count of rows with several scales
  std::vector<uint16_t> host_bf16_;
  // Mixture of experts, per router: the experts it was built from and, when every one is a bf16
  // matrix of the layer's shape (`device`), the device table of their data pointers.
  struct MoeTable {
    std::vector<const Weight*> weights;  // gate, up, down of each expert
    std::vector<const void*> data;       // their device data (`dev` holds it gate, up, down tables)
    DeviceBuffer dev;
    bool device = false;
    int64_t f = 0;  // the experts' intermediate size
    MoeExpertTables tables() const;
  };
  std::unordered_map<const Weight*, MoeTable> moe_tables_;
  Staging moe_stage_;                // add_rows_scaled's rows and weights
  std::vector<int32_t> moe_counts_;  // the GEMM path's per-expert counts
  // Set by moe_ffn_add: steps of more tokens than moe_graph_max_tokens_ run uncaptured, while
  // the previous step ran an expert block (moe_ran_; a dense model's steps are not limited).
  int moe_graph_max_tokens_ = INT_MAX;
  bool moe_ran_ = false;
  bool said_moe_host_ = false;  // the host-routed expert path's load-log line
  // The persistent decode step: its phase table (host copy as last uploaded), the activations
  // between its phases, counters and attention partials.
  struct PersistentPlan {
    std::vector<PersistentPhase> host;
    std::vector<uint8_t> uploaded;
    DeviceBuffer table, acts, counters, partials;
    int n_phases = 0, max_k = 0, n_kv = 0, head_dim = 0, n_heads = 0, smem_limit = 0;
    bool packed = false;         // some phase reads packed weights
    size_t blocks_smem = 0;      // the shared memory `blocks` was found for (0: none yet) ...
    bool blocks_packed = false;  // ... and which of the two kernels
    int blocks = 0;
  };
  PersistentPlan persist_;
  PersistentTrace persist_trace_{opt_.step_profile};
  bool said_persistent_ = false;       // the load-log line saying why steps are not one launch
  bool said_persistent_wide_ = false;  // ... and the one saying which step sizes are not
  int64_t persistent_steps_ = 0;
};

}  // namespace greta::cuda
