#include "server/openai_json.h"

#include <cmath>
#include <cstdio>

#include "server/json_reader.h"

namespace greta::server {

using nlohmann::json;

ApiError::ApiError(int status, std::string message, std::string param, std::string type, std::string code)
    : Error(std::move(message)),
      status_(status),
      type_(type.empty() ? error_type_for(status) : std::move(type)),
      param_(std::move(param)),
      code_(std::move(code)) {}

json ApiError::body() const { return error_body(status_, what(), param_, code_); }

std::string error_type_for(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

json error_body(int status, const std::string& message, const std::string& param, const std::string& code) {
  return {{"error",
           {{"message", message},
            {"type", error_type_for(status)},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

std::string finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Cancelled: return "cancelled";
    case FinishReason::Error: return "error";
    case FinishReason::None: break;
  }
  return "";
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& msg) {
  throw ApiError(400, "'" + param + "': " + msg, param);
}

// What kind of value the client sent, for messages that name a field and what it expected
// (never the value itself: it may be huge or deeply nested).
std::string type_name(const json& v) {
  if (v.is_number_integer()) return "an integer";
  if (v.is_number_float()) return "a non-integral number";
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return "null";
}

std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

bool get_bool(const json& body, const char* key, bool def) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return def;
  if (!it->is_boolean()) bad(key, "expected a boolean, got " + type_name(*it));
  return it->get<bool>();
}

// Integers as JSON numbers; a float with an integral value (2.0) is accepted like OpenAI does.
std::optional<int64_t> get_int(const json& body, const char* key, int64_t lo, int64_t hi) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  int64_t v = 0;
  if (it->is_number_integer()) {
    v = it->get<int64_t>();
  } else if (it->is_number_float() && std::floor(it->get<double>()) == it->get<double>() &&
             std::fabs(it->get<double>()) < 9e15) {
    v = int64_t(it->get<double>());
  } else {
    bad(key, "expected an integer, got " + type_name(*it));
  }
  if (v < lo || v > hi)
    bad(key, "must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(v));
  return v;
}

std::optional<double> get_number(const json& body, const char* key, double lo, double hi) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) bad(key, "expected a number, got " + type_name(*it));
  const double v = it->get<double>();
  if (!(v >= lo && v <= hi))
    bad(key, "must be in [" + number_text(lo) + ", " + number_text(hi) + "], got " + number_text(v));
  return v;
}

// Message content: a string, or an array of {"type": "text", "text": ...} parts (joined).
std::string message_content(const json& c, const std::string& param) {
  if (c.is_null()) return "";
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) bad(param, "expected a string or an array of content parts, got " + type_name(c));
  std::string out;
  for (size_t i = 0; i < c.size(); ++i) {
    const json& part = c[i];
    const std::string p = param + "[" + std::to_string(i) + "]";
    if (!part.is_object()) bad(p, "expected a content part object");
    auto t = part.find("type");
    if (t == part.end() || !t->is_string()) bad(p + ".type", "expected a string");
    if (*t != "text") bad(p + ".type", "only 'text' content parts are supported");
    auto tx = part.find("text");
    if (tx == part.end() || !tx->is_string()) bad(p + ".text", "expected a string");
    out += tx->get<std::string>();
  }
  return out;
}

void parse_messages(const json& body, ApiRequest& r) {
  auto it = body.find("messages");
  if (it == body.end()) bad("messages", "is required");
  if (!it->is_array()) bad("messages", "expected an array, got " + type_name(*it));
  if (it->empty()) bad("messages", "must contain at least one message");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string p = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) bad(p, "expected an object, got " + type_name(m));
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) bad(p + ".role", "is required and must be a string");
    const std::string rs = role->get<std::string>();
    if (rs != "system" && rs != "user" && rs != "assistant" && rs != "developer" && rs != "tool")
      bad(p + ".role", "must be one of system, developer, user, assistant, tool");
    auto content = m.find("content");
    if (content == m.end() && rs != "assistant") bad(p + ".content", "is required");
    // "developer" is OpenAI's newer name for the system role; templates know "system".
    ChatMessage cm{rs == "developer" ? "system" : rs,
                   content == m.end() ? "" : message_content(*content, p + ".content")};
    if (m.contains("tool_calls") && !m["tool_calls"].is_null() &&
        !(m["tool_calls"].is_array() && m["tool_calls"].empty())) {
      if (rs != "assistant") bad(p + ".tool_calls", "only assistant messages carry tool calls");
      cm.fields["tool_calls"] = history_tool_calls(m["tool_calls"], p + ".tool_calls");
    }
    if (auto id = m.find("tool_call_id"); id != m.end() && !id->is_null()) {
      if (!id->is_string()) bad(p + ".tool_call_id", "expected a string");
      cm.fields["tool_call_id"] = id->get<std::string>();
    }
    r.messages.push_back(std::move(cm));
  }
}

void parse_prompt(const json& body, ApiRequest& r) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) bad("prompt", "is required");
  const json& p = *it;
  auto token_list = [&](const json& a, const std::string& param) {
    std::vector<int32_t> ids;
    for (const json& t : a) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX)
        bad(param, "expected non-negative integer token ids below 2^31, got " + type_name(t));
      ids.push_back(int32_t(t.get<int64_t>()));
    }
    if (ids.empty()) bad(param, "must not be empty");
    return ids;
  };
  if (p.is_string()) {
    r.prompts.push_back(p.get<std::string>());
  } else if (p.is_array() && !p.empty() && p[0].is_number()) {
    r.prompt_ids.push_back(token_list(p, "prompt"));
  } else if (p.is_array() && !p.empty()) {
    for (size_t i = 0; i < p.size(); ++i) {
      const std::string param = "prompt[" + std::to_string(i) + "]";
      if (p[i].is_string()) r.prompts.push_back(p[i].get<std::string>());
      else if (p[i].is_array()) r.prompt_ids.push_back(token_list(p[i], param));
      else bad(param, "expected a string or an array of token ids, got " + type_name(p[i]));
    }
    if (!r.prompts.empty() && !r.prompt_ids.empty()) bad("prompt", "mix of text and token-id prompts");
  } else {
    bad("prompt", "expected a string, an array of strings or an array of token ids");
  }
  for (const auto& s : r.prompts)
    if (s.empty()) bad("prompt", "must not be empty");
}

void parse_stop(const json& body, ApiRequest& r) {
  auto it = body.find("stop");
  if (it == body.end() || it->is_null()) return;
  if (it->is_string()) {
    if (!it->get<std::string>().empty()) r.stop.push_back(it->get<std::string>());
    return;
  }
  if (!it->is_array()) bad("stop", "expected a string or an array of strings, got " + type_name(*it));
  if (it->size() > 4) bad("stop", "at most 4 stop sequences");
  for (const json& s : *it) {
    if (!s.is_string()) bad("stop", "expected an array of strings");
    if (!s.get<std::string>().empty()) r.stop.push_back(s.get<std::string>());
  }
}

void refuse_unsupported(const json& body, bool chat) {
  if (get_bool(body, "echo", false)) bad("echo", "echo is not supported");
  if (body.contains("suffix") && !body["suffix"].is_null() && body["suffix"] != "")
    bad("suffix", "suffix is not supported");
  if (!chat && body.contains("tools") && !body["tools"].is_null() &&
      !(body["tools"].is_array() && body["tools"].empty()))
    bad("tools", "tools are supported on chat completions only");
  if (body.contains("functions") && !body["functions"].is_null()) bad("functions", "functions are not supported");
}

// {"token id": bias}: ids as canonical decimal integers (so two keys never name one token),
// biases in [-100, 100]. Whether an id is in the vocabulary the engine checks at submit.
void parse_logit_bias(const json& body, ApiRequest& r) {
  auto it = body.find("logit_bias");
  if (it == body.end() || it->is_null()) return;
  if (!it->is_object()) bad("logit_bias", "expected an object mapping token ids to biases, got " + type_name(*it));
  for (const auto& [key, v] : it->items()) {
    const bool digits = !key.empty() && key.size() <= 10 && key.find_first_not_of("0123456789") == std::string::npos &&
                        (key == "0" || key[0] != '0');
    if (!digits || std::stoll(key) > INT32_MAX)
      bad("logit_bias", "keys must be token ids: decimal integers below 2^31, no sign, no leading zeros");
    if (!v.is_number()) bad("logit_bias", "the bias of token " + key + " must be a number, got " + type_name(v));
    const double b = v.get<double>();
    if (!(b >= -kMaxLogitBias && b <= kMaxLogitBias))
      bad("logit_bias", "the bias of token " + key + " must be in [-100, 100], got " + number_text(b));
    r.logit_bias.emplace_back(int32_t(std::stoll(key)), float(b));
  }
}

}  // namespace

ApiRequest parse_request(const std::string& text, bool chat) {
  // nlohmann's lexer rejects invalid UTF-8 inside strings, so this also covers bad encodings.
  json body;
  try {
    body = read_json(text);
  } catch (const JsonReadError& e) {
    throw ApiError(400, e.what(), e.field());
  }
  if (!body.is_object()) throw ApiError(400, "the request body must be a JSON object");

  ApiRequest r;
  r.chat = chat;
  if (auto it = body.find("model"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) bad("model", "expected a string");
    r.model = it->get<std::string>();
  }
  if (chat) parse_messages(body, r);
  else parse_prompt(body, r);
  refuse_unsupported(body, chat);
  parse_logit_bias(body, r);
  r.constraint = parse_constraint(body, text);
  if (chat) r.tools = parse_tools(body, text);
  if (r.tools.forced() && r.constraint.kind != ConstraintSpec::Kind::None)
    bad("tool_choice", "a forced tool call cannot be combined with " + r.constraint.param);

  r.n = int(get_int(body, "n", 1, kMaxN).value_or(1));
  if (auto bo = get_int(body, "best_of", 1, kMaxN); bo && *bo != r.n) bad("best_of", "best_of must equal n");
  if (int(r.n_prompts()) * r.n > kMaxChoices) bad("n", "prompts x n must be at most " + std::to_string(kMaxChoices));
  r.stream = get_bool(body, "stream", false);
  if (auto so = body.find("stream_options"); so != body.end() && !so->is_null()) {
    if (!so->is_object()) bad("stream_options", "expected an object");
    if (!r.stream) bad("stream_options", "only allowed with stream = true");
    r.include_usage = get_bool(*so, "include_usage", false);
  }
  // max_completion_tokens is the newer name; when both are given it wins.
  r.max_tokens = get_int(body, "max_tokens", 1, 1 << 30);
  if (auto mct = get_int(body, "max_completion_tokens", 1, 1 << 30)) r.max_tokens = int(*mct);

  SamplingParams& s = r.sampling;
  s.temperature = float(get_number(body, "temperature", 0, 2).value_or(1.0));
  s.top_p = float(get_number(body, "top_p", 0, 1).value_or(1.0));
  if (s.top_p <= 0) s.top_p = 1e-6f;  // OpenAI allows 0: the single most likely token
  s.top_k = int(get_int(body, "top_k", -1, 1 << 30).value_or(0));
  s.min_p = float(get_number(body, "min_p", 0, 1).value_or(0.0));
  s.presence_penalty = float(get_number(body, "presence_penalty", -2, 2).value_or(0.0));
  s.frequency_penalty = float(get_number(body, "frequency_penalty", -2, 2).value_or(0.0));
  s.repeat_penalty = float(get_number(body, "repetition_penalty", 0.01, 10).value_or(1.0));
  if (auto seed = get_int(body, "seed", INT64_MIN, INT64_MAX)) {
    r.seeded = true;
    // 0 means "random" to the sampler; map it (and negatives) onto distinct fixed seeds.
    s.seed = uint64_t(*seed) == 0 ? 0x5eed5eedull : uint64_t(*seed);
  } else {
    s.seed = 0;
  }
  r.ignore_eos = get_bool(body, "ignore_eos", false);
  parse_stop(body, r);

  if (chat) {
    r.logprobs = get_bool(body, "logprobs", false);
    r.top_logprobs = int(get_int(body, "top_logprobs", 0, kMaxTopLogprobs).value_or(0));
    if (r.top_logprobs > 0 && !r.logprobs) bad("top_logprobs", "needs logprobs = true");
  } else if (auto lp = get_int(body, "logprobs", 0, 5)) {
    r.logprobs = true;
    r.top_logprobs = int(*lp);
  }
  return r;
}

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

static json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(int(c));
  return b;
}

json logprobs_json(const ResponseMeta& m, const std::vector<TokenLogprobOut>& lp) {
  if (m.chat) {
    json content = json::array();
    for (const auto& t : lp) {
      json top = json::array();
      for (const auto& [tok, p] : t.top) top.push_back({{"token", tok}, {"logprob", p}, {"bytes", bytes_of(tok)}});
      content.push_back(
          {{"token", t.token}, {"logprob", t.logprob}, {"bytes", bytes_of(t.token)}, {"top_logprobs", top}});
    }
    return {{"content", content}, {"refusal", nullptr}};
  }
  // Legacy completions shape: parallel arrays; text_offset is relative to the completion.
  json tokens = json::array(), token_lp = json::array(), top = json::array(), offsets = json::array();
  size_t off = 0;
  for (const auto& t : lp) {
    tokens.push_back(t.token);
    token_lp.push_back(t.logprob);
    json o = json::object();
    for (const auto& [tok, p] : t.top) o[tok] = p;
    top.push_back(o);
    offsets.push_back(off);
    off += t.token.size();
  }
  return {{"tokens", tokens}, {"token_logprobs", token_lp}, {"top_logprobs", top}, {"text_offset", offsets}};
}

// OpenAI's tool_calls array of a message.
static json tool_calls_json(const std::vector<ToolCallOut>& calls) {
  json out = json::array();
  for (const ToolCallOut& c : calls)
    out.push_back({{"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
  return out;
}

static std::string object_name(const ResponseMeta& m, bool chunk) {
  if (m.chat) return chunk ? "chat.completion.chunk" : "chat.completion";
  return "text_completion";
}

json response_json(const ResponseMeta& m, const std::vector<ChoiceOut>& choices, const Usage& u) {
  json cs = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceOut& c = choices[i];
    json lp = m.logprobs ? logprobs_json(m, c.logprobs) : json(nullptr);
    if (m.chat) {
      json msg = {{"role", "assistant"}, {"content", c.text}, {"refusal", nullptr}};
      if (!c.tool_calls.empty()) {
        if (c.text.empty()) msg["content"] = nullptr;
        msg["tool_calls"] = tool_calls_json(c.tool_calls);
      }
      cs.push_back({{"index", i}, {"message", msg}, {"logprobs", lp}, {"finish_reason", c.finish_reason}});
    } else {
      cs.push_back({{"index", i}, {"text", c.text}, {"logprobs", lp}, {"finish_reason", c.finish_reason}});
    }
  }
  return {{"id", m.id},
          {"object", object_name(m, false)},
          {"created", m.created},
          {"model", m.model},
          {"system_fingerprint", nullptr},
          {"choices", cs},
          {"usage", usage_json(u)}};
}

json chunk_json(const ResponseMeta& m, int index, const std::string& text, bool first, const std::string& finish_reason,
                const std::vector<TokenLogprobOut>& lp) {
  json choice = {{"index", index},
                 {"logprobs", m.logprobs && !lp.empty() ? logprobs_json(m, lp) : json(nullptr)},
                 {"finish_reason", finish_reason.empty() ? json(nullptr) : json(finish_reason)}};
  if (m.chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || first) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  return {{"id", m.id},       {"object", object_name(m, true)}, {"created", m.created},
          {"model", m.model}, {"system_fingerprint", nullptr},  {"choices", json::array({choice})}};
}

json tool_delta_chunk_json(const ResponseMeta& m, int index, const ToolStreamDelta& d,
                           const std::vector<TokenLogprobOut>& lp) {
  json call = {{"index", d.index}};
  if (d.kind == ToolStreamDelta::Kind::CallStart) {
    call["id"] = d.id;
    call["type"] = "function";
    call["function"] = {{"name", d.name}, {"arguments", ""}};
  } else {
    call["function"] = {{"arguments", d.text}};
  }
  json chunk = chunk_json(m, index, "", false, "", lp);
  chunk["choices"][0]["delta"]["tool_calls"] = json::array({call});
  return chunk;
}

json usage_chunk_json(const ResponseMeta& m, const Usage& u) {
  return {{"id", m.id},
          {"object", object_name(m, true)},
          {"created", m.created},
          {"model", m.model},
          {"system_fingerprint", nullptr},
          {"choices", json::array()},
          {"usage", usage_json(u)}};
}

}  // namespace greta::server
