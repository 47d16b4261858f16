// Python str operations on UTF-8 text, by code point (len, slicing, strip, split, case
// mapping, ...), as chat templates call them on message content. Case mapping covers ASCII
// only: upper()/lower()/title() leave other letters unchanged (Python would map them; the
// templates apply these to roles, not content).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace greta::jinja {

std::vector<uint32_t> py_codepoints(const std::string& s);
std::string py_from_codepoints(const std::vector<uint32_t>& cps, size_t begin, size_t end);
size_t py_len(const std::string& s);

// strip/lstrip/rstrip: whitespace when chars is nullopt, else any code point of *chars.
std::string py_strip(const std::string& s, const std::optional<std::string>& chars, bool left, bool right);
// split/rsplit: sep nullopt splits on whitespace runs (empty pieces dropped); maxsplit < 0 = all.
std::vector<std::string> py_split(const std::string& s, const std::optional<std::string>& sep, int64_t maxsplit);
std::vector<std::string> py_rsplit(const std::string& s, const std::optional<std::string>& sep, int64_t maxsplit);
std::vector<std::string> py_splitlines(const std::string& s);
std::string py_replace(const std::string& s, const std::string& old, const std::string& repl, int64_t count);
int64_t py_find(const std::string& s, const std::string& sub, bool reverse);  // code point index or -1
int64_t py_count(const std::string& s, const std::string& sub);

std::string py_upper(const std::string& s);
std::string py_lower(const std::string& s);
std::string py_capitalize(const std::string& s);
std::string py_str_title(const std::string& s);        // str.title()
std::string jinja_title_filter(const std::string& s);  // jinja2's |title (splits on [-\s({\[<]+)

// s[start:stop:step] by code point, Python index rules (negative, clamped; step != 0).
std::string py_slice_str(const std::string& s, std::optional<int64_t> start, std::optional<int64_t> stop, int64_t step);
// The index list that slicing a sequence of length n selects.
std::vector<int64_t> py_slice_indices(int64_t n, std::optional<int64_t> start, std::optional<int64_t> stop,
                                      int64_t step);

}  // namespace greta::jinja
