// CudaBackend (cuda_backend_impl.h): the device, memory, weight upload, steps and the plain ops.
#include <algorithm>
#include <cstdio>
#include <string>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/quant_planes.h"
#include "backend/cuda/step_plan.h"

namespace greta::cuda {

DeviceContext::DeviceContext(int device) {
  int count = 0;
  GRETA_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (device < 0 || device >= count)
    throw Error("cuda:" + std::to_string(device) + ": no such device (" + std::to_string(count) + " present)");
  GRETA_CUDA_CHECK(cudaSetDevice(device));
  cudaDeviceProp prop{};
  GRETA_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  name = "cuda:" + std::to_string(device) + " (" + prop.name + ")";
  n_sms = prop.multiProcessorCount;
  GRETA_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
}

DeviceContext::~DeviceContext() {
  cudaStreamSynchronize(stream);
  cudaStreamDestroy(stream);
}

CudaBackend::CudaBackend(const CudaOptions& o)
    : opt_(o),
      dev_(o.device),
      rec_(dev_.stream, o.graphs),
      prof_(o.step_profile, o.graphs),
      ws_(dev_.stream, [this] { flush(); }),
      gemm_(std::make_unique<LtGemm>()),
      flush_hook_(std::make_shared<std::function<void()>>([this] { flush(); })) {
  if (o.gemv_max_tokens < 1 || o.gemv_max_tokens > kGemvMaxTokens)
    throw Error("cuda: gemv_max_tokens " + std::to_string(o.gemv_max_tokens) + " outside [1, " +
                std::to_string(kGemvMaxTokens) + "]");
  if (o.packed_gemv_max_tokens < 1 || o.packed_gemv_max_tokens > kGemvMaxTokens)
    throw Error("cuda: packed_gemv_max_tokens " + std::to_string(o.packed_gemv_max_tokens) + " outside [1, " +
                std::to_string(kGemvMaxTokens) + "]");
  if (o.packed_gemm_max_tokens < 0)
    throw Error("cuda: packed_gemm_max_tokens " + std::to_string(o.packed_gemm_max_tokens) + " is negative");
  if (o.int8_gemm_max_tokens < -1 || o.int8_gemm_max_tokens > kInt8GemmMaxTokens)
    throw Error("cuda: int8_gemm_max_tokens " + std::to_string(o.int8_gemm_max_tokens) + " outside [-1, " +
                std::to_string(kInt8GemmMaxTokens) + "] (-1: each format's default)");
  if (o.moe_gemm_min_tokens < 1)
    throw Error("cuda: moe_gemm_min_tokens " + std::to_string(o.moe_gemm_min_tokens) + " is below 1");
  // The attention and RoPE/KV-write kernels read and write bf16 cache rows only.
  if (o.kv_dtype != KVCacheDType::Auto && o.kv_dtype != KVCacheDType::BF16)
    throw Error(std::string("--kv-dtype ") + (o.kv_dtype == KVCacheDType::FP8 ? "fp8" : "f16") +
                ": the CUDA backend's KV cache is bf16 only (accepted with --device cuda: auto, bf16; fp8 and f16 "
                "run on --device cpu)");
  attention_prefill_tc_setup();
}

CudaBackend::~CudaBackend() {
  try {
    flush();
  } catch (const Error&) {  // a destructor cannot report it; the work is abandoned
  }
  flush_hook_.reset();  // weights and caches that outlive the backend must not call back
  cudaStreamSynchronize(stream_);
}

// ---- memory ----

Tensor CudaBackend::alloc(int64_t rows, int64_t cols) {
  Tensor t;
  t.dtype = DType::BF16;
  t.rows = rows;
  t.cols = cols;
  if (rows * cols > 0) GRETA_CUDA_CHECK(cudaMalloc(&t.data, size_t(rows * cols) * sizeof(bf16)));
  return t;
}

void CudaBackend::free(Tensor& t) {
  if (t.data) {
    flush();  // recorded launches may use this memory
    GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    GRETA_CUDA_CHECK(cudaFree(t.data));
  }
  t.data = nullptr;
}

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
    out->bytes = f.size() * 4;
    GRETA_CUDA_CHECK(cudaMalloc(&out->data, f.size() * 4));
    GRETA_CUDA_CHECK(cudaMemcpy(out->data, f.data(), f.size() * 4, cudaMemcpyHostToDevice));
    return out;
  }
  if (opt_.packed_weights && packed_on_device(w.dtype)) {
    out->dtype = w.dtype;
    out->bytes = quant_planes(w.dtype, rows, cols).total;
    GRETA_CUDA_CHECK(cudaMalloc(&out->data, out->bytes));
    upload_.repack(w.dtype, w.data, rb, rows, cols, out->data, stream_);
    GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host bytes may be unmapped after return
    if (w.dtype == DType::F8_B64) find_fp8_row_scales(w.name, *out);
    if (opt_.packed_int8_acts && int8_dot_format(w.dtype))
      int8_acts_max_tokens_ = std::max({int8_acts_max_tokens_, 1, int8_gemm_limit(w.dtype)});
    return out;
  }
  if (!convert_supported(w.dtype))
    throw Error("cuda upload: tensor '" + w.name + "' has unsupported type " + std::string(dtype_name(w.dtype)));
  if (is_quantized(w.dtype) && converted_types_.insert(w.dtype).second)
    std::fprintf(stderr, "greta: cuda: %s weights are converted to bf16 on the device (%s)\n",
                 std::string(dtype_name(w.dtype)).c_str(),
                 packed_on_device(w.dtype) ? "packed weights switched off" : "no kernel reads this format packed yet");
  out->dtype = DType::BF16;
  out->bytes = size_t(rows * cols) * sizeof(bf16);
  GRETA_CUDA_CHECK(cudaMalloc(&out->data, out->bytes));
  upload_.convert(w.dtype, w.data, rb, rows, cols, static_cast<bf16*>(out->data), stream_);
  GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the host bytes may be unmapped after return
  return out;
}

// The FP8 GEMM's operand rows are k bytes apart and its bf16 output rows m values apart: cuBLASLt
// wants both 16-byte aligned.
namespace {
bool fp8_gemm_shape(int64_t m, int64_t k) { return k % 16 == 0 && m % 8 == 0; }
}  // namespace

// An F8_B64 weight whose rows each have one scale (per-tensor and per-channel checkpoints,
// `--quantize fp8`) keeps those scales as a vector for the FP8 tensor-core GEMM; one with scales
// that vary along a row (128 x 128 tiles) takes the W8A16 paths, and the load log says so.
void CudaBackend::find_fp8_row_scales(const std::string& name, CudaWeight& w) {
  if (!opt_.fp8_tensor_cores) return;
  int32_t rows_mixed = 0;
  if (fp8_gemm_shape(w.n_out, w.n_in)) {
    if (!fp8_mixed_rows_.get()) fp8_mixed_rows_.reset(sizeof(int32_t));
    auto* mixed = static_cast<int32_t*>(fp8_mixed_rows_.get());
    GRETA_CUDA_CHECK(cudaMalloc(&w.row_scale, size_t(w.n_out) * sizeof(float)));
    GRETA_CUDA_CHECK(cudaMemsetAsync(mixed, 0, sizeof(int32_t), stream_));
    f8_row_scales(w.data, w.n_out, w.n_in, w.row_scale, mixed, stream_);
    GRETA_CUDA_CHECK(cudaMemcpyAsync(&rows_mixed, mixed, sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
    GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (rows_mixed == 0) {
      w.bytes += size_t(w.n_out) * sizeof(float);
      if (!has_fp8_gemm_weights_)
        std::fprintf(stderr,
                     "greta: cuda: FP8 weights with one scale a row: steps past the decode GEMV run on the FP8 "
                     "tensor cores (W8A8, activations quantized per token)\n");
      has_fp8_gemm_weights_ = true;
      return;
    }
    GRETA_CUDA_CHECK(cudaFree(w.row_scale));
    w.row_scale = nullptr;
  }
  if (!said_fp8_blocks_)
    std::fprintf(stderr,
                 "greta: cuda: FP8 tensor '%s' (and any like it) %s: steps past the decode GEMV dequantize it to "
                 "bf16 for cuBLASLt\n",
                 name.c_str(),
                 rows_mixed > 0 ? "has scales that vary along its rows" : "has a shape the FP8 GEMM does not take");
  said_fp8_blocks_ = true;
}

std::unique_ptr<KVStorage> CudaBackend::alloc_kv(const KVCacheDesc& d) {
  if (d.n_layers <= 0 || d.n_blocks <= 0 || d.block_size <= 0 || d.n_kv_heads <= 0 || d.head_dim <= 0)
    throw Error("cuda alloc_kv: every KV cache dimension must be positive");
  if (!attention_head_dim_supported(d.head_dim))
    throw Error("cuda alloc_kv: head_dim " + std::to_string(d.head_dim) + " not supported (64, 96, 128, 256)");
  auto kv = std::make_unique<CudaKV>();
  kv->flush = flush_hook_;
  kv->desc = d;
  kv->dtype = DType::BF16;
  const size_t per = size_t(d.n_blocks) * d.block_size * d.n_kv_heads * d.head_dim;  // values per pool
  GRETA_CUDA_CHECK(cudaMalloc(&kv->mem, per * 2 * size_t(d.n_layers) * sizeof(bf16)));
  auto* base = static_cast<bf16*>(kv->mem);
  for (int l = 0; l < d.n_layers; ++l) {
    KVLayerDev L;
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

double CudaBackend::measure_bandwidth_gbs() {
  flush();
  return measure_copy_bandwidth_gbs(stream_);
}

// ---- steps ----

void CudaBackend::begin_step(const StepPlan& p) {
  rec_.begin(false);  // runs what a step that ended without to_host (no logits wanted) recorded
  // The host packs every per-step array into one buffer (step_plan.h); one upload, then the
  // device view points into it.
  const PackedStep ps = pack_step(p, kDecodeMaxNewTokens, kDecodeCtxBucket, packed_);
  max_slot_ = ps.max_slot;
  max_block_ = ps.max_block;
  const auto* dev = static_cast<const int32_t*>(plan_stage_.put(packed_.data(), packed_.size() * 4, stream_));
  step_ = bind_step(ps, dev);
  have_step_ = true;
  attn_plan_heads_ = attn_plan_kv_heads_ = 0;
  // A mixture-of-experts model (its last step ran moe_ffn_add) may want some steps uncaptured.
  const int moe_limit = moe_ran_ ? moe_graph_max_tokens_ : INT_MAX;
  moe_ran_ = false;
  const bool decode = step_.n_prefill == 0 && step_.n_tokens <= kGraphMaxTokens && step_.n_tokens <= moe_limit;
  rec_.begin(decode);
  prof_.begin(decode, step_.n_tokens, stream_);
}

void CudaBackend::end_step() {
  prof_.before_run(stream_);
  flush();  // the step's recorded launches: a graph replay, a capture, or direct
  prof_.after_run(stream_);
}

// ---- checks shared by the implementation files ----

void expect_act(const Tensor& t, int64_t rows, int64_t cols, const char* what) {
  if (t.dtype != DType::BF16 || t.rows != rows || t.cols != cols)
    throw Error(std::string("cuda ") + what + ": expected bf16 " + shape_str(rows, cols) + ", got " +
                std::string(dtype_name(t.dtype)) + " " + shape_str(t.rows, t.cols));
}

const CudaWeight& weight2d(const Weight& w, const char* op) {
  const auto* cw = dynamic_cast<const CudaWeight*>(&w);
  if (!cw || (cw->dtype != DType::BF16 && !packed_on_device(cw->dtype)))
    throw Error(std::string("cuda ") + op + ": weight was not uploaded to this backend as a 2-D matrix");
  return *cw;
}

// FP8 weights with row scales have a tensor-core GEMM that needs no dequantized copy, as bf16
// ones do, so they leave the GEMV at the same size (measured: W8A8 at 32 tokens +13% over the
// GEMV, at 16 tokens -18%; docs/notes/fp8-gemm.md).
int CudaBackend::gemv_limit(const CudaWeight& w) const {
  return w.dtype == DType::BF16 || w.row_scale ? opt_.gemv_max_tokens : opt_.packed_gemv_max_tokens;
}

// Packed planes are 256-byte aligned and their rows multiples of 32 values, so the shape
// checks are the bf16 ones.
bool CudaBackend::gemv_takes_weight(const CudaWeight& w, const void* x, int n, int64_t k) const {
  return n <= gemv_limit(w) && gemv_fast_path(x, w.data, n, k);
}

void CudaBackend::weight_gemm(const bf16* x, const CudaWeight& w, bf16* out, int64_t n, bool accumulate) {
  if (w.dtype == DType::BF16) {
    launch(&lt_gemm_cmd, gemm_.get(), x, static_cast<const bf16*>(w.data), out, n, w.n_out, w.n_in, int(accumulate),
           stream_);
    return;
  }
  if (w.row_scale) {
    const Fp8Target t[1] = {{&w, nullptr, out}};
    fp8_reserve_gemm(t, n);
    fp8_quantize_input(x, n, w.n_in);
    fp8_gemm_quantized(t, n, accumulate);
    return;
  }
  if (int8_gemm_takes_weight(w, n)) {
    const Int8Target t[1] = {{&w, nullptr, out}};
    int8_gemms(x, t, n, accumulate);
    return;
  }
  if (n <= opt_.packed_gemm_max_tokens) {
    const PackedGemmPlan plan = packed_gemm_plan(w.dtype, n, w.n_out, w.n_in, dev_.n_sms);
    ws_.reserve<float>(DeviceWorkspace::kSplitPartials, packed_gemm_scratch_floats(plan));
    ws_.reserve<int32_t>(DeviceWorkspace::kSplitCounters, packed_gemm_counters(plan));
    PackedGemmArgs a;
    a.x = x;
    a.w = w.data;
    a.out = out;
    a.scratch = ws_.at<float>(DeviceWorkspace::kSplitPartials);
    a.counters = ws_.at<int32_t>(DeviceWorkspace::kSplitCounters);
    a.m = w.n_out;
    a.k = w.n_in;
    a.n = int32_t(n);
    a.accumulate = int32_t(accumulate);
    launch(&packed_gemm, w.dtype, a, plan, stream_);
    return;
  }
  // Rows of the packed weight are dequantized a slice at a time into the workspace: a slice
  // of at most kDequantValues values keeps the scratch small next to the model, and at 16+
  // rows a slice the GEMMs still fill the device.
  constexpr int64_t kDequantValues = int64_t(32) << 20;
  const int64_t per = std::min(w.n_out, std::max<int64_t>(16, kDequantValues / w.n_in / 16 * 16));
  ws_.reserve<bf16>(DeviceWorkspace::kDequant, size_t(per * w.n_in));
  launch(&packed_gemm_cmd, gemm_.get(), x, w.dtype, static_cast<const void*>(w.data),
         ws_.at<bf16>(DeviceWorkspace::kDequant), per, out, n, w.n_out, w.n_in, int(accumulate), stream_);
}

const CudaWeight& weight1d(const Weight& w, int64_t n, const char* op) {
  const auto* cw = dynamic_cast<const CudaWeight*>(&w);
  if (!cw || cw->dtype != DType::F32 || cw->n_in != n)
    throw Error(std::string("cuda ") + op + ": expected a 1-D weight of " + std::to_string(n) +
                " values uploaded to this backend");
  return *cw;
}

// ---- plain ops ----

void CudaBackend::embed(const Weight& table, const int32_t* tokens, int n, Tensor out) {
  const auto& t = weight2d(table, "embed");
  expect_act(out, n, t.n_in, "embed out");
  for (int i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= t.n_out)
      throw Error("embed: token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                  " is outside the vocabulary [0, " + std::to_string(t.n_out) + ")");
  const auto* idx = static_cast<const int32_t*>(rec_.stage(tokens_stage_, tokens, size_t(n) * 4));
  if (t.dtype != DType::BF16) {  // a packed table: its rows dequantized
    launch(&dequant_rows, t.dtype, static_cast<const void*>(t.data), t.n_out, t.n_in, idx, int64_t(0), int64_t(n),
           act(out), stream_);
    return;
  }
  launch(&cuda::gather_rows, static_cast<const bf16*>(t.data), idx, act(out), int64_t(n), t.n_in, stream_);
}

void CudaBackend::rms_norm(Tensor x, const Weight& w, float eps, Tensor out) {
  const auto& v = weight1d(w, x.cols, "rms_norm");
  expect_act(x, x.rows, x.cols, "rms_norm x");
  expect_act(out, x.rows, x.cols, "rms_norm out");
  launch(&cuda::rms_norm, act(x), static_cast<const float*>(v.data), eps, act(out), x.rows, x.cols, stream_);
}

void CudaBackend::matmul(Tensor x, const Weight& w, const Weight* bias, Tensor out) {
  const auto& wt = weight2d(w, "matmul");
  expect_act(x, x.rows, wt.n_in, "matmul x");
  expect_act(out, x.rows, wt.n_out, "matmul out");
  const float* b = bias ? static_cast<const float*>(weight1d(*bias, wt.n_out, "matmul bias").data) : nullptr;
  if (x.rows <= opt_.gemv_max_tokens && wt.dtype == DType::BF16) {
    launch(&gemv, act(x), static_cast<const bf16*>(wt.data), b, act(out), int(x.rows), wt.n_out, wt.n_in,
           int(opt_.gemv_pipeline), stream_);
  } else if (wt.dtype != DType::BF16 && gemv_takes_weight(wt, x.data, int(x.rows), x.cols)) {
    GemvArgs g{};
    g.x = act(x);
    g.k = wt.n_in;
    g.n = int32_t(x.rows);
    g.seg0 = GemvSeg{static_cast<const bf16*>(wt.data), b, act(out), wt.n_out};
    g.wfmt = int32_t(wt.dtype);
    set_gemv_options(g);
    launch(&gemv_fused, g, 0.f, stream_);
  } else {
    weight_gemm(act(x), wt, act(out), x.rows, false);
    if (b) launch(&add_bias_rows, act(out), b, x.rows, wt.n_out, stream_);
  }
}

void CudaBackend::add(Tensor a, Tensor b, Tensor out) {
  expect_act(b, a.rows, a.cols, "add b");
  expect_act(out, a.rows, a.cols, "add out");
  launch(&cuda::add, act(a), act(b), act(out), a.rows * a.cols, stream_);
}

void CudaBackend::gated_mul(GatedKernel kernel, Tensor gate, Tensor up, Tensor out, const std::string& op) {
  expect_act(up, gate.rows, gate.cols, (op + " up").c_str());
  expect_act(out, gate.rows, gate.cols, (op + " out").c_str());
  launch(kernel, act(gate), act(up), act(out), gate.rows * gate.cols, stream_);
}

void CudaBackend::silu_mul(Tensor gate, Tensor up, Tensor out) {
  gated_mul(&cuda::silu_mul, gate, up, out, "silu_mul");
}
void CudaBackend::gelu_mul(Tensor gate, Tensor up, Tensor out) {
  gated_mul(&cuda::gelu_mul, gate, up, out, "gelu_mul");
}

void CudaBackend::scale(Tensor x, float s, Tensor out) {
  expect_act(out, x.rows, x.cols, "scale out");
  launch(&cuda::scale, static_cast<const bf16*>(act(x)), s, act(out), x.rows * x.cols, stream_);
}

void CudaBackend::softcap(Tensor x, float cap, Tensor out) {
  expect_act(out, x.rows, x.cols, "softcap out");
  if (!(cap > 0.0f) || std::isinf(cap))
    throw Error("cuda softcap: cap " + std::to_string(cap) + " (expected a finite number > 0)");
  launch(&cuda::softcap, static_cast<const bf16*>(act(x)), cap, act(out), x.rows * x.cols, stream_);
}

void CudaBackend::gather_rows(Tensor x, const std::vector<int32_t>& rows, Tensor out) {
  expect_act(out, int64_t(rows.size()), x.cols, "gather_rows out");
  for (size_t i = 0; i < rows.size(); ++i)
    if (rows[i] < 0 || rows[i] >= x.rows)
      throw Error("gather_rows: row " + std::to_string(rows[i]) + " outside [0, " + std::to_string(x.rows) + ")");
  const auto* idx = static_cast<const int32_t*>(rec_.stage(rows_stage_, rows.data(), rows.size() * 4));
  launch(&cuda::gather_rows, static_cast<const bf16*>(act(x)), idx, act(out), int64_t(rows.size()), x.cols, stream_);
}

void CudaBackend::to_host(Tensor x, float* dst) {
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

}  // namespace greta::cuda

namespace greta {

using cuda::CudaBackend;

bool cuda_device_present() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

std::unique_ptr<Backend> make_cuda_backend(const CudaOptions& o) { return std::make_unique<CudaBackend>(o); }

CudaGraphStats cuda_graph_stats(const Backend& b) {
  const auto* cb = dynamic_cast<const CudaBackend*>(&b);
  if (!cb) throw Error("cuda_graph_stats: not a CUDA backend");
  const auto& s = cb->graph_stats();
  return CudaGraphStats{s.eager, s.captured, s.replayed};
}

int64_t cuda_persistent_steps(const Backend& b) {
  const auto* cb = dynamic_cast<const CudaBackend*>(&b);
  if (!cb) throw Error("cuda_persistent_steps: not a CUDA backend");
  return cb->persistent_steps();
}

}  // namespace greta
