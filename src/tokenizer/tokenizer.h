// Text <-> token ids for Llama-family models.
// Two algorithms cover the family:
//  - byte-level BPE (GPT-2 style; Llama 3, Qwen2, SmolLM2): regex pre-tokenization, bytes mapped
//    to printable code points, merges by rank;
//  - SentencePiece-style BPE with byte fallback (Llama 2, TinyLlama, Mistral): spaces -> U+2581,
//    merges by piece score, unknown bytes as <0xNN> tokens.
// Special tokens (BOS/EOS/EOT, added tokens such as <|im_start|>) are matched in text only when
// the caller passes parse_special = true; otherwise they are ordinary text.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/text_range.h"

namespace greta {

class GGUFFile;

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // From GGUF metadata (tokenizer.ggml.*). Throws greta::Error if absent or inconsistent.
  static std::unique_ptr<Tokenizer> from_gguf(const GGUFFile& f);
  // From a Hugging Face tokenizer.json (+ optional tokenizer_config.json in the same dir
  // for add_bos/eos and chat template); `dir` is the model directory.
  static std::unique_ptr<Tokenizer> from_hf_dir(const std::string& dir);

  virtual std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special) const = 0;
  // As encode(text, add_bos, /*parse_special=*/true), except that no special token is taken
  // from the byte ranges `plain` (sorted, disjoint, inside text): there the text is tokenized as
  // with parse_special = false. The tokens of text without special-token strings in those ranges
  // are exactly encode()'s. Chat prompts mark message text so: a message cannot write markup.
  // Throws greta::Error for ranges that are unsorted, overlapping or outside the text.
  virtual std::vector<int32_t> encode_marked(std::string_view text, bool add_bos,
                                             const std::vector<TextRange>& plain) const = 0;
  // Raw bytes of one token (byte tokens decode to their byte; may be part of a UTF-8 char).
  virtual std::string token_bytes(int32_t id) const = 0;
  // Whole-sequence decode; special/control tokens are skipped when skip_special.
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = true) const = 0;

  virtual int32_t vocab_size() const = 0;
  virtual bool is_special(int32_t id) const = 0;         // control / added special token
  virtual std::string_view piece(int32_t id) const = 0;  // vocabulary string as stored
  // SentencePiece vocabularies drop the space their prefix U+2581 decodes to at the start of
  // the text (HF decoder Strip(" ", 1, 0), llama.cpp likewise); StreamDecoder needs to know.
  virtual bool decode_strips_leading_space() const { return false; }

  int32_t bos_id = -1;
  int32_t eos_id = -1;
  std::vector<int32_t> stop_ids;  // EOS, EOT, <|im_end|>, <|eot_id|>, ... (generation stops)
  bool add_bos = false;           // model expects BOS at the start of a prompt
  std::string chat_template;      // Jinja source from the model, may be empty
};

// Streams decoded text: feed tokens one at a time, get back only complete UTF-8 characters
// (never half a character); flush() returns what remains (invalid bytes as U+FFFD).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& t, bool skip_special = true) : tok_(t), skip_special_(skip_special) {}
  std::string feed(int32_t id);
  std::string flush();

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::string pending_;
  bool first_ = true;
};

}  // namespace greta
