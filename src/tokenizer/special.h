// Splits text at added/special tokens before the BPE model sees it.
// Matching is leftmost, then longest (as HF `tokenizers` AddedVocabulary and llama.cpp do).
// Tokens marked `needs_parse_special` (control / special added tokens) are only recognised
// when the caller asks for it; user-defined tokens (non-special added tokens) always are.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace greta {

class SpecialMatcher {
 public:
  struct Fragment {
    std::string_view text;  // raw text when token < 0
    int32_t token = -1;     // matched token id, or -1 for ordinary text
  };
  void add(std::string text, int32_t id, bool needs_parse_special);
  bool empty() const { return entries_.empty(); }
  std::vector<Fragment> split(std::string_view text, bool parse_special) const;

 private:
  struct Entry {
    std::string text;
    int32_t id;
    bool needs_parse_special;
  };
  std::vector<Entry> entries_;
  // Entries by first byte, longest first, so a match at a position is one short scan.
  std::vector<std::vector<uint32_t>> by_first_byte_ = std::vector<std::vector<uint32_t>>(256);
};

}  // namespace greta
