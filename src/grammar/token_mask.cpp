#include "grammar/token_mask.h"

#include <algorithm>

namespace greta::grammar {

namespace {

// Whether `byte` is one of the ASCII bytes in the set (bit b of word b/64).
bool leaves(const std::array<uint64_t, 2>& leaving, uint8_t byte) {
  return byte < 0x80 && ((leaving[byte >> 6] >> (byte & 63)) & 1);
}

}  // namespace

TokenVocabulary::TokenVocabulary(std::vector<std::string> tokens, std::vector<int32_t> eos_ids)
    : tokens_(std::move(tokens)), eos_ids_(std::move(eos_ids)) {
  std::vector<bool> is_eos(tokens_.size(), false);
  for (int32_t e : eos_ids_) {
    if (e < 0 || size_t(e) >= tokens_.size())
      throw GrammarError("token vocabulary: EOS id " + std::to_string(e) + " outside the vocabulary of " +
                         std::to_string(tokens_.size()) + " tokens");
    is_eos[size_t(e)] = true;
  }
  std::vector<int32_t> order;
  for (size_t t = 0; t < tokens_.size(); ++t)
    if (!is_eos[t] && !tokens_[t].empty()) order.push_back(int32_t(t));
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return tokens_[size_t(a)] < tokens_[size_t(b)] || (tokens_[size_t(a)] == tokens_[size_t(b)] && a < b);
  });
  token_ids_ = order;  // sorted by bytes: every trie node's tokens are contiguous here

  // Preorder trie over the sorted tokens: the tokens in [a, b) share their first `depth` bytes.
  auto build = [&](auto&& self, size_t a, size_t b, size_t depth) -> void {
    size_t i = a;
    while (i < b && tokens_[size_t(order[i])].size() == depth) ++i;  // ended at the parent
    while (i < b) {
      const uint8_t byte = uint8_t(tokens_[size_t(order[i])][depth]);
      size_t j = i;
      while (j < b && uint8_t(tokens_[size_t(order[j])][depth]) == byte) ++j;
      const size_t me = nodes_.size();
      nodes_.push_back(Node{byte, uint16_t(depth + 1), 0, uint32_t(i), 0});
      max_depth_ = std::max(max_depth_, depth + 1);
      size_t k = i;
      while (k < j && tokens_[size_t(order[k])].size() == depth + 1) ++k;
      nodes_[me].n_tokens = uint32_t(k - i);
      nodes_[me].tokens_end = uint32_t(j);
      self(self, i, j, depth + 1);
      nodes_[me].end = uint32_t(nodes_.size());
      i = j;
    }
  };
  for (size_t t : order)
    if (tokens_[t].size() > 0xFFFF)
      throw GrammarError("token vocabulary: token " + std::to_string(t) + " longer than 65535 bytes");
  build(build, 0, order.size(), 0);

  // UTF-8 validity of each node's path (preorder: a parent before its children), then the
  // subtree summaries from the last node back (children after their parent).
  std::vector<bool> valid(nodes_.size());
  std::vector<Utf8Partial> state(max_depth_ + 1);
  std::vector<bool> valid_at(max_depth_ + 1, true);
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Node& n = nodes_[i];
    Utf8Partial p = state[n.depth - 1];
    uint32_t cp;
    valid[i] = valid_at[n.depth - 1] && utf8_feed(p, n.byte, cp) != Utf8Step::Invalid;
    state[n.depth] = p;
    valid_at[n.depth] = valid[i];
  }
  for (size_t i = 0; i < nodes_.size(); ++i) nodes_[i].valid_path = valid[i];
  for (size_t i = nodes_.size(); i-- > 0;) {
    Node& n = nodes_[i];
    n.valid_below = true;
    for (size_t c = i + 1; c < n.end; c = nodes_[c].end) {  // the children
      const Node& child = nodes_[c];
      n.valid_below = n.valid_below && valid[c] && child.valid_below;
      n.ascii_below[0] |= child.ascii_below[0];
      n.ascii_below[1] |= child.ascii_below[1];
      if (child.byte < 0x80) n.ascii_below[child.byte >> 6] |= uint64_t(1) << (child.byte & 63);
    }
  }
}

TokenMasker::TokenMasker(std::shared_ptr<const TokenVocabulary> vocab) : vocab_(std::move(vocab)) {
  level_sets_.resize(vocab_->max_depth() + 1);
  level_partial_.resize(vocab_->max_depth() + 1);
  level_clean_.resize(vocab_->max_depth() + 1);
}

std::shared_ptr<const TokenBitmask> TokenVocabulary::tokens_without(const std::array<uint64_t, 2>& leaving) const {
  std::lock_guard<std::mutex> lock(cache_mutex_);
  for (const auto& [bytes, mask] : without_cache_)
    if (bytes == leaving) return mask;
  auto mask = std::make_shared<TokenBitmask>((size() + 31) / 32, 0u);
  for (size_t i = 0; i < nodes_.size();) {  // preorder: a failing node's subtree is skipped whole
    const Node& n = nodes_[i];
    if (!n.valid_path || leaves(leaving, n.byte)) {
      i = n.end;
      continue;
    }
    for (uint32_t k = n.first_token; k < n.first_token + n.n_tokens; ++k) {
      const int32_t t = token_ids_[k];
      (*mask)[size_t(t) >> 5] |= 1u << (t & 31);
    }
    ++i;
  }
  // Grammars have few distinct loops; the oldest goes if many come (holders keep theirs alive).
  if (without_cache_.size() >= 16) without_cache_.erase(without_cache_.begin());
  without_cache_.emplace_back(leaving, mask);
  return mask;
}

uint32_t TokenMasker::intern(uint32_t pos, uint32_t parent) {
  const uint64_t key = (uint64_t(pos) << 32) | parent;
  auto it = interned_.find(key);
  if (it != interned_.end()) return it->second;
  const uint32_t depth = parent == kEmpty ? 1 : depth_[parent] + 1;
  if (depth > limits_.max_stack_depth) throw_too_deep(limits_);
  const uint32_t id = uint32_t(nodes_.size());
  nodes_.push_back({pos, parent});
  depth_.push_back(depth);
  after_.push_back({});
  loop_state_.push_back(0);
  loop_bytes_.push_back({0, 0});
  interned_.emplace(key, id);
  return id;
}

// The stacks reached by expanding the element at `pos` on top of `parent`.
void TokenMasker::expand(uint32_t pos, uint32_t parent, std::vector<uint32_t>& out, size_t depth) {
  const auto& elems = grammar_->elements();
  const Element& e = elems[pos];
  if (e.kind == Element::Kind::Chars) {
    out.push_back(intern(pos, parent));
    return;
  }
  const uint32_t cont = pos + 1;
  const uint32_t next_parent = elems[cont].kind == Element::Kind::End ? parent : intern(cont, parent);
  for (uint32_t alt : grammar_->rules()[e.rule].alternatives) {
    if (elems[alt].kind == Element::Kind::End) pop_into(next_parent, out, depth + 1);
    else expand(alt, next_parent, out, depth + 1);
  }
  if (out.size() > 4 * limits_.max_stacks) dedupe_stacks(out, limits_);
}

// The stacks reached when the rule above `node` has finished and `node` is the new top.
void TokenMasker::pop_into(uint32_t node, std::vector<uint32_t>& out, size_t depth) {
  if (node == kEmpty) {
    out.push_back(kEmpty);
    return;
  }
  const uint32_t pos = nodes_[node].pos;
  if (grammar_->elements()[pos].kind == Element::Kind::Chars) out.push_back(node);
  else expand(pos, nodes_[node].parent, out, depth);
}

const TokenMasker::Span& TokenMasker::after(uint32_t node) {
  if (after_[node].done) return after_[node];
  std::vector<uint32_t> out;
  const uint32_t next = nodes_[node].pos + 1;
  if (grammar_->elements()[next].kind != Element::Kind::End) expand(next, nodes_[node].parent, out, 0);
  else pop_into(nodes_[node].parent, out, 0);
  dedupe_stacks(out, limits_);
  Span s{uint32_t(after_ids_.size()), uint32_t(out.size()), true};
  after_ids_.insert(after_ids_.end(), out.begin(), out.end());
  after_[node] = s;  // after_ may have grown while expanding: index, never hold a reference across
  return after_[node];
}

// The ASCII bytes that leave `set`, if `set` is a loop: the successors of one of its stacks,
// a negated class of ASCII ranges, are `set` itself, and every other stack is ended or waits
// for a positive ASCII class. Then any code point outside those bytes leads back to `set`.
// Null if `set` is no such loop.
const uint64_t* TokenMasker::loop_excluded(const std::vector<uint32_t>& set) {
  if (set.size() > 8) return nullptr;
  const auto& elems = grammar_->elements();
  const auto& ranges = grammar_->ranges();
  auto add_ascii = [&](const Element& e, std::array<uint64_t, 2>& bits) {
    for (uint32_t r = e.first; r < e.first + e.count; ++r) {
      if (ranges[r].hi >= 0x80) return false;
      for (uint32_t c = ranges[r].lo; c <= ranges[r].hi; ++c) bits[c >> 6] |= uint64_t(1) << (c & 63);
    }
    return true;
  };
  for (uint32_t id : set) {
    if (id == kEmpty) continue;
    if (loop_state_[id] == 0) {
      loop_state_[id] = 1;
      const Element& e = elems[nodes_[id].pos];
      const Span s = after(id);
      std::array<uint64_t, 2> bits = {0, 0};
      bool loop = e.negated && add_ascii(e, bits);
      bool contains_self = false;
      for (uint32_t k = s.first; loop && k < s.first + s.count; ++k) {
        const uint32_t other = after_ids_[k];
        if (other == id) contains_self = true;
        else if (other != kEmpty) loop = !elems[nodes_[other].pos].negated && add_ascii(elems[nodes_[other].pos], bits);
      }
      if (loop && contains_self) {
        loop_state_[id] = 2;
        loop_bytes_[id] = bits;
      }
    }
    if (loop_state_[id] != 2) continue;
    const Span s = after_[id];
    if (s.count == set.size() && std::equal(set.begin(), set.end(), after_ids_.begin() + s.first))
      return loop_bytes_[id].data();
  }
  return nullptr;
}

bool TokenMasker::step(const std::vector<uint32_t>& in, uint32_t cp, std::vector<uint32_t>& out) {
  out.clear();
  size_t sources = 0;
  for (uint32_t id : in) {
    if (id == kEmpty || !grammar_->matches(nodes_[id].pos, cp)) continue;
    const Span s = after(id);
    out.insert(out.end(), after_ids_.begin() + s.first, after_ids_.begin() + s.first + s.count);
    ++sources;
  }
  if (sources > 1) dedupe_stacks(out, limits_);
  return !out.empty();
}

void TokenMasker::compute(const Matcher& matcher, TokenBitmask& mask) {
  const TokenVocabulary& vocab = *vocab_;
  mask.assign((vocab.size() + 31) / 32, 0u);
  // The interned stacks and their cached successors stay valid for one grammar; they are
  // dropped when the grammar changes or the cache has grown large.
  if (grammar_ != matcher.grammar() || nodes_.size() > (1u << 22)) {
    grammar_ = matcher.grammar();
    nodes_.clear();
    depth_.clear();
    interned_.clear();
    after_.clear();
    after_ids_.clear();
    loop_state_.clear();
    loop_bytes_.clear();
  }
  limits_ = matcher.limits();

  std::vector<uint32_t>& root = level_sets_[0];
  root.clear();
  for (const Stack& s : matcher.stacks()) {
    uint32_t id = kEmpty;
    for (uint32_t pos : s) id = intern(pos, id);
    root.push_back(id);
  }
  dedupe_stacks(root, limits_);
  level_partial_[0] = matcher.partial();
  // A state that is a loop (inside a JSON string, say): the tokens that never leave it are
  // allowed at once from a cached bitmask, and the walk below visits only the other subtrees.
  // Nodes whose path from the root stays in the loop are "clean": their tokens are in the base.
  std::array<uint64_t, 2> root_leaving = {0, 0};
  const uint64_t* root_loop = matcher.partial().remaining == 0 ? loop_excluded(root) : nullptr;
  if (root_loop) {
    root_leaving = {root_loop[0], root_loop[1]};
    mask = *vocab.tokens_without(root_leaving);
  }
  level_clean_[0] = root_loop != nullptr;
  if (matcher.can_end())
    for (int32_t e : vocab.eos_ids()) mask[size_t(e) >> 5] |= 1u << (e & 31);

  const auto& nodes = vocab.nodes();
  const auto& ids = vocab.token_ids();
  for (size_t i = 0; i < nodes.size();) {
    const TokenVocabulary::Node& n = nodes[i];
    const std::vector<uint32_t>& in = level_sets_[n.depth - 1];
    std::vector<uint32_t>& out = level_sets_[n.depth];
    Utf8Partial p = level_partial_[n.depth - 1];
    uint32_t cp = 0;
    bool ok = false;
    switch (utf8_feed(p, n.byte, cp)) {
      case Utf8Step::Invalid: break;
      case Utf8Step::Complete: ok = step(in, cp, out); break;
      case Utf8Step::Partial: {
        uint32_t lo, hi;
        utf8_partial_range(p, lo, hi);
        for (uint32_t id : in) {
          if (id != kEmpty && grammar_->intersects(nodes_[id].pos, lo, hi)) {
            ok = true;
            break;
          }
        }
        if (ok) out = in;
        break;
      }
    }
    if (!ok) {
      i = n.end;  // no token under this prefix can be accepted
      continue;
    }
    level_partial_[n.depth] = p;
    const bool clean = level_clean_[n.depth - 1] && n.valid_path && !leaves(root_leaving, n.byte);
    level_clean_[n.depth] = clean;
    // valid_below reads UTF-8 from the root. With a code point half-read before this mask, the
    // first byte is a continuation byte, invalid when read from the root, so no node under it
    // has valid_below and the shortcut never applies there.
    if (n.valid_below && n.end > i + 1) {
      const uint64_t* excluded = loop_excluded(out);
      if (excluded && (excluded[0] & n.ascii_below[0]) == 0 && (excluded[1] & n.ascii_below[1]) == 0) {
        // Below a clean node, in the same loop, every token is in the base already.
        const bool in_base = clean && excluded[0] == root_leaving[0] && excluded[1] == root_leaving[1];
        for (uint32_t k = n.first_token; !in_base && k < n.tokens_end; ++k) {
          const int32_t t = ids[k];
          mask[size_t(t) >> 5] |= 1u << (t & 31);
        }
        i = n.end;  // every token below stays in the loop
        continue;
      }
    }
    for (uint32_t k = n.first_token; !clean && k < n.first_token + n.n_tokens; ++k) {
      const int32_t t = ids[k];
      mask[size_t(t) >> 5] |= 1u << (t & 31);
    }
    ++i;
  }
}

}  // namespace greta::grammar
