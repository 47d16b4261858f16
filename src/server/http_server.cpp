#include "server/http_server.h"

#include <httplib.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "server/connection_gate.h"
#include "server/openai_json.h"

namespace greta::server {

// httplib's request parser and router, run on our connections (process_request is protected).
class HttpServer::Parser : public httplib::Server {
 public:
  bool handle(httplib::Stream& strm, bool close_connection, bool& connection_closed) {
    return process_request(strm, close_connection, connection_closed, nullptr);
  }
};

namespace {

constexpr int kListenBacklog = 4096;
constexpr int kProbeThreads = 2;                 // /health and /metrics
constexpr int kMaxRequestsPerConnection = 1000;  // then the client reconnects

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
    case 408: return "the request body did not arrive in time";
    case 404: return "no such endpoint";
    case 405: return "method not allowed";
    case 413: return "the request body is too large";
    case 414: return "the request URI is too long";
    default: return "HTTP error " + std::to_string(status);
  }
}

// Why a request's framing is refused, or "" when it is fine. Two lengths, or a length next to
// chunked encoding, let a proxy and this server disagree on where the request ends.
std::string framing_problem(const httplib::Request& req) {
  if (req.get_header_value_count("Content-Length") > 1) return "more than one Content-Length header";
  if (req.has_header("Content-Length") && req.has_header("Transfer-Encoding"))
    return "both Content-Length and Transfer-Encoding";
  return "";
}

// The reason bind() failed for host:port, asked of the system with the same socket options.
std::string bind_failure(const std::string& host, int port) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  if (int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res); rc != 0)
    return ::gai_strerror(rc);
  std::string why = "unknown reason";
  for (addrinfo* a = res; a; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    const bool ok = ::bind(fd, a->ai_addr, a->ai_addrlen) == 0;
    const int err = errno;
    ::close(fd);
    if (!ok) {
      why = std::strerror(err);
      break;
    }
  }
  ::freeaddrinfo(res);
  if (!why.empty()) why[0] = char(std::tolower(static_cast<unsigned char>(why[0])));
  return why;
}

using HR = httplib::Server::HandlerResponse;

// Answers and closes the connection: the request body (if any) was not read, so nothing after
// this response may be parsed as another request.
HR refuse_request(httplib::Response& res, int status, const std::string& message, const std::string& code = "") {
  res.status = status;
  res.set_header("Connection", "close");
  res.set_content(dump(error_body(status, message, "", code)), "application/json");
  if (Connection* c = current_connection()) c->must_close = true;
  return HR::Handled;
}

}  // namespace

HttpServer::HttpServer(const ServerContext& ctx, HttpOptions opt)
    : ctx_(ctx), opt_(std::move(opt)), http_(std::make_unique<Parser>()) {
  ctx_.stopping = &stopping_;
  if (!ctx_.grammars) ctx_.grammars = &grammars_;
  http_->set_payload_max_length(opt_.max_body_bytes);
  http_->set_keep_alive_timeout(opt_.idle_timeout_s);  // what the Keep-Alive header announces
  http_->set_keep_alive_max_count(kMaxRequestsPerConnection);
  // SO_REUSEADDR only: a restarted server can bind while old connections linger in TIME_WAIT,
  // but a second server on a port in use fails (httplib's default SO_REUSEPORT let both run
  // and share the traffic).
  http_->set_socket_options([this](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listen_fd_ = int(sock);
  });
  const std::string expected = opt_.api_key.empty() ? "" : "Bearer " + opt_.api_key;
  http_->set_pre_routing_handler([expected](const httplib::Request& req, httplib::Response& res) {
    if (std::string why = framing_problem(req); !why.empty()) return refuse_request(res, 400, "refused: " + why);
    if (expected.empty() || req.path == "/health") return HR::Unhandled;  // probes stay open
    if (same_secret(req.get_header_value("Authorization"), expected)) return HR::Unhandled;
    return refuse_request(
        res, 401,
        req.has_header("Authorization") ? "invalid API key" : "missing API key: send 'Authorization: Bearer KEY'",
        "invalid_api_key");
  });
  // httplib's own errors (no route, body too large, malformed HTTP) get OpenAI-shaped bodies;
  // responses our handlers already filled are left alone.
  http_->set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    if (Connection* c = current_connection(); c && c->body_timed_out) res.status = 408;
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

HttpServer::~HttpServer() {
  stop();
  join_workers();
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

int HttpServer::bind() {
  int port = opt_.port;
  if (port == 0) {
    port = http_->bind_to_any_port(opt_.host);
    if (port < 0) throw Error("cannot listen on " + opt_.host + ": " + bind_failure(opt_.host, 0));
  } else if (!http_->bind_to_port(opt_.host, port)) {
    throw Error("cannot listen on " + opt_.host + ":" + std::to_string(port) + ": " + bind_failure(opt_.host, port));
  }
  // cpp-httplib listens with a backlog of 5 (fixed inside the library): hundreds of clients
  // connecting at once overflow it and the kernel resets some of them (seen with 512 load
  // clients in 8 processes). Listening again on the bound socket raises the backlog (the
  // kernel caps it at net.core.somaxconn).
  if (listen_fd_ >= 0 && ::listen(listen_fd_, kListenBacklog) != 0)
    throw Error("cannot raise the listen backlog of " + opt_.host + ":" + std::to_string(port));
  workers_ = std::make_unique<httplib::ThreadPool>(size_t(std::max(1, opt_.threads)));
  probes_ = std::make_unique<httplib::ThreadPool>(size_t(kProbeThreads));
  GateLimits limits;
  limits.head_timeout = std::chrono::seconds(opt_.head_timeout_s);
  limits.idle_timeout = std::chrono::seconds(opt_.idle_timeout_s);
  limits.body_timeout = std::chrono::seconds(opt_.body_timeout_s);
  limits.max_body = opt_.max_body_bytes;
  limits.max_per_client = opt_.max_client_connections;
  gate_ = std::make_unique<ConnectionGate>(
      listen_fd_, limits,
      [this](std::shared_ptr<Connection> c, bool probe) {
        (probe ? probes_ : workers_)->enqueue([this, c = std::move(c)]() mutable { serve(std::move(c)); });
      },
      ctx_.metrics);
  return port;
}

void HttpServer::serve(std::shared_ptr<Connection> c) {
  bool keep = false;
  {
    CurrentConnection current(c.get());
    ConnectionStream strm(*c, {std::chrono::seconds(opt_.body_timeout_s), std::chrono::seconds(opt_.write_timeout_s)});
    const bool last = stopping_ || c->requests + 1 >= kMaxRequestsPerConnection;
    bool closed = false;
    const bool ok = http_->handle(strm, last, closed);
    ++c->requests;
    keep = ok && !closed && !last && !c->must_close && !c->body_timed_out && !stopping_;
  }  // the stream hands unread bytes (a pipelined request) back to the connection
  if (keep) gate_->give_back(std::move(c));
}

void HttpServer::run() {
  if (!gate_) throw Error("HttpServer::run() before bind()");
  gate_->run();  // until stop()
  // New clients are refused from here; the workers finish what they hold (streams end with an
  // error event, waiting requests answer 503) and the keep-alive connections close.
  ::close(listen_fd_);
  listen_fd_ = -1;
  join_workers();
}

void HttpServer::stop() {
  stopping_ = true;
  if (gate_) gate_->stop();
}

void HttpServer::join_workers() {
  for (auto* pool : {&workers_, &probes_})
    if (*pool) {
      (*pool)->shutdown();
      pool->reset();
    }
}

}  // namespace greta::server
