#include "server/grammar_cache.h"

#include <algorithm>

namespace greta::server {

GrammarCache::GrammarCache(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}

GrammarCache::GrammarPtr GrammarCache::get(const std::string& key, const std::function<GrammarPtr()>& compile) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (auto it = index_.find(key); it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second);
      ++hits_;
      return it->second->second;
    }
    ++misses_;
  }
  GrammarPtr g = compile();
  std::lock_guard<std::mutex> lk(mu_);
  if (auto it = index_.find(key); it != index_.end()) {  // compiled meanwhile by another thread
    it->second->second = g;
    lru_.splice(lru_.begin(), lru_, it->second);
    return g;
  }
  lru_.emplace_front(key, g);
  index_[key] = lru_.begin();
  if (lru_.size() > capacity_) {
    index_.erase(lru_.back().first);
    lru_.pop_back();
  }
  return g;
}

size_t GrammarCache::size() const {
  std::lock_guard<std::mutex> lk(mu_);
  return lru_.size();
}

int64_t GrammarCache::hits() const {
  std::lock_guard<std::mutex> lk(mu_);
  return hits_;
}

int64_t GrammarCache::misses() const {
  std::lock_guard<std::mutex> lk(mu_);
  return misses_;
}

}  // namespace greta::server
