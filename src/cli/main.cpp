// `greta`: run | chat | info | tokenize | perplexity | bench | serve. Every command reports bad
// input or files with a one-line reason and a non-zero exit (2 for a bad command line), never
// a crash.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "backend/backend_env.h"
#include "cli/arg_checks.h"
#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"GRETA CORE: fast inference for Llama-family models", "greta"};
  app.require_subcommand(1);
  app.footer("Developer switches (environment, read when a backend is made):\n" + greta::backend_env_help());
  app.set_version_flag("--version", std::string("greta ") + greta::cli::commit_id());
  greta::cli::register_run(app);
  greta::cli::register_chat(app);
  greta::cli::register_info(app);
  greta::cli::register_tokenize(app);
  greta::cli::register_perplexity(app);
  greta::cli::register_bench(app);
#ifdef GRETA_HAS_SERVER
  greta::cli::register_serve(app);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return greta::cli::report_parse_error(app, e, argc, argv);
  } catch (const greta::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "greta: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "greta: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
