#include "runtime/kv_cache.h"

#include <cassert>

namespace greta {

namespace {
// splitmix64 finaliser: a bijection on 64 bits with full avalanche, so chaining it per token
// spreads every token bit over the whole hash (FNV-1a over ints mixes far less).
uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}
constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;
}  // namespace

uint64_t block_hash(uint64_t parent, const int32_t* tokens, int n) {
  // Length goes in first so blocks of different sizes can never alias by construction.
  uint64_t h = mix64(parent + kGolden);
  h = mix64(h ^ (uint64_t(uint32_t(n)) + kGolden));
  for (int i = 0; i < n; ++i) h = mix64(h ^ (uint64_t(uint32_t(tokens[i])) + kGolden));
  return h;
}

// ---- BlockPool ------------------------------------------------------------------------

BlockPool::BlockPool(int n_blocks, int block_size)
    : n_blocks_(n_blocks),
      block_size_(block_size),
      ref_(size_t(n_blocks), 0),
      hash_(size_t(n_blocks), 0),
      has_hash_(size_t(n_blocks), 0),
      prev_(size_t(n_blocks), -1),
      next_(size_t(n_blocks), -1) {
  assert(n_blocks >= 0 && block_size > 0);
  // Pushed in reverse so allocation hands out 0, 1, 2, ... (easier to read in dumps).
  empty_.reserve(size_t(n_blocks));
  for (int b = n_blocks - 1; b >= 0; --b) empty_.push_back(b);
  by_hash_.reserve(size_t(n_blocks));
}

void BlockPool::lru_push_back(int32_t b) {
  prev_[size_t(b)] = lru_tail_;
  next_[size_t(b)] = -1;
  if (lru_tail_ >= 0) next_[size_t(lru_tail_)] = b;
  else lru_head_ = b;
  lru_tail_ = b;
  ++n_cached_;
}

void BlockPool::lru_unlink(int32_t b) {
  const int32_t p = prev_[size_t(b)], n = next_[size_t(b)];
  if (p >= 0) next_[size_t(p)] = n;
  else lru_head_ = n;
  if (n >= 0) prev_[size_t(n)] = p;
  else lru_tail_ = p;
  prev_[size_t(b)] = next_[size_t(b)] = -1;
  --n_cached_;
}

void BlockPool::drop_hash(int32_t b) {
  if (!has_hash_[size_t(b)]) return;
  auto it = by_hash_.find(hash_[size_t(b)]);
  assert(it != by_hash_.end() && it->second == b);
  by_hash_.erase(it);
  has_hash_[size_t(b)] = 0;
}

std::optional<int32_t> BlockPool::allocate() {
  int32_t b;
  if (!empty_.empty()) {
    b = empty_.back();
    empty_.pop_back();
  } else if (lru_head_ >= 0) {
    // Evict the least recently freed cached block: its KV is about to be overwritten.
    b = lru_head_;
    lru_unlink(b);
    drop_hash(b);
  } else {
    return std::nullopt;
  }
  assert(ref_[size_t(b)] == 0);
  ref_[size_t(b)] = 1;
  ++n_used_;
  return b;
}

void BlockPool::retain(int32_t b) {
  assert(b >= 0 && b < n_blocks_);
  assert(ref_[size_t(b)] > 0 && "retain of a free block; use lookup_prefix for cached ones");
  ++ref_[size_t(b)];
}

void BlockPool::release(int32_t b) {
  assert(b >= 0 && b < n_blocks_);
  assert(ref_[size_t(b)] > 0 && "double release");
  if (--ref_[size_t(b)] > 0) return;
  --n_used_;
  if (has_hash_[size_t(b)]) lru_push_back(b);
  else empty_.push_back(b);
}

std::optional<int32_t> BlockPool::lookup_prefix(uint64_t hash) {
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return std::nullopt;
  const int32_t b = it->second;
  if (ref_[size_t(b)] == 0) {
    lru_unlink(b);  // back in use: no longer evictable
    ++n_used_;
  }
  ++ref_[size_t(b)];
  return b;
}

void BlockPool::register_full(int32_t b, uint64_t hash) {
  assert(b >= 0 && b < n_blocks_);
  assert(ref_[size_t(b)] > 0 && "only a block in use can be registered");
  if (has_hash_[size_t(b)]) {
    assert(hash_[size_t(b)] == hash && "a block holds one prefix for its whole life");
    return;
  }
  if (!by_hash_.emplace(hash, b).second) return;  // another copy is already canonical
  hash_[size_t(b)] = hash;
  has_hash_[size_t(b)] = 1;
}

// ---- SequenceKV -----------------------------------------------------------------------

bool SequenceKV::reserve(BlockPool& pool, int n_total) {
  const int bs = pool.block_size();
  const int need = (n_total + bs - 1) / bs - int(table_.size());
  if (need <= 0) return true;
  // Checked up front so a failure leaves the table untouched (no partial allocation to undo).
  if (pool.n_free() < need) return false;
  for (int i = 0; i < need; ++i) {
    std::optional<int32_t> b = pool.allocate();
    assert(b.has_value());
    table_.push_back(*b);
  }
  return true;
}

int SequenceKV::attach_prefix(BlockPool& pool, const std::vector<int32_t>& tokens) {
  assert(table_.empty() && hashes_.empty());
  const int bs = pool.block_size();
  const int n = int(tokens.size());
  if (n == 0) return 0;
  // Only blocks lying wholly inside tokens[0, n-1) are eligible: the last prompt token must
  // be computed so the step returns its logits.
  const int max_blocks = (n - 1) / bs;
  uint64_t parent = 0;
  for (int i = 0; i < max_blocks; ++i) {
    const uint64_t h = block_hash(parent, tokens.data() + size_t(i) * size_t(bs), bs);
    std::optional<int32_t> b = pool.lookup_prefix(h);
    if (!b) break;  // chained hashes: nothing after a miss can match
    table_.push_back(*b);
    hashes_.push_back(h);
    parent = h;
  }
  return int(table_.size()) * bs;
}

void SequenceKV::commit(BlockPool& pool, const std::vector<int32_t>& tokens, int n_computed) {
  const int bs = pool.block_size();
  assert(n_computed <= int(tokens.size()));
  const int full = n_computed / bs;
  assert(full <= int(table_.size()));
  uint64_t parent = hashes_.empty() ? 0 : hashes_.back();
  for (int i = int(hashes_.size()); i < full; ++i) {
    const uint64_t h = block_hash(parent, tokens.data() + size_t(i) * size_t(bs), bs);
    pool.register_full(table_[size_t(i)], h);
    hashes_.push_back(h);
    parent = h;
  }
}

void SequenceKV::release_all(BlockPool& pool) {
  // Tail first: the LRU then evicts a chain's last blocks before its first ones, and a
  // chain's head is what every later hit needs (a missing middle block cuts the chain).
  for (auto it = table_.rbegin(); it != table_.rend(); ++it) pool.release(*it);
  table_.clear();
  hashes_.clear();
}

}  // namespace greta
