// One client connection of the HTTP server, and the httplib::Stream a worker parses it through.
//
// A connection moves between the ConnectionGate (while no complete request head has arrived:
// accepting, keep-alive idle, slow senders) and a worker thread (while one request is parsed,
// handled and answered). Bytes read ahead of what the parser consumed travel with it.
//
// Guarantees
// - Reads never wait past the request's deadline: the body must arrive within body_timeout of
//   the worker taking the request; the wait is not renewed by each byte.
// - Writes wait at most write_timeout for the client to accept more bytes.
// - The socket is closed, and the client's connection count released, exactly once, when the
//   last owner lets go of the Connection.
#pragma once
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <httplib.h>
#include <sys/socket.h>

namespace greta::server {

using Clock = std::chrono::steady_clock;

struct Connection {
  Connection(int fd, std::string peer, int port, std::function<void(const std::string&)> release);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // True when the client closed its end or the socket failed (a client that went away while
  // its request was being handled). Does not consume any byte.
  bool peer_closed() const;

  const int fd;
  const std::string peer;  // client IP address
  const int port;
  std::string pending;             // bytes read but not yet parsed (the next request's start)
  Clock::time_point idle_since;    // when the connection last had no request in progress
  Clock::time_point head_started;  // first byte of the current request head (gate)
  bool head_in_progress = false;
  // What the gate is waiting for: the head, the body of known length, or the end of a body
  // over the limit that it drops.
  enum class Stage { Head, Body, Discard };
  Stage stage = Stage::Head;
  size_t request_bytes = 0;        // Body: head + body bytes
  uint64_t discard = 0;            // Discard: body bytes still to drop
  bool probe = false;              // the request is GET /health or /metrics
  Clock::time_point body_started;  // when the head was complete
  int requests = 0;                // requests answered on this connection
  bool must_close = false;         // set while handling: close after this response
  bool body_timed_out = false;     // the body deadline passed while reading (answer 408)

 private:
  std::function<void(const std::string&)> release_;
};

// The numeric address of an IPv4 or IPv6 socket address ("" for other families), and its port.
std::string address_text(const sockaddr_storage& addr, int& port);

// Closes a client socket without a reset that could destroy the response just sent.
void close_gracefully(int fd);

// The connection the calling thread is serving a request on, or null (outside a request).
Connection* current_connection();

// Sets current_connection() for the lifetime of the object.
class CurrentConnection {
 public:
  explicit CurrentConnection(Connection* c);
  ~CurrentConnection();
};

struct StreamTimeouts {
  std::chrono::milliseconds body{30000};
  std::chrono::milliseconds write{10000};
};

// httplib::Stream over a Connection's socket, starting with its `pending` bytes.
class ConnectionStream : public httplib::Stream {
 public:
  ConnectionStream(Connection& c, StreamTimeouts t);
  ~ConnectionStream() override;  // unconsumed bytes go back to c.pending

  bool is_readable() const override;
  bool is_writable() const override;
  ssize_t read(char* ptr, size_t size) override;
  ssize_t write(const char* ptr, size_t size) override;
  void get_remote_ip_and_port(std::string& ip, int& port) const override;
  void get_local_ip_and_port(std::string& ip, int& port) const override;
  socket_t socket() const override { return c_.fd; }

 private:
  Connection& c_;
  StreamTimeouts t_;
  std::string buf_;
  size_t pos_ = 0;
  Clock::time_point deadline_;
};

}  // namespace greta::server
