#include "grammar/integer_range_gbnf.h"

#include <algorithm>
#include <vector>

namespace greta::grammar {
namespace {

constexpr size_t kOpenDigits = 16;

std::string join_alternatives(const std::vector<std::string>& alts) {
  if (alts.size() == 1) return alts[0];
  std::string out = "(";
  for (size_t i = 0; i < alts.size(); ++i) out += (i ? " | " : " ") + alts[i];
  return out + " )";
}

// Built by appending: GCC 12 warns (-Wrestrict, a false positive) on `std::string("[") + c + ...`.
std::string digit_class(char lo, char hi) {
  std::string s = "[";
  s.push_back(lo);
  s.push_back('-');
  s.push_back(hi);
  s.push_back(']');
  return s;
}

std::string digit_literal(char d) {
  std::string s = "\"";
  s.push_back(d);
  s.push_back('"');
  return s;
}

// Digit strings of equal length between a and b (a <= b), leading zeros allowed.
std::string same_length(const std::string& a, const std::string& b) {
  if (a.empty()) return "";
  if (a == b) return "\"" + a + "\"";
  if (a.size() == 1) return digit_class(a[0], b[0]);
  const std::string ra = a.substr(1), rb = b.substr(1);
  if (a[0] == b[0]) return digit_literal(a[0]) + " " + same_length(ra, rb);
  const bool ra_zero = std::all_of(ra.begin(), ra.end(), [](char c) { return c == '0'; });
  const bool rb_nine = std::all_of(rb.begin(), rb.end(), [](char c) { return c == '9'; });
  const char lo_d = ra_zero ? a[0] : char(a[0] + 1), hi_d = rb_nine ? b[0] : char(b[0] - 1);
  std::vector<std::string> alts;
  if (!ra_zero) alts.push_back(digit_literal(a[0]) + " " + same_length(ra, std::string(ra.size(), '9')));
  if (lo_d <= hi_d) alts.push_back(digit_class(lo_d, hi_d) + " [0-9]{" + std::to_string(ra.size()) + "}");
  if (!rb_nine) alts.push_back(digit_literal(b[0]) + " " + same_length(std::string(rb.size(), '0'), rb));
  return join_alternatives(alts);
}

// Non-negative integers in [a, b]; b absent: no upper bound (up to kOpenDigits digits).
std::string non_negative(uint64_t a, std::optional<uint64_t> b) {
  const std::string as = std::to_string(a);
  std::vector<std::string> alts;
  const size_t last = b ? std::to_string(*b).size() : as.size();
  for (size_t len = as.size(); len <= last; ++len) {
    std::string lo = as;
    if (len != as.size()) {
      lo.assign(len, '0');
      lo[0] = '1';
    }
    const std::string hi = b && len == last ? std::to_string(*b) : std::string(len, '9');
    alts.push_back(same_length(lo, hi));
  }
  if (!b && as.size() < kOpenDigits)
    alts.push_back("[1-9] [0-9]{" + std::to_string(as.size()) + "," + std::to_string(kOpenDigits - 1) + "}");
  return join_alternatives(alts);
}

}  // namespace

std::string integer_range_gbnf(std::optional<int64_t> lo, std::optional<int64_t> hi) {
  std::vector<std::string> alts;
  if (!lo || *lo < 0) {
    // Magnitudes of the negative part; -(x + 1) + 1 keeps INT64_MIN in range.
    const uint64_t mlo = hi && *hi < 0 ? uint64_t(-(*hi + 1)) + 1 : 1;
    std::optional<uint64_t> mhi;
    if (lo) mhi = uint64_t(-(*lo + 1)) + 1;
    alts.push_back("\"-\" " + non_negative(mlo, mhi));
  }
  if (!hi || *hi >= 0) {
    const uint64_t nlo = lo && *lo > 0 ? uint64_t(*lo) : 0;
    std::optional<uint64_t> nhi;
    if (hi) nhi = uint64_t(*hi);
    alts.push_back(non_negative(nlo, nhi));
  }
  return join_alternatives(alts);
}

}  // namespace greta::grammar
