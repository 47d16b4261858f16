// Request parsing/validation and response shapes of the OpenAI wire format, and the metrics
// text, without a model or a socket.
#include <gtest/gtest.h>

#include "server/metrics.h"
#include "server/openai_json.h"

using namespace greta::server;
using nlohmann::json;

namespace {

int status_of(const std::string& body, bool chat) {
  try {
    parse_request(body, chat);
  } catch (const ApiError& e) {
    return e.status();
  }
  return 200;
}

std::string param_of(const std::string& body, bool chat) {
  try {
    parse_request(body, chat);
  } catch (const ApiError& e) {
    return e.body()["error"]["param"].is_string() ? e.body()["error"]["param"].get<std::string>() : "";
  }
  return "<accepted>";
}

}  // namespace

TEST(ServerJson, ChatDefaultsAreOpenAIs) {
  ApiRequest r = parse_request(R"({"model":"m","messages":[{"role":"developer","content":"be nice"},
      {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]})",
                               true);
  EXPECT_EQ(r.model, "m");
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[0].role, "system");  // developer is the newer name of system
  EXPECT_EQ(r.messages[1].content, "ab");
  EXPECT_EQ(r.n, 1);
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_FLOAT_EQ(r.sampling.temperature, 1.0f);
  EXPECT_FLOAT_EQ(r.sampling.top_p, 1.0f);
  EXPECT_EQ(r.sampling.top_k, 0);
  EXPECT_FLOAT_EQ(r.sampling.min_p, 0.0f);
  EXPECT_EQ(r.sampling.seed, 0u);
  EXPECT_FALSE(r.seeded);
}

TEST(ServerJson, FieldsAreRead) {
  ApiRequest r = parse_request(R"({"prompt":["x","y"],"n":2,"stream":true,"stream_options":{"include_usage":true},
      "max_tokens":5,"max_completion_tokens":7,"temperature":0,"top_p":0.5,"top_k":3,"min_p":0.1,
      "presence_penalty":1.5,"frequency_penalty":-1,"seed":0,"stop":"END","logprobs":2,"unknown_field":{"a":1}})",
                               false);
  EXPECT_EQ(r.prompts, (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(r.n_prompts(), 2u);
  EXPECT_TRUE(r.stream && r.include_usage);
  EXPECT_EQ(*r.max_tokens, 7);  // max_completion_tokens wins
  EXPECT_FLOAT_EQ(r.sampling.temperature, 0.0f);
  EXPECT_EQ(r.sampling.top_k, 3);
  EXPECT_FLOAT_EQ(r.sampling.presence_penalty, 1.5f);
  EXPECT_TRUE(r.seeded);
  EXPECT_NE(r.sampling.seed, 0u);  // seed 0 must not mean "random" to the sampler
  EXPECT_EQ(r.stop, (std::vector<std::string>{"END"}));
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.top_logprobs, 2);

  ApiRequest ids = parse_request(R"({"prompt":[1,2,3]})", false);
  ASSERT_EQ(ids.prompt_ids.size(), 1u);
  EXPECT_EQ(ids.prompt_ids[0], (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(parse_request(R"({"prompt":"x","n":2.0})", false).n, 2);  // integral floats are integers
}

TEST(ServerJson, BadRequestsName400AndTheField) {
  EXPECT_EQ(status_of("{oops", true), 400);
  EXPECT_EQ(status_of("[]", true), 400);
  EXPECT_EQ(status_of("{\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}", true), 400);  // bad UTF-8
  EXPECT_EQ(param_of(R"({"messages":[]})", true), "messages");
  EXPECT_EQ(param_of(R"({})", true), "messages");
  EXPECT_EQ(param_of(R"({"messages":[{"role":"user"}]})", true), "messages[0].content");
  EXPECT_EQ(param_of(R"({"messages":[{"role":"cat","content":"x"}]})", true), "messages[0].role");
  EXPECT_EQ(param_of(R"({"messages":[{"role":"user","content":"x"}],"temperature":"hot"})", true), "temperature");
  EXPECT_EQ(param_of(R"({"messages":[{"role":"user","content":"x"}],"temperature":3})", true), "temperature");
  EXPECT_EQ(param_of(R"({"messages":[{"role":"user","content":"x"}],"n":9})", true), "n");
  EXPECT_EQ(param_of(R"({"messages":[{"role":"user","content":"x"}],"top_logprobs":2})", true), "top_logprobs");
  EXPECT_EQ(param_of(R"({"messages":[{"role":"user","content":"x"}],"stream_options":{}})", true), "stream_options");
  EXPECT_EQ(param_of(R"({"messages":[{"role":"user","content":"x"}],"tools":[{}]})", true), "tools[0].type");
  EXPECT_EQ(param_of(R"({"prompt":"x","max_tokens":0})", false), "max_tokens");
  EXPECT_EQ(param_of(R"({"prompt":"x","max_tokens":1.5})", false), "max_tokens");
  EXPECT_EQ(param_of(R"({"prompt":[]})", false), "prompt");
  EXPECT_EQ(param_of(R"({"prompt":""})", false), "prompt");
  EXPECT_EQ(param_of(R"({"prompt":[1,-2]})", false), "prompt");
  EXPECT_EQ(param_of(R"({"prompt":"x","echo":true})", false), "echo");
  EXPECT_EQ(param_of(R"({"prompt":"x","stop":["a","b","c","d","e"]})", false), "stop");
  EXPECT_EQ(param_of(R"({"prompt":["a","b","c"],"n":8})", false), "n");  // 24 choices > 16
  EXPECT_EQ(param_of(R"({"prompt":"x","logprobs":6})", false), "logprobs");
}

TEST(ServerJson, ErrorBodyShape) {
  json e = ApiError(429, "busy").body();
  EXPECT_EQ(e["error"]["message"], "busy");
  EXPECT_EQ(e["error"]["type"], "rate_limit_error");
  EXPECT_TRUE(e["error"]["param"].is_null());
  EXPECT_TRUE(e["error"]["code"].is_null());
  EXPECT_EQ(error_type_for(401), "authentication_error");
  EXPECT_EQ(error_type_for(400), "invalid_request_error");
}

TEST(ServerJson, ResponseAndChunkShapes) {
  ResponseMeta m{"chatcmpl-1", 123, "model", true, true};
  std::vector<TokenLogprobOut> lp = {{"\xe2\x82", -0.5f, {{"\xe2\x82", -0.5f}, {"b", -2.0f}}}};  // partial UTF-8
  json r = response_json(m, {{"hi", "stop", lp}}, {3, 2, 1});
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["choices"][0]["message"]["content"], "hi");
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(r["choices"][0]["logprobs"]["content"][0]["bytes"], json({0xe2, 0x82}));
  EXPECT_EQ(r["usage"]["total_tokens"], 5);
  EXPECT_EQ(r["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
  EXPECT_NO_THROW(dump(r));  // invalid UTF-8 in token text must not throw

  json first = chunk_json(m, 0, "", true, "", {});
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  json last = chunk_json(m, 1, "", false, "length", {});
  EXPECT_EQ(last["choices"][0]["index"], 1);
  EXPECT_EQ(last["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(last["choices"][0]["delta"].empty());
  EXPECT_EQ(usage_chunk_json(m, {1, 1, 0})["choices"], json::array());

  ResponseMeta c{"cmpl-1", 1, "model", false, true};
  json lc = response_json(c, {{"ab", "length", {{"a", -1, {}}, {"b", -2, {}}}}}, {})["choices"][0]["logprobs"];
  EXPECT_EQ(lc["tokens"], json({"a", "b"}));
  EXPECT_EQ(lc["text_offset"], json({0, 1}));
}

TEST(ServerMetrics, HistogramIsCumulativeAndLabelsCount) {
  Metrics m;
  m.count_request("/health", 200);
  m.count_request("/health", 200);
  m.count_request("/v1/completions", 429);
  m.observe_ttft(0.02);
  m.observe_ttft(100);
  m.observe_itl(0.003);
  greta::EngineStats s;
  s.running = 2;
  s.kv_blocks_total = 64;
  s.prefix_hit_tokens = 48;
  s.forward_s = 1.5;
  s.idle_s = 0.25;
  const std::string t = m.render(s);
  EXPECT_NE(t.find("greta_http_requests_total{path=\"/health\",code=\"200\"} 2\n"), std::string::npos);
  EXPECT_NE(t.find("greta_http_requests_total{path=\"/v1/completions\",code=\"429\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("greta_time_to_first_token_seconds_bucket{le=\"0.01\"} 0\n"), std::string::npos);
  EXPECT_NE(t.find("greta_time_to_first_token_seconds_bucket{le=\"0.025\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("greta_time_to_first_token_seconds_bucket{le=\"60\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("greta_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\n"), std::string::npos);
  EXPECT_NE(t.find("greta_time_to_first_token_seconds_count 2\n"), std::string::npos);
  EXPECT_NE(t.find("greta_inter_token_latency_seconds_bucket{le=\"0.005\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("greta_requests_running 2\n"), std::string::npos);
  EXPECT_NE(t.find("greta_kv_blocks_total 64\n"), std::string::npos);
  EXPECT_NE(t.find("greta_prefix_cache_hit_tokens_total 48\n"), std::string::npos);
  EXPECT_NE(t.find("# TYPE greta_engine_seconds_total counter\n"), std::string::npos);
  EXPECT_NE(t.find("greta_engine_seconds_total{phase=\"forward\"} 1.5\n"), std::string::npos);
  EXPECT_NE(t.find("greta_engine_seconds_total{phase=\"idle\"} 0.25\n"), std::string::npos);
  for (const char* phase : {"schedule", "sample", "emit"})
    EXPECT_NE(t.find(std::string("greta_engine_seconds_total{phase=\"") + phase + "\"} 0\n"), std::string::npos)
        << phase;
}
