// GBNF, llama.cpp's grammar format, parsed into a compiled Grammar.
//
//   name ::= alternative | alternative ...     one rule per line; `root` is the whole output
//   "literal"  [a-z0-9_] [^\n]  .  name  ( group )
//   x*  x+  x?  x{m}  x{m,}  x{m,n}             repetition of the symbol just before
//   # comment to end of line
// Escapes in literals and classes: \n \r \t \\ \" \[ \] \- \^ \xHH \uHHHH \UHHHHHHHH. A newline
// ends a rule except inside parentheses, after `::=` and after `|`. Rule names are letters,
// digits, `-` and `_`. Groups and repetitions become generated rules named `<rule>/<n>`;
// `x*` is the right recursion `r ::= x r | ""`, `x{m,n}` is m copies then n-m nested optionals.
// Token references (`<think>`, `<[id]>`) are refused: this matcher runs on text only.
// Every error names the line and column, what was found and what was expected.
#pragma once
#include <memory>
#include <string_view>

#include "grammar/grammar.h"

namespace greta::grammar {

struct GbnfOptions {
  // Bounds on what one grammar may expand into: `x{1000000}` would otherwise allocate without end.
  uint32_t max_repetition = 10000;  // largest m or n in x{m,n}
  size_t max_symbols = 1000000;     // elements in all rules after expanding repetitions
  uint32_t max_nesting = 256;       // groups inside groups (the parser recurses on them)
};

std::shared_ptr<const Grammar> parse_gbnf(std::string_view text, const GbnfOptions& options = {});

}  // namespace greta::grammar
