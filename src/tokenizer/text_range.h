// A byte range [begin, end) of a text.
#pragma once
#include <cstddef>

namespace greta {

struct TextRange {
  size_t begin, end;
  bool operator==(const TextRange&) const = default;
};

}  // namespace greta
