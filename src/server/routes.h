// The HTTP endpoints: POST /v1/completions, POST /v1/chat/completions (plain and SSE
// streaming), GET /v1/models[/ID], GET /health, GET /metrics.
//
// Guarantees
// - A request's failure becomes an OpenAI-shaped error response for that request only; no
//   exception leaves a handler.
// - A choice is one engine request; if any of a request's submissions is refused, those
//   already submitted are cancelled before the error goes out.
// - A streaming client that goes away (a write fails or the socket stops being writable)
//   has every engine request of its response cancelled at once.
#pragma once
#include <atomic>
#include <string>

#include "chat/chat_template.h"
#include "greta/engine.h"
#include "server/grammar_cache.h"
#include "server/metrics.h"
#include "tokenizer/tokenizer.h"

namespace httplib {
class Server;
}

namespace greta::server {

// What the routes need; everything here must outlive the HTTP server.
struct ServerContext {
  Engine* engine = nullptr;
  const Tokenizer* tokenizer = nullptr;
  const ChatTemplate* chat_template = nullptr;  // null: chat completions answer 400
  Metrics* metrics = nullptr;
  GrammarCache* grammars = nullptr;  // compiled constraints by source (null: compiled per request)
  std::string model_id;              // what /v1/models lists and requests must name (or omit)
  int64_t created = 0;               // unix time the model was loaded
  int vocab_size = 0;                // the model's: token ids in prompts must be below it (0: not reported)
  // Set when the server stops: waiting handlers cancel their requests and answer 503 instead
  // of holding the shutdown until their generations end.
  const std::atomic<bool>* stopping = nullptr;
};

void add_routes(httplib::Server& http, const ServerContext& ctx);

}  // namespace greta::server
