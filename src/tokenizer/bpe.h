// BPE merge engine shared by byte-level and SentencePiece-style vocabularies.
// Guarantees: a word of n symbols is merged in O(n log n) (linked list + min-heap), so long
// runs (thousands of CJK letters or spaces) stay fast; the order of merges is the reference
// order -- lowest rank first, and among equal ranks the leftmost pair (as HF `tokenizers` and
// llama.cpp do). Nothing is cached, so memory does not grow with the inputs seen.
#pragma once
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace greta {

class BpeMerges {
 public:
  struct Merge {
    uint32_t rank;   // lower merges first
    int32_t merged;  // id of the merged token
  };
  // Keeps the first (best) rank if the same pair is added twice.
  void add(int32_t left, int32_t right, uint32_t rank, int32_t merged);
  const Merge* find(int32_t left, int32_t right) const {
    auto it = map_.find(key(left, right));
    return it == map_.end() ? nullptr : &it->second;
  }
  size_t size() const { return map_.size(); }

  // Merges `ids` (the initial symbols of one word) in place.
  void apply(std::vector<int32_t>& ids) const;

 private:
  static uint64_t key(int32_t l, int32_t r) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
  }
  std::unordered_map<uint64_t, Merge> map_;
};

}  // namespace greta
