// Bounds-checked little-endian cursor over a file's bytes, for the format parsers.
// Guarantees: no read ever goes past `size`; every failed check throws greta::Error
// "<file>: at byte <offset>: <what> (expected <what>)". The cursor never allocates
// more than the bytes it was asked to read and that actually remain.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

#include "core/error.h"

namespace greta {

class ByteReader {
 public:
  ByteReader(const uint8_t* data, size_t size, std::string name) : data_(data), size_(size), name_(std::move(name)) {}

  size_t pos() const { return pos_; }
  size_t size() const { return size_; }
  size_t remaining() const { return size_ - pos_; }
  const std::string& name() const { return name_; }

  // Throws "<file>: at byte <at>: <msg>".
  [[noreturn]] void fail_at(size_t at, const std::string& msg) const {
    throw Error(name_ + ": at byte " + std::to_string(at) + ": " + msg);
  }

  // Ensures n more bytes exist; `what` says what was being read.
  void need(size_t n, std::string_view what) const {
    if (n > remaining())
      fail_at(pos_, "truncated: expected " + std::to_string(n) + " bytes of " + std::string(what) + ", but only " +
                        std::to_string(remaining()) + " remain in a file of " + std::to_string(size_) + " bytes");
  }

  template <class T>
  T read(std::string_view what) {
    static_assert(std::is_trivially_copyable_v<T>);
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));  // files are little-endian, as is every host we target
    pos_ += sizeof(T);
    return v;
  }
  uint8_t u8(std::string_view what) { return read<uint8_t>(what); }
  uint32_t u32(std::string_view what) { return read<uint32_t>(what); }
  uint64_t u64(std::string_view what) { return read<uint64_t>(what); }

  // A view of the next n bytes (checked), advancing past them.
  std::string_view bytes(uint64_t n, std::string_view what) {
    if (n > remaining())
      fail_at(pos_, std::string(what) + " of " + std::to_string(n) + " bytes runs past the end of the file (" +
                        std::to_string(remaining()) + " bytes remain)");
    std::string_view s(reinterpret_cast<const char*>(data_ + pos_), size_t(n));
    pos_ += size_t(n);
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  std::string name_;
};

}  // namespace greta
