// The OpenAI wire format: parsing and validating /v1/completions and /v1/chat/completions
// request bodies, and building responses, stream chunks and error bodies.
//
// Guarantees
// - parse_request() never crashes on any body: every problem (invalid JSON or UTF-8, a wrong
//   type, a value out of range, an unsupported feature) throws ApiError 400 naming the field.
// - Unknown fields are ignored, as OpenAI's API does for fields it does not use, so newer
//   clients keep working; fields we recognise but cannot honour (echo, suffix, best_of > n,
//   functions, tools on completions) are refused rather than silently dropped. tools,
//   tool_choice and parallel_tool_calls are read by server/tool_calls.h.
// - Constraints (response_format, grammar, regex) are read by server/constraint.h; logit_bias
//   keys are token ids written as decimal integers, values in [-100, 100].
// - Sampling defaults are OpenAI's (temperature 1, top_p 1, no top-k/min-p), not the CLI's.
// - Every JSON we emit is dumped with invalid UTF-8 replaced (token pieces can be partial
//   characters), so building a response never throws.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "core/error.h"
#include "greta/engine.h"
#include "runtime/sampler.h"
#include "server/constraint.h"
#include "server/tool_call_stream.h"
#include "server/tool_calls.h"

namespace greta::server {

// An error as the client sees it: HTTP status plus OpenAI's {"error": {...}} fields.
class ApiError : public Error {
 public:
  ApiError(int status, std::string message, std::string param = "", std::string type = "", std::string code = "");
  int status() const { return status_; }
  nlohmann::json body() const;  // {"error": {"message", "type", "param", "code"}}

 private:
  int status_;
  std::string type_, param_, code_;
};

// The error type OpenAI uses for a status (invalid_request_error, authentication_error, ...).
std::string error_type_for(int status);
nlohmann::json error_body(int status, const std::string& message, const std::string& param = "",
                          const std::string& code = "");

constexpr int kMaxChoices = 16;  // n x prompts per request: each choice is one engine request
constexpr int kMaxN = 8;
constexpr int kMaxTopLogprobs = 20;
constexpr double kMaxLogitBias = 100;  // |bias|, as OpenAI

struct ApiRequest {
  bool chat = false;
  std::string model;                             // "" when the client sent none
  std::vector<ChatMessage> messages;             // chat
  std::vector<std::string> prompts;              // completions: text prompts
  std::vector<std::vector<int32_t>> prompt_ids;  // completions: token-id prompts
  int n = 1;
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  std::optional<int> max_tokens;  // max_tokens or max_completion_tokens
  SamplingParams sampling;
  bool seeded = false;  // the client gave a seed
  bool ignore_eos = false;
  std::vector<std::string> stop;
  bool logprobs = false;
  int top_logprobs = 0;
  std::vector<std::pair<int32_t, float>> logit_bias;  // by token id, ids distinct
  ConstraintSpec constraint;
  ToolRequest tools;  // chat only

  size_t n_prompts() const { return chat ? 1 : prompts.size() + prompt_ids.size(); }
};

// Throws ApiError(400) on anything malformed; see the guarantees above.
ApiRequest parse_request(const std::string& body, bool chat);

// One token's logprob data for a response (token text already decoded by the caller).
struct TokenLogprobOut {
  std::string token;  // raw bytes of the token (may be partial UTF-8)
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;  // most likely tokens, best first
};

struct ChoiceOut {
  std::string text;
  std::string finish_reason;
  std::vector<TokenLogprobOut> logprobs;
  std::vector<ToolCallOut> tool_calls = {};  // chat: text is then the content outside the calls
};

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int cached_tokens = 0;
};

// Identity of one response: shared by all its chunks.
struct ResponseMeta {
  std::string id;  // chatcmpl-... / cmpl-...
  int64_t created = 0;
  std::string model;
  bool chat = false;
  bool logprobs = false;
};

nlohmann::json usage_json(const Usage& u);
nlohmann::json logprobs_json(const ResponseMeta& m, const std::vector<TokenLogprobOut>& lp);
nlohmann::json response_json(const ResponseMeta& m, const std::vector<ChoiceOut>& choices, const Usage& u);
// One stream chunk for choice `index`: `text` (chat: delta.content), the role on a chat
// choice's first chunk, finish_reason when it is the last one ("" = null).
nlohmann::json chunk_json(const ResponseMeta& m, int index, const std::string& text, bool first,
                          const std::string& finish_reason, const std::vector<TokenLogprobOut>& lp);
nlohmann::json usage_chunk_json(const ResponseMeta& m, const Usage& u);
// A chat stream chunk carrying one tool-call delta of choice `index`, as OpenAI streams calls:
// a call's start {"index", "id", "type": "function", "function": {"name", "arguments": ""}},
// then pieces {"index", "function": {"arguments"}} (clients concatenate strings by index, so
// id and name come once). lp: logprobs of the tokens that produced it.
nlohmann::json tool_delta_chunk_json(const ResponseMeta& m, int index, const ToolStreamDelta& d,
                                     const std::vector<TokenLogprobOut>& lp);

// The wire name of a finish reason ("" while not finished). Only "stop" and "length" reach a
// choice: Cancelled and Error become error responses or error events.
std::string finish_reason_name(FinishReason r);

// Dumps JSON replacing invalid UTF-8 (never throws).
std::string dump(const nlohmann::json& j);

}  // namespace greta::server
