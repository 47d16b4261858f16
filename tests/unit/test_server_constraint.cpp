// The constraint fields of a request (response_format, grammar, regex), logit_bias, their
// compilation into grammars with errors that name the field, and the grammar cache.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "grammar/gbnf_parser.h"
#include "server/constraint.h"
#include "server/grammar_cache.h"
#include "server/openai_json.h"

using namespace greta;
using namespace greta::server;
using Kind = ConstraintSpec::Kind;

namespace {

std::string chat_with(const std::string& extra) {
  return R"({"messages":[{"role":"user","content":"x"}],)" + extra + "}";
}

std::string param(const ApiError& e) {
  const auto p = e.body()["error"]["param"];
  return p.is_string() ? p.get<std::string>() : "";
}

struct Refusal {
  const char* extra;  // fields added to a chat request
  const char* param;  // the field the error must name
  const char* says;   // and a part of its message
};

// Each case is refused with a 400 naming its field; `refuse` returns the error of one body.
template <class F>
void expect_refusals(const std::vector<Refusal>& cases, F refuse) {
  for (const Refusal& c : cases) {
    const ApiError e = refuse(chat_with(c.extra));
    EXPECT_EQ(e.status(), 400) << c.extra;
    EXPECT_EQ(param(e), c.param) << c.extra;
    EXPECT_NE(std::string(e.what()).find(c.says), std::string::npos) << c.extra << ": " << e.what();
  }
}

ApiError refusal(const std::string& body) {
  try {
    parse_request(body, true);
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "accepted: " << body;
  return ApiError(0, "");
}

ApiError compile_refusal(const std::string& body) {
  const ApiRequest r = parse_request(body, true);
  try {
    compile_constraint(r.constraint, nullptr);
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "compiled: " << body;
  return ApiError(0, "");
}

bool accepts(const std::shared_ptr<const grammar::Grammar>& g, const std::string& text) {
  grammar::Matcher m(g);
  return m.accept_bytes(text) && m.can_end();
}

}  // namespace

TEST(ServerConstraint, ResponseFormatsAndExtensionFieldsAreRead) {
  EXPECT_EQ(parse_request(chat_with(R"("response_format":{"type":"text"})"), true).constraint.kind, Kind::None);
  EXPECT_EQ(parse_request(chat_with(R"("response_format":{"type":"json_object"})"), true).constraint.kind,
            Kind::JsonObject);
  const ApiRequest s = parse_request(
      chat_with(R"("response_format":{"type":"json_schema","json_schema":{"name":"n","strict":true,
          "schema":{"type":"object","properties":{"zeta":{"type":"integer"},"alpha":{"type":"string"}},
                    "required":["zeta","alpha"]}}})"),
      true);
  EXPECT_EQ(s.constraint.kind, Kind::JsonSchema);
  // The client's key order survives (it decides the order of the generated properties).
  EXPECT_LT(s.constraint.source.find("zeta"), s.constraint.source.find("alpha"));
  EXPECT_EQ(s.constraint.param, "response_format.json_schema.schema");
  const auto g = compile_constraint(s.constraint, nullptr);
  EXPECT_TRUE(accepts(g, R"({"zeta": 1, "alpha": "a"})"));
  EXPECT_FALSE(accepts(g, R"({"alpha": "a", "zeta": 1})"));

  const ApiRequest gb = parse_request(chat_with(R"("grammar":"root ::= \"a\" [0-9]+")"), true);
  EXPECT_EQ(gb.constraint.kind, Kind::Gbnf);
  EXPECT_TRUE(accepts(compile_constraint(gb.constraint, nullptr), "a42"));
  const ApiRequest rx = parse_request(R"({"prompt":"p","regex":"(ab|c)+"})", false);  // completions too
  EXPECT_EQ(rx.constraint.kind, Kind::Regex);
  const auto rg = compile_constraint(rx.constraint, nullptr);
  EXPECT_TRUE(accepts(rg, "abcab"));
  EXPECT_FALSE(accepts(rg, "abx"));
  EXPECT_EQ(parse_request(chat_with(R"("grammar":null,"regex":null)"), true).constraint.kind, Kind::None);
}

TEST(ServerConstraint, MalformedFieldsAndConflictsAre400NamingTheField) {
  expect_refusals(
      {
          {R"("response_format":{"type":"xml"})", "response_format.type", "json_schema"},
          {R"("response_format":"json")", "response_format", "object"},
          {R"("response_format":{"type":"json_schema"})", "response_format.json_schema", "required"},
          {R"("response_format":{"type":"json_schema","json_schema":{"schema":{}}})",
           "response_format.json_schema.name", "name"},
          {R"("response_format":{"type":"json_schema","json_schema":{"name":"n","schema":3}})",
           "response_format.json_schema.schema", "JSON Schema"},
          {R"("response_format":{"type":"json_schema","json_schema":{"name":"n","strict":"yes"}})",
           "response_format.json_schema.strict", "boolean"},
          {R"("grammar":5)", "grammar", "string"},
          {R"("regex":"")", "regex", "empty"},
          {R"("grammar":"root ::= \"a\"","regex":"a")", "regex", "grammar and regex"},
          {R"("response_format":{"type":"json_object"},"grammar":"root ::= \"a\"")", "grammar",
           "response_format and grammar"},
      },
      refusal);
}

TEST(ServerConstraint, WhatDoesNotCompileIsA400ThatNamesIt) {
  expect_refusals(
      {
          {R"("response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"object","not":{}}}})",
           "response_format.json_schema.schema", "'not'"},
          {R"("response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"type":"string","format":"email"}}})",
           "response_format.json_schema.schema", "email"},
          {R"("response_format":{"type":"json_schema","json_schema":{"name":"n","schema":{"$ref":"#/$defs/missing"}}})",
           "response_format.json_schema.schema", "missing"},
          {R"("grammar":"root ::= \"a")", "grammar", "line 1"},
          {R"("grammar":"start ::= \"a\"")", "grammar", "root"},
          {R"("regex":"(a)\\1")", "regex", "backreference"},
      },
      compile_refusal);
}

TEST(ServerConstraint, LogitBiasIsValidated) {
  const ApiRequest r = parse_request(chat_with(R"("logit_bias":{"0":-100,"17":2.5,"2147483647":100})"), true);
  ASSERT_EQ(r.logit_bias.size(), 3u);
  std::map<int32_t, float> m(r.logit_bias.begin(), r.logit_bias.end());
  EXPECT_EQ(m.at(0), -100.0f);
  EXPECT_EQ(m.at(17), 2.5f);
  EXPECT_EQ(m.at(2147483647), 100.0f);
  EXPECT_TRUE(parse_request(chat_with(R"("logit_bias":{})"), true).logit_bias.empty());
  EXPECT_TRUE(parse_request(chat_with(R"("logit_bias":null)"), true).logit_bias.empty());
  for (const char* bad : {R"("logit_bias":[1])", R"("logit_bias":{"01":1})", R"("logit_bias":{"-1":1})",
                          R"("logit_bias":{"1.0":1})", R"("logit_bias":{"":1})", R"("logit_bias":{"2147483648":1})",
                          R"("logit_bias":{"12345678901":1})", R"("logit_bias":{"5":100.5})",
                          R"("logit_bias":{"5":-101})", R"("logit_bias":{"5":"1"})", R"("logit_bias":{"5":null})"}) {
    const ApiError e = refusal(chat_with(bad));
    EXPECT_EQ(e.status(), 400) << bad;
    EXPECT_EQ(param(e), "logit_bias") << bad;
  }
}

TEST(ServerGrammarCache, CompilesOnceAndEvictsTheLeastRecentlyUsed) {
  GrammarCache cache(2);
  int compiled = 0;
  auto make = [&](const char* text) {
    return [&compiled, text] {
      ++compiled;
      return grammar::parse_gbnf(text);
    };
  };
  const auto a = cache.get("a", make("root ::= \"a\""));
  EXPECT_EQ(cache.get("a", make("root ::= \"a\"")), a);
  EXPECT_EQ(compiled, 1);
  cache.get("b", make("root ::= \"b\""));
  cache.get("a", make("root ::= \"a\""));  // a is now the most recent
  cache.get("c", make("root ::= \"c\""));  // evicts b
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(compiled, 3);
  cache.get("a", make("root ::= \"a\""));
  EXPECT_EQ(compiled, 3);
  cache.get("b", make("root ::= \"b\""));
  EXPECT_EQ(compiled, 4);
  EXPECT_EQ(cache.hits(), 3);
  EXPECT_EQ(cache.misses(), 4);
}

TEST(ServerGrammarCache, AFailedCompileStoresNothing) {
  GrammarCache cache(4);
  int tries = 0;
  for (int i = 0; i < 2; ++i)
    EXPECT_THROW(cache.get("bad",
                           [&] {
                             ++tries;
                             return grammar::parse_gbnf("root ::= (");
                           }),
                 Error);
  EXPECT_EQ(tries, 2);
  EXPECT_EQ(cache.size(), 0u);
}

TEST(ServerGrammarCache, ConcurrentRequestsShareOneBoundedCache) {
  GrammarCache cache(8);
  std::atomic<int> compiled{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const std::string lit = std::string(1 + size_t((i * 7 + t) % 12), 'x');  // 12 distinct keys
        const auto g = cache.get(lit, [&] {
          ++compiled;
          return grammar::parse_gbnf("root ::= \"" + lit + "\"");
        });
        grammar::Matcher m(g);
        ASSERT_TRUE(m.accept_bytes(lit) && m.can_end());  // never another key's grammar
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_LE(cache.size(), 8u);
  EXPECT_EQ(cache.hits() + cache.misses(), 800);
  EXPECT_GE(compiled.load(), 12);
}

TEST(ServerConstraint, CompileGoesThroughTheCacheBySource) {
  GrammarCache cache;
  const ApiRequest a = parse_request(chat_with(R"("regex":"[ab]{2}")"), true);
  const ApiRequest b = parse_request(chat_with(R"("grammar":"[ab]{2}")"), true);  // same text, other kind
  const auto ga = compile_constraint(a.constraint, &cache);
  EXPECT_EQ(compile_constraint(a.constraint, &cache), ga);
  EXPECT_THROW(compile_constraint(b.constraint, &cache), ApiError);  // not valid GBNF: not the regex's grammar
  EXPECT_EQ(cache.size(), 1u);
}
