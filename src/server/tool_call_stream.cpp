#include "server/tool_call_stream.h"

#include <initializer_list>
#include <utility>

#include "server/tool_call_header.h"

namespace greta::server {

using nlohmann::json;

namespace {

constexpr std::string_view kOpen = "<tool_call>";
constexpr std::string_view kClose = "</tool_call>";
// Mistral's marker; in the tokenizer v7/v11+ form each call is `[TOOL_CALLS]name[ARGS]{...}`.
constexpr std::string_view kMistral = "[TOOL_CALLS]";
// What may precede whole-output calls: Llama's python tag (when special tokens are shown) and
// Mistral's marker.
constexpr std::string_view kMarkers[] = {"<|python_tag|>", "[TOOL_CALLS]"};

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

bool prefix_of(std::string_view s, std::string_view w) { return s.size() <= w.size() && w.substr(0, s.size()) == s; }

// Follows `tags` through the held tail `held`; the index of the one it completes, or -1. What
// can no longer be part of one goes to `released`. Each tag's first character ('<', '[')
// occurs in no tag but at its start, so the tail is a prefix of at most one of them, and after
// a mismatch only `c` itself can begin one again.
int tail_matches(std::string& held, char c, std::initializer_list<std::string_view> tags, std::string& released) {
  held += c;
  int i = 0;
  for (std::string_view tag : tags) {
    if (held == tag) {
      held.clear();
      return i;
    }
    if (prefix_of(held, tag)) return -1;
    ++i;
  }
  bool restarts = false;
  for (std::string_view tag : tags) restarts = restarts || c == tag[0];
  if (restarts) {
    released.append(held, 0, held.size() - 1);
    held.assign(1, c);
  } else {
    released += held;
    held.clear();
  }
  return -1;
}

}  // namespace

ToolCallStream::ToolCallStream(const ToolRequest& t) : t_(&t) {}

std::vector<ToolStreamDelta> ToolCallStream::push(std::string_view text) {
  if (!t_->active()) {
    if (!text.empty()) out_.push_back({ToolStreamDelta::Kind::Content, 0, std::string(text), "", ""});
  } else {
    for (char c : text) {
      if (whole_pending_) whole_ += c;
      step(c);
    }
  }
  return std::exchange(out_, {});
}

std::vector<ToolStreamDelta> ToolCallStream::finish() {
  if (!t_->active()) return {};
  if (whole_pending_) resolve_whole();  // may go on as text
  if (state_ == State::Start) to_text(std::exchange(hold_, {}));
  switch (state_) {
    case State::Text: content(std::exchange(hold_, {})); break;
    case State::Header: content(whole_call_ ? std::exchange(hold_, {}) : std::exchange(block_, {})); break;
    case State::Marker: content(std::string(kMistral) + std::exchange(hold_, {})); break;
    case State::BlockRaw: resolve_block(); break;
    case State::Args:
      if (value_ == Value::Scalar) scalar_arguments();
      break;
    default: break;  // a call cut short stands as it is
  }
  if (calls_ == 0 && !ws_.empty()) content_piece(ws_);
  ws_.clear();
  return std::exchange(out_, {});
}

void ToolCallStream::steps(std::string_view s) {
  for (char c : s) step(c);
}

void ToolCallStream::step(char c) {
  switch (state_) {
    case State::Start: return start(c);
    case State::WholeOpen:
      if (is_ws(c)) return;
      if (c == '[' && !in_list_) {
        in_list_ = true;
        return;
      }
      if (c == '{') {
        whole_call_ = true;
        hold_ = "{";
        state_ = State::Header;
        return;
      }
      return to_text(std::exchange(whole_, {}));  // no call: all of it is text
    case State::Text: return text(c);
    case State::Header: return header(c);
    case State::Marker: return mistral_header(c);
    case State::BlockRaw:
      block_ += c;
      if (block_.size() >= kOpen.size() + kClose.size() &&
          block_.compare(block_.size() - kClose.size(), kClose.size(), kClose) == 0)
        resolve_block();
      return;
    case State::WholeRaw: return;
    case State::Args: return value(c);
    case State::AfterArgs: {
      std::string dropped;
      if (tail_matches(hold_, c, {kClose}, dropped) == 0) call_end();
      return;
    }
    case State::ObjRest: return after_value(c);
    case State::Between: return between(c);
    case State::Ignore: return;
  }
}

void ToolCallStream::start(char c) {
  hold_ += c;
  const size_t first = hold_.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return;
  // The opening is a prefix of a marker, or one followed by `c`, which decides.
  const std::string opening = hold_.substr(first);
  bool marker = false;
  for (std::string_view m : kMarkers) {
    if (opening == m) marker = true;
    else if (prefix_of(opening, m)) return;  // may still become the marker
  }
  // An object, or a list whose second character is no marker's: whole-output calls may follow.
  const bool object = opening == "{", list = opening.size() == 2 && opening[0] == '[';
  if (!marker && !object && !list) return to_text(std::exchange(hold_, {}));
  whole_pending_ = true;
  whole_ = std::exchange(hold_, {});
  state_ = State::WholeOpen;
  if (list) in_list_ = true;
  if (!marker) step(opening.back());
}

void ToolCallStream::to_text(std::string_view held) {
  whole_pending_ = false;
  state_ = State::Text;
  steps(held);
}

void ToolCallStream::text(char c) {
  std::string released;
  const int tag = tail_matches(hold_, c, {kOpen, kMistral}, released);
  content(released);
  if (tag < 0) return;
  if (tag == 1) {  // whitespace before it stays held, as before a block
    state_ = State::Marker;
    return;
  }
  block_ = kOpen;  // whitespace before it stays held: it is content only if text follows
  whole_call_ = false;
  state_ = State::Header;
}

void ToolCallStream::header(char c) {
  hold_ += c;
  if (!whole_call_) block_ += c;
  const CallHeader h = scan_call_header(hold_, *t_);
  if (h.status == CallHeader::Status::Partial) return;
  if (h.status == CallHeader::Status::Complete) {
    const char first = hold_[h.value_at];
    hold_.clear();
    call_start(new_call_id(), h.name);
    return begin_value(first);
  }
  if (!whole_call_) {
    hold_.clear();
    state_ = State::BlockRaw;  // read whole at its close
  } else if (whole_pending_) {
    hold_.clear();
    state_ = State::WholeRaw;  // read whole at the end
  } else {
    to_text(std::exchange(hold_, {}));  // an object after calls that is none: text
  }
}

void ToolCallStream::mistral_header(char c) {
  hold_ += c;
  const CallHeader h = scan_mistral_header(hold_, *t_);
  if (h.status == CallHeader::Status::Partial) return;
  if (h.status == CallHeader::Status::Complete) {
    const char first = hold_[h.value_at];
    hold_.clear();
    whole_call_ = false;
    mistral_call_ = true;
    call_start(new_call_id(), h.name);
    return begin_value(first);
  }
  // No call: the marker is text, and what followed it is read again as text (it may hold the
  // next marker).
  state_ = State::Text;
  content(kMistral);
  steps(std::exchange(hold_, {}));
}

void ToolCallStream::begin_value(char c) {
  state_ = State::Args;
  in_string_ = escaped_ = false;
  if (c == '{' || c == '[') {
    value_ = Value::Container;
    depth_ = 1;
    arguments(std::string_view(&c, 1));
  } else {
    value_ = c == '"' ? Value::String : Value::Scalar;
    hold_.assign(1, c);
  }
}

void ToolCallStream::value(char c) {
  if (value_ == Value::Container) {
    if (in_string_) {
      arguments(std::string_view(&c, 1));
      if (escaped_) escaped_ = false;
      else if (c == '\\') escaped_ = true;
      else if (c == '"') in_string_ = false;
      return;
    }
    if (c == '<') {  // markup where JSON cannot be: the value was cut short
      end_value();
      return step(c);
    }
    arguments(std::string_view(&c, 1));
    if (c == '"') in_string_ = true;
    else if (c == '{' || c == '[') ++depth_;
    else if ((c == '}' || c == ']') && --depth_ == 0) end_value();
    return;
  }
  if (value_ == Value::String) {  // arguments as a JSON string holding their JSON text
    hold_ += c;
    if (escaped_) {
      escaped_ = false;
    } else if (c == '\\') {
      escaped_ = true;
    } else if (c == '"') {
      const json v = json::parse(hold_, nullptr, false);
      arguments(v.is_string() ? v.get<std::string>() : hold_);
      end_value();
    }
    return;
  }
  if (is_ws(c) || c == ',' || c == '}' || c == ']' || c == '<' || c == '[') {
    scalar_arguments();
    end_value();
    return step(c);
  }
  hold_ += c;
}

void ToolCallStream::scalar_arguments() {
  arguments(hold_ == "null" ? std::string("{}") : hold_);  // as call_from_json reads null
  hold_.clear();
}

void ToolCallStream::end_value() {
  hold_.clear();
  if (mistral_call_) {
    call_end();  // the call is its value: text or the next marker follow
  } else if (whole_call_) {
    state_ = State::ObjRest;  // inside the call object, one level deep
    depth_ = 1;
    in_string_ = escaped_ = false;
  } else {
    state_ = State::AfterArgs;
  }
}

void ToolCallStream::after_value(char c) {
  if (in_string_) {
    if (escaped_) escaped_ = false;
    else if (c == '\\') escaped_ = true;
    else if (c == '"') in_string_ = false;
  } else if (c == '"') {
    in_string_ = true;
  } else if (c == '{' || c == '[') {
    ++depth_;
  } else if ((c == '}' || c == ']') && --depth_ == 0) {
    call_end();
  }
}

void ToolCallStream::between(char c) {
  if (is_ws(c) || c == ',' || c == ';') return;
  if (c == ']' && in_list_) {
    in_list_ = false;
    state_ = State::Text;
  } else if (c == '{') {
    hold_ = "{";
    state_ = State::Header;
  } else {
    to_text(std::string_view(&c, 1));
  }
}

void ToolCallStream::resolve_block() {
  const std::string block = std::exchange(block_, {});
  const bool closed = block.size() >= kOpen.size() + kClose.size() &&
                      block.compare(block.size() - kClose.size(), kClose.size(), kClose) == 0;
  const size_t inner = block.size() - kOpen.size() - (closed ? kClose.size() : 0);
  const json v = json::parse(block.substr(kOpen.size(), inner), nullptr, false);
  state_ = State::Text;
  ToolCallOut call;
  if (!v.is_discarded() && call_from_json(v, *t_, call)) complete_call(call);
  else content(block);  // no call: the block is text
}

void ToolCallStream::resolve_whole() {
  const std::string text = std::exchange(whole_, {});
  whole_pending_ = false;
  hold_.clear();
  const std::vector<ToolCallOut> calls = whole_output_calls(text, *t_);
  if (calls.empty()) return to_text(text);
  whole_call_ = true;
  for (const ToolCallOut& c : calls) {
    complete_call(c);
    if (done()) break;
  }
}

void ToolCallStream::content(std::string_view s) {
  size_t from = 0;  // s[from, i) is a run without whitespace
  auto run = [&](size_t to) {
    if (to == from) return;
    std::string lead = std::exchange(ws_, {});
    if (calls_ > 0 && !content_sent_) lead.clear();  // the content starts after calls: no leading space
    content_piece(lead + std::string(s.substr(from, to - from)));
    content_sent_ = true;
  };
  for (size_t i = 0; i < s.size(); ++i) {
    if (!is_ws(s[i])) continue;
    run(i);
    ws_ += s[i];
    from = i + 1;
  }
  run(s.size());
}

void ToolCallStream::content_piece(const std::string& s) {
  if (s.empty()) return;
  if (!out_.empty() && out_.back().kind == ToolStreamDelta::Kind::Content) out_.back().text += s;
  else out_.push_back({ToolStreamDelta::Kind::Content, 0, s, "", ""});
}

void ToolCallStream::call_start(const std::string& id, const std::string& name) {
  whole_pending_ = false;
  whole_.clear();
  block_.clear();
  out_.push_back({ToolStreamDelta::Kind::CallStart, calls_++, "", id, name});
}

void ToolCallStream::arguments(std::string_view s) {
  if (s.empty()) return;
  ToolStreamDelta* last = out_.empty() ? nullptr : &out_.back();
  if (last && last->kind == ToolStreamDelta::Kind::Arguments && last->index == calls_ - 1) last->text += s;
  else out_.push_back({ToolStreamDelta::Kind::Arguments, calls_ - 1, std::string(s), "", ""});
}

void ToolCallStream::call_end() {
  hold_.clear();
  mistral_call_ = false;
  state_ = !t_->parallel ? State::Ignore : whole_call_ ? State::Between : State::Text;
}

void ToolCallStream::complete_call(const ToolCallOut& c) {
  call_start(c.id, c.name);
  arguments(c.arguments);
  call_end();
}

void apply_deltas(ParsedOutput& out, const std::vector<ToolStreamDelta>& deltas) {
  for (const ToolStreamDelta& d : deltas) {
    switch (d.kind) {
      case ToolStreamDelta::Kind::Content: out.content += d.text; break;
      case ToolStreamDelta::Kind::CallStart: out.calls.push_back({d.id, d.name, ""}); break;
      case ToolStreamDelta::Kind::Arguments:
        if (d.index >= 0 && size_t(d.index) < out.calls.size()) out.calls[size_t(d.index)].arguments += d.text;
        break;
    }
  }
}

ParsedOutput parse_tool_calls(const std::string& text, const ToolRequest& t) {
  ParsedOutput out;
  ToolCallStream s(t);
  apply_deltas(out, s.push(text));
  apply_deltas(out, s.finish());
  return out;
}

}  // namespace greta::server
