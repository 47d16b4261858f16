// Quantize on load: the block types offered and their names, llama.cpp's fallback for rows a
// block does not divide, the bytes made (row-parallel) against the reference quantizer row by
// row, ModelFile::quantize on a float model, synthetic weights of a block type, and refusals.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "core/quant_blocks.h"
#include "model/model_file.h"
#include "model/quantize_on_load.h"
#include "model/sequence_runner.h"

namespace greta {
namespace {

// A float tensor [rows, cols] of type t with values that vary within and across rows.
struct FloatTensor {
  HostTensor t;
  std::vector<uint8_t> bytes;
  FloatTensor(std::string name, DType type, int64_t rows, int64_t cols) {
    std::vector<float> v(size_t(rows * cols));
    for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.37f * float(i)) * (1.0f + float(i % 97) / 50.0f);
    bytes.resize(size_t(rows) * row_bytes(type, cols));
    for (int64_t r = 0; r < rows; ++r)
      quantize_row(type, v.data() + r * cols, bytes.data() + size_t(r) * row_bytes(type, cols), cols);
    t.name = std::move(name);
    t.dtype = type;
    t.shape = {rows, cols};
    t.data = bytes.data();
    t.nbytes = bytes.size();
  }
};

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(QuantizeOnLoad, EveryChoiceParsesByNameInAnyCase) {
  ASSERT_GE(quant_choices().size(), 5u);
  for (const QuantChoice& c : quant_choices()) {
    EXPECT_EQ(parse_quant_type(c.name), c.type) << c.name;
    std::string upper(c.name);
    for (char& ch : upper) ch = char(std::toupper(static_cast<unsigned char>(ch)));
    EXPECT_EQ(parse_quant_type(upper), c.type) << upper;
    EXPECT_TRUE(is_quantized(c.type)) << c.name;
  }
  EXPECT_EQ(parse_quant_type("q4_k"), DType::Q4_K);
  EXPECT_EQ(parse_quant_type("Q8_0"), DType::Q8_0);
}

TEST(QuantizeOnLoad, UnknownNameIsRefusedWithTheChoices) {
  for (const char* bad : {"q3_k", "bf16", "", "q4_k "}) {
    const std::string msg = error_of([&] { parse_quant_type(bad); });
    EXPECT_NE(msg.find("unknown quantization type '" + std::string(bad) + "'"), std::string::npos) << msg;
    for (const QuantChoice& c : quant_choices()) EXPECT_NE(msg.find(std::string(c.name)), std::string::npos) << msg;
  }
}

TEST(QuantizeOnLoad, FallbackFollowsLlamaCppsRule) {
  // The block divides the row: the type asked for.
  for (const QuantChoice& c : quant_choices()) EXPECT_EQ(matrix_type(c.type, 4096, DType::BF16), c.type) << c.name;
  // 576 = 18 x 32, not a multiple of 256: a K-quant takes its 32-value fallback.
  EXPECT_EQ(matrix_type(DType::Q6_K, 576, DType::BF16), DType::Q8_0);
  EXPECT_EQ(matrix_type(DType::Q4_K, 576, DType::BF16), DType::Q5_0);
  EXPECT_EQ(matrix_type(DType::Q5_K, 576, DType::BF16), DType::Q5_1);
  // Neither the block nor the fallback divides the row: the float type it came in.
  EXPECT_EQ(matrix_type(DType::Q4_K, 80, DType::F16), DType::F16);
  EXPECT_EQ(matrix_type(DType::Q6_K, 48, DType::F32), DType::F32);
  // A 32-value type has no fallback.
  EXPECT_EQ(matrix_type(DType::Q8_0, 48, DType::BF16), DType::BF16);
  EXPECT_EQ(matrix_type(DType::Q4_0, 100, DType::F32), DType::F32);
  // Every fallback is itself a block type, with a smaller block.
  for (const QuantChoice& c : quant_choices())
    if (c.fallback) {
      EXPECT_TRUE(is_quantized(*c.fallback)) << c.name;
      EXPECT_LT(block_elems(*c.fallback), block_elems(c.type)) << c.name;
    }
}

// Row-parallel quantization (several threads, many tasks) gives the bytes the reference
// quantizer gives row by row, for every type and every float source type.
TEST(QuantizeOnLoad, BytesEqualTheReferenceQuantizerRowByRow) {
  for (DType src_type : {DType::F32, DType::F16, DType::BF16}) {
    const FloatTensor src("w", src_type, 300, 512);  // 300 rows of 512: 3 tasks of 128 rows
    for (const QuantChoice& c : quant_choices()) {
      OwnedTensors out;
      MatrixQuantizer q(c.type, 3);
      const HostTensor* t = q.add(out, src.t);
      ASSERT_NE(t, &src.t);
      EXPECT_EQ(t->name, "w");
      EXPECT_EQ(t->dtype, c.type);
      EXPECT_EQ(t->shape, src.t.shape);
      const size_t rb = row_bytes(c.type, 512);
      ASSERT_EQ(t->nbytes, 300 * rb);
      std::vector<float> x(512);
      std::vector<uint8_t> want(rb);
      for (int64_t r = 0; r < 300; ++r) {
        dequantize_row(src_type, src.t.data + size_t(r) * row_bytes(src_type, 512), x.data(), 512);
        quantize_row(c.type, x.data(), want.data(), 512);
        ASSERT_EQ(std::memcmp(t->data + size_t(r) * rb, want.data(), rb), 0)
            << c.name << " from " << dtype_name(src_type) << ", row " << r;
      }
      EXPECT_TRUE(q.fallback_notes().empty());
      EXPECT_EQ(out.find("w"), t);
    }
  }
}

TEST(QuantizeOnLoad, FallbacksAreNotedOncePerType) {
  const FloatTensor a("a", DType::F32, 4, 576), b("b", DType::F32, 2, 576), c("c", DType::BF16, 3, 48),
      d("d", DType::F32, 2, 512);
  OwnedTensors out;
  MatrixQuantizer q(DType::Q4_K, 2);
  EXPECT_EQ(q.add(out, a.t)->dtype, DType::Q5_0);
  EXPECT_EQ(q.add(out, b.t)->dtype, DType::Q5_0);
  EXPECT_EQ(q.add(out, c.t), &c.t);  // no block type fits: the source tensor itself, no copy
  EXPECT_EQ(q.add(out, d.t)->dtype, DType::Q4_K);
  EXPECT_EQ(out.size(), 3u);
  const std::vector<std::string> notes = q.fallback_notes();
  ASSERT_EQ(notes.size(), 2u);
  const std::string all = notes[0] + "\n" + notes[1];
  EXPECT_NE(all.find("2 tensors stored as Q5_0 instead of Q4_K: rows of 576 values (a and others)"), std::string::npos)
      << all;
  EXPECT_NE(all.find("1 tensor stored as BF16 instead of Q4_K: rows of 48 values (c)"), std::string::npos) << all;
}

TEST(QuantizeOnLoad, NonFloatSourceIsRefused) {
  const FloatTensor q8("blk.0.attn_q.weight", DType::Q8_0, 2, 64);
  OwnedTensors out;
  MatrixQuantizer q(DType::Q4_0, 1);
  const std::string msg = error_of([&] { q.add(out, q8.t); });
  EXPECT_NE(msg.find("'blk.0.attn_q.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Q8_0"), std::string::npos) << msg;
  EXPECT_NE(error_of([] { MatrixQuantizer(DType::I32, 1); }).find("cannot store weights as I32"), std::string::npos);
}

// Every matrix of the model and the token embedding are quantized; norms stay F32; the file's
// lookups (by role, all_tensors) return the quantized tensors.
TEST(QuantizeOnLoad, ModelFileQuantizesItsMatrices) {
  auto f = ModelFile::synthetic("tiny", DType::BF16, 3);
  f->quantize(DType::Q4_K, 2);
  const ModelConfig& c = f->config();
  const std::vector<const HostTensor*> mats = f->matrices();
  EXPECT_EQ(mats.size(), size_t(2 + 7 * c.n_layers));
  for (const HostTensor* t : mats) {
    // tiny's ffn_dim 1376 is a multiple of 32, not of 256: ffn_down (rows of 1376) falls back;
    // the output projection takes Q6_K, as llama.cpp's quantizer gives it.
    const bool down = t->name.find("ffn_down") != std::string::npos, out = t->name == "output.weight";
    EXPECT_EQ(t->dtype, out ? DType::Q6_K : down ? DType::Q5_0 : DType::Q4_K) << t->name;
  }
  EXPECT_EQ(f->layer_tensor(0, Role::Wq)->dtype, DType::Q4_K);
  EXPECT_EQ(f->token_embedding()->dtype, DType::Q4_K);
  EXPECT_EQ(f->output()->dtype, DType::Q6_K);
  EXPECT_EQ(f->layer_tensor(1, Role::AttnNorm)->dtype, DType::F32);
  EXPECT_EQ(f->output_norm()->dtype, DType::F32);
  int q4k = 0, q5 = 0, f32 = 0;
  for (const HostTensor* t : f->all_tensors()) {
    q4k += t->dtype == DType::Q4_K;
    q5 += t->dtype == DType::Q5_0;
    f32 += t->dtype == DType::F32;
  }
  EXPECT_EQ(q4k, 1 + 6 * c.n_layers);
  EXPECT_EQ(q5, c.n_layers);
  EXPECT_EQ(f32, 1 + 2 * c.n_layers);
  ASSERT_EQ(f->load_notes().size(), 2u);
  EXPECT_NE(f->load_notes()[0].find("4 tensors stored as Q5_0 instead of Q4_K"), std::string::npos)
      << f->load_notes()[0];
  EXPECT_NE(f->load_notes()[1].find("output projection 'output.weight' stored as Q6_K"), std::string::npos)
      << f->load_notes()[1];
  size_t bytes = 0;
  int tensors = 0;
  for (const ModelFile::TypeTotal& t : f->type_totals()) {
    bytes += t.bytes;
    tensors += t.tensors;
  }
  EXPECT_EQ(tensors, int(f->all_tensors().size()));
  size_t want_bytes = 0;
  for (const HostTensor* t : f->all_tensors()) want_bytes += size_t(t->rows()) * row_bytes(t->dtype, t->cols());
  EXPECT_EQ(bytes, want_bytes);
}

// Synthetic weights of a block type come from the same float values through the same
// quantizer: byte for byte what quantizing the F32 synthetic model on load gives, except the
// output projection, which quantizing a model keeps finer (output_projection_type).
TEST(QuantizeOnLoad, SyntheticBlockTypeEqualsQuantizingTheFloatModel) {
  for (const QuantChoice& c : quant_choices()) {
    auto made = ModelFile::synthetic("tiny", c.type, 5, 2, DType::F32);
    auto loaded = ModelFile::synthetic("tiny", DType::F32, 5, 2);
    loaded->quantize(c.type, 2);
    const auto a = made->all_tensors(), b = loaded->all_tensors();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      ASSERT_EQ(a[i]->name, b[i]->name);
      if (a[i]->name == "output.weight") {
        EXPECT_EQ(b[i]->dtype, output_projection_type(c.type, b[i]->cols(), DType::F32)) << c.name;
        continue;
      }
      ASSERT_EQ(a[i]->dtype, b[i]->dtype) << c.name << " " << a[i]->name;
      ASSERT_EQ(a[i]->nbytes, b[i]->nbytes);
      ASSERT_EQ(std::memcmp(a[i]->data, b[i]->data, a[i]->nbytes), 0) << c.name << " " << a[i]->name;
    }
    std::vector<std::string> notes = loaded->load_notes();
    ASSERT_FALSE(notes.empty());
    EXPECT_NE(notes.back().find("output projection"), std::string::npos) << notes.back();
    notes.pop_back();
    EXPECT_EQ(made->load_notes(), notes) << c.name;
  }
}

// The output projection as llama.cpp's quantizer stores it (Q6_K; Q8_0 where Q8_0 is asked or
// 256 does not divide the rows), and in its float type for the Hugging Face types. (A tied
// embedding taking its place: tests/e2e/test_quantize_perplexity.py, on the default model.)
TEST(QuantizeOnLoad, OutputProjectionIsKeptFiner) {
  EXPECT_EQ(output_projection_type(DType::Q4_0, 4096, DType::BF16), DType::Q6_K);
  EXPECT_EQ(output_projection_type(DType::Q4_K, 4096, DType::BF16), DType::Q6_K);
  EXPECT_EQ(output_projection_type(DType::Q6_K, 4096, DType::BF16), DType::Q6_K);
  EXPECT_EQ(output_projection_type(DType::Q8_0, 4096, DType::BF16), DType::Q8_0);
  EXPECT_EQ(output_projection_type(DType::Q4_1, 576, DType::BF16), DType::Q8_0);
  EXPECT_EQ(output_projection_type(DType::Q4_1, 40, DType::F16), DType::F16);
  EXPECT_EQ(output_projection_type(DType::F8_B64, 4096, DType::BF16), DType::BF16);
  EXPECT_EQ(output_projection_type(DType::I4_G128, 4096, DType::F32), DType::F32);
  auto f = ModelFile::synthetic("tiny", DType::BF16, 3);
  f->quantize(DType::Q4_0, 2);
  EXPECT_EQ(f->output()->dtype, DType::Q6_K);
  EXPECT_EQ(f->token_embedding()->dtype, DType::Q4_0);
  EXPECT_EQ(f->layer_tensor(0, Role::Wq)->dtype, DType::Q4_0);
  auto g = ModelFile::synthetic("tiny", DType::BF16, 3);
  g->quantize(DType::F8_B64, 2);
  EXPECT_EQ(g->output()->dtype, DType::BF16);
  EXPECT_EQ(g->token_embedding()->dtype, DType::F8_B64);
  EXPECT_EQ(g->layer_tensor(0, Role::Wq)->dtype, DType::F8_B64);
}

TEST(QuantizeOnLoad, AlreadyQuantizedModelIsRefused) {
  auto f = ModelFile::synthetic("tiny", DType::Q8_0, 3);
  const std::string msg = error_of([&] { f->quantize(DType::Q4_0); });
  EXPECT_NE(msg.find("cannot quantize to Q4_0 on load: tensor 'token_embd.weight' is already Q8_0"), std::string::npos)
      << msg;
  // Quantizing twice is the same refusal.
  auto g = ModelFile::synthetic("tiny", DType::BF16, 3);
  g->quantize(DType::Q4_0);
  EXPECT_NE(error_of([&] { g->quantize(DType::Q8_0); }).find("is already Q4_0"), std::string::npos);
  EXPECT_NE(error_of([&] { g->quantize(DType::F16); }).find("not a block type"), std::string::npos);
}

// The quantized model runs on the CPU backend and stays close to the float model it came from;
// the bytes a decode step reads are the quantized ones.
TEST(QuantizeOnLoad, QuantizedModelRunsCloseToTheFloatModel) {
  auto ref_file = ModelFile::synthetic("tiny", DType::F32, 9);
  auto q_file = ModelFile::synthetic("tiny", DType::F32, 9);
  q_file->quantize(DType::Q8_0, 2);
  auto be = make_cpu_backend({.n_threads = 2});
  LlamaModel ref(*ref_file, *be), q(*q_file, *be);
  const std::vector<int32_t> prompt = {1, 17, 230, 999, 5, 42, 7};
  const std::vector<float> a = SequenceRunner(ref, 32).eval_last(prompt);
  const std::vector<float> b = SequenceRunner(q, 32).eval_last(prompt);
  ASSERT_EQ(a.size(), b.size());
  double max_diff = 0, max_abs = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_diff = std::max(max_diff, double(std::fabs(a[i] - b[i])));
    max_abs = std::max(max_abs, double(std::fabs(a[i])));
  }
  EXPECT_GT(max_diff, 0.0);  // the weights did change
  EXPECT_LT(max_diff, 0.05 * max_abs) << "max |diff| " << max_diff << " of max |logit| " << max_abs;
  size_t want_bytes = 0;  // every tensor but the embedding (a decode step reads one row of it)
  for (const HostTensor* t : q_file->all_tensors())
    if (t->name != "token_embd.weight") want_bytes += t->nbytes;
  EXPECT_EQ(q.weight_bytes_per_token(), want_bytes);
  EXPECT_EQ(q_file->output()->dtype, DType::Q8_0);
}

}  // namespace
}  // namespace greta
