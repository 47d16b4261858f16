// Leftmost-longest matching of added tokens; see special.h.
#include "tokenizer/special.h"

#include <algorithm>

namespace greta {

void SpecialMatcher::add(std::string text, int32_t id, bool needs_parse_special) {
  if (text.empty()) return;  // an empty token would match everywhere
  for (const Entry& e : entries_)
    if (e.text == text) return;  // first definition wins
  const auto first = static_cast<uint8_t>(text[0]);
  entries_.push_back({std::move(text), id, needs_parse_special});
  auto& bucket = by_first_byte_[first];
  bucket.push_back(static_cast<uint32_t>(entries_.size() - 1));
  std::stable_sort(bucket.begin(), bucket.end(),
                   [&](uint32_t a, uint32_t b) { return entries_[a].text.size() > entries_[b].text.size(); });
}

std::vector<SpecialMatcher::Fragment> SpecialMatcher::split(std::string_view text, bool parse_special) const {
  return split_impl(text, parse_special, nullptr);
}

std::vector<SpecialMatcher::Fragment> SpecialMatcher::split(std::string_view text,
                                                            const std::vector<TextRange>& plain) const {
  return split_impl(text, true, &plain);
}

std::vector<SpecialMatcher::Fragment> SpecialMatcher::split_impl(std::string_view text, bool parse_special,
                                                                 const std::vector<TextRange>* plain) const {
  std::vector<Fragment> out;
  size_t start = 0;       // beginning of the pending ordinary text
  size_t next_plain = 0;  // first range of *plain that ends after the position being matched
  for (size_t i = 0; i < text.size();) {
    while (plain && next_plain < plain->size() && (*plain)[next_plain].end <= i) ++next_plain;
    const Entry* hit = nullptr;
    for (uint32_t idx : by_first_byte_[static_cast<uint8_t>(text[i])]) {
      const Entry& e = entries_[idx];
      if (e.needs_parse_special && !parse_special) continue;
      if (e.needs_parse_special && plain && next_plain < plain->size() &&
          (*plain)[next_plain].begin < i + e.text.size())
        continue;  // would take (part of) its text from a plain range
      if (text.compare(i, e.text.size(), e.text) == 0) {
        hit = &e;
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    if (i > start) out.push_back({text.substr(start, i - start), -1});
    out.push_back({text.substr(i, hit->text.size()), hit->id});
    i += hit->text.size();
    start = i;
  }
  if (start < text.size()) out.push_back({text.substr(start), -1});
  return out;
}

}  // namespace greta
