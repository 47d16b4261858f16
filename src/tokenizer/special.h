// Splits text at added/special tokens before the BPE model sees it.
// Matching is leftmost, then longest (as HF `tokenizers` AddedVocabulary and llama.cpp do).
// Tokens marked `needs_parse_special` (control / special added tokens) are only recognised
// when the caller asks for it; user-defined tokens (non-special added tokens) always are.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/text_range.h"

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
  // As split(text, true), except that a special token overlapping a range of `plain` (sorted,
  // disjoint) is not recognised: that text stays ordinary text.
  std::vector<Fragment> split(std::string_view text, const std::vector<TextRange>& plain) const;

 private:
  std::vector<Fragment> split_impl(std::string_view text, bool parse_special,
                                   const std::vector<TextRange>* plain) const;

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
