// Tokenizer from GGUF metadata (tokenizer.ggml.*), as llama.cpp's convert_hf_to_gguf.py writes it.
//  model "gpt2"  -> byte-level BPE; tokenizer.ggml.pre picks the pre-tokenizer regex.
//  model "llama" -> SentencePiece-style BPE with byte fallback; merges come from
//                   tokenizer.ggml.merges when present, else are derived from the scores
//                   exactly as transformers' GGUF conversion does (generate_merges), so both
//                   give the same ids.
#include <algorithm>

#include "core/error.h"
#include "formats/gguf.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/unicode.h"

namespace greta {

namespace {

std::string where(const GGUFFile& f, std::string_view key) { return f.path() + ": " + std::string(key); }

std::vector<std::string> string_array(const GGUFFile& f, std::string_view key, bool required) {
  const GGUFArray* a = f.get_array(key);
  if (!a) {
    if (required) throw Error(where(f, key) + ": missing (expected an array of strings)");
    return {};
  }
  std::vector<std::string> out;
  out.reserve(a->items.size());
  for (size_t i = 0; i < a->items.size(); ++i) {
    const std::string* s = a->items[i].as_string();
    if (!s) throw Error(where(f, key) + "[" + std::to_string(i) + "]: expected a string");
    out.push_back(*s);
  }
  return out;
}

template <typename T, typename Get>
std::vector<T> number_array(const GGUFFile& f, std::string_view key, size_t n, Get get) {
  const GGUFArray* a = f.get_array(key);
  if (!a) return {};
  if (a->items.size() != n)
    throw Error(where(f, key) + ": has " + std::to_string(a->items.size()) + " entries, expected " + std::to_string(n) +
                " (one per token)");
  std::vector<T> out(n);
  for (size_t i = 0; i < n; ++i) {
    auto v = get(a->items[i]);
    if (!v) throw Error(where(f, key) + "[" + std::to_string(i) + "]: expected a number");
    out[i] = static_cast<T>(*v);
  }
  return out;
}

int32_t token_id(const GGUFFile& f, std::string_view key, size_t n) {
  auto v = f.get_int(key);
  if (!v) return -1;
  if (*v < 0 || static_cast<size_t>(*v) >= n) {
    // llama.cpp writes -1 / out-of-range ids for "none"; treat as absent.
    return -1;
  }
  return static_cast<int32_t>(*v);
}

// Merges "left right" strings -> ids.
std::vector<BpeTokenizer::MergeSpec> parse_merges(const GGUFFile& f, const std::vector<std::string>& merges,
                                                  const BpeTokenizer& vocab_only) {
  std::vector<BpeTokenizer::MergeSpec> out;
  out.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string& m = merges[i];
    const size_t sp = m.find(' ', 1);
    if (sp == std::string::npos)
      throw Error(where(f, "tokenizer.ggml.merges") + "[" + std::to_string(i) + "]: '" + m + "' is not 'left right'");
    const std::string l = m.substr(0, sp), r = m.substr(sp + 1);
    const int32_t li = vocab_only.find_piece(l), ri = vocab_only.find_piece(r), mi = vocab_only.find_piece(l + r);
    if (li < 0 || ri < 0 || mi < 0)
      throw Error(where(f, "tokenizer.ggml.merges") + "[" + std::to_string(i) + "]: '" + m +
                  "' uses a piece that is not in tokenizer.ggml.tokens");
    out.push_back({li, ri, mi});
  }
  return out;
}

// transformers.tokenization_utils_base.generate_merges(vocab, vocab_scores): every split of
// every piece into two pieces of the vocabulary is a merge; best score first, then the longer
// left part, then the longer right part, then vocabulary order.
std::vector<BpeTokenizer::MergeSpec> merges_from_scores(const std::vector<std::string>& pieces,
                                                        const std::vector<float>& scores,
                                                        const BpeTokenizer& vocab_only) {
  struct Cand {
    float score;
    size_t llen, rlen;  // in code points
    BpeTokenizer::MergeSpec m;
  };
  std::vector<Cand> cands;
  std::vector<size_t> offs;
  for (size_t t = 0; t < pieces.size(); ++t) {
    const std::string& p = pieces[t];
    if (vocab_only.find_piece(p) != static_cast<int32_t>(t)) continue;  // repeated piece
    const size_t n_cp = utf8_decode(p, &offs).size();
    std::vector<Cand> local;
    for (size_t c = 1; c < n_cp; ++c) {
      const int32_t li = vocab_only.find_piece(std::string_view(p).substr(0, offs[c]));
      const int32_t ri = vocab_only.find_piece(std::string_view(p).substr(offs[c]));
      if (li >= 0 && ri >= 0) local.push_back({scores[t], c, n_cp - c, {li, ri, static_cast<int32_t>(t)}});
    }
    std::sort(local.begin(), local.end(), [](const Cand& a, const Cand& b) {
      return a.m.left != b.m.left ? a.m.left < b.m.left : a.m.right < b.m.right;
    });
    cands.insert(cands.end(), local.begin(), local.end());
  }
  std::stable_sort(cands.begin(), cands.end(), [](const Cand& a, const Cand& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.llen != b.llen) return a.llen > b.llen;
    return a.rlen > b.rlen;
  });
  std::vector<BpeTokenizer::MergeSpec> out;
  out.reserve(cands.size());
  for (const Cand& c : cands) out.push_back(c.m);
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GGUFFile& f) {
  const std::optional<std::string> model = f.get_string("tokenizer.ggml.model");
  if (!model) throw Error(where(f, "tokenizer.ggml.model") + ": missing (expected \"gpt2\" or \"llama\")");
  BpeTokenizer::Config cfg;
  if (*model == "gpt2") cfg.kind = BpeKind::ByteLevel;
  else if (*model == "llama") cfg.kind = BpeKind::SentencePiece;
  else
    throw Error(where(f, "tokenizer.ggml.model") + ": unsupported tokenizer model '" + *model +
                "' (supported: gpt2 = byte-level BPE, llama = SentencePiece BPE)");

  cfg.pieces = string_array(f, "tokenizer.ggml.tokens", true);
  const size_t n = cfg.pieces.size();
  if (n == 0) throw Error(where(f, "tokenizer.ggml.tokens") + ": empty vocabulary");
  const auto opt_int = [](const GGUFValue& v) { return v.as_int(); };
  const auto opt_float = [](const GGUFValue& v) { return v.as_float(); };
  const std::vector<int> types = number_array<int>(f, "tokenizer.ggml.token_type", n, opt_int);
  const std::vector<float> scores = number_array<float>(f, "tokenizer.ggml.scores", n, opt_float);
  cfg.types.assign(n, TokenType::Normal);
  for (size_t i = 0; i < types.size(); ++i) {
    if (types[i] < 0 || types[i] > 6)
      throw Error(where(f, "tokenizer.ggml.token_type") + "[" + std::to_string(i) + "]: " + std::to_string(types[i]) +
                  " is not a token type (expected 0..6)");
    cfg.types[i] = static_cast<TokenType>(types[i]);
  }
  cfg.special.assign(n, false);
  for (size_t i = 0; i < n; ++i)
    cfg.special[i] = cfg.types[i] == TokenType::Control || cfg.types[i] == TokenType::Unknown;
  cfg.unk_id = token_id(f, "tokenizer.ggml.unknown_token_id", n);

  std::vector<std::string> merge_strings = string_array(f, "tokenizer.ggml.merges", false);
  if (cfg.kind == BpeKind::ByteLevel) {
    cfg.pre = pre_tokenizer_from_name(f.get_string("tokenizer.ggml.pre").value_or("default"));
    cfg.ignore_merges = cfg.pre == PreTokenizer::Llama3;  // as Llama 3's tokenizer.json
    cfg.unk_id = -1;  // byte-level vocabularies cover every byte; <unk> is never produced
    if (merge_strings.empty())
      throw Error(where(f, "tokenizer.ggml.merges") + ": missing (a gpt2 tokenizer needs merges)");
  } else {
    for (size_t i = 0; i < n; ++i)
      if (cfg.types[i] == TokenType::Byte && parse_byte_piece(cfg.pieces[i]) < 0)
        throw Error(where(f, "tokenizer.ggml.tokens") + "[" + std::to_string(i) + "]: byte token '" + cfg.pieces[i] +
                    "' is not of the form <0xNN>");
    cfg.spm_prefix = f.get_bool("tokenizer.ggml.add_space_prefix").value_or(true) ? SpmPrefix::First : SpmPrefix::None;
    if (merge_strings.empty() && scores.empty())
      throw Error(where(f, "tokenizer.ggml.scores") + ": missing (a llama tokenizer needs scores or merges)");
  }

  // Merges refer to pieces, so look-ups need the vocabulary first: build it, then the merges.
  BpeTokenizer vocab_only(cfg, {});
  std::vector<BpeTokenizer::MergeSpec> merges = !merge_strings.empty()
                                                    ? parse_merges(f, merge_strings, vocab_only)
                                                    : merges_from_scores(cfg.pieces, scores, vocab_only);
  auto tok = std::make_unique<BpeTokenizer>(std::move(cfg), merges);

  for (int32_t i = 0; i < tok->vocab_size(); ++i) {
    const TokenType t = static_cast<TokenType>(types.empty() ? 1 : types[i]);
    if (t == TokenType::Control || t == TokenType::Unknown) tok->add_special_text(tok->token_bytes(i), i, true);
    else if (t == TokenType::UserDefined) tok->add_special_text(tok->token_bytes(i), i, false);
  }
  tok->bos_id = token_id(f, "tokenizer.ggml.bos_token_id", n);
  tok->eos_id = token_id(f, "tokenizer.ggml.eos_token_id", n);
  tok->add_bos = f.get_bool("tokenizer.ggml.add_bos_token").value_or(*model == "llama") && tok->bos_id >= 0;
  tok->collect_stop_ids({token_id(f, "tokenizer.ggml.eot_token_id", n), token_id(f, "tokenizer.ggml.eom_token_id", n)});
  tok->chat_template = f.get_string("tokenizer.chat_template").value_or("");
  return tok;
}

}  // namespace greta
