// The gate's reading of request heads: where they end, probes, and the body length it may wait for.
#include <gtest/gtest.h>

#include "server/request_head.h"

using greta::server::scan_head;

TEST(ServerRequestHead, IncompleteHeadIsNotEnded) {
  EXPECT_EQ(scan_head("POST /v1/completions HTTP/1.1\r\nHost: x\r\n").bytes, 0u);
  EXPECT_EQ(scan_head("").bytes, 0u);
}

TEST(ServerRequestHead, EndProbeAndLength) {
  const std::string head = "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-length:  12 \r\n\r\n";
  const auto h = scan_head(head + "{\"prompt\":1}");
  EXPECT_EQ(h.bytes, head.size());
  EXPECT_FALSE(h.probe);
  EXPECT_TRUE(h.body_known);
  EXPECT_EQ(h.body, 12u);
  EXPECT_TRUE(scan_head("GET /health HTTP/1.1\r\n\r\n").probe);
  EXPECT_TRUE(scan_head("GET /metrics?x=1 HTTP/1.1\r\n\r\n").probe);
  EXPECT_FALSE(scan_head("GET /healthz HTTP/1.1\r\n\r\n").probe);
  EXPECT_FALSE(scan_head("POST /health HTTP/1.1\r\n\r\n").probe);
}

TEST(ServerRequestHead, AmbiguousOrDeferredBodiesAreLeftToTheWorker) {
  for (const char* framing :
       {"Content-Length: 5\r\nContent-Length: 5\r\n", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Content-Length: 5\r\nExpect: 100-continue\r\n", "Content-Length: -5\r\n",
        "Content-Length: 99999999999999999999\r\n", "Transfer-Encoding: chunked\r\n"}) {
    const auto h = scan_head(std::string("POST / HTTP/1.1\r\n") + framing + "\r\n");
    EXPECT_GT(h.bytes, 0u) << framing;
    EXPECT_FALSE(h.body_known) << framing;
  }
}
