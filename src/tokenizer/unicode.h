// Unicode support for the tokenizers: UTF-8 decoding/encoding and general categories.
// Guarantees: decoding never fails -- each maximal invalid subsequence becomes one U+FFFD,
// exactly as Python's bytes.decode("utf-8", errors="replace") does, so invalid input gets the
// same ids as the Hugging Face tokenizer given the Python str. Category lookups are a binary
// search over generated runs (src/tokenizer/unicode_tables.cpp, tools/gen_unicode_tables.py).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace greta {

// Unicode general categories, in the order of tools/gen_unicode_tables.py CATEGORIES.
enum class UCat : uint8_t {
  Cn,
  Lu,
  Ll,
  Lt,
  Lm,
  Lo,
  Mn,
  Mc,
  Me,
  Nd,
  Nl,
  No,
  Pc,
  Pd,
  Ps,
  Pe,
  Pi,
  Pf,
  Po,
  Sm,
  Sc,
  Sk,
  So,
  Zs,
  Zl,
  Zp,
  Cc,
  Cf,
  Cs,
  Co,
};

constexpr uint32_t kReplacementChar = 0xFFFD;

UCat unicode_category(uint32_t cp);
inline bool is_letter(uint32_t cp) {
  UCat c = unicode_category(cp);
  return c >= UCat::Lu && c <= UCat::Lo;
}
inline bool is_number(uint32_t cp) {
  UCat c = unicode_category(cp);
  return c >= UCat::Nd && c <= UCat::No;
}
inline bool is_punct(uint32_t cp) {
  UCat c = unicode_category(cp);
  return c >= UCat::Pc && c <= UCat::Po;
}
// Unicode White_Space property (what \s matches in the reference regex engine).
bool is_whitespace(uint32_t cp);

// Decodes UTF-8; invalid bytes become U+FFFD (maximal-subpart rule). If `offsets` is given it
// receives, for each code point, its byte offset in `s`.
std::vector<uint32_t> utf8_decode(std::string_view s, std::vector<size_t>* offsets = nullptr);
void utf8_append(std::string& out, uint32_t cp);
std::string utf8_encode(const uint32_t* cps, size_t n);
// Replaces invalid UTF-8 by U+FFFD (same rule as utf8_decode); valid input is returned as is.
std::string utf8_sanitize(std::string_view s);
// Length of the longest prefix of `s` made of complete, valid UTF-8 characters, treating a
// trailing incomplete-but-so-far-valid sequence as "not yet complete". Used by StreamDecoder.
size_t utf8_complete_prefix(std::string_view s);

}  // namespace greta
