// The CPU backend as a backend without an optional feature would be: every op the CPU's own, the
// feature's query answered false (what the CUDA backend answers until it has the feature), so the
// model-family tests can check that a model needing it is refused at load.
#pragma once
#include <memory>
#include <string>
#include <utility>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "model/llama.h"
#include "model/model_file.h"

namespace greta::test {

class CpuWithout final : public Backend {
 public:
  struct Features {
    bool softcapping = true;
    bool moe = true;
  };
  CpuWithout(std::string name, Features f) : name_(std::move(name)), f_(f) {}
  std::string name() const override { return name_; }
  DType act_dtype() const override { return cpu_->act_dtype(); }
  bool supports_logit_softcapping() const override { return f_.softcapping; }
  bool supports_moe() const override { return f_.moe; }
  Tensor alloc(int64_t rows, int64_t cols) override { return cpu_->alloc(rows, cols); }
  void free(Tensor& t) override { cpu_->free(t); }
  std::unique_ptr<Weight> upload(const HostTensor& w) override { return cpu_->upload(w); }
  std::unique_ptr<KVStorage> alloc_kv(const KVCacheDesc& d) override { return cpu_->alloc_kv(d); }
  DType kv_dtype() const override { return cpu_->kv_dtype(); }
  void begin_step(const StepPlan& plan) override { cpu_->begin_step(plan); }
  void embed(const Weight& t, const int32_t* tokens, int n, Tensor out) override { cpu_->embed(t, tokens, n, out); }
  void rms_norm(Tensor x, const Weight& w, float eps, Tensor out) override { cpu_->rms_norm(x, w, eps, out); }
  void matmul(Tensor x, const Weight& w, const Weight* b, Tensor out) override { cpu_->matmul(x, w, b, out); }
  void add(Tensor a, Tensor b, Tensor out) override { cpu_->add(a, b, out); }
  void silu_mul(Tensor g, Tensor u, Tensor out) override { cpu_->silu_mul(g, u, out); }
  void gelu_mul(Tensor g, Tensor u, Tensor out) override { cpu_->gelu_mul(g, u, out); }
  void scale(Tensor x, float s, Tensor out) override { cpu_->scale(x, s, out); }
  void rope_kv_write(Tensor q, Tensor k, Tensor v, const RopeSpec& r, KVStorage& kv, int layer) override {
    cpu_->rope_kv_write(q, k, v, r, kv, layer);
  }
  void attention(Tensor q, const KVStorage& kv, int layer, int n_heads, float scale, Tensor out, int window,
                 float softcap) override {
    cpu_->attention(q, kv, layer, n_heads, scale, out, window, softcap);
  }
  void gather_rows(Tensor x, const std::vector<int32_t>& rows, Tensor out) override { cpu_->gather_rows(x, rows, out); }
  void to_host(Tensor x, float* dst) override { cpu_->to_host(x, dst); }

 private:
  std::string name_;
  Features f_;
  std::unique_ptr<Backend> cpu_ = make_cpu_backend({.n_threads = 1});
};

// The message of the greta::Error loading `f` on `be` throws, or "<no error>".
inline std::string model_load_error(const ModelFile& f, Backend& be) {
  try {
    LlamaModel m(f, be);
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace greta::test
