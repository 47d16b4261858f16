// Backend interface -> CPU kernels (cpu_kernels.h). This file owns memory, weights, the KV
// storage and the per-step plan; the arithmetic lives in the kernel files.
#include "backend/cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/dump.h"
#include "core/error.h"
#include "core/thread_pool.h"

namespace greta {
namespace {

std::string shape_str(int64_t r, int64_t c) { return "[" + std::to_string(r) + ", " + std::to_string(c) + "]"; }

// Points into the HostTensor's bytes (the file mapping); owns nothing.
class CpuWeight : public Weight {
 public:
  cpu::WeightView view;
};

// K and V pools per layer in the element type the backend was made with (CpuOptions::kv_dtype;
// rows as kv_rows.h writes them), each one 64-byte-aligned allocation; FP8 rows' scales follow
// their layer's values in the same allocation.
class CpuKV : public KVStorage {
 public:
  CpuKV(const KVCacheDesc& d, DType t) {
    desc = d;
    dtype = t;
    const size_t rows = size_t(d.n_blocks) * d.block_size * d.n_kv_heads;
    const size_t values = rows * d.head_dim * block_bytes(t);
    scales_at_ = (values + 63) & ~size_t(63);
    const size_t bytes = (scales_at_ + (t == DType::F8_E4M3 ? rows * sizeof(float) : 0) + 63) & ~size_t(63);
    for (int l = 0; l < d.n_layers; ++l) {
      for (auto* pool : {&k, &v}) {
        void* p = bytes ? std::aligned_alloc(64, bytes) : nullptr;
        if (bytes && !p)
          throw Error("cpu backend: cannot allocate KV cache (" + std::to_string(2 * d.n_layers * bytes >> 20) +
                      " MiB for " + std::to_string(d.n_blocks) + " blocks of " + std::to_string(d.block_size) + ")");
        pool->push_back(static_cast<uint8_t*>(p));
      }
    }
  }
  ~CpuKV() override {
    for (uint8_t* p : k) std::free(p);
    for (uint8_t* p : v) std::free(p);
  }
  cpu::KVLayer layer(int l) const {
    uint8_t *kl = k[size_t(l)], *vl = v[size_t(l)];
    const bool scaled = dtype == DType::F8_E4M3;
    return cpu::KVLayer{kl,
                        vl,
                        desc.block_size,
                        desc.n_kv_heads,
                        desc.head_dim,
                        dtype,
                        scaled ? reinterpret_cast<float*>(kl + scales_at_) : nullptr,
                        scaled ? reinterpret_cast<float*>(vl + scales_at_) : nullptr};
  }
  std::vector<uint8_t*> k, v;  // per layer: [n_blocks, block_size, n_kv_heads, head_dim] values, then scales

 private:
  size_t scales_at_ = 0;  // byte offset of the row scales in each pool
};

// CpuOptions::kv_dtype as the element type.
DType cpu_kv_dtype(KVCacheDType t) {
  switch (t) {
    case KVCacheDType::Auto:
    case KVCacheDType::F16: return DType::F16;
    case KVCacheDType::BF16: return DType::BF16;
    case KVCacheDType::FP8: return DType::F8_E4M3;
  }
  throw Error("cpu backend: unknown KV cache type " + std::to_string(int(t)));
}

const cpu::WeightView& view_of(const Weight& w) { return static_cast<const CpuWeight&>(w).view; }
float* f32(Tensor t) { return static_cast<float*>(t.data); }

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const CpuOptions& o)
      : pool_(o.n_threads),
        exact_matmul_(o.exact_matmul),
        kv_dtype_(cpu_kv_dtype(o.kv_dtype)),
        dump_(cpu::Dumper::open(o.dump_dir)) {}

  std::string name() const override { return exact_matmul_ ? "cpu (exact matmul)" : "cpu"; }
  DType act_dtype() const override { return DType::F32; }

  Tensor alloc(int64_t rows, int64_t cols) override {
    const size_t bytes = (size_t(rows * cols) * sizeof(float) + 63) & ~size_t(63);
    void* p = std::aligned_alloc(64, bytes ? bytes : 64);
    if (!p) throw Error("cpu backend: out of memory allocating " + shape_str(rows, cols) + " floats");
    return Tensor{p, DType::F32, rows, cols};
  }
  void free(Tensor& t) override {
    std::free(t.data);
    t.data = nullptr;
  }

  std::unique_ptr<Weight> upload(const HostTensor& h) override {
    if (h.dtype == DType::I32) throw Error("cpu backend: tensor '" + h.name + "' has dtype I32; not a weight type");
    if (h.shape.empty() || h.shape.size() > 2)
      throw Error("cpu backend: tensor '" + h.name + "' has " + std::to_string(h.shape.size()) +
                  " dims; expected a 1-D or 2-D weight");
    auto w = std::make_unique<CpuWeight>();
    w->dtype = h.dtype;
    w->n_out = h.rows();
    w->n_in = h.cols();
    if (w->n_in % block_elems(h.dtype) != 0)
      throw Error("cpu backend: tensor '" + h.name + "' has rows of " + std::to_string(w->n_in) + " values; " +
                  std::string(dtype_name(h.dtype)) + " needs a multiple of " + std::to_string(block_elems(h.dtype)));
    const size_t rb = row_bytes(h.dtype, w->n_in);
    if (!h.data || h.nbytes < rb * size_t(w->n_out))
      throw Error("cpu backend: tensor '" + h.name + "' holds " + std::to_string(h.nbytes) + " bytes; expected " +
                  std::to_string(rb * size_t(w->n_out)) + " for " + shape_str(w->n_out, w->n_in) + " " +
                  std::string(dtype_name(h.dtype)));
    w->view = cpu::WeightView{h.dtype, h.data, w->n_out, w->n_in, rb};
    w->bytes = rb * size_t(w->n_out);  // read in place from the mapping
    return w;
  }

  std::unique_ptr<KVStorage> alloc_kv(const KVCacheDesc& d) override { return std::make_unique<CpuKV>(d, kv_dtype_); }
  DType kv_dtype() const override { return kv_dtype_; }

  void begin_step(const StepPlan& plan) override {
    plan_ = plan;  // copy into retained vectors: no allocation once capacities have grown
    rope_valid_ = false;
    if (dump_) dump_->begin_step();
  }

  void embed(const Weight& table, const int32_t* tokens, int n, Tensor out) override {
    const auto& w = view_of(table);
    expect(out.rows == n && out.cols == w.n_in, "embed", out, n, w.n_in);
    for (int i = 0; i < n; ++i) {
      if (tokens[i] < 0 || tokens[i] >= w.n_out)
        throw Error("cpu embed: token id " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                    " is outside the vocabulary [0, " + std::to_string(w.n_out) + ")");
      dequantize_row(w.dtype, w.data + size_t(tokens[i]) * w.row_stride, f32(out) + int64_t(i) * w.n_in, w.n_in);
    }
    dump("embed", out);
  }

  void rms_norm(Tensor x, const Weight& w, float eps, Tensor out) override {
    const auto& wv = view_of(w);
    expect(out.rows == x.rows && out.cols == x.cols && wv.n_in == x.cols, "rms_norm", out, x.rows, x.cols);
    cpu::rms_norm(f32(x), as_f32(wv, norm_scratch_), eps, f32(out), x.rows, x.cols, pool_);
    dump("rms_norm", out);
  }

  void matmul(Tensor x, const Weight& w, const Weight* bias, Tensor out) override {
    const auto& wv = view_of(w);
    if (x.cols != wv.n_in || out.rows != x.rows || out.cols != wv.n_out)
      throw Error("cpu matmul: x " + shape_str(x.rows, x.cols) + " @ w " + shape_str(wv.n_out, wv.n_in) + "^T -> out " +
                  shape_str(out.rows, out.cols) + ": shapes do not match");
    const float* b = nullptr;
    if (bias) {
      const auto& bv = view_of(*bias);
      if (bv.n_in * bv.n_out != wv.n_out)
        throw Error("cpu matmul: bias has " + std::to_string(bv.n_in * bv.n_out) + " values; expected " +
                    std::to_string(wv.n_out));
      b = as_f32(bv, bias_scratch_);
    }
    if (exact_matmul_ && is_quantized(wv.dtype)) {
      cpu::matmul_dequant(f32(x), x.rows, wv, b, f32(out), pool_);
    } else {
      cpu::matmul(f32(x), x.rows, wv, b, f32(out), act_scratch_, pool_);
    }
    dump("matmul", out);
  }

  void add(Tensor a, Tensor b, Tensor out) override {
    expect(a.rows == b.rows && a.cols == b.cols && out.rows == a.rows && out.cols == a.cols, "add", out, a.rows,
           a.cols);
    cpu::add(f32(a), f32(b), f32(out), a.rows * a.cols, pool_);
    dump("add", out);
  }

  void silu_mul(Tensor gate, Tensor up, Tensor out) override {
    expect(gate.rows == up.rows && gate.cols == up.cols && out.rows == gate.rows && out.cols == gate.cols, "silu_mul",
           out, gate.rows, gate.cols);
    cpu::silu_mul(f32(gate), f32(up), f32(out), gate.rows * gate.cols, pool_);
    dump("silu_mul", out);
  }

  void gelu_mul(Tensor gate, Tensor up, Tensor out) override {
    expect(gate.rows == up.rows && gate.cols == up.cols && out.rows == gate.rows && out.cols == gate.cols, "gelu_mul",
           out, gate.rows, gate.cols);
    cpu::gelu_mul(f32(gate), f32(up), f32(out), gate.rows * gate.cols, pool_);
    dump("gelu_mul", out);
  }

  void scale(Tensor x, float s, Tensor out) override {
    expect(out.rows == x.rows && out.cols == x.cols, "scale", out, x.rows, x.cols);
    cpu::scale(f32(x), s, f32(out), x.rows * x.cols, pool_);
    dump("scale", out);
  }

  void rope_kv_write(Tensor q, Tensor k, Tensor v, const RopeSpec& rope, KVStorage& kv, int layer) override {
    auto& ckv = static_cast<CpuKV&>(kv);
    const int hd = ckv.desc.head_dim, n_kv = ckv.desc.n_kv_heads;
    const int64_t n = q.rows;
    if (size_t(n) != plan_.positions.size() || k.rows != n || v.rows != n || k.cols != int64_t(n_kv) * hd ||
        v.cols != k.cols || q.cols % hd != 0 || rope.inv_freq.size() != size_t(hd / 2) || layer < 0 ||
        layer >= ckv.desc.n_layers)
      throw Error("cpu rope_kv_write: q " + shape_str(q.rows, q.cols) + ", k " + shape_str(k.rows, k.cols) + ", v " +
                  shape_str(v.rows, v.cols) + " do not match the step (" + std::to_string(plan_.positions.size()) +
                  " tokens), head_dim " + std::to_string(hd) + ", kv heads " + std::to_string(n_kv) + ", inv_freq of " +
                  std::to_string(rope.inv_freq.size()) + " or layer " + std::to_string(layer));
    if (!rope_valid_ || rope_freq_ != rope.inv_freq) {  // once per step: positions are shared by all layers
      rope_freq_ = rope.inv_freq;
      rope_cs_.resize(size_t(n) * hd);
      cpu::rope_tables(plan_.positions.data(), n, rope_freq_.data(), hd / 2, rope_cs_.data());
      rope_valid_ = true;
    }
    cpu::rope_kv_write(f32(q), f32(k), f32(v), n, int(q.cols / hd), rope_cs_.data(), rope.neox, plan_.slot.data(),
                       ckv.layer(layer), pool_);
    dump("rope_q", q);
    dump("rope_k", k);
  }

  void attention(Tensor q, const KVStorage& kv, int layer, int n_heads, float scale, Tensor out, int window = 0,
                 float softcap = 0.0f) override {
    const auto& ckv = static_cast<const CpuKV&>(kv);
    const int hd = ckv.desc.head_dim, n_kv = ckv.desc.n_kv_heads;
    if (size_t(q.rows) != plan_.positions.size() || q.cols != int64_t(n_heads) * hd || out.rows != q.rows ||
        out.cols != q.cols || n_kv <= 0 || n_heads % n_kv != 0 || layer < 0 || layer >= ckv.desc.n_layers)
      throw Error("cpu attention: q " + shape_str(q.rows, q.cols) + " / out " + shape_str(out.rows, out.cols) +
                  " do not match " + std::to_string(n_heads) + " heads of " + std::to_string(hd) + " (" +
                  std::to_string(n_kv) + " kv heads), " + std::to_string(plan_.positions.size()) +
                  " step tokens, layer " + std::to_string(layer));
    if (!(softcap >= 0.0f) || std::isinf(softcap))
      throw Error("cpu attention: softcap " + std::to_string(softcap) + " (expected 0 or a finite number > 0)");
    cpu::attention(f32(q), q.rows, n_heads, scale, plan_, ckv.layer(layer), f32(out), pool_, window, softcap);
    dump("attention", out);
  }

  bool supports_logit_softcapping() const override { return true; }
  void softcap(Tensor x, float cap, Tensor out) override {
    expect(out.rows == x.rows && out.cols == x.cols, "softcap", out, x.rows, x.cols);
    if (!(cap > 0.0f) || std::isinf(cap))
      throw Error("cpu softcap: cap " + std::to_string(cap) + " (expected a finite number > 0)");
    cpu::softcap(f32(x), cap, f32(out), x.rows * x.cols, pool_);
    dump("softcap", out);
  }

  bool supports_moe() const override { return true; }
  void moe_route(Tensor logits, int k, bool renormalize, int32_t* ids, float* weights) override {
    if (k < 1 || k > logits.cols)
      throw Error("cpu moe_route: top " + std::to_string(k) + " of " + std::to_string(logits.cols) + " experts");
    cpu::moe_route(f32(logits), logits.rows, int(logits.cols), k, renormalize, ids, weights);
  }
  void add_rows_scaled(Tensor x, const std::vector<int32_t>& rows, const std::vector<float>& weights,
                       Tensor out) override {
    expect(x.rows == int64_t(rows.size()) && weights.size() == rows.size() && x.cols == out.cols, "add_rows_scaled", x,
           int64_t(rows.size()), out.cols);
    for (int32_t r : rows)
      if (r < 0 || r >= out.rows)
        throw Error("cpu add_rows_scaled: row " + std::to_string(r) + " outside [0, " + std::to_string(out.rows) + ")");
    cpu::add_rows_scaled(f32(x), x.rows, x.cols, rows.data(), weights.data(), f32(out));
    dump("add_rows_scaled", out);
  }

  void gather_rows(Tensor x, const std::vector<int32_t>& rows, Tensor out) override {
    expect(out.rows == int64_t(rows.size()) && out.cols == x.cols, "gather_rows", out, int64_t(rows.size()), x.cols);
    for (size_t j = 0; j < rows.size(); ++j) {
      if (rows[j] < 0 || rows[j] >= x.rows)
        throw Error("cpu gather_rows: row " + std::to_string(rows[j]) + " outside [0, " + std::to_string(x.rows) + ")");
      std::memcpy(f32(out) + j * size_t(x.cols), f32(x) + size_t(rows[j]) * x.cols, size_t(x.cols) * sizeof(float));
    }
  }

  void to_host(Tensor x, float* dst) override { std::memcpy(dst, x.data, size_t(x.rows * x.cols) * sizeof(float)); }

 private:
  static void expect(bool ok, const char* op, Tensor out, int64_t rows, int64_t cols) {
    if (!ok)
      throw Error(std::string("cpu ") + op + ": operand shapes do not match; out is " + shape_str(out.rows, out.cols) +
                  ", expected " + shape_str(rows, cols));
  }
  // Norm weights and biases as floats: F32 ones are used in place, others converted into scratch.
  static const float* as_f32(const cpu::WeightView& w, cpu::Scratch& s) {
    if (w.dtype == DType::F32) return reinterpret_cast<const float*>(w.data);
    const int64_t count = w.n_out * w.n_in;
    auto* dst = static_cast<float*>(s.get(size_t(count) * sizeof(float)));
    dequantize_row(w.dtype, w.data, dst, count);
    return dst;
  }

  void dump(const char* op, Tensor t) {
    if (dump_) dump_->save(op, f32(t), t.rows, t.cols);
  }

  ThreadPool pool_;
  bool exact_matmul_ = false;
  DType kv_dtype_ = DType::F16;
  std::unique_ptr<cpu::Dumper> dump_;  // CpuOptions::dump_dir; null (no cost) when unset
  cpu::Scratch act_scratch_, norm_scratch_, bias_scratch_;
  StepPlan plan_;
  std::vector<float> rope_freq_, rope_cs_;
  bool rope_valid_ = false;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const CpuOptions& o) { return std::make_unique<CpuBackend>(o); }

}  // namespace greta
