#include "model/llama.h"

#include <cassert>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "model/dynamic_ntk.h"
#include "model/longrope.h"
#include "model/rope_step.h"

namespace greta {

// Activation buffers, sized for the largest step seen so far (grown, never shrunk).
struct LlamaModel::Scratch {
  Backend& be;
  int cap_tokens = 0, cap_logits = 0;
  Tensor x, h, q, k, v, att, gate, up;          // [cap_tokens, *]
  Tensor router_logits, expert_in, expert_out;  // [cap_tokens, *], a mixture of experts only
  Tensor last, logits;                          // [cap_logits, *]
  explicit Scratch(Backend& b) : be(b) {}
  ~Scratch() { release(); }
  std::array<Tensor*, 11> per_token() {
    return {&x, &h, &q, &k, &v, &att, &gate, &up, &router_logits, &expert_in, &expert_out};
  }
  void release() {
    for (Tensor* t : per_token())
      if (t->data) be.free(*t);
    for (Tensor* t : {&last, &logits})
      if (t->data) be.free(*t);
  }
};

void LlamaModel::check_backend(const ModelConfig& c, const Backend& be) {
  if ((c.attn_softcap > 0.0f || c.final_softcap > 0.0f) && !be.supports_logit_softcapping()) {
    char caps[96];
    std::snprintf(caps, sizeof caps, "attention cap %g, final cap %g", c.attn_softcap, c.final_softcap);
    throw Error(c.name + " (" + c.arch + ") needs logit soft-capping (" + caps + "), which backend " + be.name() +
                " does not implement (no soft cap in its attention, no logit soft-cap op); " +
                "the CPU backend runs it");
  }
  if (c.n_experts > 0 && !be.supports_moe())
    throw Error(c.name + " (" + c.arch + ") is a mixture of experts (" + std::to_string(c.n_experts) + " experts, " +
                std::to_string(c.n_experts_used) + " per token), which backend " + be.name() +
                " does not run (no expert router or expert ops); the CPU backend runs it");
}

LlamaModel::LlamaModel(const ModelFile& file, Backend& backend) : cfg_(file.config()), be_(backend) {
  check_backend(cfg_, be_);
  rope_.inv_freq = cfg_.rope_inv_freq();
  rope_.neox = cfg_.rope_neox;
  rope_long_ = {cfg_.rope_inv_freq(/*long_factors=*/true), cfg_.rope_neox};
  if (cfg_.rope_local_theta > 0.0f) rope_local_ = {cfg_.rope_local_inv_freq(), cfg_.rope_neox};
  tok_embd_ = be_.upload(*file.token_embedding());
  out_norm_ = be_.upload(*file.output_norm());
  if (!cfg_.tied_embeddings) output_ = be_.upload(*file.output());
  layers_.resize(cfg_.n_layers);
  for (int l = 0; l < cfg_.n_layers; ++l) {
    LayerWeights& L = layers_[l];
    auto up = [&](Role r) { return be_.upload(*file.layer_tensor(l, r)); };
    L.attn_norm = up(Role::AttnNorm);
    L.wq = up(Role::Wq);
    L.wk = up(Role::Wk);
    L.wv = up(Role::Wv);
    L.wo = up(Role::Wo);
    if (cfg_.qkv_bias) {
      L.bq = up(Role::Bq);
      L.bk = up(Role::Bk);
      L.bv = up(Role::Bv);
    }
    if (cfg_.qk_norm) {
      L.q_norm = up(Role::QNorm);
      L.k_norm = up(Role::KNorm);
    }
    L.ffn_norm = up(Role::FfnNorm);
    if (cfg_.n_experts > 0) {
      L.router = be_.upload(*file.router_tensor(l));
      for (int e = 0; e < cfg_.n_experts; ++e) {
        auto& w = L.experts.emplace_back();
        const Role roles[] = {Role::WGate, Role::WUp, Role::WDown};
        for (size_t i = 0; i < w.size(); ++i) w[i] = be_.upload(*file.expert_tensor(l, e, roles[i]));
        L.expert_ops.push_back({w[0].get(), w[1].get(), w[2].get()});
      }
    } else {
      L.w_gate = up(Role::WGate);
      L.w_up = up(Role::WUp);
      L.w_down = up(Role::WDown);
    }
    if (cfg_.post_norms) {
      L.attn_post_norm = up(Role::AttnPostNorm);
      L.ffn_post_norm = up(Role::FfnPostNorm);
    }
  }
  s_ = std::make_unique<Scratch>(be_);
  const bool plain = !cfg_.qkv_bias && !cfg_.qk_norm && !cfg_.post_norms && cfg_.n_experts == 0 &&
                     cfg_.ffn_act == ModelConfig::FfnAct::SiLU && cfg_.attn_softcap == 0.0f &&
                     cfg_.final_softcap == 0.0f && cfg_.rope_local_theta == 0.0f;
  bool windowed = false;
  for (int l = 0; l < cfg_.n_layers; ++l) windowed = windowed || cfg_.layer_window(l) > 0;
  if (plain && !windowed) {
    DecodeModel& d = decode_model_.emplace();
    for (const LayerWeights& L : layers_)
      d.layers.push_back({L.attn_norm.get(), L.wq.get(), L.wk.get(), L.wv.get(), L.wo.get(), L.ffn_norm.get(),
                          L.w_gate.get(), L.w_up.get(), L.w_down.get()});
    d.out_norm = out_norm_.get();
    d.output = output_ ? output_.get() : tok_embd_.get();
    d.n_heads = cfg_.n_heads;
    d.eps = cfg_.norm_eps;
    d.attn_scale = attn_scale();
  }
}

LlamaModel::~LlamaModel() = default;

std::unique_ptr<KVStorage> LlamaModel::make_kv(int n_blocks, int block_size) const {
  KVCacheDesc d;
  d.n_layers = cfg_.n_layers;
  d.n_blocks = n_blocks;
  d.block_size = block_size;
  d.n_kv_heads = cfg_.n_kv_heads;
  d.head_dim = cfg_.head_dim;
  return be_.alloc_kv(d);
}

size_t LlamaModel::weight_bytes_per_token() const {
  auto bytes = [](const std::unique_ptr<Weight>& w) -> size_t {
    return w ? row_bytes(w->dtype, w->n_in) * size_t(w->n_out) : 0;
  };
  size_t total = bytes(out_norm_) + bytes(output_ ? output_ : tok_embd_);
  for (const LayerWeights& L : layers_) {
    for (const auto* w : L.all()) total += bytes(*w);
    size_t experts = 0;
    for (const auto& e : L.experts)
      for (const auto& w : e) experts += bytes(w);
    if (!L.experts.empty()) total += experts * size_t(cfg_.n_experts_used) / L.experts.size();
  }
  return total;
}

size_t LlamaModel::weight_bytes_on_backend() const {
  auto bytes = [](const std::unique_ptr<Weight>& w) -> size_t { return w ? w->bytes : 0; };
  size_t total = bytes(tok_embd_) + bytes(out_norm_) + bytes(output_);
  for (const LayerWeights& L : layers_) {
    for (const auto* w : L.all()) total += bytes(*w);
    for (const auto& e : L.experts)
      for (const auto& w : e) total += bytes(w);
  }
  return total;
}

void LlamaModel::ensure_scratch(int n_tokens, int n_logits) {
  Scratch& s = *s_;
  if (n_tokens > s.cap_tokens) {
    for (Tensor* t : s.per_token())
      if (t->data) be_.free(*t);
    const int64_t n = n_tokens, qd = int64_t(cfg_.n_heads) * cfg_.head_dim,
                  kvd = int64_t(cfg_.n_kv_heads) * cfg_.head_dim;
    s.x = be_.alloc(n, cfg_.dim);
    s.h = be_.alloc(n, cfg_.dim);
    s.q = be_.alloc(n, qd);
    s.k = be_.alloc(n, kvd);
    s.v = be_.alloc(n, kvd);
    s.att = be_.alloc(n, qd);
    s.gate = be_.alloc(n, cfg_.ffn_dim);
    s.up = be_.alloc(n, cfg_.ffn_dim);
    if (cfg_.n_experts > 0) {
      s.router_logits = be_.alloc(n, cfg_.n_experts);
      s.expert_in = be_.alloc(n, cfg_.dim);
      s.expert_out = be_.alloc(n, cfg_.dim);
    }
    s.cap_tokens = n_tokens;
  }
  if (n_logits > s.cap_logits) {
    if (s.last.data) be_.free(s.last);
    if (s.logits.data) be_.free(s.logits);
    s.last = be_.alloc(n_logits, cfg_.dim);
    s.logits = be_.alloc(n_logits, cfg_.vocab_size);
    s.cap_logits = n_logits;
  }
}

void LlamaModel::forward(const Batch& batch, KVStorage& kv, const StepOutput& output) {
  const int n = batch.n_tokens();
  const int nl = int(batch.logit_rows.size());
  assert(n > 0);
  const auto* draw = std::get_if<DeviceDraw>(&output);
  if (draw) {
    if (!be_.supports_device_sampling())
      throw Error("forward: backend " + be_.name() + " does not sample on the device");
    if (draw->per_row.size() != size_t(nl))
      throw Error("forward: " + std::to_string(draw->per_row.size()) + " sampling settings for " + std::to_string(nl) +
                  " logit rows");
  }
  ensure_scratch(n, std::max(nl, 1));
  be_.begin_step(StepPlan::build(batch, kv.desc.block_size));

  Scratch& s = *s_;
  Tensor x = s.x.rows_slice(0, n), h = s.h.rows_slice(0, n);
  Tensor q = s.q.rows_slice(0, n), k = s.k.rows_slice(0, n), v = s.v.rows_slice(0, n);
  Tensor att = s.att.rows_slice(0, n), gate = s.gate.rows_slice(0, n), up = s.up.rows_slice(0, n);
  const RopeSpec& rope = step_rope(batch);
  const float scale = attn_scale();
  const float eps = cfg_.norm_eps;
  const bool geglu = cfg_.ffn_act == ModelConfig::FfnAct::GeluTanh;
  const Backend::MoeScratch moe{s.router_logits, s.expert_in, gate, up, s.expert_out};

  be_.embed(*tok_embd_, batch.tokens.data(), n, x);  // x: [n, dim] residual stream
  if (cfg_.embed_scale != 1.0f) be_.scale(x, cfg_.embed_scale, x);
  // A step of decode tokens whose every token is a logit row, in order: the backend may run the
  // layers and the output projection as one launch.
  bool rows_in_order = nl == n;
  for (int i = 0; rows_in_order && i < nl; ++i) rows_in_order = batch.logit_rows[size_t(i)] == i;
  if (decode_model_ && rows_in_order && be_.decode_step(*decode_model_, rope, kv, x, s.logits.rows_slice(0, nl))) {
    deliver(s.logits.rows_slice(0, nl), output);
    return;
  }
  // xn: the next block's normed input. Each block ends with the residual add that also prepares
  // the following norm (block_output), except the last, whose norm applies only to the rows
  // that produce logits.
  Backend::NormedRows xn = be_.norm(x, *layers_[0].attn_norm, eps, h);
  for (int l = 0; l < cfg_.n_layers; ++l) {
    const LayerWeights& L = layers_[l];
    // attention block: q, k, v from the normed x, RoPE and the KV write; x += att @ wo^T
    const Backend::MatmulTarget tq{L.wq.get(), L.bq.get(), q}, tk{L.wk.get(), L.bk.get(), k},
        tv{L.wv.get(), L.bv.get(), v};
    const RopeSpec& rope_l = cfg_.layer_local_rope(l) ? rope_local_ : rope;
    if (L.q_norm)  // Qwen3, Gemma 3: each head of q and k normalized between the projection and RoPE
      be_.normed_qkv_headnorm_rope(xn, tq, tk, tv, *L.q_norm, *L.k_norm, eps, rope_l, kv, l);
    else be_.normed_qkv_rope(xn, tq, tk, tv, rope_l, kv, l);
    be_.attention(q, kv, l, cfg_.n_heads, scale, att, cfg_.layer_window(l), cfg_.attn_softcap);
    xn = block_output(att, *L.wo, L.attn_post_norm.get(), x, L.ffn_norm.get(), h);
    const Weight* next = l + 1 < cfg_.n_layers ? layers_[l + 1].attn_norm.get() : nullptr;
    if (L.router) {  // mixture of experts: x += the chosen experts' outputs, each by its weight
      be_.moe_ffn_add(xn, *L.router, L.expert_ops, cfg_.n_experts_used, cfg_.expert_weights_norm, moe, x);
      xn = next ? be_.norm(x, *next, eps, h) : Backend::NormedRows{};
      continue;
    }
    // feed-forward block: up = act(xn @ gate^T) * (xn @ up^T), act silu (SwiGLU) or gelu
    // (GeGLU); x += up @ down^T
    if (geglu) be_.normed_geglu(xn, *L.w_gate, *L.w_up, gate, up);
    else be_.normed_swiglu(xn, *L.w_gate, *L.w_up, gate, up);
    xn = block_output(up, *L.w_down, L.ffn_post_norm.get(), x, next, h);
  }
  if (nl == 0) return;
  Tensor last = s.last.rows_slice(0, nl), out = s.logits.rows_slice(0, nl);
  be_.gather_rows(x, batch.logit_rows, last);
  be_.rms_norm(last, *out_norm_, eps, last);
  be_.matmul(last, output_ ? *output_ : *tok_embd_, nullptr, out);
  if (cfg_.final_softcap > 0.0f) be_.softcap(out, cfg_.final_softcap, out);  // Gemma 2
  deliver(out, output);
}

void LlamaModel::deliver(Tensor logits, const StepOutput& output) {
  const auto* draw = std::get_if<DeviceDraw>(&output);
  if (draw && draw->before_draw) draw->before_draw();
  if (draw) be_.sample(logits, draw->per_row, draw->tokens, draw->probs);
  else be_.to_host(logits, std::get<HostLogits>(output).logits);
}

float LlamaModel::attn_scale() const {
  // RoPE's cos/sin scaled by a (LongRoPE, YaRN) scale q and k by a, so their product by a^2.
  const float a2 = cfg_.rope_attn_factor * cfg_.rope_attn_factor;
  return cfg_.attn_scale > 0.0f ? a2 * cfg_.attn_scale : a2 / std::sqrt(float(cfg_.head_dim));
}

const RopeSpec& LlamaModel::step_rope(const Batch& batch) {
  if (rope_step_uses_long(cfg_, batch)) return rope_long_;
  if (cfg_.rope_dynamic_factor > 0.0f) {
    const int64_t length = rope_step_length(batch);
    if (length > cfg_.max_context) {
      if (length != rope_dynamic_length_) {
        rope_dynamic_ = {dynamic_ntk_inv_freq(cfg_, length), cfg_.rope_neox};
        rope_dynamic_length_ = length;
      }
      return rope_dynamic_;
    }
  }
  return rope_;
}

Backend::NormedRows LlamaModel::block_output(Tensor a, const Weight& w, const Weight* post_norm, Tensor x,
                                             const Weight* next_norm, Tensor h) {
  const float eps = cfg_.norm_eps;
  if (post_norm) {  // Gemma 3: x += rms_norm(a @ w^T) * post_norm
    be_.matmul(a, w, nullptr, h);
    be_.rms_norm(h, *post_norm, eps, h);
    be_.add(x, h, x);
    return next_norm ? be_.norm(x, *next_norm, eps, h) : Backend::NormedRows{};
  }
  if (next_norm) return be_.matmul_add_norm(a, w, x, *next_norm, eps, h);
  be_.matmul_add(a, w, h, x);
  return {};
}

DeviceSampleParams device_sample_params(Sampler& s) {
  assert(s.device_eligible());
  const SamplingParams& p = s.params();
  DeviceSampleParams d;
  d.temperature = p.temperature;
  d.top_k = p.top_k;
  d.top_p = p.top_p;
  d.min_p = p.min_p;
  if (p.temperature > 0.0f) d.u = s.next_uniform();
  return d;
}

}  // namespace greta
