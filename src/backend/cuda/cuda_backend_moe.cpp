// CudaBackend (cuda_backend_impl.h): mixture of experts. docs/notes/moe.md, "CUDA".
//
// moe_ffn_add with bf16 experts never waits for the host in a captured step: the router's fp32
// logits (a kernel), then the top-k routing and the grouping of the step's (token, choice) pairs
// by expert (a second one) stay in device memory, and the expert kernels take the experts' matrices from a per-layer
// device table indexed by the routed ids, so the launches (and the step's graph) are the same whatever the routing.
// Steps of at least CudaOptions::moe_gemm_min_tokens tokens run uncaptured (begin_step leaves them out of graphs after
// a step with an expert block) and multiply each used expert's gathered tokens with cuBLASLt, which needs the
// per-expert counts on the host: one wait a layer, paid only by large steps. Experts in another format (packed quant
// planes) take Backend's default, routed on the host through moe_route.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"

namespace greta::cuda {
namespace {

// Tokens routed and multiplied at a time: bounds the kMoe region (pairs x model width).
constexpr int64_t kMoeChunkTokens = 1024;

// A bf16 matrix of exactly [rows, cols] on this backend, or null.
const CudaWeight* bf16_matrix(const Weight* w, int64_t rows, int64_t cols) {
  const auto* cw = dynamic_cast<const CudaWeight*>(w);
  return cw && cw->dtype == DType::BF16 && cw->n_out == rows && cw->n_in == cols ? cw : nullptr;
}

void check_moe_shape(int n_experts, int k, const char* op) {
  if (n_experts < 1 || n_experts > kMoeMaxExperts || k < 1 || k > std::min(n_experts, kMoeMaxTopK))
    throw Error(std::string("cuda ") + op + ": " + std::to_string(n_experts) + " experts, top " + std::to_string(k) +
                " (the router kernel takes 1.." + std::to_string(kMoeMaxExperts) + " experts, top 1.." +
                std::to_string(kMoeMaxTopK) + " of them)");
}

}  // namespace

CudaBackend::MoeLayout CudaBackend::moe_layout(int64_t n, int n_experts, int k, int64_t d, int64_t f, bool gemm) {
  const size_t P = size_t(n) * size_t(k), E = size_t(n_experts);
  size_t at = 0;
  auto take = [&at](size_t bytes) {
    const size_t here = at;
    at += (bytes + 255) / 256 * 256;
    return here;
  };
  const size_t o_logits = take(size_t(n) * E * 4), o_ids = take(P * 4), o_w = take(P * 4), o_pos = take(P * 4),
               o_tok = take(P * 4), o_cnt = take(E * 4), o_off = take((E + 1) * 4), o_used = take(E * 4),
               o_nused = take(4), o_rows = take(gemm ? P * size_t(d) * 2 : 0),
               o_gate = take(gemm ? P * size_t(f) * 2 : 0), o_hidden = take(P * size_t(f) * 2),
               o_out = take(P * size_t(d) * 2);
  ws_.reserve<uint8_t>(DeviceWorkspace::kMoe, at);
  uint8_t* base = ws_.at<uint8_t>(DeviceWorkspace::kMoe);
  MoeLayout L;
  L.r.ids = reinterpret_cast<int32_t*>(base + o_ids);
  L.r.weights = reinterpret_cast<float*>(base + o_w);
  L.r.pos = reinterpret_cast<int32_t*>(base + o_pos);
  L.r.pair_token = reinterpret_cast<int32_t*>(base + o_tok);
  L.r.counts = reinterpret_cast<int32_t*>(base + o_cnt);
  L.r.offsets = reinterpret_cast<int32_t*>(base + o_off);
  L.r.used = reinterpret_cast<int32_t*>(base + o_used);
  L.r.n_used = reinterpret_cast<int32_t*>(base + o_nused);
  L.logits = reinterpret_cast<float*>(base + o_logits);
  L.rows = reinterpret_cast<bf16*>(base + o_rows);
  L.gate = reinterpret_cast<bf16*>(base + o_gate);
  L.hidden = reinterpret_cast<bf16*>(base + o_hidden);
  L.out = reinterpret_cast<bf16*>(base + o_out);
  return L;
}

void CudaBackend::moe_route(Tensor logits, int k, bool renormalize, int32_t* ids, float* weights) {
  expect_act(logits, logits.rows, logits.cols, "moe_route logits");
  check_moe_shape(int(logits.cols), k, "moe_route");
  const int64_t n = logits.rows;
  if (n == 0) return;
  const MoeLayout L = moe_layout(n, int(logits.cols), k, 0, 0, false);
  launch(&cuda::moe_route, static_cast<const void*>(logits.data), 1, n, int(logits.cols), k, int(renormalize), 0, L.r,
         stream_);
  flush();
  const size_t P = size_t(n) * size_t(k);
  GRETA_CUDA_CHECK(cudaMemcpyAsync(ids, L.r.ids, P * 4, cudaMemcpyDeviceToHost, stream_));
  GRETA_CUDA_CHECK(cudaMemcpyAsync(weights, L.r.weights, P * 4, cudaMemcpyDeviceToHost, stream_));
  GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaBackend::add_rows_scaled(Tensor x, const std::vector<int32_t>& rows, const std::vector<float>& weights,
                                  Tensor out) {
  const int64_t m = int64_t(rows.size());
  if (weights.size() != rows.size())
    throw Error("cuda add_rows_scaled: " + std::to_string(rows.size()) + " rows but " + std::to_string(weights.size()) +
                " weights");
  expect_act(x, m, x.cols, "add_rows_scaled x");
  expect_act(out, out.rows, x.cols, "add_rows_scaled out");
  for (size_t j = 0; j < rows.size(); ++j)
    if (rows[j] < 0 || rows[j] >= out.rows)
      throw Error("cuda add_rows_scaled: row " + std::to_string(rows[j]) + " outside [0, " + std::to_string(out.rows) +
                  ")");
  if (m == 0) return;
  std::vector<int32_t> packed(rows);  // rows, then the weights' bits: one staged copy
  packed.resize(size_t(2 * m));
  std::memcpy(packed.data() + m, weights.data(), size_t(m) * 4);
  const auto* dev = static_cast<const int32_t*>(rec_.stage(moe_stage_, packed.data(), packed.size() * 4));
  launch(&cuda::add_rows_scaled, static_cast<const bf16*>(act(x)), dev, reinterpret_cast<const float*>(dev + m),
         act(out), m, x.cols, stream_);
}

MoeExpertTables CudaBackend::MoeTable::tables() const {
  const auto* p = static_cast<const bf16* const*>(dev.get());
  const size_t E = weights.size() / 3;
  return MoeExpertTables{p, p + E, p + 2 * E};
}

// Checked and built when a router is first seen with these expert weights; afterwards a call
// compares the weight objects and their data pointers (no casts, no copies).
const CudaBackend::MoeTable& CudaBackend::moe_table(const Weight& router, const std::vector<Expert>& experts) {
  const size_t E = experts.size();
  auto it = moe_tables_.find(&router);
  if (it != moe_tables_.end() && it->second.weights.size() == 3 * E) {
    const MoeTable& t = it->second;
    bool same = true;
    for (size_t e = 0; e < E && same; ++e) {
      const Weight* w[3] = {experts[e].gate, experts[e].up, experts[e].down};
      for (size_t i = 0; i < 3 && same; ++i)
        same = t.weights[3 * e + i] == w[i] &&
               (!t.device || t.data[3 * e + i] == static_cast<const CudaWeight*>(w[i])->data);
    }
    if (same) return t;
  }
  // Tables of freed models stay until this bound (a few bytes each); an address reused by
  // another model's router fails the comparison above and is rebuilt.
  if (moe_tables_.size() > 4096 && it == moe_tables_.end()) {
    flush();
    GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    moe_tables_.clear();
  }
  MoeTable& t = moe_tables_[&router];
  t.weights.assign(3 * E, nullptr);
  t.data.assign(3 * E, nullptr);
  const auto* rw = dynamic_cast<const CudaWeight*>(&router);
  const int64_t d = rw ? rw->n_in : 0;
  t.f = experts[0].gate ? experts[0].gate->n_out : 0;
  // The device path: bf16 router and experts of one shape, rows in whole 16-byte granules.
  t.device = rw && rw->dtype == DType::BF16 && d % 8 == 0 && t.f > 0 && t.f % 8 == 0;
  for (size_t e = 0; e < E; ++e) {
    const CudaWeight* m[3] = {bf16_matrix(experts[e].gate, t.f, d), bf16_matrix(experts[e].up, t.f, d),
                              bf16_matrix(experts[e].down, d, t.f)};
    const Weight* w[3] = {experts[e].gate, experts[e].up, experts[e].down};
    for (size_t i = 0; i < 3; ++i) {
      t.weights[3 * e + i] = w[i];
      t.device = t.device && m[i];
      if (m[i]) t.data[3 * e + i] = m[i]->data;
    }
  }
  if (!t.device) return t;
  // gate pointers, then up, then down: the layout MoeExpertTables reads
  std::vector<const void*> table(3 * E);
  for (size_t e = 0; e < E; ++e)
    for (size_t i = 0; i < 3; ++i) table[i * E + e] = t.data[3 * e + i];
  flush();  // recorded launches may read the old table
  GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));
  t.dev.reset(table.size() * sizeof(void*));
  GRETA_CUDA_CHECK(cudaMemcpy(t.dev.get(), table.data(), table.size() * sizeof(void*), cudaMemcpyHostToDevice));
  return t;
}

void CudaBackend::moe_ffn_add(const NormedRows& in, const Weight& router, const std::vector<Expert>& experts, int top_k,
                              bool renormalize, const MoeScratch& s, Tensor x) {
  const int E = int(experts.size());
  if (router.n_out != int64_t(E) || top_k < 1 || top_k > E)
    throw Error("moe_ffn_add: router of " + std::to_string(router.n_out) + " rows for " + std::to_string(E) +
                " experts, top " + std::to_string(top_k));
  check_moe_shape(E, top_k, "moe_ffn_add");
  const auto& rw = weight2d(router, "moe_ffn_add router");
  const int64_t d = rw.n_in;
  expect_act(x, x.rows, d, "moe_ffn_add x");
  const MoeTable& table = moe_table(router, experts);
  if (!table.device) {
    if (!said_moe_host_) {
      const Weight* w = experts[0].gate;
      std::fprintf(stderr,
                   "greta: cuda: %s experts of [%lld, %lld] run through the plain matmuls, routed on the host (a "
                   "wait a layer; steps without graphs): the device expert kernels take bf16 experts with rows "
                   "of a multiple of 8 values (GRETA_CUDA_PACKED_WEIGHTS=0 converts quantized ones)\n",
                   w ? std::string(dtype_name(w->dtype)).c_str() : "missing", static_cast<long long>(table.f),
                   static_cast<long long>(d));
      said_moe_host_ = true;
    }
    moe_graph_max_tokens_ = 0;  // no step of this model is captured: each waits for its routing
    moe_ran_ = true;
    Backend::moe_ffn_add(in, router, experts, top_k, renormalize, s, x);
    return;
  }
  // The model's next steps large enough for the GEMM path are left uncaptured (begin_step).
  moe_graph_max_tokens_ = opt_.moe_gemm_min_tokens - 1;
  moe_ran_ = true;
  const Tensor h = normed_rows(in);
  expect_act(h, x.rows, d, "moe_ffn_add h");
  const MoeExpertTables tables = table.tables();
  // cuBLASLt's heuristic assumes 256-byte aligned operands (its default preference): each
  // expert's rows start at a multiple of d and f values, so both must be multiples of 128.
  const bool gemm_shape = d % 128 == 0 && table.f % 128 == 0;
  for (int64_t t0 = 0; t0 < h.rows; t0 += kMoeChunkTokens) {
    const int64_t n = std::min(kMoeChunkTokens, h.rows - t0);
    const bool gemm = gemm_shape && n >= opt_.moe_gemm_min_tokens && !rec_.recording();
    moe_chunk(h.rows_slice(t0, n), rw, tables, experts, top_k, renormalize, x.rows_slice(t0, n), gemm);
  }
}

void CudaBackend::moe_chunk(Tensor h, const CudaWeight& router, const MoeExpertTables& tables,
                            const std::vector<Expert>& experts, int k, bool renormalize, Tensor x, bool gemm) {
  const int E = int(experts.size());
  const int64_t n = h.rows, d = h.cols, f = experts[0].gate->n_out, P = n * k;
  const MoeLayout L = moe_layout(n, E, k, d, f, gemm);
  launch(&moe_router_logits, static_cast<const bf16*>(act(h)), static_cast<const bf16*>(router.data), L.logits, n, E, d,
         stream_);
  launch(&cuda::moe_route, static_cast<const void*>(L.logits), 0, n, E, k, int(renormalize), 1, L.r, stream_);
  if (!gemm) {
    const int slots = int(std::min<int64_t>(P, E));
    launch(&moe_expert_gate_up, static_cast<const bf16*>(act(h)), tables, L.r, L.hidden, f, d, slots, stream_);
    launch(&moe_expert_down, static_cast<const bf16*>(L.hidden), tables, L.r, L.out, f, d, slots, stream_);
  } else {
    // Uncaptured (moe_ffn_add checked): launches run as they are made, so the counts can be read.
    cuda::gather_rows(act(h), L.r.pair_token, L.rows, P, d, stream_);
    moe_counts_.resize(size_t(E));
    GRETA_CUDA_CHECK(cudaMemcpyAsync(moe_counts_.data(), L.r.counts, size_t(E) * 4, cudaMemcpyDeviceToHost, stream_));
    GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    auto wdata = [](const Weight* w) { return static_cast<const bf16*>(static_cast<const CudaWeight*>(w)->data); };
    int64_t off = 0;  // the kernel's grouped order: experts in id order
    for (int e = 0; e < E; ++e) {
      const int64_t c = moe_counts_[size_t(e)];
      if (c == 0) continue;
      gemm_->run(L.rows + off * d, wdata(experts[size_t(e)].gate), L.gate + off * f, c, f, d, false, stream_);
      gemm_->run(L.rows + off * d, wdata(experts[size_t(e)].up), L.hidden + off * f, c, f, d, false, stream_);
      off += c;
    }
    if (off != P)
      throw Error("cuda moe_ffn_add: the router placed " + std::to_string(off) + " of " + std::to_string(P) +
                  " (token, expert) pairs");
    cuda::silu_mul(L.gate, L.hidden, L.hidden, P * f, stream_);
    off = 0;
    for (int e = 0; e < E; ++e) {
      const int64_t c = moe_counts_[size_t(e)];
      if (c == 0) continue;
      gemm_->run(L.hidden + off * f, wdata(experts[size_t(e)].down), L.out + off * d, c, d, f, false, stream_);
      off += c;
    }
  }
  launch(&moe_combine, static_cast<const bf16*>(L.out), L.r, act(x), n, k, d, stream_);
}

}  // namespace greta::cuda
