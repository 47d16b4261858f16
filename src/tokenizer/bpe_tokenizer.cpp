// Encoding and decoding for byte-level and SentencePiece-style BPE; see bpe_tokenizer.h.
#include "tokenizer/bpe_tokenizer.h"

#include <cstdio>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace greta {

namespace {
constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space

std::string byte_piece(int b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "<0x%02X>", b);
  return buf;
}
}  // namespace

int parse_byte_piece(std::string_view p) {
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  if (p.size() != 6 || !p.starts_with("<0x") || p[5] != '>') return -1;
  const int hi = hex(p[3]), lo = hex(p[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

std::array<uint32_t, 256> gpt2_byte_alphabet() {
  // Printable Latin-1 bytes spell themselves; the rest are moved to U+0100.. in byte order.
  std::array<uint32_t, 256> a{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    a[b] = printable ? b : next++;
  }
  return a;
}

BpeTokenizer::BpeTokenizer(Config cfg, const std::vector<MergeSpec>& merges) : cfg_(std::move(cfg)) {
  const size_t n = cfg_.pieces.size();
  if (cfg_.types.size() != n) cfg_.types.resize(n, TokenType::Normal);
  if (cfg_.special.size() != n) cfg_.special.resize(n, false);
  piece_to_id_.reserve(n);
  for (size_t i = 0; i < n; ++i) piece_to_id_.try_emplace(cfg_.pieces[i], static_cast<int32_t>(i));
  for (size_t r = 0; r < merges.size(); ++r)
    merges_.add(merges[r].left, merges[r].right, static_cast<uint32_t>(r), merges[r].merged);

  byte_to_cp_ = gpt2_byte_alphabet();
  for (int b = 0; b < 256; ++b) {
    cp_to_byte_[byte_to_cp_[b]] = static_cast<uint8_t>(b);
    std::string one;
    utf8_append(one, byte_to_cp_[b]);
    byte_char_token_[b] = find_piece(one);
    byte_token_[b] = find_piece(byte_piece(b));
  }
}

void BpeTokenizer::collect_stop_ids(const std::vector<int32_t>& extra) {
  stop_ids.clear();
  auto add = [&](int32_t id) {
    if (id < 0 || id >= vocab_size()) return;
    for (int32_t s : stop_ids)
      if (s == id) return;
    stop_ids.push_back(id);
  };
  add(eos_id);
  for (int32_t id : extra) add(id);
  // End-of-turn markers of common chat formats; only tokens that are special in this
  // vocabulary (a byte-level vocab may hold the same characters as ordinary text).
  for (const char* name : {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "</s>", "<|eom_id|>",
                           "<end_of_turn>", "<|end|>"}) {
    const int32_t id = find_piece(name);
    if (id >= 0 && (cfg_.special[id] || cfg_.types[id] == TokenType::Control)) add(id);
  }
}

bool BpeTokenizer::is_special(int32_t id) const { return id >= 0 && id < vocab_size() && cfg_.special[id]; }

std::string_view BpeTokenizer::piece(int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw Error("tokenizer: token id " + std::to_string(id) + " out of range [0, " + std::to_string(vocab_size()) +
                ")");
  return cfg_.pieces[id];
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view raw, bool add_bos, bool parse_special) const {
  const std::string text = utf8_sanitize(raw);
  return encode_fragments(text, add_bos, specials_.split(text, parse_special));
}

std::vector<int32_t> BpeTokenizer::encode_marked(std::string_view raw, bool add_bos,
                                                 const std::vector<TextRange>& plain) const {
  // Sanitized piece by piece, so that the ranges still mark the same characters afterwards.
  std::string text;
  std::vector<TextRange> ranges;
  size_t pos = 0;
  for (const TextRange& r : plain) {
    if (r.begin < pos || r.end < r.begin || r.end > raw.size())
      throw Error("tokenizer: plain range [" + std::to_string(r.begin) + ", " + std::to_string(r.end) +
                  ") is out of order or outside a text of " + std::to_string(raw.size()) + " bytes");
    text += utf8_sanitize(raw.substr(pos, r.begin - pos));
    const size_t begin = text.size();
    text += utf8_sanitize(raw.substr(r.begin, r.end - r.begin));
    ranges.push_back({begin, text.size()});
    pos = r.end;
  }
  text += utf8_sanitize(raw.substr(pos));
  return encode_fragments(text, add_bos, specials_.split(text, ranges));
}

std::vector<int32_t> BpeTokenizer::encode_fragments(const std::string& text, bool add_bos,
                                                    const std::vector<SpecialMatcher::Fragment>& fragments) const {
  std::vector<int32_t> out;
  if (add_bos && bos_id >= 0) out.push_back(bos_id);
  for (const SpecialMatcher::Fragment& f : fragments) {
    if (f.token >= 0) {
      out.push_back(f.token);
    } else if (cfg_.kind == BpeKind::ByteLevel) {
      encode_byte_level(f.text, out);
    } else {
      encode_spm(f.text, f.text.data() == text.data(), out);
    }
  }
  return out;
}

void BpeTokenizer::encode_byte_level(std::string_view text, std::vector<int32_t>& out) const {
  std::vector<size_t> offs;
  const std::vector<uint32_t> cps = utf8_decode(text, &offs);
  offs.push_back(text.size());
  std::vector<int32_t> ids;
  std::string spelled;
  for (const auto& [a, b] : pre_tokenize(cfg_.pre, cps)) {
    const std::string_view bytes = text.substr(offs[a], offs[b] - offs[a]);
    if (cfg_.ignore_merges) {
      spelled.clear();
      for (char ch : bytes) utf8_append(spelled, byte_to_cp_[static_cast<uint8_t>(ch)]);
      if (auto it = piece_to_id_.find(spelled); it != piece_to_id_.end()) {
        out.push_back(it->second);
        continue;
      }
    }
    ids.clear();
    for (char ch : bytes) {
      const int32_t id = byte_char_token_[static_cast<uint8_t>(ch)];
      if (id >= 0) ids.push_back(id);
      else if (cfg_.unk_id >= 0) ids.push_back(cfg_.unk_id);  // vocab lacks this byte
    }
    merges_.apply(ids);
    out.insert(out.end(), ids.begin(), ids.end());
  }
}

void BpeTokenizer::encode_spm(std::string_view text, bool at_start, std::vector<int32_t>& out) const {
  std::string s;
  s.reserve(text.size() + 8);
  for (char ch : text) {
    if (ch == ' ') s += kSpmSpace;
    else s += ch;
  }
  const bool prefix = cfg_.spm_prefix == SpmPrefix::EveryFragment ||
                      (cfg_.spm_prefix == SpmPrefix::First && at_start && !s.starts_with(kSpmSpace));
  if (prefix) s.insert(0, kSpmSpace);

  std::vector<int32_t> ids;
  ids.reserve(s.size());
  bool last_unk = false;
  std::string ch;
  for (size_t i = 0; i < s.size();) {
    size_t len = 1;
    const auto b0 = static_cast<uint8_t>(s[i]);
    if (b0 >= 0xF0) len = 4;
    else if (b0 >= 0xE0) len = 3;
    else if (b0 >= 0xC0) len = 2;
    ch.assign(s, i, len);  // s is valid UTF-8 (sanitized), so len bytes are one character
    i += len;
    if (auto it = piece_to_id_.find(ch); it != piece_to_id_.end()) {
      ids.push_back(it->second);
      last_unk = false;
      continue;
    }
    bool all_bytes = cfg_.byte_fallback;
    for (char c : ch) all_bytes = all_bytes && byte_token_[static_cast<uint8_t>(c)] >= 0;
    if (all_bytes) {
      for (char c : ch) ids.push_back(byte_token_[static_cast<uint8_t>(c)]);
      last_unk = false;
    } else if (cfg_.unk_id >= 0 && !last_unk) {
      ids.push_back(cfg_.unk_id);  // consecutive unknowns fuse into one <unk> (HF fuse_unk)
      last_unk = true;
    }
  }
  merges_.apply(ids);
  out.insert(out.end(), ids.begin(), ids.end());
}

std::string BpeTokenizer::token_bytes(int32_t id) const {
  const std::string_view p = piece(id);
  std::string out;
  if (cfg_.kind == BpeKind::SentencePiece) {
    if (cfg_.types[id] == TokenType::Byte) {
      if (int b = parse_byte_piece(p); b >= 0) return std::string(1, static_cast<char>(b));
    }
    for (size_t i = 0; i < p.size();) {
      if (p.substr(i, 3) == kSpmSpace) {
        out += ' ';
        i += 3;
      } else {
        out += p[i++];
      }
    }
    return out;
  }
  // Byte-level: a piece spelled in the byte alphabet decodes to its bytes; added tokens stored
  // as plain text (with characters outside the alphabet) decode to themselves.
  const std::vector<uint32_t> cps = utf8_decode(p);
  for (uint32_t cp : cps) {
    auto it = cp_to_byte_.find(cp);
    if (it == cp_to_byte_.end()) return std::string(p);
    out += static_cast<char>(it->second);
  }
  return out;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (skip_special && is_special(id)) continue;
    out += token_bytes(id);
  }
  if (decode_strips_leading_space() && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return utf8_sanitize(out);
}

}  // namespace greta
