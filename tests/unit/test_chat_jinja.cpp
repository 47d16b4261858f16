// Unit tests of the Jinja interpreter pieces: lexer whitespace control, parser errors with
// line:col, expression semantics that must match Python/jinja2, and the public ChatTemplate API.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "chat/chat_template.h"
#include "chat/jinja_lexer.h"
#include "chat/jinja_value.h"
#include "core/error.h"

using greta::ChatMessage;
using greta::ChatTemplate;

namespace {

std::string R(const std::string& tmpl, const nlohmann::ordered_json& vars = nlohmann::ordered_json::object()) {
  return ChatTemplate::parse(tmpl).render_json(vars);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const greta::Error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace

TEST(ChatLexer, NormalizesNewlinesAndDropsOneTrailingNewline) {
  EXPECT_EQ(greta::jinja::normalize_source("a\r\nb\rc\n\n"), "a\nb\nc\n");
  EXPECT_EQ(R("x\n"), "x");
  EXPECT_EQ(R("x\n\n"), "x\n");
}

TEST(ChatLexer, TrimBlocksAndLstripBlocks) {
  // trim_blocks eats the newline after %}; lstrip_blocks eats indentation before {%.
  EXPECT_EQ(R("{% if true %}\n    yes\n    {% endif %}\nend"), "    yes\nend");
  // Not for {{ }}: its indentation and following newline stay.
  EXPECT_EQ(R("  {{ 'a' }}\nb"), "  a\nb");
  // {%+ disables lstrip; +%} disables trim.
  EXPECT_EQ(R("  {%+ if true +%}\nx{% endif %}"), "  \nx");
  // Comments strip like blocks.
  EXPECT_EQ(R("a\n  {# note #}\nb"), "a\nb");
}

TEST(ChatLexer, MinusStripsAllWhitespace) {
  EXPECT_EQ(R("a  \n {{- 'b' -}} \n\t c"), "abc");
  EXPECT_EQ(R("a\n\n{%- if true -%}\n\n b {%- endif %}"), "ab");
}

TEST(ChatLexer, StringEscapesDecodeLikePython) {
  EXPECT_EQ(R(R"({{ 'a\nb\t\'q\' \x41\u00e9 \d' }})"), "a\nb\t'q' A\xc3\xa9 \\d");
  EXPECT_EQ(R(R"({{ "x" 'y' }})"), "xy");  // adjacent literals concatenate
}

TEST(ChatLexer, BracesInsideExpressionsDoNotCloseTheTag) { EXPECT_EQ(R("{{ {'a': {'b': 1}}['a']['b'] }}"), "1"); }

TEST(ChatParser, UnsupportedTagNamesItWithLineAndColumn) {
  std::string e = error_of([] { ChatTemplate::parse("line one\n  {% include 'x.jinja' %}"); });
  EXPECT_NE(e.find("2:6"), std::string::npos) << e;
  EXPECT_NE(e.find("unsupported tag 'include'"), std::string::npos) << e;
}

TEST(ChatParser, UnknownFilterAndTestAreErrors) {
  std::string e = error_of([] { ChatTemplate::parse("{{ x | frobnicate }}"); });
  EXPECT_NE(e.find("1:8"), std::string::npos) << e;
  EXPECT_NE(e.find("unsupported filter 'frobnicate'"), std::string::npos) << e;
  e = error_of([] { ChatTemplate::parse("{% if x is prime %}{% endif %}"); });
  EXPECT_NE(e.find("unsupported test 'prime'"), std::string::npos) << e;
}

TEST(ChatParser, MalformedTemplatesAreErrors) {
  EXPECT_NE(error_of([] { ChatTemplate::parse("{% if x %}no end"); }).find("expected 'elif' or 'else' or 'endif'"),
            std::string::npos);
  EXPECT_NE(error_of([] { ChatTemplate::parse("{{ 'open"); }).find("unterminated string"), std::string::npos);
  EXPECT_NE(error_of([] { ChatTemplate::parse("{# never closed"); }).find("missing end of comment"), std::string::npos);
  EXPECT_NE(error_of([] { ChatTemplate::parse("{{ (1 }}"); }).find("1:"), std::string::npos);
}

TEST(ChatRender, RaiseExceptionSurfacesItsMessage) {
  std::string e = error_of([] { R("{{ raise_exception('Roles must alternate!') }}"); });
  EXPECT_EQ(e, "Roles must alternate!");
}

TEST(ChatRender, UndefinedIsEmptyAndFalsyButOperationsRaise) {
  EXPECT_EQ(R("[{{ nope }}]{% if nope %}x{% endif %}{{ nope is defined }}{{ nope | length }}"), "[]False0");
  std::string e = error_of([] { R("{{ nope + 'x' }}"); });
  EXPECT_NE(e.find("'nope' is undefined"), std::string::npos) << e;
  EXPECT_NE(e.find("1:9"), std::string::npos) << e;
  EXPECT_NE(error_of([] { R("{{ nope.attr }}"); }).find("is undefined"), std::string::npos);
  // A missing dict key is undefined, not an error.
  EXPECT_EQ(R("{{ d.missing is defined }}|{{ d['k'] }}", {{"d", {{"k", "v"}}}}), "False|v");
}

TEST(ChatRender, PythonValueFormatting) {
  EXPECT_EQ(R("{{ none }} {{ true }} {{ 1.0 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }}"),
            "None True 1.0 3.5 3 -4 2 1024");
  EXPECT_EQ(R("{{ [1, 'a', none, [true]] }} {{ {'k': 'v'} }} {{ (1,) }}"), "[1, 'a', None, [True]] {'k': 'v'} (1,)");
  EXPECT_EQ(R("{{ 1e20 }} {{ 0.0001 }} {{ 1.5e-7 }}"), "1e+20 0.0001 1.5e-07");
  EXPECT_EQ(greta::jinja::py_float_repr(0.1 + 0.2), "0.30000000000000004");
}

TEST(ChatRender, ComparisonsAndMembership) {
  EXPECT_EQ(R("{{ 1 == 1.0 }}{{ true == 1 }}{{ 'a' < 'b' }}{{ 1 < 2 < 3 }}{{ 3 > 2 > 2 }}"), "TrueTrueTrueTrueFalse");
  EXPECT_EQ(R("{{ 'ell' in 'hello' }}{{ 2 not in [1, 3] }}{{ 'k' in {'k': 1} }}"), "TrueTrueTrue");
  EXPECT_EQ(R("{{ 'x' if false }}|{{ 'a' if 0 else 'b' }}|{{ 0 or 'z' }}|{{ 1 and 2 }}"), "|b|z|2");
  EXPECT_NE(error_of([] { R("{{ 1 < 'a' }}"); }).find("not supported"), std::string::npos);
}

TEST(ChatRender, ForLoopVariablesElseAndScoping) {
  EXPECT_EQ(R("{% for x in ['a','b','c'] %}{{ loop.index }}{{ loop.index0 }}{{ x }}{{ loop.first }}{{ loop.last }}"
              "{{ loop.length }} {% endfor %}"),
            "10aTrueFalse3 21bFalseFalse3 32cFalseTrue3 ");
  EXPECT_EQ(R("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(R("{% for x in [1,2,3,4] if x is even %}{{ x }}{{ loop.length }}{% endfor %}"), "2242");
  // A set inside a loop is gone after it; a namespace carries it out.
  EXPECT_EQ(R("{% set v = 0 %}{% set ns = namespace(v=0) %}{% for x in [1,2] %}{% set v = x %}{% set ns.v = x %}"
              "{% endfor %}{{ v }}{{ ns.v }}"),
            "02");
  EXPECT_EQ(R("{% for k, v in {'a': 1, 'b': 2} | items %}{{ k }}={{ v }};{% endfor %}"), "a=1;b=2;");
  EXPECT_EQ(R("{% for x in range(5) %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 3 %}{% break %}{% endif %}"
              "{{ x }}{% endfor %}"),
            "02");
}

TEST(ChatRender, SlicesAndIndexing) {
  EXPECT_EQ(R("{{ xs[1:] }}{{ xs[::-1] }}{{ xs[-1] }}{{ 'héllo'[1:3] }}{{ xs[9] is defined }}", {{"xs", {1, 2, 3}}}),
            "[2, 3][3, 2, 1]3élFalse");
}

TEST(ChatRender, FiltersAndMethods) {
  EXPECT_EQ(R("{{ '  hi  ' | trim }}|{{ 'ab' | upper }}|{{ 'héllo' | length }}|{{ [3,1] | first }}|{{ [3,1] | last }}"),
            "hi|AB|5|3|1");
  EXPECT_EQ(
      R("{{ x | default('d') }}|{{ '' | default('d', true) }}|{{ [1,2] | join(', ') }}|{{ 'aXa' | replace('a','b') }}"),
      "d|d|1, 2|bXb");
  EXPECT_EQ(R("{{ 'hello world' | title }}|{{ 'hELLO' | capitalize }}|{{ '42' | int + 1 }}|{{ 'ab' | list }}"),
            "Hello World|Hello|43|['a', 'b']");
  EXPECT_EQ(R("{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='content') | join(',') }}",
              {{"ms",
                {{{"role", "user"}, {"content", "a"}},
                 {{"role", "bot"}, {"content", "b"}},
                 {{"role", "user"}, {"content", "c"}}}}}),
            "a,c");
  EXPECT_EQ(R("{{ ' a b '.strip() }}|{{ 'a,b'.split(',') }}|{{ 'abc'.startswith('ab') }}|{{ d.get('z', 'no') }}|{{ "
              "'x'.upper() }}",
              {{"d", nlohmann::ordered_json::object()}}),
            "a b|['a', 'b']|True|no|X");
}

TEST(ChatRender, ToJsonMatchesPythonJsonDumps) {
  nlohmann::ordered_json v = {{"t", {{"b", 1}, {"a", {true, nullptr, 1.5, "é\n\"q\""}}}}};
  EXPECT_EQ(R("{{ t | tojson }}", v), R"({"b": 1, "a": [true, null, 1.5, "é\n\"q\""]})");
  EXPECT_EQ(R("{{ t | tojson(indent=2) }}", v),
            "{\n  \"b\": 1,\n  \"a\": [\n    true,\n    null,\n    1.5,\n    \"é\\n\\\"q\\\"\"\n  ]\n}");
  EXPECT_EQ(R("{{ {} | tojson(indent=2) }}{{ 'é' | tojson(ensure_ascii=true) }}"), "{}\"\\u00e9\"");
}

TEST(ChatRender, MacrosAndSetBlocks) {
  EXPECT_EQ(R("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Bo') }} {{ "
              "greet('Al', punct='?') }}"),
            "Hi Bo! Hi Al?");
  EXPECT_EQ(R("{% set s %}inner {{ 1 + 1 }}{% endset %}[{{ s }}]"), "[inner 2]");
}

TEST(ChatTemplateApi, RendersMessagesWithDefaultsAndExtras) {
  ChatTemplate t = ChatTemplate::parse(
      "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m['content'] }}{% endfor %}"
      "{% if add_generation_prompt %}<assistant>{% endif %}{{ tools is none }}{{ date_string }}");
  std::vector<ChatMessage> msgs = {{"user", "hi"}, {"assistant", "yo"}};
  EXPECT_EQ(t.render(msgs, true, "<s>", "</s>"), "<s><user>hi<assistant>yo<assistant>True");
  EXPECT_EQ(t.render(msgs, false, "", "", {{"date_string", "1 Jan"}, {"tools", {1}}}),
            "<user>hi<assistant>yoFalse1 Jan");
}

TEST(ChatTemplateApi, BuiltinTemplatesParseAndRender) {
  for (const auto& name : greta::builtin_chat_template_names()) {
    const std::string* src = greta::builtin_chat_template(name);
    ASSERT_NE(src, nullptr) << name;
    ChatTemplate t = ChatTemplate::parse(*src);
    std::string out = t.render({{"user", "Hello"}}, true, "<s>", "</s>");
    EXPECT_NE(out.find("Hello"), std::string::npos) << name << ": " << out;
  }
  EXPECT_EQ(greta::builtin_chat_template("nope"), nullptr);
  // Llama 2's template rejects non-alternating roles with its own message.
  ChatTemplate l2 = ChatTemplate::parse(*greta::builtin_chat_template("llama2"));
  EXPECT_EQ(error_of([&] {
              l2.render({{"user", "a"}, {"user", "b"}}, true, "<s>", "</s>");
            }),
            "Conversation roles must alternate user/assistant/user/assistant/...");
  EXPECT_EQ(l2.render({{"system", "S"}, {"user", "U"}, {"assistant", " A "}}, false, "<s>", "</s>"),
            "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A </s>");
}

TEST(ChatTemplateApi, SmolLM2TemplateFromTestData) {
  std::ifstream f(std::string(GRETA_SOURCE_DIR) + "/tests/data/chat_templates/smollm2.jinja");
  ASSERT_TRUE(f) << "tests/data/chat_templates/smollm2.jinja missing";
  std::stringstream ss;
  ss << f.rdbuf();
  ChatTemplate t = ChatTemplate::parse(ss.str());
  EXPECT_EQ(t.render({{"user", "Hi"}}, true, "", ""),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}
