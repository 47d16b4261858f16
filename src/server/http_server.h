// The HTTP server around the routes: bind address, API-key check, body size limit,
// OpenAI-shaped bodies for httplib's own errors (404, 413, ...), request metrics, and a
// thread pool large enough that streaming clients do not starve /health.
#pragma once
#include <atomic>
#include <cstddef>
#include <memory>
#include <string>

#include "server/routes.h"

namespace httplib {
class Server;
}

namespace greta::server {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;               // 0: any free port
  std::string api_key;           // "": no authentication
  size_t max_body_bytes = 1 << 20;
  int threads = 64;              // concurrent connections served (a stream holds one)
};

class HttpServer {
 public:
  HttpServer(const ServerContext& ctx, HttpOptions opt);
  ~HttpServer();
  // Binds the socket; returns the port (useful with port 0). Throws greta::Error when it cannot.
  int bind();
  void run();   // serves until stop(); call bind() first
  void stop();  // thread-safe

 private:
  ServerContext ctx_;
  HttpOptions opt_;
  std::atomic<bool> stopping_{false};
  std::unique_ptr<httplib::Server> http_;
  int listen_fd_ = -1;  // the listening socket, recorded by the socket-options hook
};

}  // namespace greta::server
