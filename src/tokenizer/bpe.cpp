// BPE merges by rank; see bpe.h.
#include "tokenizer/bpe.h"

#include <queue>

namespace greta {

void BpeMerges::add(int32_t left, int32_t right, uint32_t rank, int32_t merged) {
  map_.try_emplace(key(left, right), Merge{rank, merged});
}

void BpeMerges::apply(std::vector<int32_t>& ids) const {
  const size_t n = ids.size();
  if (n < 2) return;
  // Doubly linked list over the symbols; a merged-away symbol gets alive = false.
  std::vector<int32_t> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  struct Cand {
    uint32_t rank;
    int32_t pos;          // index of the left symbol
    int32_t left, right;  // ids when queued; a stale candidate no longer matches them
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int32_t pos) {
    if (pos < 0 || next[pos] < 0) return;
    const int32_t l = ids[pos], r = ids[next[pos]];
    if (const Merge* m = find(l, r)) heap.push({m->rank, pos, l, r});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));

  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    const int32_t nx = next[c.pos];
    if (!alive[c.pos] || nx < 0 || ids[c.pos] != c.left || ids[nx] != c.right) continue;
    ids[c.pos] = find(c.left, c.right)->merged;
    alive[nx] = false;
    next[c.pos] = next[nx];
    if (next[nx] >= 0) prev[next[nx]] = c.pos;
    push(prev[c.pos]);
    push(c.pos);
  }
  size_t w = 0;
  for (size_t i = 0; i < n; ++i)
    if (alive[i]) ids[w++] = ids[i];
  ids.resize(w);
}

}  // namespace greta
