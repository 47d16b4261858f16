// Chat templates: renders a model's Jinja chat template exactly as transformers'
// apply_chat_template does (jinja2 with trim_blocks, lstrip_blocks, loop controls, and the
// globals raise_exception / strftime_now / namespace, tojson with ensure_ascii=False), using
// our own interpreter of the Jinja subset chat templates use (src/chat/jinja_*).
// Resource limits (chat/jinja_limits.h) bound parsing and rendering: templates come from
// strangers. Messages are rendered as data: RenderedChat marks the text that came from them.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "chat/jinja_limits.h"
#include "tokenizer/text_range.h"

namespace greta {

using TemplateLimits = jinja::TemplateLimits;

namespace jinja {
struct Stmt;
}

struct ChatMessage {
  std::string role;
  std::string content;
  // Further fields of the message as the template sees them (an assistant's tool_calls, a tool
  // result's tool_call_id): data, like the content.
  nlohmann::ordered_json fields = nlohmann::ordered_json::object();
};

// A rendered conversation: the text, and the byte ranges of it that came from the messages
// and `extra` variables (content, names, tool calls, roles outside the known ones) or were
// computed from them, rather than written by the template. Only the template's own text may
// become special tokens (Tokenizer::encode_marked).
struct RenderedChat {
  std::string text;
  std::vector<TextRange> data;
};

class ChatTemplate {
 public:
  // Throws greta::Error with line:col and the construct for anything unsupported or malformed,
  // or nested past limits.max_depth.
  static ChatTemplate parse(const std::string& source, const TemplateLimits& limits = {});

  // Variables as transformers passes them: messages, add_generation_prompt, bos_token,
  // eos_token, tools = None, documents = None, then `extra` (tools, date_string, ...) on top.
  // raise_exception(msg) in the template throws greta::Error whose what() is msg.
  // Going past a limit throws greta::Error naming it.
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt, const std::string& bos_token,
                     const std::string& eos_token, const nlohmann::json& extra = {}) const;
  // Same, marking what came from the messages and `extra`. Roles are the template's own
  // vocabulary when they are one of system, developer, user, assistant, tool (the server admits
  // no others); any other role is data.
  RenderedChat render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                           const std::string& bos_token, const std::string& eos_token,
                           const nlohmann::json& extra = {}) const;

  // Same with every variable given as JSON (messages with tool_calls, ...): `variables` must be
  // an object; tools/documents default to None when absent. Ordered JSON keeps each object's
  // key order, which tojson prints (nlohmann::json sorts keys; `extra` above is rendered so).
  std::string render_json(const nlohmann::ordered_json& variables) const;

  const std::string& source() const { return source_; }
  const TemplateLimits& limits() const { return limits_; }

 private:
  // `markup` variables are the template's own (bos_token, ...); `data` ones came from the caller.
  RenderedChat render_marked(const nlohmann::ordered_json& markup, const nlohmann::ordered_json& data) const;

  std::string source_;
  TemplateLimits limits_;
  std::shared_ptr<const std::vector<std::unique_ptr<jinja::Stmt>>> program_;
};

// Built-in templates by name for --chat-template NAME (chat_builtin_templates.cpp lists them);
// nullptr for other names.
const std::string* builtin_chat_template(std::string_view name);
std::vector<std::string> builtin_chat_template_names();
std::string builtin_chat_template_names_text();  // "chatml, llama2, ..." for help and errors
// --chat-template NAME|FILE: the built-in template of that name, else the contents of that file.
// Throws greta::Error listing the built-in names when it is neither.
std::string load_chat_template(const std::string& name_or_path);

}  // namespace greta
