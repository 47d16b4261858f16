// Where a Hugging Face model directory keeps its chat template: tokenizer_config.json's
// "chat_template", or chat_template.jinja beside it, which wins as it does in transformers.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;

namespace {

const fs::path kSpm = fs::path(GRETA_SOURCE_DIR) / "tests/data/tokenizer/spm";

fs::path model_dir(const std::string& name, const std::string& config_template) {
  const fs::path dir = fs::temp_directory_path() /
                       ("greta_hf_chat_template_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  fs::copy_file(kSpm / "tokenizer.json", dir / "tokenizer.json");
  std::ofstream(dir / "tokenizer_config.json")
      << R"({"bos_token": "<s>", "eos_token": "</s>")"
      << (config_template.empty() ? "" : R"(, "chat_template": ")" + config_template + "\"") << "}";
  return dir;
}

}  // namespace

TEST(TokenizerHfChatTemplate, ReadsTheConfigEntry) {
  const fs::path dir = model_dir("config", "{{ messages }}");
  EXPECT_EQ(greta::Tokenizer::from_hf_dir(dir.string())->chat_template, "{{ messages }}");
  fs::remove_all(dir);
}

TEST(TokenizerHfChatTemplate, ChatTemplateJinjaFileWinsOverTheConfig) {
  const std::string file_text = "{%- for m in messages %}\n{{ m.content }}\n{%- endfor %}\n";
  for (const std::string config : {"", "{{ messages }}"}) {
    const fs::path dir = model_dir(config.empty() ? "file_only" : "file_and_config", config);
    std::ofstream(dir / "chat_template.jinja", std::ios::binary) << file_text;
    EXPECT_EQ(greta::Tokenizer::from_hf_dir(dir.string())->chat_template, file_text) << config;
    fs::remove_all(dir);
  }
}
