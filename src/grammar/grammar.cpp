#include "grammar/grammar.h"

#include <algorithm>
#include <cstdint>
#include <map>

namespace greta::grammar {
namespace {

std::string rule_label(const RuleSpec& r) {
  return "rule '" + r.name + "'" + (r.origin.empty() ? "" : " (" + r.origin + ")");
}

// The rules with an alternative whose every symbol holds, where a rule reference holds once
// its rule is found and a character class holds iff `chars_hold`. A worklist: each
// alternative counts its symbols still open, so the work is linear in the grammar's size.
std::vector<bool> rules_where_some_alternative(const std::vector<RuleSpec>& rules, bool chars_hold) {
  std::vector<bool> found(rules.size(), false);
  std::vector<uint32_t> open, owner, ready;
  std::vector<std::vector<uint32_t>> users(rules.size());  // alternatives per occurrence of a rule
  for (uint32_t r = 0; r < rules.size(); ++r) {
    for (const auto& alt : rules[r].alternatives) {
      const uint32_t a = uint32_t(open.size());
      uint32_t n = 0;
      bool possible = true;
      for (const SymbolSpec& s : alt) {
        if (s.is_rule) {
          ++n;
          users[s.rule].push_back(a);
        } else if (!chars_hold) {
          possible = false;
        }
      }
      open.push_back(possible ? n : UINT32_MAX);
      owner.push_back(r);
      if (possible && n == 0) ready.push_back(r);
    }
  }
  while (!ready.empty()) {
    const uint32_t r = ready.back();
    ready.pop_back();
    if (found[r]) continue;
    found[r] = true;
    for (uint32_t a : users[r])
      if (open[a] != UINT32_MAX && --open[a] == 0) ready.push_back(owner[a]);
  }
  return found;
}

// A rule that can reach itself without consuming a character would make the matcher expand
// it forever: find such a cycle and name it. The longest chain of such leading references is
// how deep the matcher recurses to expand one character: bounded here, so that no grammar can
// exhaust the thread's stack. Iterative, for the same reason.
void check_left_recursion(const std::vector<RuleSpec>& rules) {
  constexpr uint32_t kMaxChain = 1000;
  const std::vector<bool> nullable = rules_where_some_alternative(rules, false);
  std::vector<std::vector<uint32_t>> first(rules.size());  // rules that can start rule r
  for (size_t r = 0; r < rules.size(); ++r) {
    for (const auto& alt : rules[r].alternatives) {
      for (const SymbolSpec& s : alt) {
        if (!s.is_rule) break;
        first[r].push_back(s.rule);
        if (!nullable[s.rule]) break;
      }
    }
  }
  enum : uint8_t { kNew, kOnPath, kDone };
  std::vector<uint8_t> mark(rules.size(), kNew);
  std::vector<uint32_t> chain(rules.size(), 1);
  std::vector<std::pair<uint32_t, size_t>> path;  // (rule, next entry of first[rule] to visit)
  for (uint32_t start = 0; start < rules.size(); ++start) {
    if (mark[start] != kNew) continue;
    mark[start] = kOnPath;
    path.push_back({start, 0});
    while (!path.empty()) {
      auto& [r, k] = path.back();
      if (k == first[r].size()) {
        for (uint32_t next : first[r]) chain[r] = std::max(chain[r], chain[next] + 1);
        if (chain[r] > kMaxChain)
          throw GrammarError("grammar: " + rule_label(rules[r]) + " starts with a chain of more than " +
                             std::to_string(kMaxChain) + " rule references before any character");
        mark[r] = kDone;
        path.pop_back();
        continue;
      }
      const uint32_t next = first[r][k++];
      if (mark[next] == kOnPath) {
        std::string cycle;
        auto it = std::find_if(path.begin(), path.end(), [&](const auto& e) { return e.first == next; });
        for (; it != path.end(); ++it) cycle += rules[it->first].name + " -> ";
        throw GrammarError("grammar: " + rule_label(rules[next]) +
                           " is left-recursive: it can reach itself before matching any character (" + cycle +
                           rules[next].name + "); rewrite it with repetition, e.g. `x ::= y (op y)*`");
      }
      if (mark[next] == kNew) {
        mark[next] = kOnPath;
        path.push_back({next, 0});  // invalidates r and k: the loop reads path.back() afresh
      }
    }
  }
}

}  // namespace

std::shared_ptr<const Grammar> Grammar::compile(const std::vector<RuleSpec>& rules, const std::string& root) {
  auto g = std::make_shared<Grammar>();
  bool found_root = false;
  for (uint32_t r = 0; r < rules.size(); ++r) {
    if (!rules[r].defined) throw GrammarError("grammar: " + rule_label(rules[r]) + " is used but never defined");
    if (rules[r].name == root) {
      g->root_ = r;
      found_root = true;
    }
  }
  if (!found_root) throw GrammarError("grammar: no '" + root + "' rule; the root rule says what the whole output is");
  check_left_recursion(rules);

  // Every rule reachable from root must be able to finish, or the output could never end.
  const std::vector<bool> productive = rules_where_some_alternative(rules, true);
  std::vector<bool> reached(rules.size(), false);
  std::vector<uint32_t> todo{g->root_};
  reached[g->root_] = true;
  while (!todo.empty()) {
    uint32_t r = todo.back();
    todo.pop_back();
    if (!productive[r])
      throw GrammarError("grammar: " + rule_label(rules[r]) +
                         " can never finish: every alternative refers to a rule that cannot finish");
    for (const auto& alt : rules[r].alternatives)
      for (const SymbolSpec& s : alt)
        if (s.is_rule && !reached[s.rule]) {
          reached[s.rule] = true;
          todo.push_back(s.rule);
        }
  }

  g->rules_.resize(rules.size());
  for (uint32_t r = 0; r < rules.size(); ++r) {
    g->rules_[r].name = rules[r].name;
    for (const auto& alt : rules[r].alternatives) {
      g->rules_[r].alternatives.push_back(uint32_t(g->elements_.size()));
      for (const SymbolSpec& s : alt) {
        Element e;
        if (s.is_rule) {
          e.kind = Element::Kind::Rule;
          e.rule = s.rule;
        } else {
          e.kind = Element::Kind::Chars;
          e.negated = s.negated;
          // Sorted, merged ranges: matching stops at the first range above the code point.
          std::vector<CharRange> rs = s.ranges;
          std::sort(rs.begin(), rs.end(), [](const CharRange& a, const CharRange& b) { return a.lo < b.lo; });
          e.first = uint32_t(g->ranges_.size());
          for (const CharRange& cr : rs) {
            if (g->ranges_.size() > e.first && cr.lo <= g->ranges_.back().hi + 1)
              g->ranges_.back().hi = std::max(g->ranges_.back().hi, cr.hi);
            else g->ranges_.push_back(cr);
          }
          e.count = uint32_t(g->ranges_.size() - e.first);
        }
        g->elements_.push_back(e);
      }
      g->elements_.push_back(Element{});  // End
    }
  }
  return g;
}

bool Grammar::matches(uint32_t pos, uint32_t cp) const {
  const Element& e = elements_[pos];
  bool in = false;
  for (uint32_t i = e.first, end = e.first + e.count; i < end; ++i) {
    if (cp < ranges_[i].lo) break;
    if (cp <= ranges_[i].hi) {
      in = true;
      break;
    }
  }
  return in != e.negated;
}

bool Grammar::intersects(uint32_t pos, uint32_t lo, uint32_t hi) const {
  const Element& e = elements_[pos];
  if (!e.negated) {
    for (uint32_t i = e.first, end = e.first + e.count; i < end; ++i)
      if (ranges_[i].lo <= hi && lo <= ranges_[i].hi) return true;
    return false;
  }
  // Negated: some code point of [lo, hi] lies in a gap between the (sorted, merged) ranges.
  uint32_t next = lo;
  for (uint32_t i = e.first, end = e.first + e.count; i < end && next <= hi; ++i) {
    if (ranges_[i].hi < next) continue;
    if (ranges_[i].lo > next) return true;
    if (ranges_[i].hi >= hi) return false;
    next = ranges_[i].hi + 1;
  }
  return next <= hi;
}

Matcher::Matcher(std::shared_ptr<const Grammar> grammar, GrammarLimits limits)
    : grammar_(std::move(grammar)), limits_(limits) {
  const Grammar& g = *grammar_;
  for (uint32_t alt : g.rules()[g.root()].alternatives) {
    Stack s;
    if (g.elements()[alt].kind != Element::Kind::End) s.push_back(alt);
    advance(s, stacks_);
  }
  finish(stacks_);
}

// Expands rule references at the top of `stack` until the top is a character class (or the
// stack is empty), adding each resulting stack to `out`.
void Matcher::advance(Stack& stack, std::vector<Stack>& out) const {
  if (stack.size() > limits_.max_stack_depth) throw_too_deep(limits_);
  if (stack.empty() || grammar_->elements()[stack.back()].kind == Element::Kind::Chars) {
    out.push_back(stack);
    if (out.size() > 4 * limits_.max_stacks) finish(out);  // early check: bounded memory
    return;
  }
  const auto& elems = grammar_->elements();
  const uint32_t pos = stack.back();
  const Rule& rule = grammar_->rules()[elems[pos].rule];
  stack.pop_back();
  const bool has_rest = elems[pos + 1].kind != Element::Kind::End;
  if (has_rest) stack.push_back(pos + 1);
  for (uint32_t alt : rule.alternatives) {
    const bool empty = elems[alt].kind == Element::Kind::End;
    if (!empty) stack.push_back(alt);
    advance(stack, out);
    if (!empty) stack.pop_back();
  }
  if (has_rest) stack.pop_back();
  stack.push_back(pos);
}

void Matcher::finish(std::vector<Stack>& out) const { dedupe_stacks(out, limits_); }

void throw_too_many_stacks(const GrammarLimits& limits) {
  throw GrammarError("grammar: more than " + std::to_string(limits.max_stacks) +
                     " alternatives are open at once; the grammar is too ambiguous (e.g. many `x?` in a row: "
                     "write `x{0,n}`)");
}

void throw_too_deep(const GrammarLimits& limits) {
  throw GrammarError("grammar: nesting deeper than " + std::to_string(limits.max_stack_depth) + " rules");
}

bool Matcher::accept(uint32_t cp) {
  if (partial_.remaining != 0) return false;
  const auto& elems = grammar_->elements();
  std::vector<Stack> next;
  for (const Stack& s : stacks_) {
    if (s.empty() || !grammar_->matches(s.back(), cp)) continue;
    Stack t(s.begin(), s.end() - 1);
    const uint32_t pos = s.back() + 1;
    if (elems[pos].kind != Element::Kind::End) t.push_back(pos);
    advance(t, next);
  }
  if (next.empty()) return false;
  finish(next);
  stacks_ = std::move(next);
  return true;
}

bool Matcher::accept_byte(uint8_t byte) {
  Utf8Partial p = partial_;
  uint32_t cp = 0;
  switch (utf8_feed(p, byte, cp)) {
    case Utf8Step::Invalid: return false;
    case Utf8Step::Complete: {
      const Utf8Partial saved = partial_;
      partial_ = {};
      if (accept(cp)) return true;
      partial_ = saved;
      return false;
    }
    case Utf8Step::Partial: {
      uint32_t lo, hi;
      utf8_partial_range(p, lo, hi);
      for (const Stack& s : stacks_) {
        if (!s.empty() && grammar_->intersects(s.back(), lo, hi)) {
          partial_ = p;
          return true;
        }
      }
      return false;
    }
  }
  return false;
}

bool Matcher::accept_bytes(std::string_view bytes) {
  Matcher copy = *this;
  for (char c : bytes)
    if (!copy.accept_byte(uint8_t(c))) return false;
  *this = std::move(copy);
  return true;
}

bool Matcher::can_end() const {
  if (partial_.remaining != 0) return false;
  return std::any_of(stacks_.begin(), stacks_.end(), [](const Stack& s) { return s.empty(); });
}

}  // namespace greta::grammar
