// The decode GEMV over packed weights: the one dispatch on the format (quant_planes.h
// on_packed_format). The kernels are instantiated per format family in gemv_quant_*.cu.
#include "backend/cuda/gemv_quant_formats.h"
#include "backend/cuda/quant_planes.h"

namespace greta::cuda {
namespace {

template <DType T>
struct LaunchFormat {
  static void run(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
    launch_quant_format<T>(a, eps, norm, epi, s);
  }
};

}  // namespace

void launch_quant(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
  on_packed_format<LaunchFormat>(DType(a.wfmt), a, eps, norm, epi, s);
}

}  // namespace greta::cuda
