// Conversion of Hugging Face quantized checkpoints (layouts in hf_quant.h) into greta's block types.
//
// Packings, as the publishing tools write them (AutoAWQ's GEMM WQLinear, AutoGPTQ's QuantLinear):
//   AWQ   qweight [in, out/8] int32: word (i, c) holds outputs 8c..8c+7 of input i, output 8c+j in
//         nibble kAwqNibble[j] (AutoAWQ packs in the order 0 2 4 6 1 3 5 7).
//         qzeros [in/G, out/8] packed the same way; scales [in/G, out] fp16. w = s * (q - z).
//   GPTQ  qweight [in/8, out] int32: word (r, o) holds inputs 8r..8r+7 of output o, input 8r+j in
//         nibble j. qzeros [in/G, out/8]: output 8c+j in nibble j; the classic format stores
//         zero - 1 (read back as nibble + 1), checkpoint_format "gptq_v2" the zero itself.
//         scales [in/G, out] fp16; g_idx [in]: the group of each input. w = s * (q - z).
//   FP8   weight [out, in] e4m3, w = fp8 * scale with the scale per tensor ([] / [1]), per output
//         channel ([out, 1] / [out]) or per tile of weight_block_size ([ceil(out/bo), ceil(in/bi)]).
#include "model/hf_quant.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <optional>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/host_tensor.h"
#include "core/quant_blocks.h"
#include "core/thread_pool.h"
#include "formats/safetensors.h"
#include "model/owned_tensors.h"

namespace greta {
namespace {

using nlohmann::json;

enum class Method { Fp8, Awq, Gptq };

struct QuantSpec {
  Method method = Method::Fp8;
  std::string name;      // quant_method as written
  int group = 0;         // int4: values per group
  bool gptq_v2 = false;  // GPTQ zeros stored as they are (not minus one)
  int64_t tile_out = 0;  // FP8 tile scales: rows and columns of a tile (0: none declared)
  int64_t tile_in = 0;
  std::string strategy;  // FP8 compressed-tensors: "tensor", "channel" or "block"; "" = by shape
};

constexpr int64_t kRowsPerTask = 64;
constexpr int kAwqNibble[8] = {0, 4, 1, 5, 2, 6, 3, 7};  // output 8c+j sits in nibble kAwqNibble[j]

std::string shape_str(const std::vector<int64_t>& s) {
  std::string o = "[";
  for (size_t i = 0; i < s.size(); ++i) o += (i ? ", " : "") + std::to_string(s[i]);
  return o + "]";
}

// ---- quantization_config -------------------------------------------------------------

struct ConfigReader {
  const json& q;
  std::string where;  // "<config.json>: quantization_config"

  [[noreturn]] void fail(const std::string& msg) const { throw Error(where + ": " + msg); }
  const json* find(const char* k) const {
    auto it = q.find(k);
    return it == q.end() || it->is_null() ? nullptr : &*it;
  }
  // An integer under the first of `keys` present; `def` when none is (nullopt: required).
  int64_t integer(std::initializer_list<const char*> keys, std::optional<int64_t> def) const {
    for (const char* k : keys)
      if (const json* v = find(k)) {
        if (!v->is_number_integer()) fail(std::string("'") + k + "' is " + v->type_name() + " (expected an integer)");
        return v->get<int64_t>();
      }
    if (!def) fail(std::string("missing '") + *keys.begin() + "' (expected an integer)");
    return *def;
  }
  std::string string(const char* k, const std::string& def) const {
    const json* v = find(k);
    if (!v) return def;
    if (!v->is_string()) fail(std::string("'") + k + "' is " + v->type_name() + " (expected a string)");
    return v->get<std::string>();
  }
};

void parse_int4(const ConfigReader& r, QuantSpec& s) {
  const int64_t bits = r.integer({"bits", "w_bit"}, std::nullopt);
  if (bits != 4) r.fail("bits = " + std::to_string(bits) + " is not supported (supported: 4)");
  const int64_t g = r.integer({"group_size", "q_group_size"}, std::nullopt);
  if (i4_type_for_group(g) == DType::F32)
    r.fail("group_size = " + std::to_string(g) + " is not supported (supported: 32, 64, 128)");
  s.group = int(g);
  if (s.method == Method::Awq) {
    std::string v = r.string("version", "gemm");
    for (char& c : v) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (v != "gemm") r.fail("AWQ version '" + v + "' is not supported (supported: gemm, the AutoAWQ default)");
    if (const json* z = r.find("zero_point"); z && !(z->is_boolean() && z->get<bool>()))
      r.fail("AWQ zero_point must be true (symmetric AWQ without zeros is not supported)");
  } else {
    const std::string f = r.string("checkpoint_format", "gptq");
    if (f != "gptq" && f != "gptq_v2")
      r.fail("checkpoint_format '" + f + "' is not supported (supported: gptq, gptq_v2)");
    s.gptq_v2 = f == "gptq_v2";
    if (const json* d = r.find("desc_act"); d && !d->is_boolean()) r.fail("'desc_act' must be true or false");
  }
}

// Tile shape from a two-integer array ([out, in]); both must be > 0.
void read_tile(const ConfigReader& r, const json& a, const std::string& key, QuantSpec& s) {
  if (!a.is_array() || a.size() != 2 || !a[0].is_number_integer() || !a[1].is_number_integer() ||
      a[0].get<int64_t>() <= 0 || a[1].get<int64_t>() <= 0)
    r.fail("'" + key + "' must be two positive integers [rows, columns]");
  s.tile_out = a[0].get<int64_t>();
  s.tile_in = a[1].get<int64_t>();
}

void parse_compressed_tensors(const ConfigReader& r, QuantSpec& s) {
  const std::string fmt = r.string("format", "float-quantized");
  if (fmt != "float-quantized" && fmt != "naive-quantized")
    r.fail("compressed-tensors format '" + fmt + "' is not supported (supported: float-quantized FP8 weights)");
  const json* groups = r.find("config_groups");
  if (!groups || !groups->is_object() || groups->empty())
    r.fail("missing 'config_groups' (expected {\"group_0\": {\"weights\": {...}}})");
  for (const auto& [name, g] : groups->items()) {
    const std::string gw = "config_groups." + name + ".weights";
    if (!g.is_object() || !g.contains("weights") || !g["weights"].is_object()) r.fail("missing '" + gw + "' object");
    const ConfigReader w{g["weights"], r.where + ": " + gw};
    const int64_t bits = w.integer({"num_bits"}, std::nullopt);
    const std::string type = w.string("type", "");
    if (bits != 8 || type != "float")
      w.fail("num_bits " + std::to_string(bits) + ", type '" + type +
             "' is not supported (supported: FP8 weights, num_bits 8 and type \"float\")");
    const std::string st = w.string("strategy", "tensor");
    if (st != "tensor" && st != "channel" && st != "block")
      w.fail("strategy '" + st + "' is not supported (supported: tensor, channel, block)");
    if (!s.strategy.empty() && s.strategy != st)
      r.fail("config groups mix weight strategies '" + s.strategy + "' and '" + st + "'");
    s.strategy = st;
    if (st == "block") {
      const json* bs = w.find("block_structure");
      if (!bs) w.fail("strategy 'block' needs 'block_structure' [rows, columns]");
      read_tile(w, *bs, "block_structure", s);
    }
  }
}

QuantSpec parse_config(const json& q, const std::string& where) {
  const ConfigReader r{q, where};
  if (!q.is_object()) r.fail(std::string("is ") + q.type_name() + " (expected an object)");
  QuantSpec s;
  s.name = r.string("quant_method", "");
  if (s.name.empty()) r.fail("missing 'quant_method' (expected a string)");
  if (s.name == "awq" || s.name == "gptq") {
    s.method = s.name == "awq" ? Method::Awq : Method::Gptq;
    parse_int4(r, s);
  } else if (s.name == "compressed-tensors") {
    parse_compressed_tensors(r, s);
  } else if (s.name == "fp8" || s.name == "fbgemm_fp8") {
    if (const json* b = r.find("weight_block_size")) read_tile(r, *b, "weight_block_size", s);
  } else {
    r.fail("quant_method '" + s.name +
           "' is not supported (supported: awq, gptq, compressed-tensors, fp8, fbgemm_fp8)");
  }
  if (s.tile_in % 64 != 0)
    r.fail("FP8 tiles of " + std::to_string(s.tile_in) +
           " columns are not supported (a multiple of 64 is: greta keeps " + "one scale per 64 values)");
  return s;
}

// ---- tensors -------------------------------------------------------------------------

struct Converter {
  const SafetensorsModel& st;
  const QuantSpec& spec;
  const std::string& dir;  // for messages
  HfQuantized& out;
  ThreadPool& pool;  // rows are converted in parallel; nothing in a task throws

  [[noreturn]] void fail(const std::string& tensor, const std::string& msg) const {
    throw Error(dir + ": tensor '" + tensor + "': " + msg);
  }
  const HostTensor& need(const std::string& name, DType dtype, const std::string& why) {
    const HostTensor* t = st.find_tensor(name);
    if (!t) throw Error(dir + ": missing tensor '" + name + "' (" + why + ")");
    if (t->dtype != dtype)
      fail(name, "is " + std::string(dtype_name(t->dtype)) + " (expected " + std::string(dtype_name(dtype)) + ")");
    out.consumed.insert(name);
    return *t;
  }
  void expect_shape(const HostTensor& t, const std::vector<int64_t>& shape, const std::string& what) {
    if (t.shape != shape)
      fail(t.name, "has shape " + shape_str(t.shape) + ", expected " + shape_str(shape) + " (" + what + ")");
  }

  void int4(const std::string& prefix);
  void fp8(const HostTensor& w, const std::string& prefix);
  float fp8_scale(const HostTensor& s, int64_t out_rows, int64_t in, int64_t row, int64_t col) const;
};

void Converter::int4(const std::string& prefix) {
  const bool awq = spec.method == Method::Awq;
  const std::string fmt = awq ? "AWQ" : "GPTQ";
  const HostTensor& qw = need(prefix + ".qweight", DType::I32, fmt + " packed weights");
  const HostTensor& qz = need(prefix + ".qzeros", DType::I32, fmt + " packed zero points");
  const HostTensor& sc = need(prefix + ".scales", DType::F16, fmt + " group scales");
  if (qw.shape.size() != 2) fail(qw.name, "has shape " + shape_str(qw.shape) + " (expected 2 dimensions)");
  const int64_t G = spec.group;
  // The layer's shape from qweight; every other tensor must agree with it.
  const int64_t in = awq ? qw.shape[0] : qw.shape[0] * 8, out_dim = awq ? qw.shape[1] * 8 : qw.shape[1];
  if (in % G != 0)
    fail(qw.name, "gives " + std::to_string(in) + " input features, not a multiple of group_size " + std::to_string(G));
  const int64_t ng = in / G;
  expect_shape(sc, {ng, out_dim}, "[in / group_size, out] for " + fmt + " qweight " + shape_str(qw.shape));
  expect_shape(qz, {ng, out_dim / 8}, "[in / group_size, out / 8] for " + fmt + " qweight " + shape_str(qw.shape));
  const auto* qwd = reinterpret_cast<const uint32_t*>(qw.data);
  const auto* qzd = reinterpret_cast<const uint32_t*>(qz.data);
  const auto* scd = reinterpret_cast<const uint16_t*>(sc.data);
  if (!awq) {
    if (const HostTensor* gi = st.find_tensor(prefix + ".g_idx")) {
      need(gi->name, DType::I32, "GPTQ input groups");
      expect_shape(*gi, {in}, "one group index per input feature");
      const auto* g = reinterpret_cast<const int32_t*>(gi->data);
      for (int64_t i = 0; i < in; ++i)
        if (g[i] != i / G)
          fail(gi->name, "input " + std::to_string(i) + " is in group " + std::to_string(g[i]) + ", expected " +
                             std::to_string(i / G) +
                             ": GPTQ act-order (desc_act) checkpoints whose g_idx permutes "
                             "the inputs are not supported (quantize with desc_act=false)");
    }
  }
  const DType type = i4_type_for_group(G);
  auto added = out.tensors->add(prefix + ".weight", type, {out_dim, in});
  std::memset(added.bytes, 0, added.tensor->nbytes);
  const size_t rb = row_bytes(type, in), bb = block_bytes(type);
  pool.run((out_dim + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t task, int) {
    for (int64_t o = task * kRowsPerTask; o < std::min(out_dim, (task + 1) * kRowsPerTask); ++o) {
      uint8_t* row = added.bytes + size_t(o) * rb;
      const int zshift = 4 * (awq ? kAwqNibble[o % 8] : int(o % 8));
      for (int64_t g = 0; g < ng; ++g) {
        uint8_t* blk = row + size_t(g) * bb;  // BlockI4<G>: d, z, pad, qs
        std::memcpy(blk, &scd[g * out_dim + o], 2);
        const int zn = int((qzd[g * (out_dim / 8) + o / 8] >> zshift) & 0x0f);
        blk[2] = uint8_t(awq || spec.gptq_v2 ? zn : zn + 1);
        for (int64_t l = 0; l < G; ++l) {
          const int64_t i = g * G + l;
          const uint32_t word = awq ? qwd[i * (out_dim / 8) + o / 8] : qwd[(i / 8) * out_dim + o];
          i4_set_quant(blk + 4, int(l), int((word >> (awq ? zshift : 4 * int(i % 8))) & 0x0f));
        }
      }
    }
  });
}

float Converter::fp8_scale(const HostTensor& s, int64_t out_rows, int64_t in, int64_t row, int64_t col) const {
  int64_t idx = 0;
  if (s.numel() == 1) idx = 0;
  else if (s.numel() == out_rows && (s.shape.size() == 1 || s.cols() == 1)) idx = row;
  else idx = (row / spec.tile_out) * ((in + spec.tile_in - 1) / spec.tile_in) + col / spec.tile_in;
  float v;
  dequantize_row(s.dtype, s.data + size_t(idx) * block_bytes(s.dtype), &v, 1);
  return v;
}

void Converter::fp8(const HostTensor& w, const std::string& prefix) {
  if (w.shape.size() != 2) fail(w.name, "F8_E4M3 weight of shape " + shape_str(w.shape) + " (expected [out, in])");
  const int64_t out_dim = w.shape[0], in = w.shape[1];
  if (in % 64 != 0)
    fail(w.name,
         "has " + std::to_string(in) + " input features, not a multiple of 64 (FP8 weights load as blocks of 64)");
  const HostTensor* s = st.find_tensor(prefix + ".weight_scale");
  if (!s) s = st.find_tensor(prefix + ".weight_scale_inv");
  if (!s)
    throw Error(dir + ": tensor '" + w.name + "' is F8_E4M3 but there is no '" + prefix + ".weight_scale' (or '" +
                prefix + ".weight_scale_inv') to scale it");
  if (s->dtype != DType::F32 && s->dtype != DType::F16 && s->dtype != DType::BF16)
    fail(s->name, "is " + std::string(dtype_name(s->dtype)) + " (expected F32, F16 or BF16 scales)");
  out.consumed.insert(s->name);
  const bool per_tensor = s->numel() == 1 && s->shape.size() <= 2;
  const bool per_channel = s->numel() == out_dim &&
                           (s->shape.size() == 1 || (s->shape.size() == 2 && s->shape[1] == 1));
  std::vector<int64_t> tile;
  if (spec.tile_in > 0) tile = {(out_dim + spec.tile_out - 1) / spec.tile_out, (in + spec.tile_in - 1) / spec.tile_in};
  const std::string st_name = !spec.strategy.empty() ? spec.strategy : spec.tile_in > 0 ? "block" : "";
  const bool ok = st_name == "tensor"    ? per_tensor
                  : st_name == "channel" ? per_channel
                  : st_name == "block"   ? s->shape == tile
                                         : per_tensor || per_channel;
  if (!ok) {
    const std::string want = st_name == "tensor" ? "[1] (one scale per tensor)"
                             : st_name == "channel"
                                 ? "[" + std::to_string(out_dim) + ", 1] (one scale per output channel)"
                             : st_name == "block" ? shape_str(tile) + " (one scale per tile of weight_block_size)"
                                                  : "[1] or [" + std::to_string(out_dim) + ", 1]";
    fail(s->name, "has shape " + shape_str(s->shape) + ", expected " + want + " for weight " + shape_str(w.shape));
  }
  for (int64_t i = 0; i < s->numel(); ++i) {  // checked here: the threads below cannot throw
    float v;
    dequantize_row(s->dtype, s->data + size_t(i) * block_bytes(s->dtype), &v, 1);
    if (!std::isfinite(v)) fail(s->name, "value " + std::to_string(i) + " is not finite (expected finite scales)");
  }
  auto added = out.tensors->add(w.name, DType::F8_B64, {out_dim, in});
  auto* blocks = reinterpret_cast<BlockF8_64*>(added.bytes);
  pool.run((out_dim + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t task, int) {
    for (int64_t o = task * kRowsPerTask; o < std::min(out_dim, (task + 1) * kRowsPerTask); ++o)
      for (int64_t b = 0; b < in / 64; ++b) {
        BlockF8_64& blk = blocks[o * (in / 64) + b];
        blk.scale = fp8_scale(*s, out_dim, in, o, 64 * b);
        std::memcpy(blk.qs, w.data + size_t(o * in + 64 * b), 64);
      }
  });
  if (const HostTensor* is = st.find_tensor(prefix + ".input_scale")) out.consumed.insert(is->name);
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

HfQuantized load_hf_quantized(const json& config, const std::string& cfg_path, const SafetensorsModel& st) {
  HfQuantized out;
  auto qc = config.find("quantization_config");
  if (qc == config.end() || qc->is_null()) {
    for (const HostTensor* t : st.tensors())
      if (t->dtype == DType::F8_E4M3 || ends_with(t->name, ".qweight"))
        throw Error(cfg_path + ": no 'quantization_config', but tensor '" + t->name + "' is " +
                    (t->dtype == DType::F8_E4M3 ? "FP8 (F8_E4M3)" : "packed int4 (qweight)") +
                    " (a quantized checkpoint's config.json names its quant_method)");
    return out;
  }
  const QuantSpec spec = parse_config(*qc, cfg_path + ": quantization_config");
  out.tensors = std::make_shared<OwnedTensors>();
  ThreadPool pool(0);
  Converter cv{st, spec, cfg_path.substr(0, cfg_path.size() - std::string("/config.json").size()), out, pool};
  int input_scales = 0;
  for (const HostTensor* t : st.tensors()) {
    if (spec.method == Method::Fp8) {
      if (t->dtype == DType::F8_E4M3) {
        if (!ends_with(t->name, ".weight"))
          cv.fail(t->name, "is F8_E4M3 but not a '.weight' (expected FP8 linear weights only)");
        cv.fp8(*t, t->name.substr(0, t->name.size() - 7));
      }
      input_scales += ends_with(t->name, ".input_scale");
    } else if (ends_with(t->name, ".qweight")) {
      cv.int4(t->name.substr(0, t->name.size() - 8));
    }
  }
  if (out.tensors->size() == 0)
    throw Error(cfg_path + ": quantization_config declares quant_method '" + spec.name + "' but no tensor is " +
                (spec.method == Method::Fp8 ? "F8_E4M3" : "a '.qweight'") + " (expected quantized linear weights)");
  const DType type = spec.method == Method::Fp8 ? DType::F8_B64 : i4_type_for_group(spec.group);
  out.notes.push_back(spec.name + " checkpoint: " + std::to_string(out.tensors->size()) + " linear weights loaded as " +
                      std::string(dtype_name(type)));
  // Static activation scales belong to W8A8 kernels that quantize activations with them; greta's
  // backends quantize activations themselves (or keep them in float), so the weights alone
  // define each layer and these are left unused.
  if (input_scales > 0)
    out.notes.push_back(std::to_string(input_scales) +
                        " input_scale tensors (static FP8 activation scales) not used: " +
                        "activations are scaled per token at run time");
  for (const HostTensor* t : st.tensors())
    if ((t->dtype == DType::F8_E4M3 || t->dtype == DType::I32) && !out.consumed.count(t->name) &&
        !out.tensors->find(t->name))
      cv.fail(t->name, "is " + std::string(dtype_name(t->dtype)) + " but belongs to no " + spec.name +
                           " layer (expected it next to a quantized weight)");
  return out;
}

}  // namespace greta
