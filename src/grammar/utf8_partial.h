// UTF-8 decoding one byte at a time, for tokens that end inside a code point. The state keeps
// the bits read so far; utf8_partial_range gives every code point the sequence can still
// become, so a grammar can refuse a partial code point that no completion would satisfy.
// Overlong forms, values above U+10FFFF and stray continuation bytes are invalid.
#pragma once
#include <cstdint>

namespace greta::grammar {

struct Utf8Partial {
  uint32_t value = 0;     // the bits read so far
  uint8_t remaining = 0;  // continuation bytes still expected; 0: between code points
  uint8_t length = 0;     // length of the sequence being read
  bool operator==(const Utf8Partial&) const = default;
};

enum class Utf8Step { Complete, Partial, Invalid };

inline uint32_t utf8_min_for_length(uint8_t length) {
  return length <= 1 ? 0 : length == 2 ? 0x80 : length == 3 ? 0x800 : 0x10000;
}

// Every code point the partial sequence can still become, as [lo, hi]; lo > hi if none.
inline void utf8_partial_range(const Utf8Partial& p, uint32_t& lo, uint32_t& hi) {
  const uint32_t shift = 6u * p.remaining;
  lo = p.value << shift;
  hi = lo | ((1u << shift) - 1);
  const uint32_t min = utf8_min_for_length(p.length);
  if (lo < min) lo = min;
  if (hi > 0x10FFFF) hi = 0x10FFFF;
}

// Feeds one byte. Complete: cp holds the code point and p is reset. Partial: more bytes are
// needed (p updated). Invalid: p is left unchanged.
inline Utf8Step utf8_feed(Utf8Partial& p, uint8_t b, uint32_t& cp) {
  Utf8Partial next = p;
  if (p.remaining == 0) {
    if (b < 0x80) {
      cp = b;
      return Utf8Step::Complete;
    }
    if ((b & 0xE0) == 0xC0) next = {uint32_t(b & 0x1F), 1, 2};
    else if ((b & 0xF0) == 0xE0) next = {uint32_t(b & 0x0F), 2, 3};
    else if ((b & 0xF8) == 0xF0) next = {uint32_t(b & 0x07), 3, 4};
    else return Utf8Step::Invalid;
  } else {
    if ((b & 0xC0) != 0x80) return Utf8Step::Invalid;
    next.value = (p.value << 6) | (b & 0x3F);
    next.remaining = uint8_t(p.remaining - 1);
  }
  uint32_t lo, hi;
  utf8_partial_range(next, lo, hi);
  if (lo > hi) return Utf8Step::Invalid;
  if (next.remaining == 0) {
    cp = next.value;
    p = {};
    return Utf8Step::Complete;
  }
  p = next;
  return Utf8Step::Partial;
}

}  // namespace greta::grammar
