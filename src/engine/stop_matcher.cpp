#include "engine/stop_matcher.h"

#include <algorithm>

namespace greta {

StopMatcher::StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  // Empty stop strings would match everywhere; the engine rejects them, drop them here too.
  stops_.erase(std::remove_if(stops_.begin(), stops_.end(), [](const std::string& s) { return s.empty(); }),
               stops_.end());
}

StopMatcher::Result StopMatcher::feed(const std::string& piece) {
  Result r;
  held_ += piece;
  if (stops_.empty()) {
    r.text.swap(held_);
    return r;
  }
  // Earliest full match over all stop strings: the stream ends there.
  size_t first = std::string::npos;
  for (const std::string& s : stops_) first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    r.text = held_.substr(0, first);
    r.matched = true;
    held_.clear();
    return r;
  }
  // No match: keep the longest suffix that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const std::string& s : stops_) {
    const size_t most = std::min(s.size() - 1, held_.size());
    for (size_t k = most; k > keep; --k)
      if (held_.compare(held_.size() - k, k, s, 0, k) == 0) {
        keep = k;
        break;
      }
  }
  r.text = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return r;
}

std::string StopMatcher::flush() {
  std::string out;
  out.swap(held_);
  return out;
}

}  // namespace greta
