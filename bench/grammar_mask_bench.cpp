// Time per allowed-token mask (TokenMasker::compute) on synthetic vocabularies of 32k and 128k
// tokens, for matcher states of a JSON grammar and of a 20-property JSON schema: where few
// tokens fit (the start of an object, a key), where most do (inside a string), and a number.
//
// The vocabulary imitates a BPE one: all 256 single bytes, ASCII words with and without a
// leading space, digits, JSON punctuation runs, accented and CJK text, and tokens that end
// inside a UTF-8 sequence. Before timing, every state's mask is checked token by token against
// feeding the token's bytes to a copy of the matcher, so a wrong mask cannot report a time.
//
// Prints the schema's compile time, then one JSON line per (vocabulary, state): tokens
// allowed, trie nodes, p50 / p99 / mean microseconds per mask.
// usage: grammar_mask_bench [reps=200]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "grammar/gbnf_parser.h"
#include "grammar/json_schema_to_gbnf.h"
#include "grammar/token_mask.h"

using namespace greta::grammar;
using Clock = std::chrono::steady_clock;

namespace {

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else if (cp < 0x800) {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += char(0xE0 | (cp >> 12));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xF0 | (cp >> 18));
    s += char(0x80 | ((cp >> 12) & 0x3F));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

std::vector<std::string> synthetic_vocab(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  auto pick = [&](size_t k) { return size_t(rng() % k); };
  std::set<std::string> seen;
  std::vector<std::string> vocab;
  auto add = [&](const std::string& t) {
    if (!t.empty() && vocab.size() < n && seen.insert(t).second) vocab.push_back(t);
  };
  for (int b = 0; b < 256; ++b) add(std::string(1, char(b)));
  const std::vector<std::string> punct = {"{",      "}",      "\"",  ":",  ",",  "[",   "]",
                                          "\":",    "\",",    " {",  "},", "\n", "  ",  "\n  ",
                                          "\": \"", "\", \"", "\"}", "]}", " [", "\\n", "\\\""};
  while (vocab.size() < n) {
    switch (pick(10)) {
      case 0:
      case 1:
      case 2:
      case 3: {  // word
        std::string w = pick(2) ? " " : "";
        size_t len = 1 + pick(9);
        for (size_t i = 0; i < len; ++i) w += char((i == 0 && pick(4) == 0 ? 'A' : 'a') + pick(26));
        add(w);
        break;
      }
      case 4: {  // digits
        std::string d;
        for (size_t i = 0, len = 1 + pick(3); i < len; ++i) d += char('0' + pick(10));
        add(d);
        break;
      }
      case 5: add(punct[pick(punct.size())] + (pick(2) ? punct[pick(punct.size())] : "")); break;
      case 6: {  // accented latin
        std::string w = pick(2) ? " " : "";
        for (size_t i = 0, len = 1 + pick(4); i < len; ++i)
          w += pick(3) ? std::string(1, char('a' + pick(26))) : utf8(0xE0 + uint32_t(pick(32)));
        add(w);
        break;
      }
      case 7:
      case 8: {  // CJK
        std::string w;
        for (size_t i = 0, len = 1 + pick(3); i < len; ++i) w += utf8(0x4E00 + uint32_t(pick(0x5000)));
        add(w);
        break;
      }
      default: {  // ends inside a code point
        std::string c = utf8(pick(2) ? 0x4E00 + uint32_t(pick(0x5000)) : 0x1F600 + uint32_t(pick(80)));
        add((pick(2) ? std::string(" ") : std::string()) + c.substr(0, 1 + pick(c.size() - 1)));
        break;
      }
    }
  }
  return vocab;
}

nlohmann::ordered_json twenty_property_schema() {
  nlohmann::ordered_json props = nlohmann::ordered_json::object(), required = nlohmann::ordered_json::array();
  const char* types[] = {"string", "integer", "number", "boolean"};
  for (int i = 0; i < 20; ++i) {
    const std::string name = "field_" + std::to_string(i);
    props[name] = {{"type", types[i % 4]}};
    if (i % 3 != 2) required.push_back(name);
  }
  return {{"type", "object"}, {"properties", props}, {"required", required}};
}

struct State {
  std::string grammar_name, name;
  Matcher matcher;
};

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 200;
  const std::string json_gbnf = json_object_gbnf();
  auto json = parse_gbnf(json_gbnf);
  auto schema = parse_gbnf(json_schema_to_gbnf(twenty_property_schema()));
  {
    // Compile time of the schema: JSON Schema to GBNF text, then parse and checks.
    std::vector<double> us;
    const nlohmann::ordered_json s = twenty_property_schema();
    for (int r = 0; r < 50; ++r) {
      auto t0 = Clock::now();
      auto g = parse_gbnf(json_schema_to_gbnf(s));
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      if (g->rules().empty()) return 1;
    }
    std::sort(us.begin(), us.end());
    std::printf("{\"compile\": \"schema20\", \"rules\": %zu, \"p50_us\": %.1f, \"max_us\": %.1f}\n",
                schema->rules().size(), us[us.size() / 2], us.back());
  }

  auto state = [](const std::shared_ptr<const Grammar>& g, const std::string& prefix) {
    Matcher m(g);
    if (!m.accept_bytes(prefix)) {
      std::fprintf(stderr, "prefix rejected: %s\n", prefix.c_str());
      std::exit(1);
    }
    return m;
  };
  std::vector<State> states = {
      {"json", "start", state(json, "")},
      {"json", "key", state(json, "{\"a\": 1, ")},
      {"json", "in_string", state(json, "{\"name\": \"ab")},
      {"json", "number", state(json, "{\"a\": 12")},
      {"schema20", "start", state(schema, "")},
      {"schema20", "in_string", state(schema, "{\"field_0\": \"ab")},
      {"schema20", "after_value", state(schema, "{\"field_0\": \"ab\", \"field_1\": 12")},
  };

  for (size_t n : {size_t(32000), size_t(128000)}) {
    auto strings = synthetic_vocab(n, 1234);
    const int32_t eos = int32_t(strings.size());
    strings.push_back("</s>");
    auto vocab = std::make_shared<TokenVocabulary>(strings, std::vector<int32_t>{eos});
    for (State& s : states) {
      TokenMasker masker(vocab);
      TokenBitmask mask;
      const auto c0 = Clock::now();
      masker.compute(s.matcher, mask);  // cold: no stacks interned yet
      const double cold_us = std::chrono::duration<double, std::micro>(Clock::now() - c0).count();
      size_t allowed = 0;
      for (int32_t t = 0; t < int32_t(vocab->size()); ++t) {
        Matcher copy = s.matcher;
        bool want = t == eos ? s.matcher.can_end() : copy.accept_bytes(vocab->token(t));
        if (mask_allows(mask, t) != want) {
          std::fprintf(stderr, "VERIFY FAILED: %s/%s token %d\n", s.grammar_name.c_str(), s.name.c_str(), t);
          return 1;
        }
        allowed += want;
      }
      std::vector<double> us;
      for (int r = 0; r < reps; ++r) {
        // Warm: the engine keeps one masker per request, so later steps find their stacks cached.
        auto t0 = Clock::now();
        masker.compute(s.matcher, mask);
        us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
      }
      std::sort(us.begin(), us.end());
      double mean = 0;
      for (double u : us) mean += u;
      mean /= double(us.size());
      std::printf(
          "{\"vocab\": %zu, \"trie_nodes\": %zu, \"grammar\": \"%s\", \"state\": \"%s\", \"allowed\": %zu, "
          "\"cold_us\": %.1f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"mean_us\": %.1f}\n",
          vocab->size(), vocab->trie_nodes(), s.grammar_name.c_str(), s.name.c_str(), allowed, cold_us,
          us[us.size() / 2], us[std::min(us.size() - 1, us.size() * 99 / 100)], mean);
      std::fflush(stdout);
    }
  }
  return 0;
}
