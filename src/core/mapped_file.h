// Read-only view of a whole file (mmap), or of bytes held in memory (tests, fuzzing).
// Weights are used straight from the mapping; nothing is copied at load time.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace greta {

class MappedFile {
 public:
  // Maps `path` read-only. Throws greta::Error naming the path and the OS error.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  // Wraps a copy of `bytes` (for tests and the fuzzer).
  static std::shared_ptr<MappedFile> from_bytes(std::vector<uint8_t> bytes, std::string name = "<memory>");

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
  std::vector<uint8_t> owned_;
  std::string path_;
};

}  // namespace greta
