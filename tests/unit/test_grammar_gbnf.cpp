// GBNF parsing and the pushdown matcher: errors, accepted and rejected strings, the llama.cpp
// grammars corpus (tests/data/gbnf).
#include <gtest/gtest.h>

#include "grammar/gbnf_parser.h"
#include "grammar_test_util.h"

namespace greta::grammar {
namespace {

void expect_language(const std::string& gbnf, const std::vector<std::string>& good,
                     const std::vector<std::string>& bad) {
  expect_language(parse_gbnf(gbnf), gbnf, good, bad);
}

std::string parse_error(const std::string& gbnf) {
  try {
    parse_gbnf(gbnf);
  } catch (const GrammarError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(GrammarGbnf, LiteralsAlternativesAndGroups) {
  expect_language(R"(root ::= "ab" ("c" | "de") x
x ::= "!" | )",
                  {"abc", "abde!", "abc!"}, {"", "ab", "abd", "abcde", "abc!!"});
}

TEST(GrammarGbnf, RepetitionOperators) {
  expect_language(R"(root ::= "a"* "b"+ "c"?)", {"b", "aab", "bbbc", "abc"}, {"", "a", "c", "abcc", "ba"});
  expect_language(R"(root ::= [0-9]{3})", {"123"}, {"12", "1234", "1a3"});
  expect_language(R"(root ::= "x"{2,})", {"xx", "xxxxxx"}, {"", "x"});
  expect_language(R"(root ::= "ab"{1,3})", {"ab", "abab", "ababab"}, {"", "a", "abababab", "aba"});
  expect_language(R"(root ::= "a"{0,2} "b")", {"b", "ab", "aab"}, {"aaab"});
  expect_language(R"(root ::= ("a" | "bc"){2})", {"aa", "abc", "bcbc", "bca"}, {"a", "bc", "aaa"});
}

TEST(GrammarGbnf, CharacterClassesAndEscapes) {
  expect_language(R"(root ::= [a-cx] [^a-z\n] .)", {"a1!", "xZé", "b-\t"}, {"d1!", "aa!", "a\n!", "a1"});
  expect_language(R"(root ::= "\x41\u00e9\U0001F600\n\t\\\"")", {"Aé😀\n\t\\\""}, {"Ae😀\n\t\\\""});
  expect_language(R"(root ::= [\]\[\-^] [ぁ-ゟ])", {"]ぁ", "[ゟ", "-ぃ", "^ぁ"}, {"aぁ", "]a"});
  expect_language(R"(root ::= [^"\\\x7F\x00-\x1F]+)", {"héllo wörld"}, {"a\"", "a\\", std::string("a\x01", 2)});
}

TEST(GrammarGbnf, CommentsAndLineBreaks) {
  expect_language(R"(# leading comment
root ::= # a rule body may start on the next line
  item ( "," # inside a group newlines are free
         item )* |
  "none"
item ::= [a-z]+   # trailing comment
)",
                  {"a", "ab,c", "none"}, {"", "a,", "a,,b"});
}

TEST(GrammarGbnf, RecursionThroughRules) {
  expect_language(R"gbnf(root ::= expr
expr ::= term (("+" | "-") term)*
term ::= [0-9]+ | "(" expr ")")gbnf",
                  {"1", "1+2", "(1+2)-3", "((4))"}, {"", "1+", "(1", "1)", "()"});
}

TEST(GrammarGbnf, ErrorsNameLineColumnAndExpectation) {
  EXPECT_NE(parse_error("root ::= \"abc").find("line 1, column 14: expected '\"'"), std::string::npos)
      << parse_error("root ::= \"abc");
  EXPECT_NE(parse_error("root ::= [a-z").find("expected ']'"), std::string::npos);
  EXPECT_NE(parse_error("root ::= (\"a\"").find("expected ')'"), std::string::npos);
  EXPECT_NE(parse_error("root = \"a\"").find("line 1, column 6: expected '::='"), std::string::npos)
      << parse_error("root = \"a\"");
  EXPECT_NE(parse_error("root ::= \"a\" @").find("line 1, column 14: expected a symbol"), std::string::npos)
      << parse_error("root ::= \"a\" @");
  EXPECT_NE(parse_error("root ::= *").find("expected a symbol before the repetition"), std::string::npos);
  EXPECT_NE(parse_error("root ::= \"a\"{3,1}").find("n below m"), std::string::npos);
  EXPECT_NE(parse_error("root ::= \"a\"{2").find("expected '}'"), std::string::npos);
  EXPECT_NE(parse_error("root ::= \"a\"{99999999}").find("above the limit"), std::string::npos);
  EXPECT_NE(parse_error("root ::= \"\\q\"").find("expected an escape"), std::string::npos);
  EXPECT_NE(parse_error("root ::= \"\\x4\"").find("expected 2 hex digits"), std::string::npos);
  EXPECT_NE(parse_error("root ::= [z-a]").find("end before its start"), std::string::npos);
  EXPECT_NE(parse_error("root ::= <think>").find("token references"), std::string::npos);
  EXPECT_NE(parse_error("root ::= \"\xff\"").find("invalid UTF-8"), std::string::npos);
  EXPECT_NE(parse_error("root ::= \"a\"\nroot ::= \"b\"").find("line 2, column 1: rule 'root' is defined twice"),
            std::string::npos)
      << parse_error("root ::= \"a\"\nroot ::= \"b\"");
}

TEST(GrammarGbnf, StructuralErrors) {
  EXPECT_NE(parse_error("").find("no 'root' rule"), std::string::npos);
  EXPECT_NE(parse_error("# only a comment\n").find("no 'root' rule"), std::string::npos);
  EXPECT_NE(parse_error("item ::= \"a\"").find("no 'root' rule"), std::string::npos);
  const std::string undefined = parse_error("root ::= \"a\" missing");
  EXPECT_NE(undefined.find("rule 'missing' (first used at line 1, column 14) is used but never defined"),
            std::string::npos)
      << undefined;
  const std::string left = parse_error("root ::= expr\nexpr ::= expr \"+\" num | num\nnum ::= [0-9]+");
  EXPECT_NE(left.find("rule 'expr' (defined at line 2, column 1) is left-recursive"), std::string::npos) << left;
  // Indirect, through a rule that can match nothing.
  const std::string indirect = parse_error("root ::= a\na ::= opt b\nopt ::= \"x\"?\nb ::= a \"y\" | \"z\"");
  EXPECT_NE(indirect.find("left-recursive"), std::string::npos) << indirect;
  // A repeated group that can be empty would loop without consuming input.
  EXPECT_NE(parse_error("root ::= (\"a\"?)*").find("left-recursive"), std::string::npos);
  // No base case: the output could never end.
  const std::string endless = parse_error("root ::= \"a\" root");
  EXPECT_NE(endless.find("rule 'root' (defined at line 1, column 1) can never finish"), std::string::npos) << endless;
}

// Rule i of a chain ("r<i>"), built by appending: GCC 12 warns falsely (-Wrestrict) on "r" + s.
std::string rule_name(int i) {
  std::string s = "r";
  s += std::to_string(i);
  return s;
}

TEST(GrammarGbnf, HostileSizesAreErrorsNotCrashes) {
  // Deep nesting: the parser recurses per group.
  EXPECT_NE(parse_error("root ::= " + std::string(100000, '(')).find("nested deeper than 256"), std::string::npos);
  // A long chain of leading references: the matcher recurses along it.
  std::string chain = "root ::= r0\n";
  for (int i = 0; i < 5000; ++i) chain += rule_name(i) + " ::= " + rule_name(i + 1) + "\n";
  chain += "r5000 ::= \"x\"\n";
  const std::string err = parse_error(chain);
  EXPECT_NE(err.find("chain of more than 1000 rule references"), std::string::npos) << err.substr(0, 200);
  // The same chain behind a character is fine: each step consumes input. Rules defined in
  // reverse order exercise the fixed points (nullable, can finish) at their worst order.
  std::string guarded = "root ::= r0\n";
  for (int i = 5000; i > 0; --i) guarded += rule_name(i) + " ::= \"x\" " + rule_name(i + 1) + "?\n";
  guarded += "r0 ::= r1\nr5001 ::= \"y\"\n";
  auto g = parse_gbnf(guarded);
  EXPECT_TRUE(accepts(g, "xxx"));
}

TEST(GrammarGbnf, MatcherStateIsCopyableAndRejectionLeavesItUnchanged) {
  auto g = parse_gbnf(R"(root ::= "ab" | "ac")");
  Matcher m(g);
  ASSERT_TRUE(m.accept('a'));
  Matcher copy = m;
  EXPECT_FALSE(m.accept('x'));
  EXPECT_EQ(m.stacks(), copy.stacks());
  EXPECT_TRUE(copy.accept('c'));
  EXPECT_TRUE(copy.can_end());
  EXPECT_FALSE(m.can_end());
  EXPECT_TRUE(m.accept('b'));
  EXPECT_FALSE(m.accept('b'));  // finished: nothing more is accepted
}

TEST(GrammarGbnf, PartialUtf8BytesAreCheckedAgainstWhatCanFollow) {
  auto g = parse_gbnf(R"(root ::= [é] "x")");  // é is C3 A9
  Matcher m(g);
  EXPECT_FALSE(m.accept_byte(0xE2));  // 3-byte sequences start above U+07FF: cannot be é
  EXPECT_TRUE(m.accept_byte(0xC3));   // could still become é
  EXPECT_FALSE(m.can_end());
  EXPECT_FALSE(m.accept_byte(0xA8));  // è
  EXPECT_TRUE(m.accept_byte(0xA9));
  EXPECT_TRUE(m.accept_byte('x'));
  EXPECT_TRUE(m.can_end());
  Matcher bad(g);
  EXPECT_FALSE(bad.accept_byte(0xA9));  // stray continuation byte
  EXPECT_FALSE(bad.accept_byte(0xC0));  // overlong lead byte: nothing valid follows
}

TEST(GrammarGbnf, AmbiguityBeyondTheStackLimitIsAClearError) {
  std::string gbnf = "root ::= ";
  for (int i = 0; i < 16; ++i) gbnf += "\"a\"? ";
  auto g = parse_gbnf(gbnf);
  GrammarLimits limits;
  limits.max_stacks = 8;
  try {
    Matcher m(g, limits);
    for (int i = 0; i < 16; ++i) m.accept('a');
    FAIL() << "no error";
  } catch (const GrammarError& e) {
    EXPECT_NE(std::string(e.what()).find("more than 8 alternatives"), std::string::npos) << e.what();
  }
  Matcher fine(g);  // the default limit holds it
  EXPECT_TRUE(fine.accept_bytes("aaaa"));
}

TEST(GrammarGbnf, LlamaCppGrammarsCorpus) {
  struct Case {
    std::string file;
    std::vector<std::string> good, bad;
  };
  const std::vector<Case> cases = {
      {"arithmetic.gbnf", {"1+2=3\n", "(a *b) -4=x1\nx=7\n"}, {"1+2=3", "1++2=3\n"}},
      {"c.gbnf",
       {"int main(){int x = 1;return x;}", "float f(int a){while(a<b){a = a+1;}}"},
       {"int main(){", "main(){}"}},
      {"chess.gbnf", {"1. e4 e5\n2. Nf3 Nc6\n", "1. d4 d5\n2. O-O-O Qxd8+\n"}, {"1. e4 e5\n", "1. e9 e5\n2. a3 a6\n"}},
      {"english.gbnf", {"Hello, world!", "a b\tc"}, {"", "Hello  world", "héllo"}},
      {"japanese.gbnf", {"こんにちは", "カタカナ 漢字"}, {"hello", ""}},
      {"json.gbnf",
       {R"({"a": [1, 2.5, -3e7, true, null], "b": {"c": "\u00e9\n"}})", "{}"},
       {R"([1, 2])", R"({"a": })", R"({"a" 1})", R"({'a': 1})"}},
      {"json_arr.gbnf", {"[\n{\"a\": 1},\n\"x\"]", "[\n]"}, {"[1]", "{}"}},
      {"list.gbnf", {"- one\n- two\n"}, {"- one", "* one\n", "- \n"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.file);
    expect_language(parse_gbnf(read_corpus(c.file)), c.file, c.good, c.bad);
  }
}

}  // namespace
}  // namespace greta::grammar
