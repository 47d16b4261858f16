// The one Tokenizer implementation: BPE in two flavours, filled in by the GGUF and
// tokenizer.json loaders (load_gguf.cpp, load_hf.cpp).
//  - ByteLevel: text is split by a pre-tokenizer regex, each piece's UTF-8 bytes are spelled
//    with the GPT-2 byte alphabet (printable code points), then merged by rank.
//  - SentencePiece: spaces become U+2581 (with a prefix U+2581, see SpmPrefix), the text is one
//    word of characters; a character not in the vocabulary becomes its <0xNN> byte tokens
//    (or <unk>), then merged by rank.
// Input text that is not valid UTF-8 is first repaired (each invalid subsequence -> U+FFFD),
// which is what a Python caller of HF `tokenizers` gets from bytes.decode(errors="replace").
#pragma once
#include <array>
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/pretokenize.h"
#include "tokenizer/special.h"
#include "tokenizer/tokenizer.h"

namespace greta {

// GGUF tokenizer.ggml.token_type values.
enum class TokenType : uint8_t {
  Undefined = 0,
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6
};

enum class BpeKind { ByteLevel, SentencePiece };

// How a SentencePiece vocabulary marks the start of text.
enum class SpmPrefix {
  None,          // no prefix
  First,         // HF Metaspace(prepend_scheme="first"): prepend U+2581 to the fragment at the
                 // very start of the text unless it already starts with a space
  EveryFragment  // HF normalizer Prepend("\u2581"): prepend to every fragment between added tokens
};

class BpeTokenizer final : public Tokenizer {
 public:
  struct Config {
    BpeKind kind = BpeKind::ByteLevel;
    std::vector<std::string> pieces;  // vocabulary strings as stored
    std::vector<TokenType> types;     // same size as pieces
    std::vector<bool> special;        // token is "special" (skipped by decode(skip_special))
    PreTokenizer pre = PreTokenizer::GPT2;
    bool ignore_merges = false;  // a piece that is a whole vocab entry is not merged (Llama 3)
    SpmPrefix spm_prefix = SpmPrefix::First;
    bool byte_fallback = true;
    int32_t unk_id = -1;
  };
  // Merges are given as (left id, right id, merged id) in rank order (best first).
  struct MergeSpec {
    int32_t left, right, merged;
  };

  BpeTokenizer(Config cfg, const std::vector<MergeSpec>& merges);

  // Registers an added/control token to be matched in text (see SpecialMatcher).
  void add_special_text(const std::string& text, int32_t id, bool needs_parse_special) {
    specials_.add(text, id, needs_parse_special);
  }
  // Fills stop_ids from eos_id, `extra` and the EOT-like pieces the vocabulary has.
  void collect_stop_ids(const std::vector<int32_t>& extra);
  int32_t find_piece(std::string_view s) const {
    auto it = piece_to_id_.find(std::string(s));
    return it == piece_to_id_.end() ? -1 : it->second;
  }
  BpeKind kind() const { return cfg_.kind; }

  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const override;
  std::vector<int32_t> encode_marked(std::string_view text, bool add_bos,
                                     const std::vector<TextRange>& plain) const override;
  std::string token_bytes(int32_t id) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = true) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(cfg_.pieces.size()); }
  bool is_special(int32_t id) const override;
  std::string_view piece(int32_t id) const override;
  bool decode_strips_leading_space() const override {
    return cfg_.kind == BpeKind::SentencePiece && cfg_.spm_prefix != SpmPrefix::None;
  }

 private:
  std::vector<int32_t> encode_fragments(const std::string& text, bool add_bos,
                                        const std::vector<SpecialMatcher::Fragment>& fragments) const;
  void encode_byte_level(std::string_view text, std::vector<int32_t>& out) const;
  void encode_spm(std::string_view text, bool at_start, std::vector<int32_t>& out) const;

  Config cfg_;
  BpeMerges merges_;
  SpecialMatcher specials_;
  std::unordered_map<std::string, int32_t> piece_to_id_;
  std::array<int32_t, 256> byte_token_{};       // SPM: id of <0xNN>, or -1
  std::array<int32_t, 256> byte_char_token_{};  // byte-level: id of the 1-char piece of byte b
  std::array<uint32_t, 256> byte_to_cp_{};      // GPT-2 byte alphabet
  std::unordered_map<uint32_t, uint8_t> cp_to_byte_;
};

// The byte of a "<0xNN>" piece, or -1 if `p` is not one.
int parse_byte_piece(std::string_view p);

// The GPT-2 byte alphabet: byte b is spelled as code point bytes_to_unicode()[b].
std::array<uint32_t, 256> gpt2_byte_alphabet();

}  // namespace greta
