// The allowed-token bitmask of a matcher state over a tokenizer's vocabulary.
//
// Token t is allowed iff feeding its bytes one by one to a copy of the matcher succeeds
// (Matcher::accept_byte; a token may end inside a UTF-8 sequence). EOS tokens are allowed iff
// the grammar can end here. Tokens with no bytes (control tokens, passed as empty strings) are
// never allowed: they would let the output grow without the grammar advancing.
//
// Per vocabulary (TokenVocabulary, built once): a byte trie of the tokens laid out in preorder,
// so tokens sharing a prefix walk it once and a rejected prefix skips its whole subtree.
// Per mask (TokenMasker, reusable): the matcher's stacks are interned as linked nodes
// (position, parent) so equal stacks are one id; the stacks that follow a node once its
// character class has matched do not depend on which code point matched, so they are computed
// once per node and cached. A trie step is then a range check per stack plus a cached lookup.
// Loops skip whole subtrees: when the stacks at a trie node are a fixed point of one negated
// ASCII class (a JSON string's `[^"\\\x00-\x1F]*`: any character but a few ASCII ones leads
// back to the same stacks), every token below that holds none of those ASCII bytes and is
// valid UTF-8 is allowed without walking it; the trie keeps per node the ASCII bytes below it.
// When the matcher's own state is such a loop, the tokens that never leave it come as one
// bitmask, made once per vocabulary and set of leaving bytes, and only the rest is walked.
//
// A TokenVocabulary is immutable (but for a locked cache) and shared by all requests; a TokenMasker belongs to one
// request (one thread at a time) and keeps its cache across that request's steps.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "grammar/grammar.h"

namespace greta::grammar {

// Bit t of word t/32 set: token t allowed.
using TokenBitmask = std::vector<uint32_t>;

inline bool mask_allows(const TokenBitmask& m, int32_t t) { return (m[size_t(t) >> 5] >> (t & 31)) & 1u; }

class TokenVocabulary {
 public:
  TokenVocabulary(std::vector<std::string> tokens, std::vector<int32_t> eos_ids);

  size_t size() const { return tokens_.size(); }
  const std::string& token(int32_t id) const { return tokens_[size_t(id)]; }
  const std::vector<int32_t>& eos_ids() const { return eos_ids_; }
  size_t trie_nodes() const { return nodes_.size(); }

  struct Node {
    uint8_t byte = 0;
    uint16_t depth = 0;        // bytes from the root (1 for a first byte)
    uint32_t end = 0;          // index past this node's subtree
    uint32_t first_token = 0;  // tokens whose bytes end here: token_ids_[first_token, +n_tokens)
    uint32_t n_tokens = 0;
    uint32_t tokens_end = 0;  // the subtree's tokens: token_ids_[first_token, tokens_end)
    // Every token below is valid UTF-8 (a complete or partial sequence) read from the root.
    bool valid_below = false;
    bool valid_path = false;           // the bytes from the root to here are valid UTF-8 (maybe unfinished)
    uint64_t ascii_below[2] = {0, 0};  // the ASCII bytes that occur below this node
  };
  const std::vector<Node>& nodes() const { return nodes_; }
  const std::vector<int32_t>& token_ids() const { return token_ids_; }
  size_t max_depth() const { return max_depth_; }

  // The tokens whose bytes, read from the root, are valid UTF-8 and hold none of the ASCII
  // bytes in `leaving` (bit b of word b/64): those that never leave a loop of a grammar.
  // Made once per set of bytes and shared by all requests (thread-safe).
  std::shared_ptr<const TokenBitmask> tokens_without(const std::array<uint64_t, 2>& leaving) const;

 private:
  std::vector<std::string> tokens_;
  std::vector<int32_t> eos_ids_;
  std::vector<Node> nodes_;
  std::vector<int32_t> token_ids_;
  size_t max_depth_ = 0;
  mutable std::mutex cache_mutex_;
  mutable std::vector<std::pair<std::array<uint64_t, 2>, std::shared_ptr<const TokenBitmask>>> without_cache_;
};

class TokenMasker {
 public:
  explicit TokenMasker(std::shared_ptr<const TokenVocabulary> vocab);

  // Fills `mask` (resized to the vocabulary) for the matcher's current state.
  void compute(const Matcher& matcher, TokenBitmask& mask);

 private:
  static constexpr uint32_t kEmpty = 0xFFFFFFFFu;  // the empty stack: the grammar has ended
  struct StackNode {
    uint32_t pos, parent;
  };
  struct Span {
    uint32_t first = 0, count = 0;
    bool done = false;
  };

  uint32_t intern(uint32_t pos, uint32_t parent);
  void expand(uint32_t pos, uint32_t parent, std::vector<uint32_t>& out, size_t depth);
  void pop_into(uint32_t node, std::vector<uint32_t>& out, size_t depth);
  const Span& after(uint32_t node);
  const uint64_t* loop_excluded(const std::vector<uint32_t>& set);

  bool step(const std::vector<uint32_t>& in, uint32_t cp, std::vector<uint32_t>& out);

  std::shared_ptr<const TokenVocabulary> vocab_;
  // Held, not just compared by address: a new grammar could otherwise reuse a freed one's
  // address and meet the old grammar's cached stacks.
  std::shared_ptr<const Grammar> grammar_;
  GrammarLimits limits_;
  std::vector<StackNode> nodes_;
  std::vector<uint32_t> depth_;  // stack depth of each node
  std::unordered_map<uint64_t, uint32_t> interned_;
  std::vector<Span> after_;          // per node: the stacks once its character class matched
  std::vector<uint32_t> after_ids_;  // storage of those spans
  // Per node: 0 not yet known, 1 its successors are no loop, 2 they are (loop_bytes_ valid).
  std::vector<uint8_t> loop_state_;
  std::vector<std::array<uint64_t, 2>> loop_bytes_;  // ASCII bytes that leave the loop
  std::vector<std::vector<uint32_t>> level_sets_;    // per trie depth: the stacks there
  std::vector<Utf8Partial> level_partial_;
  // Per trie depth: the path so far stays in the root's loop (see compute).
  std::vector<uint8_t> level_clean_;
};

}  // namespace greta::grammar
