// StreamDecoder: incremental decode that only ever emits whole UTF-8 characters.
// A token may end in the middle of a character (byte-level pieces, <0xNN> byte tokens, an
// emoji split over several tokens); those bytes wait in pending_ until the character is
// complete. Bytes that can never become valid are emitted as U+FFFD as soon as that is
// certain; an incomplete tail is emitted as U+FFFD only by flush().
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace greta {

std::string StreamDecoder::feed(int32_t id) {
  if (skip_special_ && tok_.is_special(id)) return {};
  std::string bytes = tok_.token_bytes(id);
  if (bytes.empty()) return {};
  if (first_) {
    // Same rule as decode(): the first text of the stream loses the space that the
    // SentencePiece prefix U+2581 decodes to.
    if (tok_.decode_strips_leading_space() && bytes[0] == ' ') bytes.erase(0, 1);
    first_ = false;
  }
  pending_ += bytes;
  const size_t n = utf8_complete_prefix(pending_);
  std::string out = utf8_sanitize(std::string_view(pending_).substr(0, n));
  pending_.erase(0, n);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = utf8_sanitize(pending_);
  pending_.clear();
  return out;
}

}  // namespace greta
