// Opening a small GGUF written by test::GGUFBuilder as a model, for the model-family load tests.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats_test_util.h"
#include "model/model_file.h"

namespace greta::test {

inline std::unique_ptr<ModelFile> open_gguf(const GGUFBuilder& g, TempDir& dir) {
  dir.write("m.gguf", g.build());
  return ModelFile::open((dir.path() / "m.gguf").string());
}

// The message of the greta::Error opening it throws, or "<no error>".
inline std::string open_gguf_error(const GGUFBuilder& g) {
  TempDir dir;
  try {
    open_gguf(g, dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

// Each layer's sliding window (0: global).
inline std::vector<int> layer_windows(const ModelConfig& c) {
  std::vector<int> w;
  for (int l = 0; l < c.n_layers; ++l) w.push_back(c.layer_window(l));
  return w;
}

}  // namespace greta::test

#define EXPECT_ERROR_HAS(expr, needle) EXPECT_NE(std::string(expr).find(needle), std::string::npos) << (expr)
