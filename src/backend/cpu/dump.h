// Debug dump of every CPU op's output, for op-by-op comparison with llama.cpp
// (tools/dump_llamacpp_tensors.py writes the other side, tools/compare_dumps.py lines them up).
//
// Off unless CpuOptions::dump_dir (GRETA_DUMP_DIR) names a directory when the backend is made;
// then each op writes its output as a float32 .npy file DIR/s{step}_{index}_{op}.npy, where step
// counts begin_step() calls (0 = the first forward) and index the op's order within the step.
// When off the backend holds no Dumper and each op pays one null-pointer test.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

namespace greta::cpu {

class Dumper {
 public:
  // A dumper writing into dir, or null when dir is empty.
  static std::unique_ptr<Dumper> open(const std::string& dir);
  void begin_step() { ++step_, index_ = 0; }
  // data: [rows, cols] floats.
  void save(const char* op, const float* data, int64_t rows, int64_t cols);

 private:
  explicit Dumper(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
  int step_ = -1, index_ = 0;
};

}  // namespace greta::cpu
