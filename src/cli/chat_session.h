// The conversation state of `greta chat`: system message and turns, rendering them through the
// model's chat template, fitting them into the context, and deciding how much of the KV cache a
// new prompt can reuse.
//
// Guarantees
// - A prompt from prepare() always leaves `reserve` tokens of the context free for the reply;
//   to get there the oldest turns are dropped (whole turns: history then starts with a user
//   message again), never the system message.
// - A user message that does not fit even alone (system + message + generation prompt) is
//   refused with a reason, and the history is left exactly as it was.
// - Template errors (raise_exception, e.g. roles that do not alternate) come back as a reason,
//   never as a crash, so one bad turn does not end the chat.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace greta::cli {

struct ChatPrompt {
  std::vector<int32_t> tokens;  // the whole conversation, ending with the generation prompt
  int dropped_messages = 0;     // oldest history messages dropped to make it fit
  bool ok = false;
  std::string error;  // why the message was refused when !ok
};

class ChatSession {
 public:
  // n_ctx: context size in tokens; reserve: tokens kept free for the reply (< n_ctx).
  ChatSession(const ChatTemplate& tmpl, const Tokenizer& tok, int n_ctx, int reserve);

  // Sets (or with "" clears) the system message; starts a new conversation.
  void set_system(std::string text);
  void reset() { history_.clear(); }

  // Renders system + history + `user` with the generation prompt and tokenizes it (special
  // tokens from the template's markup only, never from message text; BOS added only when the
  // model wants one and the template did not write it).
  // Drops the oldest turns from the history (for good) when that is what it takes to fit.
  ChatPrompt prepare(const std::string& user);
  // Records a finished (or interrupted) turn.
  void add_turn(std::string user, std::string reply);

  const std::vector<ChatMessage>& history() const { return history_; }
  const std::string& system() const { return system_; }

 private:
  std::vector<ChatMessage> messages_from(size_t first, const std::string& user) const;

  const ChatTemplate& tmpl_;
  const Tokenizer& tok_;
  int n_ctx_, reserve_;
  std::string bos_text_, eos_text_;
  std::string system_;
  std::vector<ChatMessage> history_;  // user/assistant turns, oldest first (no system message)
};

// How many leading tokens of `cached` (what the KV cache holds) a new prompt can keep: their
// common prefix, less one when `next` would otherwise be entirely cached (the last prompt token
// must be evaluated to give the logits of the reply's first token).
size_t reusable_prefix(const std::vector<int32_t>& cached, const std::vector<int32_t>& next);

}  // namespace greta::cli
