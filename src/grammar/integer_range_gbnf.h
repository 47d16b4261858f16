// GBNF for the decimal integers in a range, as JSON writes them: no leading zeros, no "-0".
// Built digit by digit: numbers of each length separately, and for one length the standard
// split into "same leading digit" / "leading digits strictly between" / "last leading digit".
// An open upper end stops at 16 digits (as the JSON number rule does).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace greta::grammar {

std::string integer_range_gbnf(std::optional<int64_t> lo, std::optional<int64_t> hi);

}  // namespace greta::grammar
