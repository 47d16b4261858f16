// Gemma's elementwise CUDA ops (gelu_mul.cu) against the CPU backend: gelu_mul (GeGLU) and scale
// on awkward shapes, in place too. The whole Gemma 3 forward is in test_gpu_model.cpp.
#include <cmath>
#include <string>
#include <vector>

#include "gpu_test_util.h"

namespace greta::gputest {
namespace {

class GpuGeglu : public GpuTest {};

std::string shape(const char* op, int64_t n, int64_t c) {
  return std::string(op) + " [" + std::to_string(n) + ", " + std::to_string(c) + "]";
}

TEST_F(GpuGeglu, GeluMulAndScale) {
  std::mt19937 rng(12);
  for (auto [n, c] : std::vector<std::pair<int64_t, int64_t>>{{1, 64}, {3, 2048}, {37, 13}, {577, 6912}}) {
    const auto av = random_values(size_t(n * c), 6.f, rng), bv = random_values(size_t(n * c), 4.f, rng);
    Tensor ag = make_tensor(*gpu, n, c, av), bg = make_tensor(*gpu, n, c, bv), og = gpu->alloc(n, c);
    Tensor ac = make_tensor(*cpu, n, c, av), bc = make_tensor(*cpu, n, c, bv), oc = cpu->alloc(n, c);
    poison(og);
    gpu->gelu_mul(ag, bg, og);
    cpu->gelu_mul(ac, bc, oc);
    report(shape("gelu_mul", n, c), rel_err(read(*gpu, og), read(*cpu, oc)), kBf16Tol);
    gpu->gelu_mul(ag, bg, ag);  // out aliases gate
    report(shape("gelu_mul in-place", n, c), rel_err(read(*gpu, ag), read(*cpu, oc)), kBf16Tol);
    poison(og);
    gpu->scale(bg, std::sqrt(640.0f), og);
    cpu->scale(bc, std::sqrt(640.0f), oc);
    report(shape("scale", n, c), rel_err(read(*gpu, og), read(*cpu, oc)), kBf16Tol);
    gpu->free(ag), gpu->free(bg), gpu->free(og), cpu->free(ac), cpu->free(bc), cpu->free(oc);
  }
}

}  // namespace
}  // namespace greta::gputest
