// libFuzzer target for the grammar engine (src/grammar/): the first input byte picks what the rest
// is -- GBNF source, a JSON Schema, or a regex -- as a request's `grammar`, `response_format` or
// `regex` field would carry it. Every input must either be refused with greta::Error (a syntax
// error, an unsupported keyword, a limit) or compile; a compiled grammar then runs a matcher
// over the input's own bytes and computes token masks over a small vocabulary. Anything else --
// a crash, a sanitizer report, another exception type, a hang or a huge allocation -- is a bug.
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "grammar/gbnf_parser.h"
#include "grammar/json_schema_to_gbnf.h"
#include "grammar/regex_to_gbnf.h"
#include "grammar/token_mask.h"

namespace {

volatile size_t g_sink;  // keeps the masks from being optimized away

// Single bytes, a few multi-byte and partial UTF-8 tokens, JSON punctuation, and an EOS.
std::shared_ptr<const greta::grammar::TokenVocabulary> vocabulary() {
  std::vector<std::string> tokens;
  for (int b = 1; b < 128; ++b) tokens.push_back(std::string(1, char(b)));
  for (const char* t : {"\"", "\":", "{\"", "\"}", "true", "false", "null", "\xc3", "\xa9", "\xc3\xa9", "\xe2\x82\xac",
                        "  ", "\n", "12", "-3.5e", "\\u00", "abc", "</s>"})
    tokens.emplace_back(t);
  tokens.emplace_back();  // a control token: no bytes
  return std::make_shared<const greta::grammar::TokenVocabulary>(std::move(tokens),
                                                                 std::vector<int32_t>{int32_t(127 + 17)});
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const auto vocab = vocabulary();
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    std::string gbnf;
    switch (data[0] % 3) {
      case 0: gbnf = std::string(text); break;
      case 1: gbnf = greta::grammar::json_schema_to_gbnf(nlohmann::ordered_json::parse(text)); break;
      default: gbnf = greta::grammar::regex_to_gbnf_grammar(text); break;
    }
    const auto grammar = greta::grammar::parse_gbnf(gbnf);
    greta::grammar::Matcher m(grammar);
    greta::grammar::TokenMasker masker(vocab);
    greta::grammar::TokenBitmask mask;
    masker.compute(m, mask);
    for (size_t i = 0; i < text.size() && i < 64; ++i) {
      if (!m.accept_byte(uint8_t(text[i]))) break;
      masker.compute(m, mask);
    }
    g_sink = mask.size() + size_t(m.can_end());
  } catch (const nlohmann::json::exception&) {  // not JSON at all: the server's 400 before the grammar
  } catch (const greta::Error&) {
  }
  return 0;
}
