#include "model/synthetic.h"

#include <cmath>
#include <thread>

#include "core/error.h"

namespace greta {

namespace {

struct Shape {
  const char* name;
  int layers, dim, heads, kv_heads, ffn, vocab, ctx;
  float theta;
};
constexpr Shape kShapes[] = {
    {"llama-2-7b", 32, 4096, 32, 32, 11008, 32000, 4096, 10000.0f},
    {"llama-2-13b", 40, 5120, 40, 40, 13824, 32000, 4096, 10000.0f},
    {"llama-2-70b", 80, 8192, 64, 8, 28672, 32000, 4096, 10000.0f},
    {"llama-3-8b", 32, 4096, 32, 8, 14336, 128256, 8192, 500000.0f},
    {"smollm2-135m", 30, 576, 9, 3, 1536, 49152, 8192, 100000.0f},
    {"tiny", 4, 512, 8, 2, 1376, 1000, 2048, 10000.0f},  // head_dim 64: every backend supports it
};

// Counter-based generator (splitmix64): value i of tensor t is a pure function of (seed, t, i),
// so generation parallelises and is identical on every machine.
inline uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

std::vector<std::string> synthetic_names() {
  std::vector<std::string> v;
  for (const Shape& s : kShapes) v.push_back(s.name);
  return v;
}

ModelConfig synthetic_config(const std::string& name) {
  for (const Shape& s : kShapes) {
    if (name != s.name) continue;
    ModelConfig c;
    c.arch = "llama";
    c.name = "synthetic " + name;
    c.n_layers = s.layers;
    c.dim = s.dim;
    c.n_heads = s.heads;
    c.n_kv_heads = s.kv_heads;
    c.head_dim = s.dim / s.heads;
    c.ffn_dim = s.ffn;
    c.vocab_size = s.vocab;
    c.max_context = s.ctx;
    c.norm_eps = 1e-5f;
    c.rope_theta = s.theta;
    c.rope_neox = false;
    c.tied_embeddings = false;
    return c;
  }
  std::string names;
  for (const Shape& s : kShapes) names += std::string(names.empty() ? "" : ", ") + s.name;
  throw Error("unknown synthetic model '" + name + "' (available: " + names + ")");
}

SyntheticWeights::SyntheticWeights(const ModelConfig& c, DType dtype, uint64_t seed) : dtype_(dtype), seed_(seed) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
    throw Error("synthetic weights must be F32, F16 or BF16, not " + std::string(dtype_name(dtype)));
  const int64_t q = int64_t(c.n_heads) * c.head_dim, kv = int64_t(c.n_kv_heads) * c.head_dim;
  add("token_embd.weight", {c.vocab_size, c.dim}, false);
  add("output_norm.weight", {c.dim}, true);
  add("output.weight", {c.vocab_size, c.dim}, false);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", {c.dim}, true);
    add(p + "attn_q.weight", {q, c.dim}, false);
    add(p + "attn_k.weight", {kv, c.dim}, false);
    add(p + "attn_v.weight", {kv, c.dim}, false);
    add(p + "attn_output.weight", {c.dim, q}, false);
    add(p + "ffn_norm.weight", {c.dim}, true);
    add(p + "ffn_gate.weight", {c.ffn_dim, c.dim}, false);
    add(p + "ffn_up.weight", {c.ffn_dim, c.dim}, false);
    add(p + "ffn_down.weight", {c.dim, c.ffn_dim}, false);
  }
}

void SyntheticWeights::add(const std::string& name, std::vector<int64_t> shape, bool is_norm) {
  HostTensor t;
  t.name = name;
  // Norm weights stay F32 (as in GGUF files); matrices use the requested dtype.
  t.dtype = is_norm ? DType::F32 : dtype_;
  t.shape = std::move(shape);
  const int64_t n = t.numel();
  t.nbytes = size_t(n) * block_bytes(t.dtype);
  storage_.emplace_back(new uint8_t[t.nbytes]);
  uint8_t* data = storage_.back().get();
  t.data = data;
  const uint64_t tensor_seed = mix(seed_ ^ mix(tensors_.size() + 1));
  const float amp = is_norm ? 0.0f : 1.0f / std::sqrt(float(t.cols()));
  const DType dt = t.dtype;
  auto fill = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      // uniform in [-amp, amp); norms are exactly 1
      const float u = float(mix(tensor_seed + uint64_t(i)) >> 40) * (1.0f / 16777216.0f);
      const float v = is_norm ? 1.0f : (2.0f * u - 1.0f) * amp;
      if (dt == DType::F32) reinterpret_cast<float*>(data)[i] = v;
      else if (dt == DType::F16) reinterpret_cast<uint16_t*>(data)[i] = float_to_fp16(v);
      else reinterpret_cast<uint16_t*>(data)[i] = float_to_bf16(v);
    }
  };
  const int n_threads = n < (int64_t(1) << 20) ? 1 : int(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> threads;
  const int64_t chunk = (n + n_threads - 1) / n_threads;
  for (int k = 1; k < n_threads; ++k) {
    const int64_t b = std::min(n, k * chunk), e = std::min(n, (k + 1) * chunk);
    threads.emplace_back(fill, b, e);
  }
  fill(0, std::min(n, chunk));
  for (auto& th : threads) th.join();
  tensors_.push_back(std::move(t));
}

const HostTensor* SyntheticWeights::find(const std::string& name) const {
  for (const HostTensor& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

std::vector<const HostTensor*> SyntheticWeights::tensors() const {
  std::vector<const HostTensor*> v;
  for (const HostTensor& t : tensors_) v.push_back(&t);
  return v;
}

}  // namespace greta
