#include "chat/chat_template.h"

#include <algorithm>

#include "chat/jinja_parser.h"
#include "chat/jinja_render.h"
#include "core/error.h"

namespace greta {

namespace {

// Roles the server admits (and `greta chat` uses): the words templates compare against, which
// some templates spell into special tokens ('<|' + role + '|>'), so they stay template text.
bool is_known_role(const std::string& role) {
  static const char* const roles[] = {"system", "developer", "user", "assistant", "tool"};
  return std::any_of(std::begin(roles), std::end(roles), [&](const char* r) { return role == r; });
}

}  // namespace

ChatTemplate ChatTemplate::parse(const std::string& source, const TemplateLimits& limits) {
  ChatTemplate t;
  t.source_ = source;
  t.limits_ = limits;
  jinja::RenderBudget budget(limits);  // the parser reads max_depth from it
  jinja::RenderBudget::Scope scope(budget);
  t.program_ = std::make_shared<const jinja::Body>(jinja::parse_template(source));
  return t;
}

RenderedChat ChatTemplate::render_marked(const nlohmann::ordered_json& markup,
                                         const nlohmann::ordered_json& data) const {
  if (!markup.is_object() || !data.is_object()) throw Error("chat template variables must be a JSON object");
  jinja::RenderBudget budget(limits_);  // from_json below checks the limits too
  jinja::RenderBudget::Scope scope(budget);
  jinja::Dict vars;
  // apply_chat_template always passes these two, None when the caller gave none.
  vars.set("tools", jinja::Value::none());
  vars.set("documents", jinja::Value::none());
  for (auto it = markup.begin(); it != markup.end(); ++it) vars.set(it.key(), jinja::Value::from_json(it.value()));
  for (auto it = data.begin(); it != data.end(); ++it) {
    jinja::Value v = jinja::Value::from_json(it.value(), /*as_data=*/true);
    if (it.key() == "messages" && v.is_list()) {
      for (jinja::Value& m : *v.list) {
        if (!m.is_dict()) continue;
        for (auto& [key, field] : m.dict->items)
          if (key == "role" && field.is_string() && is_known_role(field.s)) field = jinja::Value::string(field.s);
      }
    }
    vars.set(it.key(), std::move(v));
  }
  jinja::Rendered r = jinja::render_program(*program_, vars, limits_);
  RenderedChat out{std::move(r.text), {}};
  for (const jinja::Span& sp : r.data_spans) out.data.push_back({sp.begin, sp.end});
  return out;
}

std::string ChatTemplate::render_json(const nlohmann::ordered_json& variables) const {
  return render_marked(variables, nlohmann::ordered_json::object()).text;
}

RenderedChat ChatTemplate::render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                       const std::string& bos_token, const std::string& eos_token,
                                       const nlohmann::json& extra) const {
  nlohmann::ordered_json markup = nlohmann::ordered_json::object();
  nlohmann::ordered_json data = nlohmann::ordered_json::object();
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (const auto& m : messages) {
    nlohmann::ordered_json msg = {{"role", m.role}, {"content", m.content}};
    for (auto it = m.fields.begin(); it != m.fields.end(); ++it) msg[it.key()] = it.value();
    msgs.push_back(std::move(msg));
  }
  data["messages"] = std::move(msgs);
  markup["add_generation_prompt"] = add_generation_prompt;
  markup["bos_token"] = bos_token;
  markup["eos_token"] = eos_token;
  if (!extra.is_null()) {
    if (!extra.is_object()) throw Error("chat template extra variables must be a JSON object");
    for (auto it = extra.begin(); it != extra.end(); ++it) {
      markup.erase(it.key());
      data[it.key()] = it.value();
    }
  }
  return render_marked(markup, data);
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                 const std::string& bos_token, const std::string& eos_token,
                                 const nlohmann::json& extra) const {
  return render_chat(messages, add_generation_prompt, bos_token, eos_token, extra).text;
}

}  // namespace greta
