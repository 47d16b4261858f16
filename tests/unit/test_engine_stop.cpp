// StopMatcher: stop strings over text that arrives in pieces.
#include <gtest/gtest.h>

#include "engine/stop_matcher.h"

namespace greta {
namespace {

// Feeds pieces until a match; returns (released text, matched).
std::pair<std::string, bool> run(StopMatcher& m, const std::vector<std::string>& pieces) {
  std::string out;
  for (const std::string& p : pieces) {
    StopMatcher::Result r = m.feed(p);
    out += r.text;
    if (r.matched) return {out, true};
  }
  out += m.flush();
  return {out, false};
}

TEST(EngineStop, NoStopsPassesEverythingThrough) {
  StopMatcher m;
  EXPECT_EQ(m.feed("abc").text, "abc");
  EXPECT_EQ(m.feed("").text, "");
  EXPECT_EQ(m.flush(), "");
}

TEST(EngineStop, MatchAcrossPiecesIsCutAndNeverReleased) {
  StopMatcher m({"STOP"});
  StopMatcher::Result r1 = m.feed("hello ST");
  EXPECT_EQ(r1.text, "hello ");  // "ST" could start the stop string: held back
  EXPECT_FALSE(r1.matched);
  StopMatcher::Result r2 = m.feed("O");
  EXPECT_EQ(r2.text, "");
  StopMatcher::Result r3 = m.feed("P and more");
  EXPECT_TRUE(r3.matched);
  EXPECT_EQ(r3.text, "");
}

TEST(EngineStop, FalseStartIsReleasedOnceResolved) {
  StopMatcher m({"STOP"});
  EXPECT_EQ(m.feed("a ST").text, "a ");
  StopMatcher::Result r = m.feed("ILL");  // "STILL" is not "STOP"
  EXPECT_FALSE(r.matched);
  EXPECT_EQ(r.text, "STILL");
  EXPECT_EQ(m.feed("S").text, "");  // could be the start again
  EXPECT_EQ(m.flush(), "S");        // stream ended: it was text after all
}

TEST(EngineStop, EarliestOfSeveralStopsWins) {
  StopMatcher m({"world", "lo w"});
  auto [text, matched] = run(m, {"hel", "lo wor", "ld"});
  EXPECT_TRUE(matched);
  EXPECT_EQ(text, "hel");
}

TEST(EngineStop, MatchInsideOnePieceKeepsTextBefore) {
  StopMatcher m({"\n\n"});
  auto [text, matched] = run(m, {"line one\n\nline two"});
  EXPECT_TRUE(matched);
  EXPECT_EQ(text, "line one");
}

TEST(EngineStop, HoldBackKeepsUtf8Whole) {
  // Stop string starts with a 2-byte character; the released text must end on a boundary.
  StopMatcher m({"\xC3\xA9t\xC3\xA9"});           // "été"
  StopMatcher::Result r = m.feed("caf\xC3\xA9");  // "café": "é" could start "été"
  EXPECT_EQ(r.text, "caf");
  r = m.feed("!");
  EXPECT_EQ(r.text, "\xC3\xA9!");
  EXPECT_FALSE(r.matched);
}

TEST(EngineStop, EveryPrefixLengthSplitGivesTheSameAnswer) {
  const std::string text = "The answer is 42. Observation: done";
  const std::string stop = "Observation:";
  const std::string want = "The answer is 42. ";
  for (size_t cut1 = 0; cut1 <= text.size(); ++cut1)
    for (size_t cut2 = cut1; cut2 <= text.size(); cut2 += 3) {
      StopMatcher m({stop, "zzz"});
      auto [out, matched] = run(m, {text.substr(0, cut1), text.substr(cut1, cut2 - cut1), text.substr(cut2)});
      ASSERT_TRUE(matched) << cut1 << " " << cut2;
      ASSERT_EQ(out, want) << cut1 << " " << cut2;
    }
}

}  // namespace
}  // namespace greta
