// greta_quantize_rows TYPE: float32 values on stdin (a whole number of TYPE's blocks), greta's
// quantize_row of them on stdout (TYPE's blocks as a GGUF file holds them), for
// tests/e2e/test_quantizer_parity.py. TYPE is a dtype name (Q8_0, Q4_0, ...). A bad TYPE or
// input prints "error: <message>" on stderr and exits 1.
#include <cstdint>
#include <cstring>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/quant_blocks.h"

int main(int argc, char** argv) {
  try {
    if (argc != 2) throw greta::Error("usage: greta_quantize_rows TYPE < float32 values");
    greta::DType t = greta::DType::F32;
    bool found = false;
    for (int i = 0; i <= int(greta::DType::I4_G128); ++i)
      if (greta::dtype_name(greta::DType(i)) == argv[1]) t = greta::DType(i), found = true;
    if (!found) throw greta::Error(std::string("unknown type '") + argv[1] + "'");
    const std::string in((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    const int64_t n = int64_t(in.size() / sizeof(float));
    if (in.size() % sizeof(float) != 0 || n % greta::block_elems(t) != 0)
      throw greta::Error("input is " + std::to_string(in.size()) + " bytes: not whole float32 blocks of " +
                         std::to_string(greta::block_elems(t)) + " values");
    std::vector<float> x(static_cast<size_t>(n));
    std::memcpy(x.data(), in.data(), in.size());
    std::vector<char> out(greta::row_bytes(t, n));
    greta::quantize_row(t, x.data(), out.data(), n);
    std::cout.write(out.data(), std::streamsize(out.size()));
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
