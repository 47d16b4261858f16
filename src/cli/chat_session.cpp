#include "cli/chat_session.h"

#include <algorithm>

#include "chat/chat_prompt.h"
#include "core/error.h"

namespace greta::cli {

ChatSession::ChatSession(const ChatTemplate& tmpl, const Tokenizer& tok, int n_ctx, int reserve)
    : tmpl_(tmpl), tok_(tok), n_ctx_(n_ctx), reserve_(reserve) {
  // Templates write BOS/EOS as text ({{ bos_token }}); with parse_special they become the ids.
  if (tok.bos_id >= 0) bos_text_ = std::string(tok.piece(tok.bos_id));
  if (tok.eos_id >= 0) eos_text_ = std::string(tok.piece(tok.eos_id));
}

void ChatSession::set_system(std::string text) {
  system_ = std::move(text);
  history_.clear();
}

void ChatSession::add_turn(std::string user, std::string reply) {
  history_.push_back({"user", std::move(user)});
  history_.push_back({"assistant", std::move(reply)});
}

std::vector<ChatMessage> ChatSession::messages_from(size_t first, const std::string& user) const {
  std::vector<ChatMessage> m;
  if (!system_.empty()) m.push_back({"system", system_});
  m.insert(m.end(), history_.begin() + first, history_.end());
  m.push_back({"user", user});
  return m;
}

ChatPrompt ChatSession::prepare(const std::string& user) {
  ChatPrompt p;
  const int limit = n_ctx_ - reserve_;
  size_t first = 0;  // index of the oldest history message kept
  while (true) {
    try {
      // Only the template's markup becomes special tokens; message text stays text.
      p.tokens = tokenize_chat(tok_, tmpl_.render_chat(messages_from(first, user), true, bos_text_, eos_text_));
    } catch (const Error& e) {
      p.error = std::string("the chat template refused this conversation: ") + e.what();
      return p;
    }
    if (int(p.tokens.size()) <= limit) break;
    if (first == history_.size()) {
      p.error = "this message needs " + std::to_string(p.tokens.size()) + " tokens with the template, but only " +
                std::to_string(limit) + " of the context (" + std::to_string(n_ctx_) + ", " + std::to_string(reserve_) +
                " kept for the reply) are available; it was skipped (raise -c or lower -n)";
      return p;
    }
    // Drop one whole turn: the next message, then up to the next user message.
    ++first;
    while (first < history_.size() && history_[first].role != "user") ++first;
  }
  history_.erase(history_.begin(), history_.begin() + first);
  p.dropped_messages = int(first);
  p.ok = true;
  return p;
}

size_t reusable_prefix(const std::vector<int32_t>& cached, const std::vector<int32_t>& next) {
  const size_t n = std::min(cached.size(), next.size());
  const size_t common = size_t(std::mismatch(cached.begin(), cached.begin() + long(n), next.begin()).first -
                               cached.begin());
  return std::min(common, next.empty() ? 0 : next.size() - 1);
}

}  // namespace greta::cli
