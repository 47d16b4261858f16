// greta tokenize: text -> token ids (JSON array) or, with --decode, ids -> text.
//   greta tokenize -m MODEL "text"          ids of the text (BOS as the model wants it)
//   printf 'text' | greta tokenize          text from stdin, byte for byte (no newline trimmed)
//   greta tokenize --decode "[1, 2, 3]"     text of the ids (special tokens skipped)
//   greta tokenize --jsonl < lines.jsonl    one JSON string per input line -> one JSON array
//                                           per output line (with --decode: arrays -> strings)
// Invalid UTF-8 in the text is encoded as if each invalid subsequence were U+FFFD.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "formats/gguf.h"
#include "tokenizer/tokenizer.h"

namespace greta::cli {

namespace {

struct TokenizeOptions {
  std::string model;
  std::string text;
  bool have_text = false;
  bool decode = false;
  bool no_bos = false;
  bool special = false;
  bool jsonl = false;
  bool keep_special = false;
};

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model) {
  const std::string path = resolve_model_path(model);
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return Tokenizer::from_hf_dir(path);
  if (!std::filesystem::exists(path, ec))
    throw Error(path + ": no such file or directory (expected a GGUF file or a Hugging Face model directory)");
  GGUFFile f = GGUFFile::open(path);
  return Tokenizer::from_gguf(f);
}

std::vector<int32_t> parse_ids(const std::string& s, const Tokenizer& tok, const std::string& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(s);
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + ": expected a JSON array of token ids: " + e.what());
  }
  if (!j.is_array()) throw Error(where + ": expected a JSON array of token ids");
  std::vector<int32_t> ids;
  for (const auto& v : j) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= tok.vocab_size())
      throw Error(where + ": " + v.dump() + " is not a token id in [0, " + std::to_string(tok.vocab_size()) + ")");
    ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  return ids;
}

std::string ids_json(const std::vector<int32_t>& ids) {
  std::string s = "[";
  for (size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  return s + "]";
}

void tokenize(const TokenizeOptions& o) {
  auto tok = load_tokenizer(o.model);
  const bool add_bos = tok->add_bos && !o.no_bos;
  const bool skip_special = !o.keep_special;
  if (o.jsonl) {
    std::string line;
    for (size_t n = 1; std::getline(std::cin, line); ++n) {
      const std::string where = "stdin line " + std::to_string(n);
      if (o.decode) {
        std::printf("%s\n", nlohmann::json(tok->decode(parse_ids(line, *tok, where), skip_special)).dump().c_str());
        continue;
      }
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        throw Error(where + ": expected a JSON string: " + e.what());
      }
      if (!j.is_string()) throw Error(where + ": expected a JSON string");
      std::printf("%s\n", ids_json(tok->encode(j.get<std::string>(), add_bos, o.special)).c_str());
    }
    return;
  }
  std::string input = o.text;
  if (!o.have_text) input.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  if (o.decode) {
    const std::string text = tok->decode(parse_ids(input, *tok, o.have_text ? "argument" : "stdin"), skip_special);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::printf("\n");
  } else {
    std::printf("%s\n", ids_json(tok->encode(input, add_bos, o.special)).c_str());
  }
}

}  // namespace

void register_tokenize(CLI::App& app) {
  auto o = std::make_shared<TokenizeOptions>();
  CLI::App* sub = app.add_subcommand("tokenize", "text -> token ids as a JSON array (or ids -> text with --decode)");
  sub->add_option("-m,--model", o->model, "GGUF file or Hugging Face model directory (default model if omitted)");
  sub->add_option("text", o->text, "text to encode, or with --decode a JSON array of ids (default: stdin)")
      ->each([o](const std::string&) { o->have_text = true; });
  sub->add_flag("--decode", o->decode, "decode a JSON array of ids to text");
  sub->add_flag("--no-bos", o->no_bos, "do not add BOS even if the model asks for it");
  sub->add_flag("--special", o->special, "recognise special tokens (<|im_start|>, <s>, ...) written in the text");
  sub->add_flag("--keep-special", o->keep_special, "--decode: print special tokens instead of skipping them");
  sub->add_flag("--jsonl", o->jsonl, "batch mode: stdin has one JSON string (or id array with --decode) per line");
  sub->callback([o] { tokenize(*o); });
}

}  // namespace greta::cli
