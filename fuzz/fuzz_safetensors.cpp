// libFuzzer target for the safetensors reader: any input must either parse into aligned views
// that lie inside the input (or in aligned copies of it), or throw greta::Error (never a JSON
// exception or a crash).
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "formats/aligned_copies.h"
#include "formats/safetensors.h"

namespace {
volatile uint64_t g_sink;  // keeps the reads below from being optimized away
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    greta::SafetensorsFile f = greta::SafetensorsFile::parse(
        greta::MappedFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz.safetensors"));
    for (const auto& [k, v] : f.metadata()) g_sink = g_sink + k.size() + v.size();
    for (const greta::HostTensor& t : f.tensors()) {
      if (f.find_tensor(t.name) != &t) __builtin_trap();
      if (t.nbytes != size_t(t.numel()) * greta::block_bytes(t.dtype)) __builtin_trap();
      if (t.nbytes == 0) continue;
      if (reinterpret_cast<uintptr_t>(t.data) % greta::tensor_data_alignment(t.dtype) != 0) __builtin_trap();
      // from_bytes holds a heap copy, so ASan reports any view that strays outside it.
      g_sink = g_sink + t.data[0] + t.data[t.nbytes - 1];
    }
  } catch (const greta::Error&) {
    // Rejected input: the expected outcome for most mutations.
  }
  return 0;
}
