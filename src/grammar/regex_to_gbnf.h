// A regular expression (the subset JSON Schema `pattern`s use) as a GBNF expression over the
// characters of a JSON string's contents, i.e. as the model writes them between the quotes.
//
// Supported: literals, escapes (\d \D \w \W \s \S \n \r \t \f \v \xHH \uHHHH \. \\ and other
// escaped punctuation), classes [a-z] [^...] with class escapes, `.` (anything but \n), groups
// ( ) (?: ) (?<name> ) (?P<name> ), alternation, * + ? {m} {m,} {m,n} and their lazy forms,
// ^ at the start and $ at the end of a top-level alternative. A JSON Schema pattern is not
// anchored: an alternative without ^ / $ may be preceded / followed by any characters.
// Refused with an error naming the feature: backreferences, lookaround, \b \B, inline flags,
// possessive quantifiers, anchors elsewhere.
//
// regex_to_gbnf_grammar reads the same subset as plain text instead of JSON string contents.
// Characters the JSON string must escape come out escaped: `"` as \", `\` as \\, newline, tab
// and carriage return as \n \t \r; other control characters are left out (never generated).
#pragma once
#include <string>
#include <string_view>

namespace greta::grammar {

// `any_char` names a GBNF rule for one JSON string character (raw or escaped), used for the
// unanchored ends. Throws GrammarError("pattern ...: ...") on a feature outside the subset.
std::string regex_to_gbnf(std::string_view pattern, const std::string& any_char);

// A whole GBNF grammar (its `root` rule) for plain text that matches `pattern` entirely, as
// Python's re.fullmatch: for a request's `regex` field. ^ and $ are allowed at the ends.
std::string regex_to_gbnf_grammar(std::string_view pattern);

// A GBNF string literal ("...") matching exactly `text` (UTF-8).
std::string gbnf_literal(std::string_view text);

}  // namespace greta::grammar
