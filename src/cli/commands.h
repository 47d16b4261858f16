// Each `greta` subcommand lives in its own cmd_<name>.cpp and registers itself here.
// A command's callback throws greta::Error on bad input; main() prints it and exits 1.
#pragma once
#include <CLI/CLI.hpp>

namespace greta::cli {

void register_run(CLI::App& app);
void register_chat(CLI::App& app);
void register_info(CLI::App& app);
void register_tokenize(CLI::App& app);
void register_perplexity(CLI::App& app);
void register_bench(CLI::App& app);
void register_serve(CLI::App& app);
const char* commit_id();

}  // namespace greta::cli
