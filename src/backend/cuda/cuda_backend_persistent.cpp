// CudaBackend (cuda_backend_impl.h): a decode step as one persistent launch (persistent_step.h).
//
// The phase table (5 phases a layer: q/k/v, attention, o, gate/up, down; then the output
// projection) is built on the host for one model, cache and set of step buffers, uploaded once
// and kept while they stay the same. Each step passes only the step's shape (DevStep) and the
// attention split, so a step graph replays the launch like any other.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <utility>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend_impl.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/persistent_step.h"

namespace greta::cuda {
namespace {

constexpr int kPhasesPerLayer = 5;
// Attention partitions: at least this many positions each; an item's fixed cost (q rotation,
// the block's merge) counted as this many positions when choosing how many.
constexpr int kMinPartLen = 64;
constexpr int kItemSetupPositions = 32;

// A GEMV's weight of this shape, or null.
const CudaWeight* gemv_matrix(const Weight* w, int64_t rows, int64_t cols) {
  const auto* c = dynamic_cast<const CudaWeight*>(w);
  return c && c->n_out == rows && c->n_in == cols ? c : nullptr;
}
// The step's name for a weight's format, false when it reads no such weights: bf16, and Q8_0
// and Q4_0 when the graph path's GEMVs take them with int8 activations too (`int8_acts`:
// CudaOptions::packed_int8_acts), as the step's packed phases do.
bool step_weights(const CudaWeight& w, bool int8_acts, PersistentWeights& f) {
  f = w.dtype == DType::Q8_0   ? PersistentWeights::kQ8_0
      : w.dtype == DType::Q4_0 ? PersistentWeights::kQ4_0
                               : PersistentWeights::kBf16;
  if (w.dtype == DType::BF16) return true;
  // Scale planes start 256-byte aligned at a 256-byte aligned base: the kernel finds the 16-byte
  // offset of a piece's scales from the piece's place in the plane alone.
  return f != PersistentWeights::kBf16 && int8_acts && w.n_in % 32 == 0 &&
         reinterpret_cast<uintptr_t>(w.data) % 256 == 0;
}
const float* norm_weights(const Weight* w, int64_t n) {
  const auto* c = dynamic_cast<const CudaWeight*>(w);
  // 16-byte aligned: the kernel reads them as float4.
  return c && c->dtype == DType::F32 && c->n_out * c->n_in == n && reinterpret_cast<uintptr_t>(c->data) % 16 == 0
             ? static_cast<const float*>(c->data)
             : nullptr;
}

}  // namespace

// Why the step is not taken as one launch, or empty when it is. The phase table is built anew
// each step (a few hundred plain structs) and uploaded only when it differs from the last one.
std::string CudaBackend::persistent_plan(const DecodeModel& m, const KVStorage& kv, Tensor x, Tensor logits) {
  PersistentPlan& p = persist_;
  const auto* ck = dynamic_cast<const CudaKV*>(&kv);
  if (!ck || ck->layers.size() < m.layers.size() || m.layers.empty()) return "KV storage of another backend";
  if (kv.dtype != DType::BF16) return "the KV cache is not bf16";
  const int n_kv = ck->desc.n_kv_heads, hd = ck->desc.head_dim, H = m.n_heads;
  const int64_t dim = x.cols, vocab = logits.cols;
  if (n_kv < 1 || H % n_kv != 0 || H / n_kv > 8) return "a kv head shared by more than 8 q heads";
  if (!persistent_step_head_dim_supported(hd)) return "head size " + std::to_string(hd) + " (64, 96 or 128 are taken)";
  const auto* w0 = dynamic_cast<const CudaWeight*>(m.layers[0].w_gate);
  p.packed = false;
  if (!w0) return "weights of another backend";
  const int64_t ffn = w0->n_out, qw = int64_t(H) * hd, kvw = int64_t(n_kv) * hd;
  if (dim % 8 != 0 || ffn % 8 != 0 || qw % 8 != 0) return "a width that is not a multiple of 8";
  const int64_t qkv_w = qw + 2 * kvw;

  // Scratch: q | k | v [max tokens][qkv_w], attention [max tokens][qw], silu(gate) up [max tokens][ffn].
  const size_t T = kPersistentMaxTokens;
  const size_t act_elems = T * size_t(qkv_w) + T * size_t(qw) + T * size_t(ffn);
  // Zeroed bytes, padding included: the table is compared with the uploaded one byte by byte.
  std::vector<PersistentPhase>& ph = p.host;
  ph.resize(m.layers.size() * kPhasesPerLayer + 1);
  std::memset(static_cast<void*>(ph.data()), 0, ph.size() * sizeof(PersistentPhase));
  size_t at = 0;
  if (p.acts.size() < act_elems * sizeof(bf16)) {
    flush();  // queued launches may read the buffer replaced here
    p.acts.reset(act_elems * sizeof(bf16));
  }
  bf16* qkv = static_cast<bf16*>(p.acts.get());
  bf16* att = qkv + T * size_t(qkv_w);
  bf16* gu = att + T * size_t(qw);
  bf16* xs = act(x);
  // Whether every segment of a phase has one format the step reads (its matrices' dtypes).
  auto readable = [&](std::initializer_list<const CudaWeight*> ws) {
    PersistentWeights f0{}, f{};
    bool first = true;
    for (const CudaWeight* w : ws) {
      if (!step_weights(*w, opt_.packed_int8_acts, f) || (!first && f != f0)) return false;
      f0 = f, first = false;
    }
    return true;
  };
  // A GEMV phase: input (width k, rows `stride` apart, normed with `norm` when given), then
  // segments of rows written to out (rows `out_stride` apart), or added to it (residual).
  auto gemv = [&](const bf16* in, int64_t stride, int64_t k, const float* norm, bf16* out, int64_t out_stride,
                  std::initializer_list<std::pair<const CudaWeight*, int64_t>> segments) -> PersistentPhase& {
    PersistentPhase& g = ph[at++];
    g.input = norm ? PersistentInput::kNormed : PersistentInput::kPlain;
    g.in = in;
    g.in_stride = stride;
    g.k = int32_t(k);
    g.eps = m.eps;
    g.norm = norm;
    int i = 0;
    for (const auto& [w, rows] : segments) {
      step_weights(*w, opt_.packed_int8_acts, g.weights);
      g.w[i] = w->data;
      p.packed = p.packed || g.weights != PersistentWeights::kBf16;
      g.rows[i++] = int32_t(rows);
    }
    g.out = out;
    g.out_stride = out_stride;
    return g;
  };
  for (size_t l = 0; l < m.layers.size(); ++l) {
    const DecodeModel::Layer& L = m.layers[l];
    const CudaWeight *wq = gemv_matrix(L.wq, qw, dim), *wk = gemv_matrix(L.wk, kvw, dim),
                     *wv = gemv_matrix(L.wv, kvw, dim), *wo = gemv_matrix(L.wo, dim, qw),
                     *wg = gemv_matrix(L.w_gate, ffn, dim), *wu = gemv_matrix(L.w_up, ffn, dim),
                     *wd = gemv_matrix(L.w_down, dim, ffn);
    const float *an = norm_weights(L.attn_norm, dim), *fn = norm_weights(L.ffn_norm, dim);
    const std::string where = "layer " + std::to_string(l);
    if (!wq || !wk || !wv || !wo || !wg || !wu || !wd) return where + " has a weight of another shape or backend";
    if (!readable({wq, wk, wv}) || !readable({wo}) || !readable({wg, wu}) || !readable({wd}))
      return where + " has weights the step does not read (it reads bf16, and Q8_0 and Q4_0 with int8 activations; " +
             "q/k/v and gate/up each in one format)";
    if (!an || !fn) return where + " has norms of another shape";
    gemv(xs, dim, dim, an, qkv, qkv_w, {{wq, qw}, {wk, kvw}, {wv, kvw}});
    PersistentPhase& a = ph[at++];
    a.kind = PersistentPhaseKind::kAttention;
    a.in = qkv;
    a.in_stride = qkv_w;
    a.out = att;
    a.out_stride = qw;
    a.n_heads = H;
    a.scale = m.attn_scale;
    a.kv = ck->layers[l];
    gemv(att, qw, qw, nullptr, xs, dim, {{wo, dim}}).residual = 1;
    // Gate and up rows in pairs: the phase writes silu(g) u, down's input as it is.
    gemv(xs, dim, dim, fn, gu, ffn, {{wg, ffn}, {wu, ffn}}).gated = 1;
    gemv(gu, ffn, ffn, nullptr, xs, dim, {{wd, dim}}).residual = 1;
  }
  const CudaWeight* wout = gemv_matrix(m.output, vocab, dim);
  const float* on = norm_weights(m.out_norm, dim);
  if (!wout || !on) return "an output projection or a final norm of another shape";
  if (!readable({wout}))
    return "an output projection the step does not read (" + std::string(dtype_name(wout->dtype)) + ")";
  gemv(xs, dim, dim, on, act(logits), vocab, {{wout, vocab}});

  const size_t table_bytes = ph.size() * sizeof(PersistentPhase);
  if (p.uploaded.size() != table_bytes || std::memcmp(p.uploaded.data(), ph.data(), table_bytes) != 0) {
    flush();  // queued launches read the table and the counters: they finish first
    GRETA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (p.table.size() < table_bytes) p.table.reset(table_bytes);
    GRETA_CUDA_CHECK(cudaMemcpy(p.table.get(), ph.data(), table_bytes, cudaMemcpyHostToDevice));
    p.uploaded.assign(reinterpret_cast<const uint8_t*>(ph.data()),
                      reinterpret_cast<const uint8_t*>(ph.data()) + table_bytes);
    const size_t counters = persistent_step_counters(int(ph.size()), kPersistentMaxTokens, n_kv) * sizeof(int32_t);
    if (p.counters.size() < counters) p.counters.reset(counters);
  }
  p.n_phases = int(ph.size());
  p.max_k = int(std::max({dim, qw, ffn}));
  p.n_kv = n_kv;
  p.head_dim = hd;
  p.n_heads = H;
  return {};
}

bool CudaBackend::decode_step(const DecodeModel& m, const RopeSpec& rope, KVStorage& kv, Tensor x, Tensor logits) {
  if (!opt_.persistent_decode) return false;
  if (!have_step_) throw Error("cuda decode_step: called before begin_step");
  const int n = step_.n_tokens;
  if (n > kPersistentMaxTokens || step_.n_prefill != 0 || step_.n_seqs != n || step_.n_decode != n) return false;
  expect_act(x, n, x.cols, "decode_step x");
  expect_act(logits, n, logits.cols, "decode_step logits");
  const std::string why = persistent_plan(m, kv, x, logits);
  if (!why.empty()) {
    if (!said_persistent_)
      std::fprintf(stderr, "greta: cuda: decode steps run as a graph of kernels, not one launch: %s\n", why.c_str());
    said_persistent_ = true;
    return false;
  }
  PersistentPlan& p = persist_;
  if (int64_t(rope.inv_freq.size()) != p.head_dim / 2)
    throw Error("cuda decode_step: RopeSpec has " + std::to_string(rope.inv_freq.size()) +
                " frequencies, head_dim/2 = " + std::to_string(p.head_dim / 2));
  const auto& L0 = kv_layer(kv, 0, "decode_step");
  if (max_slot_ >= int64_t(L0.n_blocks) * L0.block_size)
    throw Error("cuda decode_step: slot " + std::to_string(max_slot_) + " outside the KV pool");

  PersistentStepArgs a{};
  a.phases = static_cast<const PersistentPhase*>(p.table.get());
  a.inv_freq = rope_table(rope.inv_freq);
  a.counters = static_cast<int32_t*>(p.counters.get());
  a.n_phases = p.n_phases;
  a.n_tokens = n;
  a.neox = rope.neox ? 1 : 0;
  a.n_kv_heads = p.n_kv;
  a.claimed = opt_.persistent_claimed;
  // Partitions of at least kMinPartLen positions at the longest (bucketed) context of the step.
  // The attention phase lasts as long as its busiest block: rounds of items over the blocks, each
  // item its positions plus a fixed setup (q rotation, the block's merge) worth about
  // kItemSetupPositions. The count with the least of that wins (the fewest parts on a tie).
  const int ctx = std::max(step_.max_decode_ctx, 1), heads = n * p.n_kv;
  int want_parts = 1;
  int64_t best = -1;
  for (int parts = 1; parts <= std::max(1, ctx / kMinPartLen); ++parts) {
    const int64_t rounds = (int64_t(parts) * heads + dev_.n_sms - 1) / dev_.n_sms;
    const int64_t cost = rounds * ((ctx + parts - 1) / parts + kItemSetupPositions);
    if (best < 0 || cost < best) best = cost, want_parts = parts;
  }
  a.part_len = (ctx + want_parts - 1) / want_parts;
  a.max_parts = (ctx + a.part_len - 1) / a.part_len;
  const size_t partial_floats = size_t(n) * p.n_heads * a.max_parts * (p.head_dim + 2);
  if (partial_floats * sizeof(float) > p.partials.size()) {
    flush();
    p.partials.reset(partial_floats * sizeof(float));
  }
  a.partials = static_cast<float*>(p.partials.get());
  a.max_k = p.max_k;
  // A block's rows of the residual stream (o and down add to it) staged for n tokens.
  const int residual_floats = persistent_step_residual_floats(n, int(x.cols), dev_.n_sms);
  if (residual_floats > persistent_step_max_residual_floats()) {
    if (!said_persistent_wide_)
      std::fprintf(stderr,
                   "greta: cuda: decode steps of %d or more tokens run as a graph of kernels: a block's rows of the "
                   "residual stream (%d values) exceed the %d it stages\n",
                   n, residual_floats, persistent_step_max_residual_floats());
    said_persistent_wide_ = true;
    return false;
  }
  a.scratch_floats = persistent_step_scratch_floats(p.n_heads / p.n_kv, p.head_dim, n, int(x.cols), dev_.n_sms);
  if (p.smem_limit == 0)
    GRETA_CUDA_CHECK(cudaDeviceGetAttribute(&p.smem_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, opt_.device));
  a.slots = persistent_step_slots(n, a.max_k, a.scratch_floats, p.packed, size_t(p.smem_limit));
  if (a.slots == 0) {  // inputs too wide for shared memory at this many tokens
    if (!said_persistent_wide_)
      std::fprintf(stderr,
                   "greta: cuda: decode steps of %d or more tokens run as a graph of kernels: their inputs "
                   "([tokens, %d] bf16) leave no room for the weight stream in shared memory\n",
                   n, p.max_k);
    said_persistent_wide_ = true;
    return false;
  }
  a.st = step_;
  // The launch's block count depends only on its shared memory: asked of the runtime once each.
  const size_t smem = persistent_step_smem(n, a.max_k, a.scratch_floats, p.packed, a.slots);
  if (p.blocks_smem != smem || p.blocks_packed != p.packed) {
    p.blocks = persistent_step_blocks(a, p.packed, dev_.n_sms);
    p.blocks_smem = smem;
    p.blocks_packed = p.packed;
  }
  const int blocks = p.blocks;
  if (blocks == 0) return false;
  a.trace = persist_trace_.step(p.n_phases, kPhasesPerLayer, blocks, stream_);
  launch(&persistent_step, a, blocks, p.packed, stream_);
  ++persistent_steps_;
  return true;
}

}  // namespace greta::cuda
