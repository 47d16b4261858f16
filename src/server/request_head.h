// What the connection gate reads from a request head before any worker sees the request: where
// the head ends, whether it is a health/metrics probe, and how many body bytes follow.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace greta::server {

struct RequestHead {
  size_t bytes = 0;    // the head through its blank line; 0 while incomplete
  bool probe = false;  // GET /health or GET /metrics
  // Body bytes the gate can wait for: the one Content-Length, when no Transfer-Encoding or
  // Expect: 100-continue is present (then the worker reads the body; httplib answers Expect
  // and refuses ambiguous framings).
  uint64_t body = 0;
  bool body_known = false;  // `body` holds a usable Content-Length
};

// Scans `bytes`, the start of a connection's input.
RequestHead scan_head(const std::string& bytes);

}  // namespace greta::server
