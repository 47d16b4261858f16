// Finding tool calls in a model's output as it is generated, for streamed and whole responses
// alike: text pieces go in, deltas come out (content, a call's start with its id and name, the
// next piece of a call's arguments), as OpenAI streams them.
//
// Formats:
// - Hermes / Qwen: `<tool_call>{"name": N, "arguments": {...}}</tool_call>` blocks anywhere in
//   the output, any number of them; text around them is content.
// - Whole-output calls (Llama 3.1/3.2, Mistral, a generic JSON fallback): the output opens,
//   after whitespace and an optional `<|python_tag|>` or `[TOOL_CALLS]` marker, with a call
//   object or an array of them; further objects may follow after `,` or `;`.
// - Mistral tokenizer v7/v11+ (Mistral Small 3.x, Magistral, Devstral):
//   `[TOOL_CALLS]name[ARGS]{...}` (optionally `[CALL_ID]id` before `[ARGS]`), one marker per
//   call, any number of them, anywhere in the output; text around them is content.
// A call object whose header (server/tool_call_header.h) names a tool of the request is a call
// from then on: its arguments stream as the model writes them, raw JSON text, up to the end of
// the value (the arguments of an output cut by max_tokens are cut too). Objects in another key
// order, or with arguments given as a JSON string, are read whole when they end
// (call_from_json); if they are no call, their text is content.
//
// Guarantees
// - Splitting the same output into pieces differently gives the same deltas once concatenated
//   (content, and each call's id aside, name and arguments), and parse_tool_calls, which feeds
//   the whole text at once, is that result.
// - Held back: only what could still turn out to be call markup: a tail that may begin
//   `<tool_call>` or `[TOOL_CALLS]`, a block's or a marker's header until it names its tool and
//   its arguments begin, whitespace (until text follows it),
//   and an output opening like a whole-output call until its header resolves (one that does
//   not open like a streamable call is held to the end). Call markup never reaches content.
// - With calls, the content is the text outside them without leading and trailing whitespace
//   (whitespace between two pieces of text stays); an output without calls comes back as
//   content byte for byte.
// - With tool_choice none everything is content. With parallel_tool_calls false the first
//   complete call ends the parse: done() turns true and the rest of the output is ignored.
// - Pieces split only where the input pieces or ASCII markup split, so UTF-8 characters stay
//   whole when the input's do. Never throws on any text.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "server/tool_calls.h"

namespace greta::server {

struct ToolStreamDelta {
  enum class Kind { Content, CallStart, Arguments };
  Kind kind = Kind::Content;
  int index = 0;         // CallStart, Arguments: the call's index in the response
  std::string text;      // Content: text; Arguments: the next piece of the arguments' JSON text
  std::string id, name;  // CallStart
};

class ToolCallStream {
 public:
  explicit ToolCallStream(const ToolRequest& t);  // t must outlive the stream

  // The deltas that `text` completes; consecutive pieces of one kind (and call) are merged.
  std::vector<ToolStreamDelta> push(std::string_view text);
  // End of the output: whatever was held is resolved.
  std::vector<ToolStreamDelta> finish();

  // parallel_tool_calls false and a call is complete: the rest of the output is ignored.
  bool done() const { return state_ == State::Ignore; }
  int calls() const { return calls_; }

 private:
  enum class State {
    Start,      // leading whitespace and what may be a whole-output marker, in hold_
    WholeOpen,  // whole output after its marker: `[` or `{` next
    Text,       // content; hold_ is a tail that may begin <tool_call> or [TOOL_CALLS]
    Header,     // a call object's header, in hold_
    Marker,     // after `[TOOL_CALLS]` in text: name, [CALL_ID], [ARGS], in hold_
    BlockRaw,   // a <tool_call> block that is no streamable call, up to its close, in block_
    WholeRaw,   // a whole output that is no streamable call: held to the end in whole_
    Args,       // the arguments value
    AfterArgs,  // a block's rest after its arguments, up to </tool_call>; hold_ is a tail that may begin it
    ObjRest,    // a whole-output call object's rest after its arguments, up to its closing brace
    Between,    // after a whole-output call object: separators, `]`, or the next object
    Ignore,     // parallel_tool_calls false: one call is complete
  };
  enum class Value { Container, String, Scalar };

  void step(char c);
  void steps(std::string_view s);
  void start(char c);
  void text(char c);
  void header(char c);
  void mistral_header(char c);
  void value(char c);
  void after_value(char c);
  void between(char c);
  void begin_value(char c);
  void end_value();
  void scalar_arguments();
  void resolve_block();
  void resolve_whole();
  void to_text(std::string_view held);

  void content(std::string_view s);
  void content_piece(const std::string& s);
  void call_start(const std::string& id, const std::string& name);
  void arguments(std::string_view s);
  void call_end();
  void complete_call(const ToolCallOut& c);

  const ToolRequest* t_;
  State state_ = State::Start;
  std::vector<ToolStreamDelta> out_;
  std::string hold_;
  std::string block_;           // the current <tool_call> block's text, for when it is no call
  std::string whole_;           // the output so far while it may be whole-output calls
  bool whole_pending_ = false;  // whole_ is being collected (no call yet)
  bool whole_call_ = false;     // the current call object is a whole-output one, not a block
  bool mistral_call_ = false;   // the current call is `[TOOL_CALLS]name[ARGS]value`: it ends with its value
  bool in_list_ = false;        // whole output: inside its [ ... ]
  std::string ws_;              // content whitespace not sent yet: sent only if more content follows
  bool content_sent_ = false;   // some content went out
  Value value_ = Value::Container;
  int depth_ = 0;
  bool in_string_ = false, escaped_ = false;
  int calls_ = 0;
};

// The deltas applied to a whole result: content appended, calls opened and extended.
struct ParsedOutput {
  std::string content;  // the text outside the calls
  std::vector<ToolCallOut> calls;
};
void apply_deltas(ParsedOutput& out, const std::vector<ToolStreamDelta>& deltas);

// The calls in a finished output, all at once (a ToolCallStream fed the whole text).
ParsedOutput parse_tool_calls(const std::string& text, const ToolRequest& t);

}  // namespace greta::server
