// UTF-8 helpers: Python strings index, measure and strip by code point, so the renderer does too.
// Invalid bytes decode as themselves (U+0080..U+00FF range is never produced from a lone byte;
// a lone byte b is returned as 0xDC00 + b, like Python's surrogateescape) so nothing is lost.
#pragma once
#include <cstdint>
#include <string>

namespace greta::jinja {

inline uint32_t utf8_decode(const std::string& s, size_t i, size_t* len) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (n == 0 || i + n > s.size()) {
    *len = 1;
    return c < 0x80 ? c : 0xDC00 + c;
  }
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1f) : n == 3 ? (c & 0x0f) : (c & 0x07);
  for (int k = 1; k < n; ++k) {
    unsigned char d = static_cast<unsigned char>(s[i + k]);
    if ((d & 0xc0) != 0x80) {
      *len = 1;
      return 0xDC00 + c;
    }
    cp = (cp << 6) | (d & 0x3f);
  }
  *len = n;
  return cp;
}

inline uint32_t utf8_decode_at(const std::string& s, size_t i) {
  size_t n;
  return utf8_decode(s, i, &n);
}

// Start of the code point that ends at byte `end` (end > 0).
inline size_t utf8_prev(const std::string& s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xc0) == 0x80 && end - i < 4) --i;
  size_t n;
  utf8_decode(s, i, &n);
  return (i + n == end) ? i : end - 1;
}

inline void utf8_append(std::string& out, uint32_t cp) {
  if (cp >= 0xDC80 && cp <= 0xDCFF) {  // an undecodable byte carried through
    out += static_cast<char>(cp - 0xDC00);
  } else if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

}  // namespace greta::jinja
