// Compiled grammars by their source text: a small LRU shared by the request threads, so a
// client that sends the same schema with every request compiles it once.
//
// Guarantees
// - Thread-safe. Compilation runs outside the lock: a slow grammar never holds up requests for
//   other grammars; two threads that miss the same key at once both compile it, and both get a
//   correct grammar (the second store replaces the first).
// - A compile that throws stores nothing, so a bad source is refused again on every request.
// - At most `capacity` entries; the least recently used goes first.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "grammar/grammar.h"

namespace greta::server {

class GrammarCache {
 public:
  using GrammarPtr = std::shared_ptr<const grammar::Grammar>;
  explicit GrammarCache(size_t capacity = 64);

  // The grammar stored under `key`, or compile()'s, which is then stored.
  GrammarPtr get(const std::string& key, const std::function<GrammarPtr()>& compile);

  size_t size() const;
  int64_t hits() const;
  int64_t misses() const;

 private:
  using Entry = std::pair<std::string, GrammarPtr>;
  size_t capacity_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  int64_t hits_ = 0, misses_ = 0;
};

}  // namespace greta::server
