#include "chat/chat_template.h"

#include "chat/jinja_parser.h"
#include "chat/jinja_render.h"
#include "core/error.h"

namespace greta {

ChatTemplate ChatTemplate::parse(const std::string& source) {
  ChatTemplate t;
  t.source_ = source;
  t.program_ = std::make_shared<const jinja::Body>(jinja::parse_template(source));
  return t;
}

std::string ChatTemplate::render_json(const nlohmann::ordered_json& variables) const {
  if (!variables.is_object()) throw Error("chat template variables must be a JSON object");
  jinja::Dict vars;
  // apply_chat_template always passes these two, None when the caller gave none.
  vars.set("tools", jinja::Value::none());
  vars.set("documents", jinja::Value::none());
  for (auto it = variables.begin(); it != variables.end(); ++it) vars.set(it.key(), jinja::Value::from_json(it.value()));
  return jinja::render_program(*program_, vars);
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                 const std::string& bos_token, const std::string& eos_token,
                                 const nlohmann::json& extra) const {
  nlohmann::ordered_json vars = nlohmann::ordered_json::object();
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (const auto& m : messages) msgs.push_back({{"role", m.role}, {"content", m.content}});
  vars["messages"] = std::move(msgs);
  vars["add_generation_prompt"] = add_generation_prompt;
  vars["bos_token"] = bos_token;
  vars["eos_token"] = eos_token;
  if (!extra.is_null()) {
    if (!extra.is_object()) throw Error("chat template extra variables must be a JSON object");
    for (auto it = extra.begin(); it != extra.end(); ++it) vars[it.key()] = it.value();
  }
  return render_json(vars);
}

}  // namespace greta
