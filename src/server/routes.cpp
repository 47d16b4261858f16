#include "server/routes.h"

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <random>

#include "chat/chat_prompt.h"
#include "server/connection.h"
#include "server/openai_json.h"
#include "server/sse.h"

namespace greta::server {

using nlohmann::json;

namespace {

void send_json(httplib::Response& res, int status, const json& j) {
  res.status = status;
  res.set_content(dump(j), "application/json");
}

std::string new_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s-%016llx%08llx", prefix, (unsigned long long)salt,
                (unsigned long long)counter.fetch_add(1));
  return buf;
}

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::vector<int32_t> chat_prompt(const ServerContext& ctx, const std::vector<ChatMessage>& messages,
                                 const ToolRequest& tools) {
  if (!ctx.chat_template)
    throw ApiError(400, "this model has no chat template; restart the server with --chat-template NAME|FILE");
  const Tokenizer& tok = *ctx.tokenizer;
  RenderedChat rendered;
  try {
    // The template sees the tools unless tool_choice is none (then no call may come out).
    const json extra = tools.active() ? json{{"tools", json(tools.tools)}} : json::object();
    rendered = ctx.chat_template->render_chat(messages, /*add_generation_prompt=*/true, chat_bos_text(tok),
                                              chat_eos_text(tok), extra);
  } catch (const Error& e) {
    throw ApiError(400, std::string("the chat template refused these messages: ") + e.what(), "messages");
  }
  // Only the template's markup becomes special tokens; message text stays text.
  return tokenize_chat(tok, rendered);
}

// One engine request per choice, prompt-major: choice = prompt_index * n + j.
struct Plan {
  std::vector<GenerationRequest> requests;
  std::vector<bool> first_of_prompt;  // usage counts each prompt once, as OpenAI does
};

// Token ids the model has, checked here so that the error names the field (the engine checks too).
void check_logit_bias_ids(const ServerContext& ctx, const ApiRequest& r) {
  for (const auto& [id, b] : r.logit_bias)
    if (ctx.vocab_size > 0 && id >= ctx.vocab_size)
      throw ApiError(400,
                     "'logit_bias': token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                         std::to_string(ctx.vocab_size) + ")",
                     "logit_bias");
}

Plan plan(const ServerContext& ctx, const ApiRequest& r) {
  check_logit_bias_ids(ctx, r);
  const std::shared_ptr<const grammar::Grammar> grammar =
      r.tools.forced() ? compile_constraint({ConstraintSpec::Kind::Gbnf, forced_tool_call_gbnf(r.tools), "tool_choice"},
                                            ctx.grammars)
                       : compile_constraint(r.constraint, ctx.grammars);
  std::vector<std::vector<int32_t>> prompts;
  if (r.chat) {
    prompts.push_back(chat_prompt(ctx, r.messages, r.tools));
  } else {
    for (const auto& p : r.prompts) {
      // Completions parse special tokens like the chat path (as vLLM and llama.cpp do).
      prompts.push_back(ctx.tokenizer->encode(p, ctx.tokenizer->add_bos, /*parse_special=*/true));
      if (prompts.back().empty()) throw ApiError(400, "'prompt': encodes to no tokens", "prompt");
    }
    for (const auto& ids : r.prompt_ids) prompts.push_back(ids);
  }
  const int limit = ctx.engine->max_context();
  Plan out;
  for (const auto& p : prompts) {
    const int len = int(p.size());
    if (len >= limit)
      throw ApiError(400,
                     "the prompt has " + std::to_string(len) + " tokens, but the context holds " +
                         std::to_string(limit) + " (prompt + max_tokens)",
                     r.chat ? "messages" : "prompt", "", "context_length_exceeded");
    // OpenAI's defaults: completions 16 tokens, chat as many as the context allows.
    const int max_tokens = r.max_tokens ? *r.max_tokens : (r.chat ? limit - len : std::min(16, limit - len));
    if (len + max_tokens > limit)
      throw ApiError(400,
                     "the prompt has " + std::to_string(len) + " tokens and max_tokens is " +
                         std::to_string(max_tokens) + ", more than the context of " + std::to_string(limit),
                     "max_tokens", "", "context_length_exceeded");
    for (int j = 0; j < r.n; ++j) {
      GenerationRequest g;
      g.prompt = p;
      g.sampling = r.sampling;
      g.sampling.penalty_prompt_len = int(p.size());  // OpenAI semantics: penalties count generated tokens
      // Seeded choices stay reproducible yet differ from each other.
      if (r.seeded) g.sampling.seed += uint64_t(j) * 0x9e3779b97f4a7c15ull;
      if (r.seeded && g.sampling.seed == 0) g.sampling.seed = 1;
      g.max_tokens = max_tokens;
      g.ignore_eos = r.ignore_eos;
      g.stop = r.stop;
      g.logprobs = r.logprobs;
      g.top_logprobs = r.top_logprobs;
      g.logit_bias = r.logit_bias;
      g.grammar = grammar;
      out.requests.push_back(std::move(g));
      out.first_of_prompt.push_back(j == 0);
    }
  }
  return out;
}

int status_for(RequestError::Kind k) {
  switch (k) {
    case RequestError::Kind::QueueFull: return 429;
    case RequestError::Kind::ShuttingDown: return 503;
    default: return 400;
  }
}

// Submits every choice; on a refusal cancels those already in and throws ApiError.
std::vector<uint64_t> submit_all(const ServerContext& ctx, Plan& p, const std::shared_ptr<EventChannel>& ch) {
  std::vector<uint64_t> ids;
  try {
    for (size_t i = 0; i < p.requests.size(); ++i)
      ids.push_back(ctx.engine->submit(std::move(p.requests[i]), ch->callback(int(i))));
  } catch (const RequestError& e) {
    for (uint64_t id : ids) ctx.engine->cancel(id);
    throw ApiError(status_for(e.kind()), e.what());
  }
  return ids;
}

// A model may have more embedding rows than its tokenizer has tokens; those ids have no text.
std::string token_text(const Tokenizer& tok, int32_t id) {
  return id >= 0 && id < tok.vocab_size() ? tok.token_bytes(id) : std::string();
}

TokenLogprobOut logprob_out(const Tokenizer& tok, const TokenEvent& ev) {
  TokenLogprobOut o;
  o.token = token_text(tok, ev.token);
  o.logprob = ev.logprob;
  for (const auto& t : ev.top) o.top.emplace_back(token_text(tok, t.token), t.logprob);
  return o;
}

void add_usage(Usage& u, const TokenEvent& ev, bool first_of_prompt) {
  if (first_of_prompt) {
    u.prompt_tokens += ev.prompt_tokens;
    u.cached_tokens += ev.cached_tokens;
  }
  u.completion_tokens += ev.completion_tokens;
}

// A finished event that is not a normal end becomes an error for the client.
void check_finish(const TokenEvent& ev) {
  if (ev.finish_reason == FinishReason::Error) throw ApiError(500, "generation failed: " + ev.error);
  if (ev.finish_reason == FinishReason::Cancelled)
    throw ApiError(503, "the request was cancelled (server shutting down)");
}

// One choice's tool calls, found as its text arrives. With parallel_tool_calls false the
// generation is cancelled once its call is complete (the parser ignores the rest), and that
// cancel is the choice's normal end.
struct ChoiceTools {
  ToolCallStream parser;
  bool cut = false;

  std::vector<ToolStreamDelta> feed(const ServerContext& ctx, uint64_t id, const TokenEvent& ev) {
    std::vector<ToolStreamDelta> d = parser.push(ev.text);
    if (ev.finished) {
      std::vector<ToolStreamDelta> rest = parser.finish();
      d.insert(d.end(), rest.begin(), rest.end());
    } else if (parser.done() && !cut) {
      cut = true;
      ctx.engine->cancel(id);
    }
    return d;
  }

  bool cancelled_by_us(const TokenEvent& ev) const { return cut && ev.finish_reason == FinishReason::Cancelled; }

  std::string finish_reason(const TokenEvent& ev) const {
    const std::string f = finish_reason_name(ev.finish_reason);
    return cut || (f == "stop" && parser.calls() > 0) ? "tool_calls" : f;
  }
};

std::vector<ChoiceTools> choice_tools(const ToolRequest& t, size_t n) {
  return std::vector<ChoiceTools>(t.active() ? n : 0, ChoiceTools{ToolCallStream(t)});
}

// nginx's status for "the client closed the connection before the answer": only metrics see it.
constexpr int kClientClosedRequest = 499;

void complete(const ServerContext& ctx, const ApiRequest& r, Plan& p, const ResponseMeta& meta,
              httplib::Response& res) {
  const size_t n = p.requests.size();
  auto ch = std::make_shared<EventChannel>(int(n), ctx.metrics);
  const std::vector<bool> first = p.first_of_prompt;
  std::vector<uint64_t> ids = submit_all(ctx, p, ch);
  std::vector<ChoiceOut> outs(n);
  std::vector<ChoiceTools> tools = choice_tools(r.tools, n);
  std::vector<ParsedOutput> parsed(tools.size());
  Usage usage;
  // The socket of this request: a client that hung up gets its generations cancelled instead of
  // holding a worker and the engine for tokens nobody reads.
  const Connection* conn = current_connection();
  try {
    // The engine guarantees one finished event per request, so this loop ends.
    bool cancelled = false;
    while (!ch->drained()) {
      if (!cancelled && ctx.stopping && ctx.stopping->load()) {
        for (uint64_t id : ids) ctx.engine->cancel(id);  // their Cancelled events end the loop
        cancelled = true;
      }
      if (conn && conn->peer_closed()) {
        for (uint64_t id : ids) ctx.engine->cancel(id);
        ctx.metrics->count_disconnect();
        res.status = kClientClosedRequest;
        return;
      }
      for (auto& it : ch->wait(std::chrono::milliseconds(100))) {
        const size_t i = size_t(it.index);
        ChoiceOut& c = outs[i];
        c.text += it.ev.text;
        if (r.logprobs && it.ev.token >= 0) c.logprobs.push_back(logprob_out(*ctx.tokenizer, it.ev));
        if (!tools.empty()) apply_deltas(parsed[i], tools[i].feed(ctx, ids[i], it.ev));
        if (it.ev.finished) {
          if (tools.empty() || !tools[i].cancelled_by_us(it.ev)) check_finish(it.ev);
          c.finish_reason = tools.empty() ? finish_reason_name(it.ev.finish_reason) : tools[i].finish_reason(it.ev);
          add_usage(usage, it.ev, first[i]);
        }
      }
    }
  } catch (...) {
    for (uint64_t id : ids) ctx.engine->cancel(id);
    throw;
  }
  for (size_t i = 0; i < parsed.size(); ++i) {  // without calls the content is the text as it was
    outs[i].text = std::move(parsed[i].content);
    outs[i].tool_calls = std::move(parsed[i].calls);
  }
  send_json(res, 200, response_json(meta, outs, usage));
}

struct StreamState {
  std::shared_ptr<EventChannel> ch;
  std::vector<uint64_t> ids;
  std::vector<bool> first_of_prompt;
  ResponseMeta meta;
  bool include_usage = false;
  bool logprobs = false;
  Usage usage;
  bool started = false;
  std::chrono::steady_clock::time_point last_write;
  // With tools: each choice's calls, streamed as deltas (tool_calls refers to `tools`).
  ToolRequest tools;
  std::vector<ChoiceTools> tool_calls;
};

// What one call of the chunked content provider does. Returns false when the client is gone
// (a write failed); throws on anything unexpected, which stream() turns into an error event.
class StreamWriter {
 public:
  StreamWriter(StreamState& st, const ServerContext& ctx, httplib::DataSink& sink) : st_(st), c_(ctx), sink_(sink) {}

  bool step() {
    if (!st_.started) {
      st_.started = true;
      // Chat streams open every choice with its role, as OpenAI does.
      if (st_.meta.chat)
        for (size_t i = 0; i < st_.ids.size(); ++i)
          if (!write(sse_event(chunk_json(st_.meta, int(i), "", true, "", {})))) return false;
      st_.last_write = std::chrono::steady_clock::now();
    }
    if (c_.stopping && c_.stopping->load()) return end_with_error(503, "the server is shutting down");
    for (auto& it : st_.ch->wait(std::chrono::milliseconds(100)))
      if (!event(it.index, it.ev)) return false;
    if (st_.ch->drained()) {
      if (st_.include_usage && !write(sse_event(usage_chunk_json(st_.meta, st_.usage)))) return false;
      return finish();
    }
    // Nothing to say for a while (queued, long prefill): a comment probes the connection so a
    // client that left is noticed even before its first token.
    if (std::chrono::steady_clock::now() - st_.last_write > std::chrono::seconds(1) && !write(sse_comment()))
      return false;
    return sink_.is_writable();
  }

  // The stream's last words after a failure: an error event, then [DONE].
  bool end_with_error(int status, const std::string& message) {
    cancel_all(st_, c_);
    return write(sse_event(error_body(status, message))) && finish();
  }

  bool try_end_with_error(int status, const std::string& message) noexcept {
    try {
      return end_with_error(status, message);
    } catch (...) {
      return false;
    }
  }

  static void cancel_all(const StreamState& st, const ServerContext& ctx) {
    for (uint64_t id : st.ids) ctx.engine->cancel(id);
  }

 private:
  bool write(const std::string& s) {
    if (!sink_.write(s.data(), s.size())) return false;
    st_.last_write = std::chrono::steady_clock::now();
    return true;
  }

  bool finish() {
    if (!write(sse_done())) return false;
    sink_.done();
    return true;
  }

  bool event(int index, const TokenEvent& ev) {
    if (ev.finished) add_usage(st_.usage, ev, st_.first_of_prompt[size_t(index)]);
    if (ev.finished && ev.finish_reason == FinishReason::Error)
      return write(sse_event(error_body(500, "generation failed: " + ev.error)));
    const bool ours = st_.tools.active() && st_.tool_calls[size_t(index)].cancelled_by_us(ev);
    if (ev.finished && ev.finish_reason == FinishReason::Cancelled && !ours)
      return write(sse_event(error_body(503, "the request was cancelled")));
    std::vector<TokenLogprobOut> lp;
    if (st_.logprobs && ev.token >= 0) lp.push_back(logprob_out(*c_.tokenizer, ev));
    if (st_.tools.active()) return tool_event(index, ev, lp);
    if (!ev.finished && ev.text.empty() && lp.empty()) return true;
    return write(sse_event(
        chunk_json(st_.meta, index, ev.text, false, ev.finished ? finish_reason_name(ev.finish_reason) : "", lp)));
  }

  // An event of a choice that may call tools: its content and call deltas, one chunk each (the
  // event's logprobs ride on the first), then the last chunk when it ends.
  bool tool_event(int index, const TokenEvent& ev, std::vector<TokenLogprobOut> lp) {
    ChoiceTools& tools = st_.tool_calls[size_t(index)];
    for (const ToolStreamDelta& d : tools.feed(c_, st_.ids[size_t(index)], ev)) {
      const json chunk = d.kind == ToolStreamDelta::Kind::Content ? chunk_json(st_.meta, index, d.text, false, "", lp)
                                                                  : tool_delta_chunk_json(st_.meta, index, d, lp);
      if (!write(sse_event(chunk))) return false;
      lp.clear();
    }
    if (ev.finished) return write(sse_event(chunk_json(st_.meta, index, "", false, tools.finish_reason(ev), lp)));
    if (lp.empty() || tools.cut) return true;
    return write(sse_event(chunk_json(st_.meta, index, "", false, "", lp)));
  }

  StreamState& st_;
  const ServerContext& c_;
  httplib::DataSink& sink_;
};

void stream(const ServerContext& ctx, const ApiRequest& r, Plan& p, const ResponseMeta& meta, httplib::Response& res) {
  auto st = std::make_shared<StreamState>();
  st->ch = std::make_shared<EventChannel>(int(p.requests.size()), ctx.metrics);
  st->first_of_prompt = p.first_of_prompt;
  st->meta = meta;
  st->include_usage = r.include_usage;
  st->logprobs = r.logprobs;
  st->tools = r.tools;
  st->tool_calls = choice_tools(st->tools, p.requests.size());
  st->ids = submit_all(ctx, p, st->ch);  // refusals become a plain JSON error, before any SSE
  const ServerContext c = ctx;
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      // No exception may leave this function: httplib calls it outside any handler guard, and
      // an exception there ends the process.
      [st, c](size_t, httplib::DataSink& sink) {
        StreamWriter w(*st, c, sink);
        try {
          if (w.step()) return true;
        } catch (const std::exception& e) {
          if (w.try_end_with_error(500, std::string("internal error: ") + e.what())) return true;
        } catch (...) {
          if (w.try_end_with_error(500, "internal error")) return true;
        }
        StreamWriter::cancel_all(*st, c);  // the client is gone (or cannot be told): free the engine
        c.metrics->count_disconnect();
        return false;
      },
      [st, c](bool success) {
        if (!success) StreamWriter::cancel_all(*st, c);  // connection dropped: free the engine
      });
}

void generate(const ServerContext& ctx, const httplib::Request& req, httplib::Response& res, bool chat) {
  if (ctx.stopping && ctx.stopping->load()) throw ApiError(503, "the server is shutting down");
  const ApiRequest r = parse_request(req.body, chat);
  if (!r.model.empty() && r.model != ctx.model_id)
    throw ApiError(404, "the model named in 'model' does not exist; this server serves '" + ctx.model_id + "'", "model",
                   "", "model_not_found");
  Plan p;
  try {
    p = plan(ctx, r);
  } catch (const ApiError&) {
    throw;
  } catch (const Error& e) {
    throw ApiError(400, e.what());
  }
  ResponseMeta meta{new_id(chat ? "chatcmpl" : "cmpl"), unix_now(), ctx.model_id, chat, r.logprobs};
  if (r.stream) stream(ctx, r, p, meta, res);
  else complete(ctx, r, p, meta, res);
}

// Every handler error becomes an OpenAI error body; nothing escapes to httplib.
template <class F>
httplib::Server::Handler guarded(F f) {
  return [f](const httplib::Request& req, httplib::Response& res) {
    try {
      f(req, res);
    } catch (const ApiError& e) {
      send_json(res, e.status(), e.body());
    } catch (const std::exception& e) {
      send_json(res, 500, error_body(500, std::string("internal error: ") + e.what()));
    }
  };
}

json model_json(const ServerContext& ctx) {
  // max_model_len as vLLM reports it; vocab_size is ours: the range of valid token ids, which a
  // client sending token-id prompts (bench/serve_load.py) needs to know.
  json m = {{"id", ctx.model_id},
            {"object", "model"},
            {"created", ctx.created},
            {"owned_by", "greta"},
            {"max_model_len", ctx.engine->max_context()}};
  if (ctx.vocab_size > 0) m["vocab_size"] = ctx.vocab_size;
  return m;
}

}  // namespace

void add_routes(httplib::Server& http, const ServerContext& ctx) {
  http.Post("/v1/completions", guarded([ctx](const auto& req, auto& res) { generate(ctx, req, res, false); }));
  http.Post("/v1/chat/completions", guarded([ctx](const auto& req, auto& res) { generate(ctx, req, res, true); }));
  http.Get("/v1/models", guarded([ctx](const auto&, auto& res) {
             send_json(res, 200, {{"object", "list"}, {"data", json::array({model_json(ctx)})}});
           }));
  http.Get(R"(/v1/models/(.+))", guarded([ctx](const httplib::Request& req, auto& res) {
             if (req.matches[1] != ctx.model_id)
               throw ApiError(404, "no such model; this server serves '" + ctx.model_id + "'", "model", "",
                              "model_not_found");
             send_json(res, 200, model_json(ctx));
           }));
  http.Get("/health", guarded([](const auto&, auto& res) { send_json(res, 200, {{"status", "ok"}}); }));
  http.Get("/metrics", guarded([ctx](const auto&, auto& res) {
             res.set_content(ctx.metrics->render(ctx.engine->stats()), "text/plain; version=0.0.4");
           }));
}

}  // namespace greta::server
