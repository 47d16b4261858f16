// A compiled grammar and the pushdown matcher that runs it over Unicode code points.
//
// Compiled form: every rule is a list of alternatives; each alternative is a sequence of
// elements stored contiguously in Grammar::elements and ended by an End element. An element is
// a character class (code point ranges, possibly negated) or a reference to another rule.
//
// Matcher state: a set of stacks of positions (indexes into Grammar::elements), as llama.cpp
// runs GBNF. The top of every stack is a character class, the next thing to match; the
// positions below it are where each enclosing rule continues once the one above has finished.
// An empty stack means the whole root rule has been matched. A rule reference that ends its
// sequence is not kept on the stack (tail calls), so right recursion (`x*`, `x{0,n}`) runs in
// constant depth. Accepting a code point keeps the stacks whose top matches it, pops that
// element and expands rule references until every top is a character class again.
//
// Limits (GrammarLimits) bound the work: the number of stacks an ambiguous grammar may keep at
// once and the nesting depth of one stack. Exceeding either throws GrammarError; it is never
// silently truncated, since dropping stacks would change what the grammar accepts.
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "grammar/utf8_partial.h"

namespace greta::grammar {

class GrammarError : public Error {
 public:
  using Error::Error;
};

struct GrammarLimits {
  size_t max_stacks = 4096;       // alternatives the matcher may track at once
  size_t max_stack_depth = 4096;  // nesting of rules not yet finished (e.g. JSON depth x rules per level)
};

// The errors of the two limits, shared by the matcher and the token masker.
[[noreturn]] void throw_too_many_stacks(const GrammarLimits& limits);
[[noreturn]] void throw_too_deep(const GrammarLimits& limits);

// Sorts a set of open stacks, drops duplicates and enforces limits.max_stacks.
template <class T>
void dedupe_stacks(std::vector<T>& set, const GrammarLimits& limits) {
  std::sort(set.begin(), set.end());
  set.erase(std::unique(set.begin(), set.end()), set.end());
  if (set.size() > limits.max_stacks) throw_too_many_stacks(limits);
}

struct CharRange {
  uint32_t lo = 0, hi = 0;  // inclusive code points
};

struct Element {
  enum class Kind : uint8_t { End, Chars, Rule };
  Kind kind = Kind::End;
  bool negated = false;  // Chars: matches the code points outside the ranges
  uint32_t rule = 0;     // Rule: index into Grammar::rules
  uint32_t first = 0;    // Chars: ranges [first, first + count) of Grammar::ranges
  uint32_t count = 0;
};

struct Rule {
  std::string name;
  std::vector<uint32_t> alternatives;  // index of each alternative's first element
};

// One grammar element of the uncompiled form (what the GBNF parser builds).
struct SymbolSpec {
  bool is_rule = false;
  bool negated = false;
  uint32_t rule = 0;
  std::vector<CharRange> ranges;
};
struct RuleSpec {
  std::string name;
  std::string origin;  // where it was defined, for error messages ("line 3, column 1")
  bool defined = false;
  std::vector<std::vector<SymbolSpec>> alternatives;
};

class Grammar {
 public:
  // Flattens the rules and checks them: every referenced rule defined, a `root` rule exists,
  // no left recursion (the matcher would expand it forever), every rule reachable from root can
  // finish. Throws GrammarError naming the rule and its origin.
  static std::shared_ptr<const Grammar> compile(const std::vector<RuleSpec>& rules, const std::string& root = "root");

  const std::vector<Rule>& rules() const { return rules_; }
  const std::vector<Element>& elements() const { return elements_; }
  const std::vector<CharRange>& ranges() const { return ranges_; }
  uint32_t root() const { return root_; }

  bool matches(uint32_t pos, uint32_t cp) const;
  // Whether any code point in [lo, hi] matches the character class at pos.
  bool intersects(uint32_t pos, uint32_t lo, uint32_t hi) const;

 private:
  std::vector<Rule> rules_;
  std::vector<Element> elements_;
  std::vector<CharRange> ranges_;
  uint32_t root_ = 0;
};

using Stack = std::vector<uint32_t>;  // bottom first; back() is the top

class Matcher {
 public:
  explicit Matcher(std::shared_ptr<const Grammar> grammar, GrammarLimits limits = {});

  // Consumes one code point; returns false and leaves the state unchanged if the grammar
  // cannot continue with it.
  bool accept(uint32_t cp);
  // Consumes one byte of UTF-8. A byte that leaves a code point unfinished is accepted when
  // some code point starting with the bytes so far could continue the grammar.
  bool accept_byte(uint8_t byte);
  // All bytes or none: on rejection the state is as before the call.
  bool accept_bytes(std::string_view bytes);

  // The root rule is complete here (and no code point is half-read).
  bool can_end() const;

  const std::shared_ptr<const Grammar>& grammar() const { return grammar_; }
  const GrammarLimits& limits() const { return limits_; }
  const std::vector<Stack>& stacks() const { return stacks_; }
  const Utf8Partial& partial() const { return partial_; }

 private:
  void advance(Stack& stack, std::vector<Stack>& out) const;
  void finish(std::vector<Stack>& out) const;

  std::shared_ptr<const Grammar> grammar_;
  GrammarLimits limits_;
  std::vector<Stack> stacks_;
  Utf8Partial partial_;
};

}  // namespace greta::grammar
