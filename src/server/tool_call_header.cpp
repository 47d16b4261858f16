#include "server/tool_call_header.h"

#include <algorithm>
#include <cctype>
#include <initializer_list>

namespace greta::server {

namespace {

enum class Match { Yes, Partial, No };

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

struct Reader {
  std::string_view s;
  size_t pos = 0;

  bool at_end() const { return pos >= s.size(); }

  // After whitespace: `word` whole (consumed), a proper prefix of it up to the end of s, or neither.
  Match word(std::string_view w) {
    while (pos < s.size() && is_ws(s[pos])) ++pos;
    const size_t n = std::min(w.size(), s.size() - pos);
    if (s.substr(pos, n) != w.substr(0, n)) return Match::No;
    if (n < w.size()) return Match::Partial;
    pos += n;
    return Match::Yes;
  }
};

// Each word in turn; Yes when all are there.
Match words(Reader& r, std::initializer_list<std::string_view> list) {
  for (std::string_view w : list)
    if (Match m = r.word(w); m != Match::Yes) return m;
  return Match::Yes;
}

bool name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; }

bool starts_value(char c) {
  return c == '{' || c == '[' || c == '"' || c == '-' || c == 't' || c == 'f' || c == 'n' ||
         std::isdigit(static_cast<unsigned char>(c));
}

CallHeader mismatched() {
  CallHeader h;
  h.status = CallHeader::Status::Mismatch;
  return h;
}

// After the header's last token: the arguments value's first character, past whitespace.
CallHeader value_start(Reader& r, std::string name) {
  while (!r.at_end() && is_ws(r.s[r.pos])) ++r.pos;
  if (r.at_end()) return {};
  if (!starts_value(r.s[r.pos])) return mismatched();
  CallHeader h;
  h.status = CallHeader::Status::Complete;
  h.name = std::move(name);
  h.value_at = r.pos;
  return h;
}

}  // namespace

CallHeader scan_call_header(std::string_view s, const ToolRequest& t) {
  CallHeader h;
  const auto mismatch = [&h] {
    h.status = CallHeader::Status::Mismatch;
    return h;
  };
  // A step that did not complete shows the header is still partial, or is not one.
  const auto unfinished = [&](Match m) { return m == Match::No ? mismatch() : h; };
  if (s.size() > kMaxCallHeader) return mismatch();
  Reader r{s};
  if (Match m = words(r, {"{"}); m != Match::Yes) return unfinished(m);
  switch (r.word("\"type\"")) {  // Llama 3.x may open with "type": "function"
    case Match::Partial: return h;
    case Match::Yes:
      if (Match m = words(r, {":", "\"function\"", ","}); m != Match::Yes) return unfinished(m);
      break;
    case Match::No: break;
  }
  if (Match m = words(r, {"\"name\"", ":", "\""}); m != Match::Yes) return unfinished(m);
  std::string name;
  for (;; ++r.pos) {
    if (r.at_end()) return h;
    const char c = s[r.pos];
    if (c == '"') break;
    if (!name_char(c) || name.size() == 64) return mismatch();
    name += c;
  }
  ++r.pos;
  if (!find_tool(t, name)) return mismatch();
  if (Match m = words(r, {","}); m != Match::Yes) return unfinished(m);
  Match key = r.word("\"arguments\"");
  if (key == Match::No) key = r.word("\"parameters\"");
  if (key != Match::Yes) return unfinished(key);
  if (Match m = words(r, {":"}); m != Match::Yes) return unfinished(m);
  return value_start(r, std::move(name));
}

CallHeader scan_mistral_header(std::string_view s, const ToolRequest& t) {
  if (s.size() > kMaxCallHeader) return mismatched();
  Reader r{s};
  while (!r.at_end() && is_ws(s[r.pos])) ++r.pos;
  std::string name;
  for (; !r.at_end() && name_char(s[r.pos]); ++r.pos) {
    if (name.size() == 64) return mismatched();
    name += s[r.pos];
  }
  if (r.at_end()) return {};  // the name may go on
  if (name.empty() || !find_tool(t, name)) return mismatched();
  switch (r.word("[CALL_ID]")) {
    case Match::Partial: return {};
    case Match::Yes:
      while (!r.at_end() && (name_char(s[r.pos]) || is_ws(s[r.pos]))) ++r.pos;
      break;
    case Match::No: break;
  }
  if (Match m = r.word("[ARGS]"); m != Match::Yes) return m == Match::No ? mismatched() : CallHeader{};
  return value_start(r, std::move(name));
}

}  // namespace greta::server
