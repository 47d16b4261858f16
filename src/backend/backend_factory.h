// Making a backend from its options.
#pragma once
#include <memory>

#include "backend/backend.h"
#include "backend/backend_options.h"

namespace greta {

// The backend o.device names ("cpu", "cuda", "cuda:N"). Throws greta::Error for an unknown
// device, a build without CUDA, or a CUDA device that is missing or cannot be initialised.
std::unique_ptr<Backend> make_backend(const BackendOptions& o);
// True when this build has the CUDA backend and the runtime reports at least one device.
bool cuda_available();

}  // namespace greta
