#include "server/http_server.h"

#include <httplib.h>
#include <sys/socket.h>

#include "server/openai_json.h"

namespace greta::server {

namespace {

constexpr int kListenBacklog = 4096;

// Compares without an early exit, so response time does not reveal how much of a key matched.
bool same_secret(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;  // the length is not secret
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= uint8_t(a[i]) ^ uint8_t(b[i]);
  return diff == 0;
}

// Metric label for a path; unknown paths share one label so scanners cannot blow up cardinality.
std::string path_label(const std::string& path) {
  for (const char* p : {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics"})
    if (path == p) return p;
  if (path.rfind("/v1/models/", 0) == 0) return "/v1/models/{id}";
  return "other";
}

std::string default_message(int status) {
  switch (status) {
    case 400: return "bad request";
    case 404: return "no such endpoint";
    case 405: return "method not allowed";
    case 413: return "the request body is too large";
    case 414: return "the request URI is too long";
    default: return "HTTP error " + std::to_string(status);
  }
}

}  // namespace

HttpServer::HttpServer(const ServerContext& ctx, HttpOptions opt)
    : ctx_(ctx), opt_(std::move(opt)), http_(std::make_unique<httplib::Server>()) {
  ctx_.stopping = &stopping_;
  const int threads = std::max(4, opt_.threads);
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  http_->set_payload_max_length(opt_.max_body_bytes);
  http_->set_socket_options([this](socket_t sock) {
    httplib::default_socket_options(sock);
    listen_fd_ = int(sock);
  });
  if (!opt_.api_key.empty()) {
    const std::string expected = "Bearer " + opt_.api_key;
    http_->set_pre_routing_handler([expected](const httplib::Request& req, httplib::Response& res) {
      if (req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;  // probes stay open
      if (same_secret(req.get_header_value("Authorization"), expected))
        return httplib::Server::HandlerResponse::Unhandled;
      res.status = 401;
      res.set_content(dump(error_body(401, req.has_header("Authorization")
                                               ? "invalid API key"
                                               : "missing API key: send 'Authorization: Bearer KEY'",
                                      "", "invalid_api_key")),
                      "application/json");
      return httplib::Server::HandlerResponse::Handled;
    });
  }
  // httplib's own errors (no route, body too large, malformed HTTP) get OpenAI-shaped bodies;
  // responses our handlers already filled are left alone.
  http_->set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    res.set_content(dump(error_body(res.status, default_message(res.status))), "application/json");
    return httplib::Server::HandlerResponse::Handled;
  }));
  http_->set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    res.status = 500;
    res.set_content(dump(error_body(500, "internal error")), "application/json");
  });
  Metrics* m = ctx_.metrics;
  http_->set_logger([m](const httplib::Request& req, const httplib::Response& res) {
    m->count_request(path_label(req.path), res.status);
  });
  add_routes(*http_, ctx_);
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  int port = opt_.port;
  if (port == 0) {
    port = http_->bind_to_any_port(opt_.host);
    if (port < 0) throw Error("cannot bind " + opt_.host + " on any port");
  } else if (!http_->bind_to_port(opt_.host, port)) {
    throw Error("cannot bind " + opt_.host + ":" + std::to_string(port) + " (in use, or not a local address?)");
  }
  // cpp-httplib listens with a backlog of 5 (fixed inside the library): hundreds of clients
  // connecting at once overflow it and the kernel resets some of them (seen with 512 load
  // clients in 8 processes). Listening again on the bound socket raises the backlog (the
  // kernel caps it at net.core.somaxconn).
  if (listen_fd_ >= 0 && ::listen(listen_fd_, kListenBacklog) != 0)
    throw Error("cannot raise the listen backlog of " + opt_.host + ":" + std::to_string(port));
  return port;
}

void HttpServer::run() { http_->listen_after_bind(); }
void HttpServer::stop() {
  stopping_ = true;
  http_->stop();
}

}  // namespace greta::server
