// greta serve: an OpenAI-compatible HTTP server (src/server) on the continuous-batching engine.
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "backend/kv_cache_dtype.h"
#include "cli/arg_checks.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "greta/engine.h"
#include "server/http_server.h"

namespace greta::cli {

namespace {

struct ServeOptions {
  ModelOptions model;
  server::HttpOptions http;
  EngineConfig engine;
  std::string chat_template;
  std::string model_id;
  double kv_memory_mib = 0;  // > 0: the KV pool is as many blocks as fit in this (sets engine.kv_blocks)
};

// True when every address `host` names is a loopback one (only this machine can connect).
bool loopback_only(const std::string& host) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0) return false;
  bool loopback = res != nullptr;
  for (addrinfo* a = res; a; a = a->ai_next) {
    if (a->ai_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(a->ai_addr);
      loopback = loopback && (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    } else if (a->ai_family == AF_INET6) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(a->ai_addr);
      loopback = loopback && IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    } else {
      loopback = false;
    }
  }
  ::freeaddrinfo(res);
  return loopback;
}

void serve(ServeOptions& o) {
  if (o.http.api_key.empty() && !loopback_only(o.http.host))
    std::fprintf(stderr,
                 "greta: warning: serving on %s without --api-key: anyone who can reach this address "
                 "can use the server\n",
                 o.http.host.c_str());
  // SIGINT/SIGTERM go to one thread that stops the server (blocked here, before any thread
  // starts, so every thread inherits the mask); SIGPIPE must never kill the server.
  std::signal(SIGPIPE, SIG_IGN);
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  Loaded L = load(o.model);
  std::unique_ptr<ChatTemplate> tmpl;
  const std::string source = o.chat_template.empty() ? L.tokenizer->chat_template : load_chat_template(o.chat_template);
  if (!source.empty()) tmpl = std::make_unique<ChatTemplate>(ChatTemplate::parse(source));
  else
    std::fprintf(stderr,
                 "greta: warning: the model has no chat template; /v1/chat/completions will answer 400 "
                 "(pass --chat-template NAME|FILE)\n");

  std::string id = o.model_id;
  if (id.empty() && !o.model.synthetic.empty()) {
    id = "synthetic-" + o.model.synthetic;
  } else if (id.empty()) {
    std::filesystem::path p(resolve_model_path(o.model.model));
    id = (p.has_filename() ? p.filename() : p.parent_path().filename()).string();
  }
  // The element type decides how many tokens the memory holds: FP8 rows take about half the bytes.
  if (o.kv_memory_mib > 0) o.engine.kv_blocks = kv_blocks_in_mib(L, o.kv_memory_mib, o.engine.block_size);
  print_kv_cache(L, o.engine.kv_blocks, o.engine.block_size);
  // Metrics before the engine: the engine's callbacks observe latencies until it is destroyed.
  server::Metrics metrics;
  Engine engine(*L.model, *L.tokenizer, o.engine);
  server::ServerContext ctx;
  ctx.engine = &engine;
  ctx.tokenizer = L.tokenizer.get();
  ctx.chat_template = tmpl.get();
  ctx.metrics = &metrics;
  ctx.model_id = id;
  ctx.vocab_size = L.model->config().vocab_size;
  ctx.created =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  server::HttpServer http(ctx, o.http);
  const int port = http.bind();

  std::thread stopper([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    http.stop();
  });
  std::fprintf(stderr, "greta: serving %s on %s (max context %d tokens, %d KV blocks of %s)%s\n", id.c_str(),
               L.backend->name().c_str(), engine.max_context(), o.engine.kv_blocks,
               kv_cache_dtype_name(L.backend->kv_dtype()).c_str(), o.http.api_key.empty() ? "" : ", API key required");
  std::printf("greta: listening on http://%s:%d/v1\n", o.http.host.c_str(), port);
  std::fflush(stdout);
  http.run();
  // run() returns after stop() (from the stopper) or when listening failed: wake the stopper.
  pthread_kill(stopper.native_handle(), SIGTERM);
  stopper.join();
  std::fprintf(stderr, "greta: server stopped\n");
}

}  // namespace

void register_serve(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  CLI::App* sub = app.add_subcommand("serve", "OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions)");
  o->model.add_to(sub);
  // Random weights of a real shape plus a generated vocabulary: load tests of big models with
  // no download (the text they produce is noise; prompts are best sent as token ids).
  o->model.add_synthetic_to(sub);
  sub->add_option("--host", o->http.host, "address to bind (default 127.0.0.1: this machine only)");
  sub->add_option("--port", o->http.port, "TCP port (0 = any free port)")->check(integer_in(0, 65535));
  sub->add_option("--api-key", o->http.api_key, "require 'Authorization: Bearer KEY' (all but /health)");
  sub->add_option("--model-id", o->model_id, "model name clients use (default: the model's file name)");
  sub->add_option("--chat-template", o->chat_template,
                  "chat template: a built-in name (" + builtin_chat_template_names_text() + ") or a Jinja file");
  sub->add_option("-c,--ctx", o->engine.max_context, "prompt + max_tokens limit (0 = min(model's, KV pool))")
      ->check(integer_in(0, 1 << 24));
  CLI::Option* blocks = sub->add_option("--kv-blocks", o->engine.kv_blocks,
                                        "KV cache pool size in blocks (default 1024)")
                            ->check(integer_in(1, 1 << 24));
  sub->add_option("--kv-memory-mib", o->kv_memory_mib,
                  "KV cache pool size in MiB instead of --kv-blocks: as many blocks as fit with --kv-dtype's bytes "
                  "(fp8 holds about twice the tokens of f16 / bf16)")
      ->check(number_in(0.0, 1 << 30))
      ->excludes(blocks);
  sub->add_option("--block-size", o->engine.block_size, "tokens per KV block")->check(integer_in(1, 4096));
  sub->add_option("--max-running", o->engine.max_running, "most sequences in flight at once")
      ->check(integer_in(1, 1 << 16));
  sub->add_option("--max-queue", o->engine.max_queue, "most requests waiting; more get 429")
      ->check(integer_in(0, 1 << 20));
  sub->add_option("--max-step-tokens", o->engine.max_step_tokens, "token budget of one engine step")
      ->check(integer_in(1, 1 << 20));
  sub->add_option("--max-body", o->http.max_body_bytes, "largest request body in bytes (more gets 413)")
      ->check(integer_in(1024, 1 << 30));
  sub->add_option("--http-threads", o->http.threads, "requests handled at once (each stream holds one)")
      ->check(integer_in(4, 4096));
  sub->add_option("--header-timeout", o->http.head_timeout_s,
                  "seconds a request's headers may take, from their first byte (more gets 408)")
      ->check(integer_in(1, 3600));
  sub->add_option("--body-timeout", o->http.body_timeout_s,
                  "seconds a request's body may take, after its headers (more gets 408)")
      ->check(integer_in(1, 3600));
  sub->add_option("--idle-timeout", o->http.idle_timeout_s, "seconds a connection may wait with no request")
      ->check(integer_in(1, 3600));
  sub->add_option("--max-client-connections", o->http.max_client_connections,
                  "open connections per client address, 0 = no limit (more get 429)")
      ->check(integer_in(0, 1 << 20));
  sub->callback([o] {
    // KV slots (block * block_size + offset) are 32-bit throughout the engine and backends.
    const int64_t slots = int64_t(o->engine.kv_blocks) * o->engine.block_size;
    if (slots > INT32_MAX)
      throw CLI::ValidationError("--kv-blocks x --block-size",
                                 std::to_string(o->engine.kv_blocks) + " x " + std::to_string(o->engine.block_size) +
                                     " = " + std::to_string(slots) + " token slots, more than the " +
                                     std::to_string(INT32_MAX) + " the KV cache can address");
    serve(*o);
  });
}

}  // namespace greta::cli
