// The template engine under templates written to break it: every one must end in a
// greta::Error naming what went wrong, quickly, never a crash, a hang or unbounded memory.
// Real templates stay far inside the default limits (tests/e2e/test_chat_template_parity.py).
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <string>

#include "chat/chat_template.h"
#include "core/error.h"

using greta::ChatMessage;
using greta::ChatTemplate;

namespace {

std::string repeat(const std::string& s, size_t n) {
  std::string out;
  for (size_t k = 0; k < n; ++k) out += s;
  return out;
}

// The error of parsing and rendering `tmpl` ("<no error>" when it renders).
std::string error_of(const std::string& tmpl, const nlohmann::ordered_json& vars = nlohmann::ordered_json::object(),
                     const greta::TemplateLimits& limits = {}) {
  try {
    ChatTemplate::parse(tmpl, limits).render_json(vars);
  } catch (const greta::Error& e) {
    return e.what();
  }
  return "<no error>";
}

std::string R(const std::string& tmpl) {
  return ChatTemplate::parse(tmpl).render_json(nlohmann::ordered_json::object());
}

#define EXPECT_ERROR_HAS(expr, needle) EXPECT_NE(std::string(expr).find(needle), std::string::npos) << (expr)

}  // namespace

TEST(ChatLimits, DeeplyNestedBlocksAreAnErrorNotAStackOverflow) {
  const size_t n = 100000;
  EXPECT_ERROR_HAS(error_of(repeat("{% if true %}", n) + repeat("{% endif %}", n)), "nesting deeper than the limit");
  EXPECT_ERROR_HAS(error_of(repeat("{% for x in [1] %}", n) + repeat("{% endfor %}", n)),
                   "nesting deeper than the limit");
}

TEST(ChatLimits, DeeplyNestedExpressionsAreAnError) {
  const size_t n = 100000;
  EXPECT_ERROR_HAS(error_of("{{ " + repeat("(", n) + "1" + repeat(")", n) + " }}"), "nesting deeper than the limit");
  EXPECT_ERROR_HAS(error_of("{{ " + repeat("[", n) + repeat("]", n) + " }}"), "nesting deeper than the limit");
  EXPECT_ERROR_HAS(error_of("{{ " + repeat("-", n) + "1 }}"), "nesting deeper than the limit");
  EXPECT_ERROR_HAS(error_of("{{ " + repeat("not ", n) + "1 }}"), "nesting deeper than the limit");
  // Operator chains nest in the tree without nesting in the source.
  EXPECT_ERROR_HAS(error_of("{{ " + repeat("1 + ", n) + "1 }}"), "expression nested deeper than the limit");
  EXPECT_ERROR_HAS(error_of("{{ x" + repeat(".a", n) + " }}"), "expression nested deeper than the limit");
  EXPECT_ERROR_HAS(error_of("{{ x" + repeat("|trim", n) + " }}"), "expression nested deeper than the limit");
  // Chains real templates write stay fine.
  EXPECT_EQ(R("{{ " + repeat("1 + ", 100) + "1 }}"), "101");
}

TEST(ChatLimits, DeepMacroRecursionIsAnError) {
  EXPECT_ERROR_HAS(error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"), "too deep");
}

TEST(ChatLimits, IntegerArithmeticIsCheckedNotUndefined) {
  const std::string min = "(-9223372036854775807 - 1)";
  EXPECT_ERROR_HAS(error_of("{{ " + min + " // -1 }}"), "integer overflow");
  EXPECT_EQ(R("{{ " + min + " % -1 }}"), "0");
  EXPECT_ERROR_HAS(error_of("{{ 9223372036854775807 + 1 }}"), "integer overflow");
  EXPECT_ERROR_HAS(error_of("{{ " + min + " - 1 }}"), "integer overflow");
  EXPECT_ERROR_HAS(error_of("{{ 4294967296 * 4294967296 }}"), "integer overflow");
  EXPECT_ERROR_HAS(error_of("{{ -" + min + " }}"), "integer overflow");
  EXPECT_ERROR_HAS(error_of("{{ " + min + " | abs }}"), "integer overflow");
  EXPECT_ERROR_HAS(error_of("{{ 2 ** 64 }}"), "integer overflow");
  EXPECT_ERROR_HAS(error_of("{{ 7 // 0 }}"), "ZeroDivisionError");
  EXPECT_ERROR_HAS(error_of("{{ 7 % 0 }}"), "ZeroDivisionError");
  EXPECT_ERROR_HAS(error_of("{{ 7 is divisibleby 0 }}"), "ZeroDivisionError");
  EXPECT_EQ(R("{{ " + min + " is divisibleby(-1) }}"), "True");
  EXPECT_EQ(R("{{ 2 ** 62 }} {{ (-2) ** 63 }} {{ -7 // 2 }} {{ -7 % 2 }}"),
            "4611686018427387904 -9223372036854775808 -4 1");
  EXPECT_ERROR_HAS(error_of("{{ 1e300 | int }}"), "does not fit in 64 bits");
  EXPECT_EQ(R("{{ (1e308 * 10) | int }} {{ 'nan' | float | int(5) }}"), "0 5");
}

TEST(ChatLimits, OutOfRangeLiterals) {
  // As Python reads them: floats overflow to inf and underflow to 0.0; ints past 64 bits are an error.
  EXPECT_EQ(R("{{ 5e5555 }} {{ -1e999 }} {{ 1e-999 }}"), "inf -inf 0.0");
  EXPECT_ERROR_HAS(error_of("{{ 99999999999999999999 }}"), "integer literal out of range");
}

TEST(ChatLimits, HugePowersAndRepetitionsFailAtOnce) {
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(R("{{ 1 ** 9000000000000000000 }}"), "1");
  EXPECT_ERROR_HAS(error_of("{{ 'a' * 100000000000 }}"), "string size limit");
  EXPECT_ERROR_HAS(error_of("{{ ([1] * 100000000000) | length }}"), "list size limit");
  EXPECT_ERROR_HAS(error_of("{{ (['abc' * 1000] * 100000) | length }}"), "string size limit");
  EXPECT_ERROR_HAS(error_of("{{ range(9223372036854775807) | length }}"), "list size limit");
  EXPECT_EQ(R("{{ range(9223372036854775800, 9223372036854775807, 3) | list }}"),
            "[9223372036854775800, 9223372036854775803, 9223372036854775806]");
  EXPECT_ERROR_HAS(error_of("{{ 'x' | indent(100000000000) }}"), "string size limit");
  EXPECT_ERROR_HAS(error_of("{{ [1] | tojson(indent=100000000000) }}"), "string size limit");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

TEST(ChatLimits, GrowingStringsAndLoopsHitTheirBudgets) {
  // Doubling a string in a loop.
  EXPECT_ERROR_HAS(
      error_of("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}"),
      "string size limit");
  EXPECT_ERROR_HAS(error_of("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s.replace('a', "
                            "ns.s) %}{% endfor %}"),
                   "string size limit");
  EXPECT_ERROR_HAS(error_of("{% for i in range(100) %}{{ 'x' * 1000000 }}{% endfor %}"), "string size limit");
  // Nested loops: iterations of all loops together.
  EXPECT_ERROR_HAS(error_of("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"),
                   "loop iteration limit");
  // Work without loops: each expression and each item a builtin walks is a step.
  greta::TemplateLimits small;
  small.max_steps = 10000;
  EXPECT_ERROR_HAS(error_of("{{ range(100000) | unique | list | length }}", nlohmann::ordered_json::object(), small),
                   "evaluation step limit");
  EXPECT_ERROR_HAS(error_of("{% set s = 'a' * 4000000 %}{{ (s ~ 'b') in (s ~ s) }}"), "evaluation step limit");
  EXPECT_EQ(error_of("{% for i in range(1000) %}{{ i }}{% endfor %}"), "<no error>");
}

TEST(ChatLimits, DeepValuesAndNamespaceCyclesAreErrors) {
  // tojson (and repr, equality) recurse over values: nesting is bounded where values are built.
  EXPECT_ERROR_HAS(
      error_of("{% set ns = namespace(x=1) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}"
               "{{ ns.x | tojson }}"),
      "nesting depth limit");
  nlohmann::ordered_json vars = nlohmann::ordered_json::object();
  vars["x"] = nlohmann::ordered_json::parse(repeat("[", 100000) + repeat("]", 100000));
  EXPECT_ERROR_HAS(error_of("{{ x | tojson }}", vars), "nesting depth limit");
  EXPECT_ERROR_HAS(error_of("{% set ns = namespace(a=1) %}{% set ns.a = ns %}{{ ns }}"),
                   "cannot hold another namespace");
  EXPECT_ERROR_HAS(error_of("{% set ns = namespace(a=1) %}{% set ns.a = [ns] %}{{ ns }}"),
                   "cannot hold another namespace");
  EXPECT_ERROR_HAS(error_of("{% set ns = namespace(a=1) %}{{ namespace(b=ns) }}"), "cannot hold another namespace");
  EXPECT_ERROR_HAS(error_of("{{ ([1,[2,[3]]] * 3) | tojson }}"), "<no error>");
}

TEST(ChatLimits, DefaultsLeaveLongRealConversationsAlone) {
  std::vector<ChatMessage> msgs;
  for (int k = 0; k < 400; ++k) msgs.push_back({k % 2 ? "assistant" : "user", repeat("word ", 500)});
  for (const std::string& name : greta::builtin_chat_template_names()) {
    const ChatTemplate t = ChatTemplate::parse(*greta::builtin_chat_template(name));
    EXPECT_NO_THROW(t.render(msgs, true, "<s>", "</s>")) << name;
  }
}
