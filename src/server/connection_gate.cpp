#include "server/connection_gate.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "server/metrics.h"
#include "server/openai_json.h"
#include "server/request_head.h"

namespace greta::server {

namespace {

constexpr int kMaxAcceptsPerRound = 256;  // then the held connections get their turn
// Bodies the gate holds at once, all connections together; past it, complete heads go to the
// workers at once (which then read their bodies under the body deadline).
constexpr size_t kMaxHeldBodyBytes = size_t(64) << 20;

const char* reason_phrase(int status) {
  switch (status) {
    case 408: return "Request Timeout";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    default: return "Error";
  }
}

}  // namespace

ConnectionGate::ConnectionGate(int listen_fd, GateLimits limits, Dispatch dispatch, Metrics* metrics)
    : listen_fd_(listen_fd), limits_(limits), dispatch_(std::move(dispatch)), metrics_(metrics) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw Error(std::string("cannot create the server's wake-up event: ") + std::strerror(errno));
  const int flags = ::fcntl(listen_fd_, F_GETFL, 0);
  ::fcntl(listen_fd_, F_SETFL, flags | O_NONBLOCK);
}

// A complete answer for a connection the gate refuses, written best effort (non-blocking: a
// client that does not read it just gets the close); `label` names the reason in the metrics.
void ConnectionGate::refuse(int fd, int status, const char* label, const char* message) {
  const std::string body = dump(error_body(status, message));
  const std::string resp = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) +
                           "\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " +
                           std::to_string(body.size()) + "\r\n\r\n" + body;
  [[maybe_unused]] ssize_t n = ::send(fd, resp.data(), resp.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  if (metrics_) metrics_->count_refused(label);
}

// Connections release their count under mu_ when destroyed, so they are dropped outside it.
void ConnectionGate::drop_all() {
  conns_.clear();
  std::vector<std::shared_ptr<Connection>> back;
  {
    std::lock_guard<std::mutex> lk(mu_);
    back.swap(returned_);
  }
}

ConnectionGate::~ConnectionGate() {
  drop_all();
  ::close(wake_fd_);
}

void ConnectionGate::wake() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void ConnectionGate::stop() {
  stopping_ = true;
  wake();
}

void ConnectionGate::give_back(std::shared_ptr<Connection> c) {
  if (stopping_) return;  // dropping it closes the socket
  c->idle_since = Clock::now();
  c->head_in_progress = !c->pending.empty();  // a pipelined request has begun
  c->head_started = c->idle_since;
  c->stage = Connection::Stage::Head;
  c->request_bytes = 0;
  c->probe = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    returned_.push_back(std::move(c));
  }
  wake();
}

int ConnectionGate::connections_of(const std::string& peer) const {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = per_client_.find(peer);
  return it == per_client_.end() ? 0 : it->second;
}

void ConnectionGate::release(const std::string& peer) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = per_client_.find(peer);
  if (it != per_client_.end() && --it->second <= 0) per_client_.erase(it);
}

void ConnectionGate::accept_all() {
  for (int i = 0; i < kMaxAcceptsPerRound; ++i) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    const int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      // Out of descriptors: the listening socket stays readable, so pause instead of spinning.
      if (errno == EMFILE || errno == ENFILE) ::usleep(10000);
      return;  // EAGAIN: no more for now
    }
    int port = 0;
    std::string peer = address_text(addr, port);
    bool over = false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      int& n = per_client_[peer];
      over = limits_.max_per_client > 0 && n >= limits_.max_per_client;
      if (!over) ++n;
      else if (n == 0) per_client_.erase(peer);
    }
    if (over) {
      refuse(fd, 429, "too_many_connections", "too many connections from this address");
      close_gracefully(fd);
      continue;
    }
    conns_.push_back(
        std::make_shared<Connection>(fd, std::move(peer), port, [this](const std::string& p) { release(p); }));
  }
}

void ConnectionGate::read_from(std::shared_ptr<Connection>& c) {
  char buf[8192];
  for (;;) {
    const ssize_t n = ::recv(c->fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      if (!c->head_in_progress) {
        c->head_in_progress = true;
        c->head_started = Clock::now();
      }
      if (c->stage == Connection::Stage::Discard) {  // a body over the limit: read and dropped, then 413
        c->discard -= std::min<uint64_t>(c->discard, uint64_t(n));
        if (c->discard == 0) return;
        continue;
      }
      c->pending.append(buf, size_t(n));
      // Read no further than the request needs (the head, then its body) or may have.
      if (c->stage == Connection::Stage::Body
              ? c->pending.size() >= c->request_bytes
              : c->pending.size() > kMaxHeadBytes || c->pending.find("\r\n\r\n") != std::string::npos)
        return;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    c.reset();  // the client closed, or the socket failed
    return;
  }
}

// Once the head is complete: what the gate waits for next.
void ConnectionGate::head_done(Connection& c, const RequestHead& head, Clock::time_point now) {
  c.body_started = now;
  c.probe = head.probe;
  if (head.body_known && head.body > limits_.max_body) {
    // Too large: answered by the gate once the body has been read and dropped (bounded by the
    // body deadline), so a client that sends it all before reading gets the 413, not a reset.
    c.stage = Connection::Stage::Discard;
    c.discard = head.body - std::min<uint64_t>(head.body, c.pending.size() - head.bytes);
    c.pending.clear();
    return;
  }
  // A body of known length is collected here too, so a slow body costs no worker either.
  c.stage = Connection::Stage::Body;
  c.request_bytes = head.bytes + (head.body_known ? size_t(head.body) : 0);
}

// Hands the connection on, or closes it, when its request is complete or a limit passed.
// Returns true when the gate no longer holds it.
bool ConnectionGate::ready_or_expired(std::shared_ptr<Connection>& c, Clock::time_point now, size_t& held) {
  if (!c) return true;
  if (c->stage == Connection::Stage::Head) {
    if (const RequestHead head = scan_head(c->pending); head.bytes > 0) head_done(*c, head, now);
  }
  auto close_with = [&](int status, const char* label, const char* message) {
    refuse(c->fd, status, label, message);
    c.reset();
    return true;
  };
  switch (c->stage) {
    case Connection::Stage::Head:
      if (c->pending.size() > kMaxHeadBytes) return close_with(431, "head_too_large", "the request head is too large");
      if (c->head_in_progress && now - c->head_started > limits_.head_timeout)
        return close_with(408, "head_timeout", "the request head did not arrive in time");
      if (!c->head_in_progress && now - c->idle_since > limits_.idle_timeout) {
        c.reset();  // idle keep-alive connection: closed silently, as servers do
        return true;
      }
      return false;
    case Connection::Stage::Body:
      if (c->pending.size() >= c->request_bytes || held + c->pending.size() > kMaxHeldBodyBytes) {
        const bool probe = c->probe;
        dispatch_(std::move(c), probe);
        return true;
      }
      break;
    case Connection::Stage::Discard:
      if (c->discard == 0) return close_with(413, "body_too_large", "the request body is too large");
      break;
  }
  if (now - c->body_started > limits_.body_timeout)
    return close_with(408, "body_timeout", "the request body did not arrive in time");
  held += c->pending.size();
  return false;
}

void ConnectionGate::run() {
  std::vector<pollfd> fds;
  while (!stopping_) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (auto& c : returned_) conns_.push_back(std::move(c));
      returned_.clear();  // only moved-from pointers: nothing is destroyed under the lock
    }
    // Returned connections may already hold a pipelined request; expired ones go.
    const Clock::time_point now = Clock::now();
    size_t held = 0;
    conns_.erase(std::remove_if(conns_.begin(), conns_.end(),
                                [&](std::shared_ptr<Connection>& c) { return ready_or_expired(c, now, held); }),
                 conns_.end());

    fds.clear();
    fds.push_back({wake_fd_, POLLIN, 0});
    fds.push_back({listen_fd_, POLLIN, 0});
    for (auto& c : conns_) fds.push_back({c->fd, POLLIN, 0});
    // Wake at least every 100 ms so deadlines are enforced promptly.
    const int r = ::poll(fds.data(), fds.size(), 100);
    if (r < 0 && errno != EINTR) throw Error(std::string("server poll failed: ") + std::strerror(errno));
    if (r <= 0) continue;
    if (fds[0].revents) {
      uint64_t v;
      [[maybe_unused]] ssize_t n = ::read(wake_fd_, &v, sizeof v);
    }
    for (size_t i = 2; i < fds.size(); ++i)
      if (fds[i].revents) read_from(conns_[i - 2]);
    if (fds[1].revents & POLLIN) accept_all();
  }
  drop_all();
}

}  // namespace greta::server
