// JSON Schema to GBNF: hand-written valid instances accepted, invalid ones rejected, and
// unsupported features refused with an error that names them.
#include <gtest/gtest.h>

#include "grammar/gbnf_parser.h"
#include "grammar/json_schema_to_gbnf.h"
#include "grammar_test_util.h"

namespace greta::grammar {
namespace {

using ojson = nlohmann::ordered_json;

std::shared_ptr<const Grammar> compile(const std::string& schema) {
  return parse_gbnf(json_schema_to_gbnf(ojson::parse(schema)));
}

void expect_instances(const std::string& schema, const std::vector<std::string>& good,
                      const std::vector<std::string>& bad) {
  expect_language(compile(schema), schema, good, bad);
}

std::string schema_error(const std::string& schema) {
  try {
    json_schema_to_gbnf(ojson::parse(schema));
  } catch (const SchemaError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(GrammarJsonSchema, PrimitiveTypesAndTypeLists) {
  expect_instances(R"({"type": "string"})", {R"("")", R"("a\"b\\ \u00e9 é\n")"}, {"a", R"("a)", "\"a\nb\""});
  expect_instances(R"({"type": "number"})", {"0", "-1.5", "3e10", "2.5E-3"}, {"01", "1.", ".5", "+1", "NaN"});
  expect_instances(R"({"type": "integer"})", {"0", "-12", "42"}, {"1.0", "-0.5", "007"});
  expect_instances(R"({"type": "boolean"})", {"true", "false"}, {"True", "1"});
  expect_instances(R"({"type": "null"})", {"null"}, {"nil", ""});
  expect_instances(R"({"type": ["integer", "null"]})", {"3", "null"}, {"\"3\"", "true"});
  expect_instances(R"({})", {"1", "\"x\"", "[1, {\"a\": null}]", "{}"}, {"", "[1,]"});
}

TEST(GrammarJsonSchema, ObjectsRequiredFirstThenOptionalInOrder) {
  const std::string schema = R"({
    "type": "object",
    "properties": {"b": {"type": "string"}, "a": {"type": "string"}, "d": {"type": "string"}, "c": {"type": "string"}},
    "required": ["a", "b"]
  })";
  // required b, a (declared order), then optional d, c in order, each may be absent
  expect_instances(schema,
                   {R"({"b": "1", "a": "2"})", R"({"b":"1","a":"2","d":"3"})", R"({"b":"1","a":"2","c":"4"})",
                    R"({"b": "1", "a": "2", "d": "3", "c": "4"})", "{\n  \"b\": \"1\",\n  \"a\": \"2\"\n}"},
                   {R"({"a": "2", "b": "1"})", R"({"b": "1"})", R"({"b":"1","a":"2","c":"4","d":"3"})",
                    R"({"b":"1","a":"2","e":"5"})", R"({"b":"1","a":"2",})"});
}

TEST(GrammarJsonSchema, OnlyOptionalProperties) {
  expect_instances(R"({"properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}})",
                   {"{}", R"({"x": 1})", R"({"y": 2})", R"({"x": 1, "y": 2})"},
                   {R"({"y": 2, "x": 1})", R"({, "y": 2})", R"({"x": 1,})"});
}

TEST(GrammarJsonSchema, AdditionalProperties) {
  const std::string typed = R"({"type": "object", "properties": {"a": {"type": "integer"}},
                              "additionalProperties": {"type": "string"}})";
  expect_instances(typed, {R"({"a": 1, "b": "x"})", R"({"ab": "x"})", R"({"": "x", "z": "y"})", "{}"},
                   {R"({"a": "x"})", R"({"b": 1})", R"({"a": 1, "a": "x"})"});
  expect_instances(R"({"type": "object", "additionalProperties": true})", {R"({"k": [1, {"z": null}]})", "{}"}, {"[]"});
  expect_instances(R"({"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": false})",
                   {R"({"a": 1})", "{}"}, {R"({"b": 1})"});
  // Without additionalProperties: closed when properties are given, any object when not.
  expect_instances(R"({"type": "object", "properties": {"a": {"type": "integer"}}})", {R"({"a": 1})"}, {R"({"b": 1})"});
  expect_instances(R"({"type": "object"})", {R"({"b": 1})"}, {"1"});
  expect_instances(R"({"type": "json_object"})", {R"({"b": [1]})"}, {"[1]"});
  // A key that only starts or ends like a declared one is additional.
  expect_instances(R"({"properties": {"né": {"type": "null"}}, "additionalProperties": {"type": "boolean"}})",
                   {R"({"n": true})", R"({"néx": true})", R"({"né": null})", R"({"ne": true})"}, {R"({"né": true})"});
}

TEST(GrammarJsonSchema, EnumAndConst) {
  expect_instances(R"({"enum": ["red", 1, null, {"a": [true]}]})", {"\"red\"", "1", "null", R"({"a":[true]})"},
                   {"\"blue\"", "2", R"({"a": [true]})"});
  expect_instances(R"({"const": "é\"x"})", {R"("é\"x")"}, {R"("éx")"});
}

TEST(GrammarJsonSchema, ArraysWithItemCounts) {
  expect_instances(R"({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3})",
                   {"[1, 2]", "[1,2,3]", "[ 1, 2 ]"}, {"[]", "[1]", "[1, 2, 3, 4]", "[1, \"a\"]"});
  expect_instances(R"({"type": "array", "maxItems": 0})", {"[]"}, {"[1]"});
  expect_instances(R"({"type": "array", "items": {"type": "string"}})", {"[]", R"(["a", "b"])"}, {"[1]"});
}

TEST(GrammarJsonSchema, AnyOfOneOfAllOf) {
  expect_instances(R"({"anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "boolean"}}]})",
                   {"1", "[true]"}, {"\"1\"", "[1]"});
  expect_instances(R"({"oneOf": [{"const": 1}, {"const": 2}], "title": "x"})", {"1", "2"}, {"3"});
  expect_instances(R"({"allOf": [{"type": "boolean"}]})", {"true"}, {"1"});
}

TEST(GrammarJsonSchema, RefsAndRecursion) {
  const std::string tree = R"({
    "$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
              "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}}, "required": ["v"]}},
    "$ref": "#/$defs/node"
  })";
  expect_instances(tree, {R"({"v": 1})", R"({"v": 1, "kids": [{"v": 2, "kids": [{"v": 3}]}, {"v": 4}]})"},
                   {R"({"v": 1, "kids": [{}]})", R"({"kids": []})"});
  expect_instances(R"({"definitions": {"s": {"type": "string"}}, "properties": {"a": {"$ref": "#/definitions/s"}}})",
                   {R"({"a": "x"})"}, {R"({"a": 1})"});
  expect_instances(R"({"type": "array", "items": {"$ref": "#"}, "maxItems": 2})", {"[]", "[[], [[]]]"},
                   {"[1]", "[[], [], []]"});
}

TEST(GrammarJsonSchema, StringLengthsPatternsAndFormats) {
  expect_instances(R"({"type": "string", "minLength": 2, "maxLength": 3})", {R"("ab")", R"("é\n\"")"},
                   {R"("a")", R"("abcd")"});
  expect_instances(R"({"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"})", {R"("AB-123")"},
                   {R"("AB-12")", R"("ab-123")", R"("xAB-123")"});
  expect_instances(R"({"type": "string", "pattern": "ab+"})", {R"("ab")", R"("xxabbby")"}, {R"("a")", R"("b")"});
  expect_instances(R"j({"type": "string", "pattern": "^(?:cat|dog)s?$|^[0-9]+$"})j",
                   {R"("cat")", R"("dogs")", R"("123")"}, {R"("cats1")", R"("")"});
  expect_instances(R"({"type": "string", "pattern": "^a.c$"})", {R"("abc")", R"("a\"c")", R"("aéc")"},
                   {R"("a\nc")", R"("ac")"});
  expect_instances(R"({"type": "string", "pattern": "^[^a-z]\\w*?$"})", {R"("A_1")", R"("9")"}, {R"("a")"});
  expect_instances(R"({"type": "string", "format": "date"})", {R"("2024-02-29")"},
                   {R"("2024-13-01")", R"("24-01-01")"});
  expect_instances(R"({"type": "string", "format": "time"})", {R"("23:59:60Z")", R"("08:00:00.123+01:00")"},
                   {R"("24:00:00Z")", R"("08:00:00")"});
  expect_instances(R"({"type": "string", "format": "date-time"})", {R"("2024-01-31T08:00:00Z")"},
                   {R"("2024-01-31 08:00:00Z")"});
  expect_instances(R"({"type": "string", "format": "uuid"})", {R"("123e4567-e89b-12d3-a456-426614174000")"},
                   {R"("123e4567e89b12d3a456426614174000")"});
}

TEST(GrammarJsonSchema, IntegerRangesExhaustively) {
  const std::vector<std::pair<std::string, std::string>> bounds = {
      {"0", "9"}, {"3", "250"}, {"-120", "-7"}, {"-35", "1200"}, {"100", "199"}, {"-1", "0"},
      {"7", "7"}, {"0", ""},    {"15", ""},     {"", "-11"},     {"", "42"},     {"-99", ""}};
  for (const auto& [lo, hi] : bounds) {
    std::string schema = R"({"type": "integer")";
    if (!lo.empty()) schema += R"(, "minimum": )" + lo;
    if (!hi.empty()) schema += R"(, "maximum": )" + hi;
    schema += "}";
    auto g = compile(schema);
    for (int n = -1500; n <= 1500; ++n) {
      const bool want = (lo.empty() || n >= std::stoi(lo)) && (hi.empty() || n <= std::stoi(hi));
      ASSERT_EQ(accepts(g, std::to_string(n)), want) << n << " for " << schema;
    }
    EXPECT_FALSE(accepts(g, "-0")) << schema;
    EXPECT_FALSE(accepts(g, "00")) << schema;
  }
  expect_instances(R"({"type": "integer", "exclusiveMinimum": 1.5, "exclusiveMaximum": 4})", {"2", "3"}, {"1", "4"});
  expect_instances(R"({"type": "integer", "minimum": 5})", {"5", "1234567890123456"}, {"4", "-5"});
}

TEST(GrammarJsonSchema, UnsupportedFeaturesAreNamed) {
  auto has = [](const std::string& error, const std::string& part) {
    EXPECT_NE(error.find(part), std::string::npos) << error;
  };
  has(schema_error(R"({"type": "string", "contentEncoding": "base64"})"), "keyword 'contentEncoding'");
  has(schema_error(R"({"properties": {"a": {"not": {}}}})"),
      "json schema at '/properties/a': unsupported JSON Schema keyword 'not'");
  has(schema_error(R"({"type": "number", "minimum": 0})"), "'minimum' is supported only on integers");
  has(schema_error(R"({"type": "array", "uniqueItems": true})"), "uniqueItems");
  has(schema_error(R"({"type": "object", "minProperties": 1})"), "minProperties");
  has(schema_error(R"({"type": "string", "format": "email"})"), "format '\"email\"' is not supported");
  has(schema_error(R"j({"type": "string", "pattern": "(a)\\1"})j"), "backreferences");
  has(schema_error(R"j({"type": "string", "pattern": "a(?=b)"})j"), "lookahead");
  has(schema_error(R"({"type": "string", "pattern": "\\bword"})"), "word boundaries");
  has(schema_error(R"({"type": "string", "pattern": "a^b"})"), "anchor ^");
  has(schema_error(R"({"type": "string", "pattern": "[a-"})"), "expected ']'");
  has(schema_error(R"({"$ref": "https://example.com/s.json"})"), "only local references");
  has(schema_error(R"({"$ref": "#/$defs/missing"})"), "points to nothing");
  has(schema_error(R"({"type": "integer", "minimum": 5, "maximum": 4})"), "no integer lies between");
  has(schema_error(R"({"type": "strin"})"), "unknown type 'strin'");
  has(schema_error(R"({"required": ["a"], "properties": {}})"), "required property 'a' is not in properties");
  has(schema_error(R"({"type": "array", "items": [{"type": "string"}]})"), "tuple items");
  has(schema_error(R"({"allOf": [{"type": "string"}, {"minLength": 1}]})"), "allOf");
  has(schema_error(R"(false)"), "accepts nothing");
  has(schema_error(R"({"type": "string", "pattern": ")" + std::string(10000, '(') + R"("})"), "nested deeper than 256");
  has(schema_error(R"({"type": "string", "maxLength": -1})"), "/maxLength': must be a non-negative integer");
  // A reference cycle that never reaches a value is a grammar error, not a hang.
  EXPECT_THROW(compile(R"({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"})"), GrammarError);
}

TEST(GrammarJsonSchema, WhitespaceIsBounded) {
  auto g = compile(R"({"type": "array", "items": {"type": "integer"}})");
  EXPECT_TRUE(accepts(g, "[\n" + std::string(20, ' ') + "1]"));
  EXPECT_FALSE(accepts(g, "[\n" + std::string(21, ' ') + "1]"));
  EXPECT_FALSE(accepts(g, "[  1]"));
  EXPECT_FALSE(accepts(g, "[\n\n1]"));
}

}  // namespace
}  // namespace greta::grammar
