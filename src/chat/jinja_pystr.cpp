#include "chat/jinja_pystr.h"

#include <algorithm>

#include "chat/jinja_lexer.h"
#include "chat/jinja_limits.h"
#include "chat/jinja_utf8.h"
#include "core/error.h"

namespace greta::jinja {

std::vector<uint32_t> py_codepoints(const std::string& s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t n;
    out.push_back(utf8_decode(s, i, &n));
    i += n;
  }
  return out;
}

std::string py_from_codepoints(const std::vector<uint32_t>& cps, size_t begin, size_t end) {
  std::string out;
  for (size_t k = begin; k < end && k < cps.size(); ++k) utf8_append(out, cps[k]);
  return out;
}

size_t py_len(const std::string& s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size();) {
    size_t len;
    utf8_decode(s, i, &len);
    i += len;
    ++n;
  }
  return n;
}

std::string py_strip(const std::string& s, const std::optional<std::string>& chars, bool left, bool right) {
  if (chars) charge_search(s.size(), chars->size());
  auto cps = py_codepoints(s);
  std::vector<uint32_t> set;
  if (chars) set = py_codepoints(*chars);
  auto strip_it = [&](uint32_t c) { return chars ? std::find(set.begin(), set.end(), c) != set.end() : py_isspace(c); };
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && strip_it(cps[b])) ++b;
  if (right)
    while (e > b && strip_it(cps[e - 1])) --e;
  return py_from_codepoints(cps, b, e);
}

std::vector<std::string> py_split(const std::string& s, const std::optional<std::string>& sep, int64_t maxsplit) {
  if (sep) charge_search(s.size(), sep->size());
  std::vector<std::string> out;
  if (sep) {
    if (sep->empty()) throw Error("ValueError: empty separator");
    size_t pos = 0;
    while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
      size_t f = s.find(*sep, pos);
      if (f == std::string::npos) break;
      out.push_back(s.substr(pos, f - pos));
      pos = f + sep->size();
    }
    out.push_back(s.substr(pos));
    return out;
  }
  auto cps = py_codepoints(s);
  size_t i = 0, n = cps.size();
  while (true) {
    while (i < n && py_isspace(cps[i])) ++i;
    if (i >= n) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
      size_t e = n;
      while (e > i && py_isspace(cps[e - 1])) --e;
      out.push_back(py_from_codepoints(cps, i, e));
      break;
    }
    size_t j = i;
    while (j < n && !py_isspace(cps[j])) ++j;
    out.push_back(py_from_codepoints(cps, i, j));
    i = j;
  }
  return out;
}

std::vector<std::string> py_rsplit(const std::string& s, const std::optional<std::string>& sep, int64_t maxsplit) {
  if (sep) charge_search(s.size(), sep->size());
  if (maxsplit < 0) return py_split(s, sep, maxsplit);
  std::vector<std::string> out;
  if (sep) {
    if (sep->empty()) throw Error("ValueError: empty separator");
    size_t end = s.size();
    while (static_cast<int64_t>(out.size()) < maxsplit) {
      if (end < sep->size()) break;
      size_t f = s.rfind(*sep, end - sep->size());
      if (f == std::string::npos) break;
      out.push_back(s.substr(f + sep->size(), end - f - sep->size()));
      end = f;
    }
    out.push_back(s.substr(0, end));
  } else {
    auto cps = py_codepoints(s);
    int64_t j = static_cast<int64_t>(cps.size());
    while (true) {
      while (j > 0 && py_isspace(cps[j - 1])) --j;
      if (j <= 0) break;
      if (static_cast<int64_t>(out.size()) == maxsplit) {
        size_t b = 0;
        while (b < static_cast<size_t>(j) && py_isspace(cps[b])) ++b;
        out.push_back(py_from_codepoints(cps, b, j));
        break;
      }
      int64_t i = j;
      while (i > 0 && !py_isspace(cps[i - 1])) --i;
      out.push_back(py_from_codepoints(cps, i, j));
      j = i;
    }
  }
  std::reverse(out.begin(), out.end());
  return out;
}

std::vector<std::string> py_splitlines(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0, i = 0;
  while (i < s.size()) {
    if (s[i] == '\n' || s[i] == '\r') {
      out.push_back(s.substr(start, i - start));
      if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
      start = ++i;
    } else {
      ++i;
    }
  }
  if (start < s.size()) out.push_back(s.substr(start));
  return out;
}

std::string py_replace(const std::string& s, const std::string& old, const std::string& repl, int64_t count) {
  charge_search(s.size(), old.size());
  std::string out;
  int64_t done = 0;
  if (old.empty()) {  // Python inserts repl before every code point and at the end
    auto cps = py_codepoints(s);
    for (size_t k = 0; k <= cps.size(); ++k) {
      if (count < 0 || done < count) {
        out += repl;
        check_string_size(out.size());
        ++done;
      }
      if (k < cps.size()) utf8_append(out, cps[k]);
    }
    return out;
  }
  size_t pos = 0;
  while (count < 0 || done < count) {
    size_t f = s.find(old, pos);
    if (f == std::string::npos) break;
    out.append(s, pos, f - pos);
    out += repl;
    check_string_size(out.size());
    pos = f + old.size();
    ++done;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

int64_t py_find(const std::string& s, const std::string& sub, bool reverse) {
  charge_search(s.size(), sub.size());
  size_t f = reverse ? s.rfind(sub) : s.find(sub);
  if (f == std::string::npos) return -1;
  return static_cast<int64_t>(py_len(s.substr(0, f)));
}

int64_t py_count(const std::string& s, const std::string& sub) {
  charge_search(s.size(), sub.size());
  if (sub.empty()) return static_cast<int64_t>(py_len(s)) + 1;
  int64_t n = 0;
  for (size_t f = s.find(sub); f != std::string::npos; f = s.find(sub, f + sub.size())) ++n;
  return n;
}

static uint32_t up(uint32_t c) { return (c >= 'a' && c <= 'z') ? c - 32 : c; }
static uint32_t low(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }
static bool is_alpha(uint32_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static std::string map_cps(const std::string& s, uint32_t (*f)(uint32_t)) {
  std::string out;
  for (uint32_t c : py_codepoints(s)) utf8_append(out, f(c));
  return out;
}

std::string py_upper(const std::string& s) { return map_cps(s, up); }
std::string py_lower(const std::string& s) { return map_cps(s, low); }

std::string py_capitalize(const std::string& s) {
  auto cps = py_codepoints(s);
  std::string out;
  for (size_t k = 0; k < cps.size(); ++k) utf8_append(out, k == 0 ? up(cps[k]) : low(cps[k]));
  return out;
}

std::string py_str_title(const std::string& s) {
  std::string out;
  bool prev_cased = false;
  for (uint32_t c : py_codepoints(s)) {
    utf8_append(out, prev_cased ? low(c) : up(c));
    prev_cased = is_alpha(c);
  }
  return out;
}

std::string jinja_title_filter(const std::string& s) {
  // Words start after runs of [-\s({\[<]; each word is capitalize()d.
  auto cps = py_codepoints(s);
  std::string out;
  bool word_start = true;
  for (uint32_t c : cps) {
    bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || py_isspace(c);
    if (sep) {
      utf8_append(out, c);
      word_start = true;
    } else {
      utf8_append(out, word_start ? up(c) : low(c));
      word_start = false;
    }
  }
  return out;
}

std::vector<int64_t> py_slice_indices(int64_t n, std::optional<int64_t> start, std::optional<int64_t> stop,
                                      int64_t step) {
  if (step == 0) throw Error("ValueError: slice step cannot be zero");
  auto clamp = [&](std::optional<int64_t> v, int64_t dflt, int64_t lo, int64_t hi) {
    if (!v) return dflt;
    int64_t x = *v < 0 ? *v + n : *v;
    return std::clamp(x, lo, hi);
  };
  std::vector<int64_t> idx;
  if (step > 0) {
    int64_t b = clamp(start, 0, 0, n), e = clamp(stop, n, 0, n);
    for (int64_t k = b; k < e; k += step) idx.push_back(k);
  } else {
    int64_t b = clamp(start, n - 1, -1, n - 1), e = clamp(stop, -1, -1, n - 1);
    if (stop && *stop < 0 && *stop + n < 0) e = -1;
    for (int64_t k = b; k > e; k += step) idx.push_back(k);
  }
  return idx;
}

std::string py_slice_str(const std::string& s, std::optional<int64_t> start, std::optional<int64_t> stop,
                         int64_t step) {
  auto cps = py_codepoints(s);
  std::string out;
  for (int64_t k : py_slice_indices(static_cast<int64_t>(cps.size()), start, stop, step)) utf8_append(out, cps[k]);
  return out;
}

}  // namespace greta::jinja
