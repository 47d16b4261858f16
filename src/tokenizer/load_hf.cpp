// Tokenizer from a Hugging Face model directory: tokenizer.json (+ tokenizer_config.json).
// Supported: model.type "BPE" in the two shapes Llama-family models ship:
//  - byte-level: pre_tokenizer ByteLevel(use_regex) [GPT-2 regex], Sequence[Digits(individual),
//    ByteLevel] [SmolLM], or Sequence[Split(regex), ByteLevel(use_regex=false)] with the Llama 3
//    or Qwen2 regex;
//  - SentencePiece-style: pre_tokenizer Metaspace(prepend_scheme first/always), or normalizer
//    Sequence[Prepend("\u2581"), Replace(" ", "\u2581")]; byte_fallback from the model.
// Anything else is refused with a message naming what was found.
#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "tokenizer/bpe_tokenizer.h"

namespace greta {

namespace {

using json = nlohmann::json;

json read_json(const std::string& path, bool required) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (required) throw Error(path + ": cannot open (expected a Hugging Face tokenizer.json)");
    return json();
  }
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {
    throw Error(path + ": invalid JSON: " + e.what());
  }
}

// Collects the pre-tokenizers / normalizers of a (possibly Sequence) component, flattened.
void flatten(const json& j, const char* list_key, std::vector<const json*>& out) {
  if (!j.is_object()) return;
  if (j.value("type", "") == "Sequence" && j.contains(list_key)) {
    for (const json& e : j[list_key]) flatten(e, list_key, out);
  } else {
    out.push_back(&j);
  }
}

std::string token_content(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return {};
}

struct Shape {
  BpeKind kind;
  PreTokenizer pre = PreTokenizer::GPT2;
  SpmPrefix prefix = SpmPrefix::None;
};

Shape detect_shape(const std::string& path, const json& root) {
  // Named copies: flatten() keeps pointers into them.
  const json pre_tokenizer = root.value("pre_tokenizer", json()), normalizer = root.value("normalizer", json());
  std::vector<const json*> pres, norms;
  flatten(pre_tokenizer, "pretokenizers", pres);
  flatten(normalizer, "normalizers", norms);
  std::string found;
  bool byte_level = false, byte_level_regex = false, digits = false, split = false;
  PreTokenizer split_pre = PreTokenizer::GPT2;
  for (const json* p : pres) {
    const std::string type = p->value("type", "");
    found += (found.empty() ? "" : ", ") + type;
    if (type == "ByteLevel") {
      byte_level = true;
      byte_level_regex = p->value("use_regex", true);
    } else if (type == "Digits" && p->value("individual_digits", false)) {
      digits = true;
    } else if (type == "Split") {
      const std::string re = p->contains("pattern") ? (*p)["pattern"].value("Regex", "") : "";
      if (!pre_tokenizer_from_regex(re, split_pre))
        throw Error(path + ": pre_tokenizer Split regex is not one we implement (GPT-2, Llama 3, Qwen2): " + re);
      split = true;
    } else if (type == "Metaspace") {
      const std::string scheme = p->value("prepend_scheme", p->value("add_prefix_space", true) ? "always" : "never");
      return {BpeKind::SentencePiece, PreTokenizer::GPT2,
              scheme == "first"    ? SpmPrefix::First
              : scheme == "always" ? SpmPrefix::EveryFragment
                                   : SpmPrefix::None};
    }
  }
  if (byte_level) {
    if (split && !byte_level_regex) return {BpeKind::ByteLevel, split_pre};
    if (!split && byte_level_regex) return {BpeKind::ByteLevel, digits ? PreTokenizer::SmolLM : PreTokenizer::GPT2};
    throw Error(path + ": unsupported byte-level pre_tokenizer combination (" + found + ")");
  }
  bool replace_space = false, prepend = false;
  for (const json* n : norms) {
    const std::string type = n->value("type", "");
    if (type == "Replace" && n->contains("pattern") && (*n)["pattern"].value("String", "") == " " &&
        n->value("content", "") == "\u2581")
      replace_space = true;
    else if (type == "Prepend" && n->value("prepend", "") == "\u2581") prepend = true;
  }
  if (replace_space && pres.empty())
    return {BpeKind::SentencePiece, PreTokenizer::GPT2, prepend ? SpmPrefix::EveryFragment : SpmPrefix::None};
  throw Error(path + ": unsupported tokenizer shape (pre_tokenizer: [" + found +
              "]); expected a ByteLevel or SentencePiece-style (Metaspace / Replace \" \"->\"\u2581\") BPE");
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_hf_dir(const std::string& dir) {
  const std::string path = dir + "/tokenizer.json";
  const json root = read_json(path, true);
  const json& model = root.value("model", json());
  if (!model.is_object() || model.value("type", "") != "BPE")
    throw Error(path + ": model.type is '" + (model.is_object() ? model.value("type", "") : "") +
                "', only BPE is supported");
  const Shape shape = detect_shape(path, root);

  BpeTokenizer::Config cfg;
  cfg.kind = shape.kind;
  cfg.pre = shape.pre;
  cfg.spm_prefix = shape.prefix;
  cfg.byte_fallback = model.value("byte_fallback", false);
  cfg.ignore_merges = model.value("ignore_merges", false);

  // Vocabulary: model.vocab plus added tokens (which may have ids past it).
  const json& vocab = model.value("vocab", json::object());
  if (!vocab.is_object() || vocab.empty()) throw Error(path + ": model.vocab missing or empty");
  const json& added = root.value("added_tokens", json::array());
  size_t n = 0;
  for (const auto& [piece, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 24))
      throw Error(path + ": model.vocab['" + piece + "'] is not a valid token id");
    n = std::max(n, static_cast<size_t>(id.get<int64_t>()) + 1);
  }
  for (const json& a : added) {
    const int64_t id = a.value("id", int64_t{-1});
    if (id < 0 || id > (1 << 24)) throw Error(path + ": added_tokens entry with invalid id");
    n = std::max(n, static_cast<size_t>(id) + 1);
  }
  cfg.pieces.assign(n, "");
  cfg.types.assign(n, TokenType::Unused);  // ids no entry names stay unused
  cfg.special.assign(n, false);
  for (const auto& [piece, id] : vocab.items()) {
    cfg.pieces[id.get<size_t>()] = piece;
    const bool byte = cfg.kind == BpeKind::SentencePiece && parse_byte_piece(piece) >= 0;
    cfg.types[id.get<size_t>()] = byte ? TokenType::Byte : TokenType::Normal;
  }
  for (const json& a : added) {
    const size_t id = a["id"].get<size_t>();
    cfg.pieces[id] = a.value("content", "");
    cfg.special[id] = a.value("special", false);
    cfg.types[id] = cfg.special[id] ? TokenType::Control : TokenType::UserDefined;
  }
  const std::string unk = model.value("unk_token", json()).is_string() ? model["unk_token"].get<std::string>() : "";

  BpeTokenizer vocab_only(cfg, {});
  if (!unk.empty()) cfg.unk_id = vocab_only.find_piece(unk);
  std::vector<BpeTokenizer::MergeSpec> merges;
  const json& mj = model.value("merges", json::array());
  merges.reserve(mj.size());
  for (size_t i = 0; i < mj.size(); ++i) {
    std::string l, r;
    if (mj[i].is_string()) {  // "left right"
      const std::string m = mj[i].get<std::string>();
      const size_t sp = m.find(' ', 1);
      if (sp != std::string::npos) l = m.substr(0, sp), r = m.substr(sp + 1);
    } else if (mj[i].is_array() && mj[i].size() == 2 && mj[i][0].is_string() && mj[i][1].is_string()) {
      l = mj[i][0].get<std::string>(), r = mj[i][1].get<std::string>();
    }
    const int32_t li = vocab_only.find_piece(l), ri = vocab_only.find_piece(r), mi = vocab_only.find_piece(l + r);
    if (l.empty() || li < 0 || ri < 0 || mi < 0)
      throw Error(path + ": model.merges[" + std::to_string(i) +
                  "] is not a pair of vocabulary pieces whose "
                  "concatenation is in the vocabulary");
    merges.push_back({li, ri, mi});
  }
  auto tok = std::make_unique<BpeTokenizer>(std::move(cfg), merges);
  for (const json& a : added)
    tok->add_special_text(a.value("content", ""), a["id"].get<int32_t>(), a.value("special", false));

  // BOS/EOS and add_bos: tokenizer_config.json when present, else the post-processor template.
  const json config = read_json(dir + "/tokenizer_config.json", false);
  const json& post = root.value("post_processor", json());
  if (post.is_object() && post.value("type", "") == "TemplateProcessing" && post.contains("single") &&
      !post["single"].empty() && post["single"][0].contains("SpecialToken")) {
    tok->bos_id = tok->find_piece(post["single"][0]["SpecialToken"].value("id", ""));
    tok->add_bos = tok->bos_id >= 0;
  }
  if (config.is_object()) {
    if (config.contains("bos_token")) {
      const int32_t id = tok->find_piece(token_content(config["bos_token"]));
      if (id >= 0) tok->bos_id = id;
    }
    if (config.contains("eos_token")) tok->eos_id = tok->find_piece(token_content(config["eos_token"]));
    if (config.contains("add_bos_token") && config["add_bos_token"].is_boolean())
      tok->add_bos = config["add_bos_token"].get<bool>() && tok->bos_id >= 0;
    const json& tmpl = config.value("chat_template", json());
    if (tmpl.is_string()) {
      tok->chat_template = tmpl.get<std::string>();
    } else if (tmpl.is_array()) {  // [{name, template}, ...]: the default one
      for (const json& t : tmpl)
        if (t.value("name", "") == "default") tok->chat_template = t.value("template", "");
    }
  }
  // transformers saves a template as chat_template.jinja beside tokenizer_config.json (the only
  // place newer checkpoints keep it), and loads that file in preference to the config's entry.
  if (std::ifstream jinja(dir + "/chat_template.jinja", std::ios::binary); jinja) {
    std::ostringstream text;
    text << jinja.rdbuf();
    tok->chat_template = text.str();
  }
  tok->collect_stop_ids({});
  return tok;
}

}  // namespace greta
