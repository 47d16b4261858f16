// Paged KV cache bookkeeping (host side): which physical blocks each sequence owns.
// The K/V bytes live in a backend KVStorage; this file only hands out block ids.
//
// Guarantees
// - BlockPool::allocate / retain / release / lookup_prefix / register_full are O(1)
//   (amortised O(1) for the hash map). Nothing here allocates memory after construction
//   except the prefix hash map's nodes.
// - No leaks: every block is in exactly one of three states, and
//   n_free() + n_used() == n_blocks() always holds:
//     used       refcount > 0 (in at least one sequence's block table)
//     cached     refcount == 0 but registered under a prefix hash: still holds valid KV and
//                can be handed back by lookup_prefix(), or evicted by allocate()
//     empty      refcount == 0, no hash
//   n_free() counts cached + empty: every one of them can be allocated right now.
// - allocate() never throws or crashes when the pool is exhausted: it returns nullopt.
//   It takes empty blocks first and evicts cached ones only when no empty block is left,
//   least recently freed first (an intrusive doubly linked list, so eviction and
//   "un-eviction" by a prefix hit are both O(1)).
// - Prefix caching: a full block is identified by block_hash(parent_hash, its tokens), the
//   same chained scheme as vLLM's, so a hit on block i implies blocks 0..i-1 matched too.
//   Hashes are 64-bit and not verified against the tokens; a collision between two
//   different prefixes has probability ~2^-64 per pair and is accepted.
// - Violated invariants (double release, out-of-range id) are bugs and assert.
#pragma once
#include <cstdint>
#include <optional>
#include <unordered_map>
#include <vector>

namespace greta {

// Stable across runs and platforms: a 64-bit mix over (parent, n, tokens) in a fixed order.
// parent is 0 for the first block of a sequence.
uint64_t block_hash(uint64_t parent, const int32_t* tokens, int n);

class BlockPool {
 public:
  BlockPool(int n_blocks, int block_size);

  int block_size() const { return block_size_; }
  int n_blocks() const { return n_blocks_; }
  int n_free() const { return int(empty_.size()) + n_cached_; }
  int n_used() const { return n_used_; }
  int n_cached() const { return n_cached_; }  // free blocks that still hold a cached prefix

  // A block with refcount 1, or nullopt when every block is in use.
  std::optional<int32_t> allocate();
  void retain(int32_t block);
  // Drops one reference. At zero the block becomes cached (if registered) or empty.
  void release(int32_t block);

  // A cached block for this hash, retained for the caller; nullopt on a miss.
  std::optional<int32_t> lookup_prefix(uint64_t hash);
  // Registers a used, full block under hash. If another block already holds this hash the
  // call does nothing (the first copy stays canonical; this one is freed normally later).
  void register_full(int32_t block, uint64_t hash);

  int refcount(int32_t block) const { return ref_[size_t(block)]; }
  bool is_registered(int32_t block) const { return has_hash_[size_t(block)] != 0; }

 private:
  void lru_push_back(int32_t b);  // newest freed at the back
  void lru_unlink(int32_t b);
  void drop_hash(int32_t b);

  int n_blocks_;
  int block_size_;
  int n_used_ = 0;
  int n_cached_ = 0;
  std::vector<int32_t> ref_;       // [n_blocks]
  std::vector<uint64_t> hash_;     // [n_blocks] valid where has_hash_
  std::vector<uint8_t> has_hash_;  // [n_blocks]
  std::vector<int32_t> empty_;     // stack of empty block ids
  // LRU list of cached blocks: lru_head_ = least recently freed (evicted first).
  std::vector<int32_t> prev_, next_;  // [n_blocks], -1 = none
  int32_t lru_head_ = -1, lru_tail_ = -1;
  std::unordered_map<uint64_t, int32_t> by_hash_;
};

// One sequence's block table over a BlockPool. It does not remember the pool: every call
// takes it, and release_all() must be called before the sequence is dropped.
class SequenceKV {
 public:
  // Ensures blocks for positions [0, n_total). Returns false, allocating nothing, when the
  // pool cannot supply all of them (the caller preempts someone and retries).
  bool reserve(BlockPool& pool, int n_total);

  // For a fresh sequence (empty table): attaches cached full blocks matching the prompt's
  // prefix and returns the number of tokens they cover. Always < tokens.size() (unless the
  // prompt is empty), so at least one token is computed and produces logits.
  int attach_prefix(BlockPool& pool, const std::vector<int32_t>& tokens);

  // Tokens [0, n_computed) of `tokens` (prompt + generated so far) are now in the cache:
  // registers the blocks that became full for prefix caching.
  void commit(BlockPool& pool, const std::vector<int32_t>& tokens, int n_computed);

  // Releases every block (finish, cancellation, preemption) and empties the table.
  void release_all(BlockPool& pool);

  const std::vector<int32_t>& table() const { return table_; }
  int n_committed_blocks() const { return int(hashes_.size()); }

 private:
  std::vector<int32_t> table_;    // physical block of logical block i
  std::vector<uint64_t> hashes_;  // chained hashes of the leading full, committed blocks
};

}  // namespace greta
