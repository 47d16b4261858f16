// Quantize on load: weight matrices made or read in a float type (F32, F16, BF16) stored in a
// GGUF block type instead, as a model loads (`--quantize TYPE` on a float model, synthetic
// weights of a block type). One table lists the block types offered and their fallbacks.
//
// Which tensors: every 2-D weight the forward multiplies by (q/k/v/o, gate/up/down, the output
// projection) and the token embedding, as llama.cpp's quantizer does (GGUF files ship quantized
// embeddings; both backends embed from any block type). Norms and biases stay F32/float. A
// model quantized on load keeps its output projection finer (output_projection_type); synthetic
// weights of a block type take that type for every matrix.
//
// Rows whose length the block does not divide fall back as llama.cpp's llama_tensor_get_type
// does: a K-quant takes its listed 32-value type; when that does not divide the row either
// (or the type has no fallback), the tensor keeps its float type. Each fallback is noted once
// per (asked, used) pair for the load log.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/host_tensor.h"
#include "core/thread_pool.h"
#include "model/owned_tensors.h"

namespace greta {

struct QuantChoice {
  std::string_view name;  // as llama.cpp's quantize tool spells it, lower case
  DType type;
  std::optional<DType> fallback;  // for rows the block does not divide (llama.cpp's rule)
};
std::span<const QuantChoice> quant_choices();
std::string quant_choice_names();  // "q8_0, q4_0, ..."
// "q4_k" (any case) -> DType::Q4_K. Throws greta::Error naming the value and the choices.
DType parse_quant_type(std::string_view name);
// F32, F16 or BF16: the types quantize on load reads.
bool is_float_weight_type(DType t);

// The type a matrix with rows of n_in values is stored in when `want` is asked for: want when
// its block divides n_in, else want's fallback when that divides, else `keep` (a float type).
DType matrix_type(DType want, int64_t n_in, DType keep);

// The type the output projection (the output matrix, or the token embedding where the two are
// tied) takes when `want` is asked for a whole model: llama.cpp's quantizer keeps it at Q6_K (Q8_0
// when Q8_0 is asked or 256 does not divide its rows), as every GGUF file it writes has it, since
// the logits are the most sensitive matrix product; the Hugging Face types (FP8, int4) leave it
// in its float type `keep`, as AWQ, GPTQ and FP8 checkpoints do.
DType output_projection_type(DType want, int64_t n_in, DType keep);

// Writes row `row` (n_in floats) of the matrix being made into `out`. Called from several
// threads at once, for distinct rows.
using RowSource = std::function<void(int64_t row, float* out)>;

// Makes weight matrices in one type, rows in parallel on a thread pool, into an OwnedTensors.
class MatrixQuantizer {
 public:
  // want: a block type, or a float type (then rows are only converted). n_threads <= 0: all cores.
  MatrixQuantizer(DType want, int n_threads);

  // Adds `name` of `shape` ([rows, n_in], or [n] for one row) to `out` in matrix_type(want,
  // n_in, keep), row r taken from row(r, ...). Returns the new tensor.
  const HostTensor* add(OwnedTensors& out, std::string name, std::vector<int64_t> shape, DType keep,
                        const RowSource& row);
  // The float tensor `src` quantized into `out` (same name and shape); &src itself when it stays
  // as it is (its rows fit no block type and it keeps its own float type). Throws greta::Error
  // when src is not F32, F16 or BF16.
  const HostTensor* add(OwnedTensors& out, const HostTensor& src);

  // One line per fallback (asked type -> type used): how many tensors, the first one and its
  // row length. Empty when every tensor got the type asked for.
  std::vector<std::string> fallback_notes() const;
  DType want() const { return want_; }

 private:
  // The type for a tensor with rows of n_in values; notes a fallback.
  DType pick(const std::string& name, int64_t n_in, DType keep);
  const HostTensor* make(OwnedTensors& out, std::string name, std::vector<int64_t> shape, DType type,
                         const RowSource& row);

  struct Fallback {
    int tensors = 0;
    std::string first;
    int64_t n_in = 0;
  };
  DType want_;
  ThreadPool pool_;
  std::map<std::pair<DType, DType>, Fallback> fallbacks_;  // (want, used)
};

}  // namespace greta
