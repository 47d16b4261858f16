// Tokenizer for the Jinja subset used by chat templates.
// Guarantees, matching Python jinja2 3.1 configured as transformers configures it
// (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False):
//  - line endings (\r\n, \r) become \n and one trailing newline of the source is dropped;
//  - `{%- ` / `{{-` / `{#-` strip all whitespace before the tag, `-%}` / `-}}` / `-#}` all after;
//  - lstrip_blocks: spaces/tabs between a line start and `{%` or `{#` are dropped (not for `{{`,
//    not with `{%+`); trim_blocks: the first newline after `%}` or `#}` is dropped (not with `+%}`);
//  - comments produce no tokens; a tag ends only where its brackets are balanced.
// Errors throw greta::Error naming line:col.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace greta::jinja {

enum class Tok { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, Eof };

struct Token {
  Tok kind;
  std::string text;  // Text data, name, decoded string literal, operator spelling
  int64_t ival = 0;
  double fval = 0;
  int line = 1, col = 1;
};

// The source after jinja2's newline normalization (what line:col positions refer to).
std::string normalize_source(const std::string& source);

std::vector<Token> tokenize(const std::string& source);

// Python's str.isspace() for one code point (used by lexer whitespace control and by strip()).
bool py_isspace(uint32_t cp);

}  // namespace greta::jinja
