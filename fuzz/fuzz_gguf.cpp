// libFuzzer target for the GGUF reader: any input must either parse into aligned views that
// lie inside the input (or in aligned copies of it), or throw greta::Error. Anything else
// (a crash, a sanitizer report, another exception type, a huge allocation) is a bug.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "formats/aligned_copies.h"
#include "formats/gguf.h"

namespace {

volatile uint64_t g_sink;  // keeps the reads below from being optimized away

void touch(const greta::GGUFValue& v) {
  uint64_t h = uint64_t(v.type);
  if (auto i = v.as_int()) h += uint64_t(*i);
  if (auto d = v.as_float()) h += uint64_t(*d != 0.0);
  if (auto b = v.as_bool()) h += *b;
  if (const std::string* s = v.as_string()) h += s->size() + (s->empty() ? 0 : uint8_t(s->front()));
  if (const greta::GGUFArray* a = v.as_array()) {
    for (const greta::GGUFValue& item : a->items) {
      if (item.type != a->elem_type) __builtin_trap();
      touch(item);
    }
  }
  g_sink = g_sink + h;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    greta::GGUFFile f = greta::GGUFFile::parse(
        greta::MappedFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz.gguf"));
    const uint8_t* begin = f.file()->data();
    const uint8_t* end = begin + f.file()->size();
    for (const auto& [key, value] : f.metadata()) {
      if (f.find(key) != &value) __builtin_trap();
      touch(value);
    }
    for (const greta::HostTensor& t : f.tensors()) {
      // Views lie inside the input, except data the file left misaligned, which comes from an
      // aligned copy (formats/aligned_copies.h; ASan checks its bounds).
      const bool in_file = t.data >= begin && t.nbytes <= size_t(end - t.data);
      if (t.nbytes == 0 || (!in_file && f.alignment() >= 4)) __builtin_trap();
      if (reinterpret_cast<uintptr_t>(t.data) % greta::tensor_data_alignment(t.dtype) != 0) __builtin_trap();
      if (t.nbytes != greta::row_bytes(t.dtype, t.cols()) * size_t(t.rows())) __builtin_trap();
      if (f.find_tensor(t.name) != &t) __builtin_trap();
      g_sink = g_sink + t.data[0] + t.data[t.nbytes - 1];
    }
  } catch (const greta::Error&) {
    // Rejected input: the expected outcome for most mutations.
  }
  return 0;
}
