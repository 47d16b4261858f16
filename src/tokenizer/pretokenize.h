// Pre-tokenizers of byte-level BPE vocabularies: the splitting regexes, written by hand.
// Each one is a faithful implementation of one regex as the reference engine (Oniguruma in
// Hugging Face `tokenizers`) runs it: leftmost alternative first, greedy, with backtracking
// only where the regex can backtrack (\s+(?!\S), \s*[\r\n]+). Text that no alternative matches
// is kept as its own piece, as `Split(..., behavior="isolated")` does.
//   gpt2   : 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   smollm : every \p{N} isolated (Digits(individual_digits)), then gpt2 on the rest
//   llama3 : (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
//            | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   qwen2  : as llama3 with \p{N} instead of \p{N}{1,3}
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace greta {

enum class PreTokenizer { GPT2, SmolLM, Llama3, Qwen2 };

// Maps a GGUF tokenizer.ggml.pre value to a pre-tokenizer; throws greta::Error listing the
// supported names for an unknown one.
PreTokenizer pre_tokenizer_from_name(std::string_view name);
std::string supported_pre_tokenizers();
// Maps a Split pre-tokenizer regex from tokenizer.json to a pre-tokenizer, or false if it is
// not one we implement.
bool pre_tokenizer_from_regex(std::string_view regex, PreTokenizer& out);

// Splits code points into pieces; returns [begin, end) code-point ranges covering `cps`.
std::vector<std::pair<size_t, size_t>> pre_tokenize(PreTokenizer type, const std::vector<uint32_t>& cps);

}  // namespace greta
