// UTF-8 and general-category lookups; see unicode.h for the guarantees.
#include "tokenizer/unicode.h"

#include <algorithm>

namespace greta {

namespace unicode_tables {
extern const size_t kCategoryRunCount;
extern const uint32_t kCategoryRunStart[];
extern const uint8_t kCategoryRunCat[];
extern const size_t kWhiteSpaceCount;
extern const uint32_t kWhiteSpace[][2];
}  // namespace unicode_tables

UCat unicode_category(uint32_t cp) {
  using namespace unicode_tables;
  if (cp > 0x10FFFF) return UCat::Cn;
  const uint32_t* end = kCategoryRunStart + kCategoryRunCount;
  // Last run whose start <= cp (the first run starts at 0, so there always is one).
  const uint32_t* it = std::upper_bound(kCategoryRunStart, end, cp) - 1;
  return static_cast<UCat>(kCategoryRunCat[it - kCategoryRunStart]);
}

bool is_whitespace(uint32_t cp) {
  using namespace unicode_tables;
  if (cp < 0x85) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  for (size_t i = 0; i < kWhiteSpaceCount; ++i)
    if (cp >= kWhiteSpace[i][0] && cp <= kWhiteSpace[i][1]) return true;
  return false;
}

namespace {

// Decodes one character at s[i]. Returns the number of bytes consumed (>= 1); `cp` is the
// code point, or U+FFFD for a maximal invalid subpart. `truncated` is set when the bytes so far
// are a valid prefix that the end of the input cut short.
size_t decode_one(std::string_view s, size_t i, uint32_t& cp, bool& truncated) {
  truncated = false;
  const auto b0 = static_cast<uint8_t>(s[i]);
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  }
  size_t len;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;       // no overlong forms
    else if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    else if (b0 == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    cp = kReplacementChar;
    return 1;
  }
  for (size_t k = 1; k < len; ++k) {
    if (i + k >= s.size()) {
      truncated = true;
      cp = kReplacementChar;
      return k;
    }
    const auto b = static_cast<uint8_t>(s[i + k]);
    const uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (b < l || b > h) {
      cp = kReplacementChar;
      return k;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  return len;
}

}  // namespace

std::vector<uint32_t> utf8_decode(std::string_view s, std::vector<size_t>* offsets) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  if (offsets) offsets->clear();
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    bool truncated;
    const size_t n = decode_one(s, i, cp, truncated);
    if (offsets) offsets->push_back(i);
    out.push_back(cp);
    i += n;
  }
  return out;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string utf8_encode(const uint32_t* cps, size_t n) {
  std::string out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) utf8_append(out, cps[i]);
  return out;
}

std::string utf8_sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    bool truncated;
    const size_t n = decode_one(s, i, cp, truncated);
    if (cp == kReplacementChar && !(n == 3 && static_cast<uint8_t>(s[i]) == 0xEF))
      utf8_append(out, kReplacementChar);  // invalid subpart (a literal U+FFFD is 3 valid bytes)
    else out.append(s.substr(i, n));
    i += n;
  }
  return out;
}

size_t utf8_complete_prefix(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    bool truncated;
    const size_t n = decode_one(s, i, cp, truncated);
    if (truncated) return i;
    i += n;
  }
  return s.size();
}

}  // namespace greta
