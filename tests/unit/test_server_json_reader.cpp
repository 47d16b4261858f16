// Untrusted request bodies: bounded nesting, numbers out of range, and error messages that name
// the field without quoting the request.
#include <gtest/gtest.h>

#include "server/json_reader.h"
#include "server/openai_json.h"

using namespace greta::server;
using nlohmann::json;

namespace {

std::string nested(const std::string& open, const std::string& close, int levels) {
  std::string s;
  for (int i = 0; i < levels; ++i) s += open;
  for (int i = 0; i < levels; ++i) s += close;
  return s;
}

ApiError error_of(const std::string& body, bool chat) {
  try {
    parse_request(body, chat);
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "accepted: " << body.substr(0, 80);
  return ApiError(200, "");
}

std::string param(const ApiError& e) {
  const json p = e.body()["error"]["param"];
  return p.is_string() ? p.get<std::string>() : "";
}

}  // namespace

TEST(ServerJsonReader, ReadsOrdinaryJson) {
  const json j = read_json(R"({"a":[1,2.5,"x",null,true,{"b":{}}],"c":-3})");
  EXPECT_EQ(j["a"][1], 2.5);
  EXPECT_EQ(j["a"][5]["b"], json::object());
  EXPECT_EQ(j["c"], -3);
  EXPECT_EQ(read_json("7"), 7);
}

TEST(ServerJsonReader, DepthAtTheLimitIsReadAndBeyondIsRefused) {
  EXPECT_NO_THROW(read_json(nested("[", "]", kMaxJsonDepth)));
  EXPECT_THROW(read_json(nested("[", "]", kMaxJsonDepth + 1)), JsonReadError);
}

TEST(ServerJsonReader, DeepPromptIsA400NamingTheField) {
  // 60,000 levels: far past any stack if anything recursed per level.
  const std::string body = R"({"prompt":)" + nested("[", "]", 60000) + "}";
  const ApiError e = error_of(body, false);
  EXPECT_EQ(e.status(), 400);
  EXPECT_EQ(param(e).rfind("prompt", 0), 0u) << param(e);
  EXPECT_NE(std::string(e.what()).find("nested deeper than"), std::string::npos) << e.what();
}

TEST(ServerJsonReader, DeepResponseFormatTypeIsA400) {
  std::string deep;
  for (int i = 0; i < 60000; ++i) deep += R"({"a":)";
  deep += "1";
  for (int i = 0; i < 60000; ++i) deep += "}";
  const ApiError e = error_of(R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":)" + deep + "}}",
                              true);
  EXPECT_EQ(e.status(), 400);
  EXPECT_EQ(param(e).rfind("response_format.type", 0), 0u) << param(e);
}

TEST(ServerJsonReader, HugeNumberIsA400NamingTheField) {
  for (const char* field : {"temperature", "max_tokens", "seed", "top_p"}) {
    const ApiError e = error_of(std::string(R"({"prompt":"x",")") + field + R"(":1e999})", false);
    EXPECT_EQ(e.status(), 400) << field;
    EXPECT_EQ(param(e), field);
    EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos) << e.what();
  }
  const ApiError e = error_of(R"({"prompt":[1,2,-1e999]})", false);
  EXPECT_EQ(param(e), "prompt[2]");
  EXPECT_EQ(error_of(R"({"messages":[{"role":"user","content":"x"}],"temperature":1e999})", true).status(), 400);
}

TEST(ServerJsonReader, MessagesDoNotQuoteTheRequest) {
  const std::string secret = "SECRET-VALUE-" + std::string(300, 'z');
  for (const std::string& body :
       {R"({"prompt":[")" + secret + R"("x]})", R"({"prompt":[1,")" + secret + R"("]})",
        R"({"prompt":"x","temperature":")" + secret + R"("})", R"({"prompt":"x","stop":{"k":")" + secret + R"("}})",
        R"({"messages":[{"role":")" + secret + R"(","content":"x"}]})",
        R"({"messages":[{"role":"user","content":[{"type":")" + secret + R"("}]}]})",
        R"({"prompt":"x","response_format":{"type":")" + secret + R"("}})"}) {
    const bool chat = body.find("messages") != std::string::npos;
    const ApiError e = error_of(body, chat);
    EXPECT_EQ(e.status(), 400);
    EXPECT_EQ(std::string(e.what()).find("SECRET"), std::string::npos) << e.what();
  }
}

TEST(ServerJsonReader, SyntaxErrorsGiveTheOffset) {
  const ApiError e = error_of(R"({"prompt": nope})", false);
  EXPECT_EQ(e.status(), 400);
  EXPECT_NE(std::string(e.what()).find("at byte"), std::string::npos) << e.what();
  EXPECT_EQ(std::string(e.what()).find("nope"), std::string::npos) << e.what();
  EXPECT_EQ(error_of("{\"prompt\":\"\xff\"}", false).status(), 400);  // invalid UTF-8
}
