// Command-line value checks and how a bad command line is reported: one line
// "greta: error: <option>: <what is wrong>" on stderr and exit status 2, the usual code for a
// usage error. CLI11's own range check says "not in range" even for "abc"; these say which.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>

namespace greta::cli {

// A number (decimal or exponent form) in [lo, hi]: "'abc' is not a number", "'200' is not in [0, 100]".
CLI::Validator number_in(double lo, double hi);
// A whole number in [lo, hi]: "'1.5' is not a whole number", "'-1' is not in [0, 65535]".
CLI::Validator integer_in(int64_t lo, uint64_t hi);

constexpr int kUsageExit = 2;
// Prints help or the version (exit 0) the way CLI11 does; any other parse error as one
// "greta: error:" line that names the subcommand's --help. Returns the exit status.
int report_parse_error(const CLI::App& app, const CLI::ParseError& e, int argc, char** argv);

}  // namespace greta::cli
