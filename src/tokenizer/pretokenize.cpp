// Hand-written pre-tokenizer regexes; see pretokenize.h for the exact patterns.
#include "tokenizer/pretokenize.h"

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace greta {

namespace {

using Ranges = std::vector<std::pair<size_t, size_t>>;

constexpr const char* kGPT2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct Name {
  const char* name;
  PreTokenizer type;
};
// GGUF tokenizer.ggml.pre values (llama.cpp convert_hf_to_gguf.py names) we implement.
constexpr Name kNames[] = {
    {"default", PreTokenizer::GPT2},           {"gpt2", PreTokenizer::GPT2},        {"gpt-2", PreTokenizer::GPT2},
    {"smollm", PreTokenizer::SmolLM},          {"llama-bpe", PreTokenizer::Llama3}, {"llama3", PreTokenizer::Llama3},
    {"llama-v3", PreTokenizer::Llama3},        {"smaug-bpe", PreTokenizer::Llama3}, {"qwen2", PreTokenizer::Qwen2},
    {"deepseek-r1-qwen", PreTokenizer::Qwen2},
};

bool is_nl(uint32_t c) { return c == '\r' || c == '\n'; }
bool is_lnw(uint32_t c) { return is_letter(c) || is_number(c) || is_whitespace(c); }

// Length of a contraction ('s 't 're 've 'm 'll 'd) at i, or 0. `fold`: case-insensitive as
// Oniguruma's (?i:...), which also folds U+017F (long s) to 's'.
size_t contraction(const std::vector<uint32_t>& c, size_t i, bool fold) {
  const size_t n = c.size();
  if (c[i] != '\'' || i + 1 >= n) return 0;
  auto eq = [&](size_t k, char want) {
    if (k >= n) return false;
    uint32_t ch = c[k];
    if (fold) {
      if (ch >= 'A' && ch <= 'Z') ch += 'a' - 'A';
      if (ch == 0x17F) ch = 's';
    }
    return ch == static_cast<uint32_t>(want);
  };
  if (eq(i + 1, 's') || eq(i + 1, 't') || eq(i + 1, 'm') || eq(i + 1, 'd')) return 2;
  if ((eq(i + 1, 'r') && eq(i + 2, 'e')) || (eq(i + 1, 'v') && eq(i + 2, 'e')) || (eq(i + 1, 'l') && eq(i + 2, 'l')))
    return 3;
  return 0;
}

// \s+(?!\S)|\s+ at a whitespace character i: the run minus its last character when a
// non-space follows (that character starts the next piece), the whole run otherwise.
size_t whitespace_tail(const std::vector<uint32_t>& c, size_t i, size_t end) {
  size_t k = i;
  while (k < end && is_whitespace(c[k])) ++k;
  if (k < end && k - i > 1) return k - i - 1;
  return k - i;
}

// GPT-2 regex over c[begin, end).
void split_gpt2(const std::vector<uint32_t>& c, size_t begin, size_t end, Ranges& out) {
  for (size_t i = begin; i < end;) {
    size_t len = 0;
    if (size_t m = contraction(c, i, false); m > 0 && i + m <= end) {
      len = m;
    } else {
      // ` ?X+` for X in \p{L}, \p{N}, [^\s\p{L}\p{N}]: the optional space, then the class of
      // the next character decides which alternative matches.
      const size_t j = (c[i] == ' ' && i + 1 < end) ? i + 1 : i;
      const uint32_t x = c[j];
      size_t k = j;
      if (is_letter(x)) {
        while (k < end && is_letter(c[k])) ++k;
      } else if (is_number(x)) {
        while (k < end && is_number(c[k])) ++k;
      } else if (!is_whitespace(x)) {
        while (k < end && !is_lnw(c[k])) ++k;
      }
      len = k > j ? k - i : whitespace_tail(c, i, end);
    }
    out.emplace_back(i, i + len);
    i += len;
  }
}

// Llama 3 / Qwen2 regex over the whole input; `max_digits` is 3 (Llama 3) or 1 (Qwen2).
void split_llama3(const std::vector<uint32_t>& c, size_t max_digits, Ranges& out) {
  const size_t n = c.size();
  for (size_t i = 0; i < n;) {
    size_t len = 0;
    const uint32_t x = c[i];
    if (size_t m = contraction(c, i, true); m > 0) {
      len = m;
    } else if (is_letter(x) || (!is_nl(x) && !is_number(x) && i + 1 < n && is_letter(c[i + 1]))) {
      size_t k = i + 1;  // [^\r\n\p{L}\p{N}]?\p{L}+
      while (k < n && is_letter(c[k])) ++k;
      len = k - i;
    } else if (is_number(x)) {
      size_t k = i;
      while (k < n && k - i < max_digits && is_number(c[k])) ++k;
      len = k - i;
    } else {
      const size_t j = (x == ' ' && i + 1 < n) ? i + 1 : i;
      if (!is_lnw(c[j])) {  //  ?[^\s\p{L}\p{N}]+[\r\n]*
        size_t k = j;
        while (k < n && !is_lnw(c[k])) ++k;
        while (k < n && is_nl(c[k])) ++k;
        len = k - i;
      } else if (is_whitespace(x)) {
        // \s*[\r\n]+ : through the last newline of the whitespace run, if it has one.
        size_t k = i, last_nl = n;
        while (k < n && is_whitespace(c[k])) {
          if (is_nl(c[k])) last_nl = k;
          ++k;
        }
        len = last_nl != n ? last_nl + 1 - i : whitespace_tail(c, i, n);
      } else {
        len = 1;  // no alternative matches (cannot happen: every char is L, N, \s or other)
      }
    }
    out.emplace_back(i, i + len);
    i += len;
  }
}

}  // namespace

std::string supported_pre_tokenizers() {
  std::string s;
  for (const Name& n : kNames) {
    if (!s.empty()) s += ", ";
    s += n.name;
  }
  return s;
}

PreTokenizer pre_tokenizer_from_name(std::string_view name) {
  for (const Name& n : kNames)
    if (name == n.name) return n.type;
  throw Error("tokenizer: unsupported pre-tokenizer type '" + std::string(name) +
              "' (tokenizer.ggml.pre); supported: " + supported_pre_tokenizers());
}

bool pre_tokenizer_from_regex(std::string_view regex, PreTokenizer& out) {
  if (regex == kGPT2Regex) out = PreTokenizer::GPT2;
  else if (regex == kLlama3Regex) out = PreTokenizer::Llama3;
  else if (regex == kQwen2Regex) out = PreTokenizer::Qwen2;
  else return false;
  return true;
}

std::vector<std::pair<size_t, size_t>> pre_tokenize(PreTokenizer type, const std::vector<uint32_t>& cps) {
  Ranges out;
  out.reserve(cps.size() / 3 + 1);
  switch (type) {
    case PreTokenizer::GPT2: split_gpt2(cps, 0, cps.size(), out); break;
    case PreTokenizer::SmolLM: {
      size_t start = 0;
      for (size_t i = 0; i < cps.size(); ++i) {
        if (!is_number(cps[i])) continue;
        split_gpt2(cps, start, i, out);
        out.emplace_back(i, i + 1);
        start = i + 1;
      }
      split_gpt2(cps, start, cps.size(), out);
      break;
    }
    case PreTokenizer::Llama3: split_llama3(cps, 3, out); break;
    case PreTokenizer::Qwen2: split_llama3(cps, 1, out); break;
  }
  return out;
}

}  // namespace greta
