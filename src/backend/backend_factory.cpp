#include "backend/backend_factory.h"

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#ifdef GRETA_HAS_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace greta {

bool cuda_available() {
#ifdef GRETA_HAS_CUDA
  return cuda_device_present();
#else
  return false;
#endif
}

std::unique_ptr<Backend> make_backend(const BackendOptions& o) {
  const std::string& device = o.device;
  if (device == "cpu") return make_cpu_backend(o.cpu);
  if (device == "cuda" || device.rfind("cuda:", 0) == 0) {
#ifdef GRETA_HAS_CUDA
    if (!cuda_device_present()) throw Error("--device cuda: no CUDA device is available on this machine");
    CudaOptions c = o.cuda;
    if (device.size() > 5) {
      const std::string n = device.substr(5);
      if (n.empty() || n.size() > 3 || n.find_first_not_of("0123456789") != std::string::npos)
        throw Error("--device " + device + ": expected cuda:N with N a device index");
      c.device = std::stoi(n);
    }
    return make_cuda_backend(c);
#else
    throw Error("--device cuda: this build has no CUDA backend (rebuild with nvcc present or -DGRETA_CUDA=ON)");
#endif
  }
  throw Error("unknown device '" + device + "' (expected cpu, cuda or cuda:N)");
}

}  // namespace greta
