#include "server/request_head.h"

#include <cctype>
#include <string_view>

namespace greta::server {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool same_name(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

// A Content-Length value: digits only, small enough to be meant (no overflow).
bool parse_length(std::string_view v, uint64_t& out) {
  if (v.empty() || v.size() > 15) return false;
  out = 0;
  for (char ch : v) {
    if (ch < '0' || ch > '9') return false;
    out = out * 10 + uint64_t(ch - '0');
  }
  return true;
}

}  // namespace

RequestHead scan_head(const std::string& bytes) {
  RequestHead h;
  const size_t end = bytes.find("\r\n\r\n");
  if (end == std::string::npos) return h;
  h.bytes = end + 4;
  const std::string_view head(bytes.data(), end);
  for (const char* p : {"GET /health ", "GET /health?", "GET /metrics ", "GET /metrics?"})
    if (head.rfind(p, 0) == 0) h.probe = true;

  int lengths = 0;
  bool other_framing = false;
  uint64_t length = 0;
  size_t pos = head.find("\r\n");
  while (pos != std::string_view::npos && pos < head.size()) {
    const size_t start = pos + 2;
    const size_t next = head.find("\r\n", start);
    const std::string_view line = head.substr(start,
                                              next == std::string_view::npos ? head.size() - start : next - start);
    pos = next;
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    const std::string_view name = trim(line.substr(0, colon));
    if (same_name(name, "Content-Length")) {
      ++lengths;
      if (!parse_length(trim(line.substr(colon + 1)), length)) other_framing = true;
    } else if (same_name(name, "Transfer-Encoding") || same_name(name, "Expect")) {
      other_framing = true;
    }
  }
  h.body_known = lengths == 1 && !other_framing;
  h.body = h.body_known ? length : 0;
  return h;
}

}  // namespace greta::server
