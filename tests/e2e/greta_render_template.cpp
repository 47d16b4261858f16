// greta_render_template: reads {"template", "messages", "add_generation_prompt", "bos_token",
// "eos_token", ...more variables} as JSON on stdin and prints the rendering on stdout, for
// tests/e2e/test_chat_template_parity.py. A template error prints "error: <message>" on stderr
// and exits 1. `greta_render_template --builtin NAME` prints the built-in template NAME's source.
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "chat/chat_template.h"
#include "core/error.h"

int main(int argc, char** argv) {
  try {
    if (argc == 3 && std::string(argv[1]) == "--builtin") {
      const std::string* src = greta::builtin_chat_template(argv[2]);
      if (!src) throw greta::Error(std::string("no built-in chat template '") + argv[2] + "'");
      std::cout << *src;
      return 0;
    }
    std::string input((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    // ordered_json: tojson must print objects in the order the JSON gave them, as Python does.
    nlohmann::ordered_json req = nlohmann::ordered_json::parse(input);
    if (!req.is_object() || !req.contains("template") || !req["template"].is_string())
      throw greta::Error("input must be a JSON object with a string \"template\"");
    greta::ChatTemplate t = greta::ChatTemplate::parse(req["template"].get<std::string>());
    req.erase("template");
    std::cout << t.render_json(req);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
