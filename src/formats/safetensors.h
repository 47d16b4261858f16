// Hugging Face safetensors: one file, or shards listed in model.safetensors.index.json.
// Same validation standard as GGUF: header length, JSON, dtype, shape and offsets are
// all checked against the file; errors name the file, tensor and expectation.
// Supported dtypes: F32, F16, BF16, and F8_E4M3 / I32 for quantized checkpoints (model/hf_quant.h);
// others -> error naming the dtype.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/host_tensor.h"
#include "core/mapped_file.h"
#include "formats/aligned_copies.h"

namespace greta {

class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);
  static SafetensorsFile parse(std::shared_ptr<MappedFile> file);

  const std::vector<HostTensor>& tensors() const { return tensors_; }
  const HostTensor* find_tensor(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::shared_ptr<MappedFile> file_;
  std::vector<HostTensor> tensors_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
  AlignedCopies aligned_;  // tensors whose offsets (after a header of any length) left them misaligned
};

// All tensors of a Hugging Face model directory: model.safetensors, or the shards named
// by model.safetensors.index.json (each shard opened once; every tensor the index names
// must be present in its shard).
class SafetensorsModel {
 public:
  static SafetensorsModel open_dir(const std::string& dir);
  const HostTensor* find_tensor(std::string_view name) const;
  std::vector<const HostTensor*> tensors() const;

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> shards_;
  std::map<std::string, const HostTensor*, std::less<>> index_;
};

}  // namespace greta
