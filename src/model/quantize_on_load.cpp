#include "model/quantize_on_load.h"

#include <algorithm>
#include <cctype>

#include "core/error.h"
#include "core/quant_blocks.h"

namespace greta {

namespace {

// The block types offered. A K-quant's fallback is the one llama.cpp's llama_tensor_get_type
// picks for rows its 256-value blocks do not divide (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0).
constexpr QuantChoice kChoices[] = {
    {"q8_0", DType::Q8_0, std::nullopt},
    {"q4_0", DType::Q4_0, std::nullopt},
    {"q4_1", DType::Q4_1, std::nullopt},
    {"q5_0", DType::Q5_0, std::nullopt},
    {"q5_1", DType::Q5_1, std::nullopt},
    {"q4_k", DType::Q4_K, DType::Q5_0},
    {"q5_k", DType::Q5_K, DType::Q5_1},
    {"q6_k", DType::Q6_K, DType::Q8_0},
    // The Hugging Face block types: FP8 e4m3 with a scale per 64 values, and int4 with a scale
    // and zero point per 128 (per 32 where 128 does not divide the row).
    {"fp8", DType::F8_B64, std::nullopt},
    {"int4", DType::I4_G128, DType::I4_G32},
};

const QuantChoice* choice_of(DType t) {
  for (const QuantChoice& c : kChoices)
    if (c.type == t) return &c;
  return nullptr;
}

// Rows per task: enough values that dispatch cost is noise, few enough that every core gets work.
constexpr int64_t kValuesPerTask = 1 << 16;

}  // namespace

std::span<const QuantChoice> quant_choices() { return kChoices; }

std::string quant_choice_names() {
  std::string s;
  for (const QuantChoice& c : kChoices) s += (s.empty() ? "" : ", ") + std::string(c.name);
  return s;
}

DType parse_quant_type(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
  for (const QuantChoice& c : kChoices)
    if (lower == c.name) return c.type;
  throw Error("unknown quantization type '" + std::string(name) + "' (choices: " + quant_choice_names() + ")");
}

bool is_float_weight_type(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

DType matrix_type(DType want, int64_t n_in, DType keep) {
  if (n_in % block_elems(want) == 0) return want;
  if (const QuantChoice* c = choice_of(want); c && c->fallback && n_in % block_elems(*c->fallback) == 0)
    return *c->fallback;
  return keep;
}

DType output_projection_type(DType want, int64_t n_in, DType keep) {
  if (want == DType::F8_B64 || want == DType::I4_G32 || want == DType::I4_G64 || want == DType::I4_G128) return keep;
  return matrix_type(want == DType::Q8_0 ? DType::Q8_0 : DType::Q6_K, n_in, keep);
}

MatrixQuantizer::MatrixQuantizer(DType want, int n_threads) : want_(want), pool_(n_threads) {
  if (!is_float_weight_type(want) && !choice_of(want))
    throw Error("cannot store weights as " + std::string(dtype_name(want)) + " (block types: " + quant_choice_names() +
                ")");
}

DType MatrixQuantizer::pick(const std::string& name, int64_t n_in, DType keep) {
  const DType type = matrix_type(want_, n_in, keep);
  if (type != want_) {
    Fallback& f = fallbacks_[{want_, type}];
    if (f.tensors++ == 0) {
      f.first = name;
      f.n_in = n_in;
    }
  }
  return type;
}

const HostTensor* MatrixQuantizer::make(OwnedTensors& out, std::string name, std::vector<int64_t> shape, DType type,
                                        const RowSource& row) {
  const OwnedTensors::Added a = out.add(std::move(name), type, std::move(shape));
  const int64_t rows = a.tensor->rows(), n_in = a.tensor->cols();
  const size_t rb = row_bytes(type, n_in);
  const int64_t rows_per_task = std::max<int64_t>(1, kValuesPerTask / std::max<int64_t>(1, n_in));
  const int64_t n_tasks = (rows + rows_per_task - 1) / rows_per_task;
  std::vector<std::vector<float>> scratch(size_t(pool_.size()));  // one row per thread
  pool_.run(n_tasks, [&](int64_t task, int thread) {
    std::vector<float>& x = scratch[size_t(thread)];
    x.resize(size_t(n_in));
    const int64_t end = std::min(rows, (task + 1) * rows_per_task);
    for (int64_t r = task * rows_per_task; r < end; ++r) {
      row(r, x.data());
      quantize_row(type, x.data(), a.bytes + size_t(r) * rb, n_in);
    }
  });
  return a.tensor;
}

const HostTensor* MatrixQuantizer::add(OwnedTensors& out, std::string name, std::vector<int64_t> shape, DType keep,
                                       const RowSource& row) {
  const int64_t n_in = shape.empty() ? 1 : shape.back();
  const DType type = pick(name, n_in, keep);
  return make(out, std::move(name), std::move(shape), type, row);
}

const HostTensor* MatrixQuantizer::add(OwnedTensors& out, const HostTensor& src) {
  if (!is_float_weight_type(src.dtype))
    throw Error("cannot quantize tensor '" + src.name + "': it is " + std::string(dtype_name(src.dtype)) +
                ", and quantize on load reads F32, F16 or BF16");
  const DType type = pick(src.name, src.cols(), src.dtype);
  if (type == src.dtype) return &src;
  const size_t src_rb = row_bytes(src.dtype, src.cols());
  if (!src.data || src.nbytes < src_rb * size_t(src.rows()))
    throw Error("tensor '" + src.name + "' holds " + std::to_string(src.nbytes) + " bytes; expected " +
                std::to_string(src_rb * size_t(src.rows())));
  return make(out, src.name, src.shape, type,
              [&](int64_t r, float* x) { dequantize_row(src.dtype, src.data + size_t(r) * src_rb, x, src.cols()); });
}

std::vector<std::string> MatrixQuantizer::fallback_notes() const {
  std::vector<std::string> v;
  for (const auto& [types, f] : fallbacks_) {
    const auto [want, used] = types;
    v.push_back(std::to_string(f.tensors) + (f.tensors == 1 ? " tensor" : " tensors") + " stored as " +
                std::string(dtype_name(used)) + " instead of " + std::string(dtype_name(want)) + ": rows of " +
                std::to_string(f.n_in) + " values (" + f.first + (f.tensors > 1 ? " and others" : "") +
                ") are not a multiple of " + std::string(dtype_name(want)) + "'s " + std::to_string(block_elems(want)) +
                "-value blocks");
  }
  return v;
}

}  // namespace greta
