// Stop strings over streamed text. Text arrives in pieces (each complete UTF-8); a stop string
// may span pieces. The matcher releases text as soon as it can no longer be part of a stop
// string and holds back the rest, so the client never sees a stop string or any part of one.
//
// Guarantees
// - The text released before a match plus the text before the match equals the stream's text
//   up to the earliest occurrence of any stop string, exactly; nothing after it is released.
// - Released text splits only at UTF-8 character boundaries (stop strings start with a lead
//   byte, so the held-back suffix starts on one).
// - Work per feed is O(held + piece) per stop string; the held text is shorter than the
//   longest stop string.
#pragma once
#include <string>
#include <vector>

namespace greta {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops = {});

  struct Result {
    std::string text;      // safe to release now
    bool matched = false;  // a stop string completed: the stream ends, text is the final piece
  };
  Result feed(const std::string& piece);
  // The stream ended without a match: everything held back is ordinary text.
  std::string flush();

 private:
  std::vector<std::string> stops_;
  std::string held_;
};

}  // namespace greta
