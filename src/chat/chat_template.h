// Chat templates: renders a model's Jinja chat template exactly as transformers'
// apply_chat_template does (jinja2 with trim_blocks, lstrip_blocks, loop controls, and the
// globals raise_exception / strftime_now / namespace, tojson with ensure_ascii=False), using
// our own interpreter of the Jinja subset chat templates use (src/chat/jinja_*).
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace greta {

namespace jinja {
struct Stmt;
}

struct ChatMessage {
  std::string role;
  std::string content;
};

class ChatTemplate {
 public:
  // Throws greta::Error with line:col and the construct for anything unsupported or malformed.
  static ChatTemplate parse(const std::string& source);

  // Variables as transformers passes them: messages, add_generation_prompt, bos_token,
  // eos_token, tools = None, documents = None, then `extra` (tools, date_string, ...) on top.
  // raise_exception(msg) in the template throws greta::Error whose what() is msg.
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                     const std::string& bos_token, const std::string& eos_token,
                     const nlohmann::json& extra = {}) const;

  // Same with every variable given as JSON (messages with tool_calls, ...): `variables` must be
  // an object; tools/documents default to None when absent. Ordered JSON keeps each object's
  // key order, which tojson prints (nlohmann::json sorts keys; `extra` above is rendered so).
  std::string render_json(const nlohmann::ordered_json& variables) const;

  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::shared_ptr<const std::vector<std::unique_ptr<jinja::Stmt>>> program_;
};

// Built-in templates by name for --chat-template NAME: "chatml", "llama2", "llama3",
// "mistral", "qwen2"; nullptr for other names.
const std::string* builtin_chat_template(std::string_view name);
std::vector<std::string> builtin_chat_template_names();
// --chat-template NAME|FILE: the built-in template of that name, else the contents of that file.
// Throws greta::Error listing the built-in names when it is neither.
std::string load_chat_template(const std::string& name_or_path);

}  // namespace greta
