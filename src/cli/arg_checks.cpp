#include "cli/arg_checks.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

namespace greta::cli {

namespace {

std::string in_quotes(const std::string& v) { return "'" + v + "'"; }

std::string range_text(double lo, double hi) {
  std::ostringstream s;
  s << "[" << lo << ", " << hi << "]";
  return s.str();
}

std::string range_text(int64_t lo, uint64_t hi) { return "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]"; }

// strtod/strtoll/strtoull accept leading blanks and the empty string; a command line value
// is either all number or not one.
bool whole_string(const std::string& v, const char* end) {
  return !v.empty() && !std::isspace(static_cast<unsigned char>(v[0])) && *end == '\0';
}

}  // namespace

CLI::Validator number_in(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& v) -> std::string {
        errno = 0;
        char* end = nullptr;
        const double x = std::strtod(v.c_str(), &end);
        if (!whole_string(v, end) || std::isnan(x)) return in_quotes(v) + " is not a number";
        if (errno == ERANGE || !(x >= lo && x <= hi)) return in_quotes(v) + " is not in " + range_text(lo, hi);
        return std::string();
      },
      "in " + range_text(lo, hi));
}

CLI::Validator integer_in(int64_t lo, uint64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& v) -> std::string {
        char* end = nullptr;
        errno = 0;
        bool in_range;
        if (!v.empty() && v[0] == '-') {
          const long long x = std::strtoll(v.c_str(), &end, 10);
          in_range = errno != ERANGE && x >= lo;
        } else {
          const unsigned long long x = std::strtoull(v.c_str(), &end, 10);
          in_range = errno != ERANGE && x <= hi && (lo <= 0 || x >= uint64_t(lo));
        }
        if (!whole_string(v, end)) {
          char* dend = nullptr;
          std::strtod(v.c_str(), &dend);
          return in_quotes(v) + (whole_string(v, dend) ? " is not a whole number" : " is not a number");
        }
        if (!in_range) return in_quotes(v) + " is not in " + range_text(lo, hi);
        return std::string();
      },
      "in " + range_text(lo, hi));
}

int report_parse_error(const CLI::App& app, const CLI::ParseError& e, int argc, char** argv) {
  if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
  std::string usage = "greta --help", what = e.what();
  for (const CLI::App* sub : app.get_subcommands()) usage = "greta " + sub->get_name() + " --help";
  if (app.get_subcommands().empty() && (argc < 2 || argv[1][0] != '-')) {  // no command: list them
    std::string names;
    for (const CLI::App* sub : app.get_subcommands({})) names += (names.empty() ? "" : ", ") + sub->get_name();
    what = (argc > 1 ? "unknown command '" + std::string(argv[1]) + "'" : std::string("no command")) +
           "; the commands are " + names;
  }
  std::fflush(stdout);
  std::fprintf(stderr, "greta: error: %s (see '%s')\n", what.c_str(), usage.c_str());
  return kUsageExit;
}

}  // namespace greta::cli
