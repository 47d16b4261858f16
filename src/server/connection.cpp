#include "server/connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace greta::server {

namespace {

thread_local Connection* tl_current = nullptr;

constexpr size_t kReadChunk = 16384;

// Milliseconds left until `deadline` (0 when past), rounded up so that a poll() that times out
// returns at or after the deadline.
int ms_until(Clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left <= 0 ? 0 : int(std::min<long long>(left, 1 << 30));
}

// Waits until fd has `events` or the timeout passes; retries on EINTR.
bool wait_for(int fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  for (;;) {
    const int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    return r > 0 && (p.revents & (events | POLLHUP | POLLERR));
  }
}

}  // namespace

Connection::Connection(int fd_, std::string peer_, int port_, std::function<void(const std::string&)> release)
    : fd(fd_), peer(std::move(peer_)), port(port_), idle_since(Clock::now()), release_(std::move(release)) {}

void close_gracefully(int fd) {
  // Unread input makes close() send a reset, which can destroy a response the client has not
  // read yet (a 400 or 431 to a request whose rest was never read). Finish sending, take what
  // has already arrived (bounded; never waits), then close.
  ::shutdown(fd, SHUT_WR);
  char sink[16384];
  for (int i = 0; i < 64 && ::recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; ++i) {
  }
  ::close(fd);
}

Connection::~Connection() {
  close_gracefully(fd);
  if (release_) release_(peer);
}

bool Connection::peer_closed() const {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLHUP | POLLERR | POLLRDHUP)) return true;
  char c;
  const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

Connection* current_connection() { return tl_current; }
CurrentConnection::CurrentConnection(Connection* c) { tl_current = c; }
CurrentConnection::~CurrentConnection() { tl_current = nullptr; }

ConnectionStream::ConnectionStream(Connection& c, StreamTimeouts t)
    : c_(c), t_(t), buf_(std::move(c.pending)), deadline_(Clock::now() + t.body) {
  c_.pending.clear();
}

ConnectionStream::~ConnectionStream() { c_.pending = buf_.substr(pos_); }

bool ConnectionStream::is_readable() const {
  return pos_ < buf_.size() || wait_for(c_.fd, POLLIN, ms_until(deadline_));
}

bool ConnectionStream::is_writable() const { return wait_for(c_.fd, POLLOUT, int(t_.write.count())); }

ssize_t ConnectionStream::read(char* ptr, size_t size) {
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
    if (!wait_for(c_.fd, POLLIN, ms_until(deadline_))) {
      if (Clock::now() >= deadline_) c_.body_timed_out = true;
      c_.must_close = true;  // the rest of this request may still come: nothing after it can be parsed
      return -1;
    }
    buf_.resize(kReadChunk);
    ssize_t n;
    do {
      n = ::recv(c_.fd, buf_.data(), buf_.size(), 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
      buf_.clear();
      c_.must_close = true;
      return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? -1 : n;
    }
    buf_.resize(size_t(n));
  }
  const size_t n = std::min(size, buf_.size() - pos_);
  std::copy_n(buf_.data() + pos_, n, ptr);
  pos_ += n;
  return ssize_t(n);
}

ssize_t ConnectionStream::write(const char* ptr, size_t size) {
  if (!wait_for(c_.fd, POLLOUT, int(t_.write.count()))) return -1;
  ssize_t n;
  do {
    n = ::send(c_.fd, ptr, size, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;  // httplib's write loop retries
  return n;
}

void ConnectionStream::get_remote_ip_and_port(std::string& ip, int& port) const {
  ip = c_.peer;
  port = c_.port;
}

void ConnectionStream::get_local_ip_and_port(std::string& ip, int& port) const {
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  ip.clear();
  port = 0;
  if (::getsockname(c_.fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) ip = address_text(addr, port);
}

std::string address_text(const sockaddr_storage& addr, int& port) {
  char host[INET6_ADDRSTRLEN] = {};
  port = 0;
  if (addr.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
    ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
  }
  return host;
}

}  // namespace greta::server
