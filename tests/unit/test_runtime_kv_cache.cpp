#include "runtime/kv_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

using greta::block_hash;
using greta::BlockPool;
using greta::SequenceKV;

namespace {
std::vector<int32_t> iota_tokens(int n, int32_t start) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) t[size_t(i)] = start + i;
  return t;
}
}  // namespace

TEST(KVBlockPool, AllocateUntilExhaustedThenReuse) {
  BlockPool pool(4, 16);
  EXPECT_EQ(pool.n_free(), 4);
  std::set<int32_t> got;
  for (int i = 0; i < 4; ++i) {
    auto b = pool.allocate();
    ASSERT_TRUE(b.has_value());
    EXPECT_GE(*b, 0);
    EXPECT_LT(*b, 4);
    got.insert(*b);
    EXPECT_EQ(pool.n_free() + pool.n_used(), 4);
  }
  EXPECT_EQ(got.size(), 4u);  // distinct
  EXPECT_EQ(pool.n_free(), 0);
  EXPECT_FALSE(pool.allocate().has_value());
  EXPECT_FALSE(pool.allocate().has_value());  // stays a value, not a crash
  pool.release(2);
  EXPECT_EQ(pool.n_free(), 1);
  auto b = pool.allocate();
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(*b, 2);
  EXPECT_FALSE(pool.allocate().has_value());
}

TEST(KVBlockPool, RefcountsKeepSharedBlocksAlive) {
  BlockPool pool(2, 4);
  int32_t b = *pool.allocate();
  pool.retain(b);
  pool.retain(b);
  EXPECT_EQ(pool.refcount(b), 3);
  pool.release(b);
  pool.release(b);
  EXPECT_EQ(pool.n_used(), 1);  // one holder left
  EXPECT_EQ(pool.n_free(), 1);
  pool.release(b);
  EXPECT_EQ(pool.n_used(), 0);
  EXPECT_EQ(pool.n_free(), 2);
}

TEST(KVBlockHash, StableChainedAndSensitive) {
  const std::vector<int32_t> a = {1, 2, 3, 4}, b = {1, 2, 3, 5};
  const uint64_t ha = block_hash(0, a.data(), 4);
  EXPECT_EQ(ha, block_hash(0, a.data(), 4));
  EXPECT_NE(ha, block_hash(0, b.data(), 4));
  EXPECT_NE(ha, block_hash(7, a.data(), 4));  // same tokens, different parent
  EXPECT_NE(ha, block_hash(0, a.data(), 3));
  // Order matters.
  const std::vector<int32_t> r = {4, 3, 2, 1};
  EXPECT_NE(ha, block_hash(0, r.data(), 4));
}

TEST(KVSequence, ReserveAllOrNothing) {
  BlockPool pool(3, 4);
  SequenceKV a, b;
  EXPECT_TRUE(a.reserve(pool, 5));  // 2 blocks
  EXPECT_EQ(a.table().size(), 2u);
  EXPECT_TRUE(a.reserve(pool, 8));  // still 2
  EXPECT_EQ(a.table().size(), 2u);
  EXPECT_FALSE(b.reserve(pool, 9));  // needs 3, only 1 free: nothing allocated
  EXPECT_TRUE(b.table().empty());
  EXPECT_EQ(pool.n_free(), 1);
  EXPECT_TRUE(b.reserve(pool, 1));
  EXPECT_EQ(pool.n_free(), 0);
  a.release_all(pool);
  b.release_all(pool);
  EXPECT_EQ(pool.n_free(), 3);
  EXPECT_TRUE(a.table().empty());
}

TEST(KVSequence, PrefixReuseSharesBlocksUntilDivergence) {
  const int bs = 4;
  BlockPool pool(16, bs);
  std::vector<int32_t> prompt = iota_tokens(13, 100);  // 3 full blocks + 1 token
  SequenceKV a;
  EXPECT_EQ(a.attach_prefix(pool, prompt), 0);  // cold cache
  ASSERT_TRUE(a.reserve(pool, 13));
  a.commit(pool, prompt, 13);
  EXPECT_EQ(a.n_committed_blocks(), 3);

  // Same prompt: the three full blocks are the very same physical blocks.
  SequenceKV b;
  EXPECT_EQ(b.attach_prefix(pool, prompt), 12);
  ASSERT_EQ(b.table().size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(b.table()[size_t(i)], a.table()[size_t(i)]);
    EXPECT_EQ(pool.refcount(a.table()[size_t(i)]), 2);
  }
  ASSERT_TRUE(b.reserve(pool, 13));
  EXPECT_NE(b.table()[3], a.table()[3]);  // the partial block is private

  // Diverging inside block 1: only block 0 is shared.
  std::vector<int32_t> other = prompt;
  other[6] = 999;
  SequenceKV c;
  EXPECT_EQ(c.attach_prefix(pool, other), 4);
  ASSERT_EQ(c.table().size(), 1u);
  EXPECT_EQ(c.table()[0], a.table()[0]);
  ASSERT_TRUE(c.reserve(pool, 13));
  EXPECT_NE(c.table()[1], a.table()[1]);
  EXPECT_NE(c.table()[2], a.table()[2]);

  // A prompt that is exactly the cached blocks still computes its last token.
  std::vector<int32_t> exact(prompt.begin(), prompt.begin() + 12);
  SequenceKV d;
  EXPECT_EQ(d.attach_prefix(pool, exact), 8);

  for (SequenceKV* s : {&a, &b, &c, &d}) s->release_all(pool);
  EXPECT_EQ(pool.n_used(), 0);
  EXPECT_EQ(pool.n_free(), 16);
  EXPECT_EQ(pool.n_cached(), 3);  // a's three registered blocks survive as cache

  // After everyone left, the cache still serves the prefix.
  SequenceKV e;
  EXPECT_EQ(e.attach_prefix(pool, prompt), 12);
  EXPECT_EQ(pool.n_cached(), 0);
  e.release_all(pool);
}

TEST(KVSequence, CommitRegistersGeneratedTokensToo) {
  const int bs = 4;
  BlockPool pool(8, bs);
  std::vector<int32_t> toks = iota_tokens(3, 1);
  SequenceKV a;
  ASSERT_TRUE(a.reserve(pool, 3));
  a.commit(pool, toks, 3);
  EXPECT_EQ(a.n_committed_blocks(), 0);  // no full block yet
  for (int32_t t = 50; t < 56; ++t) {    // decode six tokens one at a time
    toks.push_back(t);
    ASSERT_TRUE(a.reserve(pool, int(toks.size())));
    a.commit(pool, toks, int(toks.size()));
  }
  EXPECT_EQ(a.n_committed_blocks(), 2);  // 9 tokens: 2 full blocks
  SequenceKV b;
  toks.push_back(77);
  EXPECT_EQ(b.attach_prefix(pool, toks), 8);
  EXPECT_EQ(b.table()[1], a.table()[1]);
  a.release_all(pool);
  b.release_all(pool);
}

TEST(KVBlockPool, EvictsCachedOnlyWhenEmptyRunOutLeastRecentlyFreedFirst) {
  const int bs = 2;
  BlockPool pool(4, bs);
  // Two sequences each fill and register one block, then finish: x first, y second.
  std::vector<int32_t> px = {1, 2, 3}, py = {7, 8, 9};
  SequenceKV x, y;
  ASSERT_TRUE(x.reserve(pool, 2));
  x.commit(pool, px, 2);
  ASSERT_TRUE(y.reserve(pool, 2));
  y.commit(pool, py, 2);
  const int32_t bx = x.table()[0], by = y.table()[0];
  x.release_all(pool);
  y.release_all(pool);
  EXPECT_EQ(pool.n_cached(), 2);
  EXPECT_EQ(pool.n_free(), 4);

  // Two empty blocks remain: allocating them must not touch the cache.
  auto e1 = pool.allocate(), e2 = pool.allocate();
  ASSERT_TRUE(e1 && e2);
  EXPECT_NE(*e1, bx);
  EXPECT_NE(*e1, by);
  EXPECT_NE(*e2, bx);
  EXPECT_NE(*e2, by);
  EXPECT_EQ(pool.n_cached(), 2);

  // Now empty blocks are gone: the next allocation evicts x's block (freed first).
  auto e3 = pool.allocate();
  ASSERT_TRUE(e3);
  EXPECT_EQ(*e3, bx);
  EXPECT_EQ(pool.n_cached(), 1);
  SequenceKV probe;
  EXPECT_EQ(probe.attach_prefix(pool, px), 0);  // x's prefix is gone
  EXPECT_EQ(probe.attach_prefix(pool, py), 2);  // y's is still served
  EXPECT_EQ(probe.table()[0], by);
  probe.release_all(pool);

  // A prefix hit moves y's block to the back of the LRU again only when freed again; with
  // e3 released uncached and x gone, the next evictions take the uncached one first.
  pool.release(*e3);
  auto e4 = pool.allocate();
  EXPECT_EQ(*e4, *e3);  // empty block preferred over cached y
  EXPECT_EQ(pool.n_cached(), 1);
  auto e5 = pool.allocate();  // only y's cached block is left
  ASSERT_TRUE(e5);
  EXPECT_EQ(*e5, by);
  EXPECT_FALSE(pool.allocate().has_value());
  for (auto b : {e1, e2, e4, e5}) pool.release(*b);
  EXPECT_EQ(pool.n_free(), 4);
}

TEST(KVBlockPool, LruOrderFollowsFreeTimeNotAllocationTime) {
  BlockPool pool(3, 1);
  SequenceKV s[3];
  const std::vector<int32_t> t[3] = {{10, 0}, {20, 0}, {30, 0}};
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(s[i].reserve(pool, 1));
    s[i].commit(pool, t[i], 1);
  }
  const int32_t b0 = s[0].table()[0], b1 = s[1].table()[0], b2 = s[2].table()[0];
  // Free in order 2, 0, 1: eviction must follow that order.
  s[2].release_all(pool);
  s[0].release_all(pool);
  s[1].release_all(pool);
  EXPECT_EQ(*pool.allocate(), b2);
  EXPECT_EQ(*pool.allocate(), b0);
  EXPECT_EQ(*pool.allocate(), b1);
}

TEST(KVBlockPool, DuplicateRegistrationKeepsFirstCanonical) {
  BlockPool pool(4, 2);
  const std::vector<int32_t> p = {5, 6, 7};
  SequenceKV a, b;  // both compute the same prompt concurrently (no cache hit for b)
  ASSERT_TRUE(a.reserve(pool, 3));
  ASSERT_TRUE(b.reserve(pool, 3));
  a.commit(pool, p, 3);
  b.commit(pool, p, 3);
  EXPECT_TRUE(pool.is_registered(a.table()[0]));
  EXPECT_FALSE(pool.is_registered(b.table()[0]));
  const int32_t canon = a.table()[0];
  a.release_all(pool);
  b.release_all(pool);
  EXPECT_EQ(pool.n_cached(), 1);  // b's duplicate went back empty
  SequenceKV c;
  EXPECT_EQ(c.attach_prefix(pool, p), 2);
  EXPECT_EQ(c.table()[0], canon);
  c.release_all(pool);
}

// Many sequences doing prefill with prefix reuse, decode, preemption and finishing, against
// a shadow of the KV contents: a block must never be overwritten while another live sequence
// reads it, and prefix hits must return blocks that really hold those tokens.
TEST(KVSequence, RandomizedInvariants) {
  const int bs = 4, n_blocks = 40;
  BlockPool pool(n_blocks, bs);
  std::mt19937_64 rng(12345);
  auto rnd = [&](int n) { return int(rng() % uint64_t(n)); };

  // Shadow storage: what token each slot of each block holds (-1 = never written).
  std::vector<int32_t> shadow(size_t(n_blocks * bs), -1);
  // A few shared system prompts make prefix hits common.
  std::vector<std::vector<int32_t>> prefixes;
  for (int i = 0; i < 3; ++i) prefixes.push_back(iota_tokens(4 + 5 * i, 1000 * (i + 1)));

  struct Live {
    SequenceKV kv;
    std::vector<int32_t> tokens;  // prompt + generated
    int n_computed = 0;
  };
  std::map<int, Live> live;
  int next_id = 0, hits = 0, evict_pressure = 0, evictions = 0;
  // reserve() does no prefix lookups, so the cache shrinking during it means evictions.
  auto reserve = [&](Live& s, int n) {
    const int cached = pool.n_cached();
    const bool ok = s.kv.reserve(pool, n);
    evictions += pool.n_cached() < cached;
    return ok;
  };

  auto write = [&](Live& s, int from, int to) {
    for (int pos = from; pos < to; ++pos) {
      const int32_t blk = s.kv.table()[size_t(pos / bs)];
      // Writing into a block someone else also holds would corrupt their cache.
      ASSERT_EQ(pool.refcount(blk), 1) << "write into shared block " << blk;
      shadow[size_t(blk * bs + pos % bs)] = s.tokens[size_t(pos)];
    }
  };
  auto check = [&]() {
    ASSERT_EQ(pool.n_free() + pool.n_used(), n_blocks);
    std::map<int32_t, int> holders;
    for (auto& [id, s] : live)
      for (int32_t b : s.kv.table()) ++holders[b];
    ASSERT_EQ(int(holders.size()), pool.n_used());
    for (auto& [b, n] : holders) ASSERT_EQ(pool.refcount(b), n) << "block " << b;
    // Every computed position of every live sequence still holds its token.
    for (auto& [id, s] : live)
      for (int pos = 0; pos < s.n_computed; ++pos)
        ASSERT_EQ(shadow[size_t(s.kv.table()[size_t(pos / bs)] * bs + pos % bs)], s.tokens[size_t(pos)])
            << "seq " << id << " pos " << pos;
  };

  for (int step = 0; step < 5000; ++step) {
    const int op = rnd(10);
    if (op < 3 || live.empty()) {  // admit a request
      Live s;
      s.tokens = prefixes[size_t(rnd(3))];
      const int extra = rnd(12);
      for (int i = 0; i < extra; ++i) s.tokens.push_back(rnd(6));  // tiny alphabet: collisions
      if (s.tokens.empty()) s.tokens.push_back(1);
      const int covered = s.kv.attach_prefix(pool, s.tokens);
      ASSERT_LT(covered, int(s.tokens.size()));
      ASSERT_EQ(covered % bs, 0);
      hits += covered > 0;
      for (int pos = 0; pos < covered; ++pos)  // a hit must really hold these tokens
        ASSERT_EQ(shadow[size_t(s.kv.table()[size_t(pos / bs)] * bs + pos % bs)], s.tokens[size_t(pos)]);
      if (!reserve(s, int(s.tokens.size()))) {
        ++evict_pressure;
        s.kv.release_all(pool);  // not admitted
      } else {
        write(s, covered, int(s.tokens.size()));
        s.n_computed = int(s.tokens.size());
        s.kv.commit(pool, s.tokens, s.n_computed);
        live.emplace(next_id++, std::move(s));
      }
    } else if (op < 8) {  // decode one token on a random live sequence
      auto it = std::next(live.begin(), rnd(int(live.size())));
      Live& s = it->second;
      s.tokens.push_back(rnd(6));
      if (!reserve(s, int(s.tokens.size()))) {
        // Out of blocks: preempt this sequence (it would be recomputed later).
        ++evict_pressure;
        it->second.kv.release_all(pool);
        live.erase(it);
      } else {
        write(s, s.n_computed, int(s.tokens.size()));
        s.n_computed = int(s.tokens.size());
        s.kv.commit(pool, s.tokens, s.n_computed);
      }
    } else {  // finish
      auto it = std::next(live.begin(), rnd(int(live.size())));
      it->second.kv.release_all(pool);
      live.erase(it);
    }
    check();
    if (HasFatalFailure()) return;
  }
  for (auto& [id, s] : live) s.kv.release_all(pool);
  live.clear();
  EXPECT_EQ(pool.n_used(), 0);
  EXPECT_EQ(pool.n_free(), n_blocks);
  // The run must have exercised what it claims to test.
  EXPECT_GT(hits, 100);
  EXPECT_GT(evict_pressure, 10);
  EXPECT_GT(evictions, 10);
}
