// greta run: generate text from a prompt, streaming it to stdout as it is produced.
#include <signal.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cli/arg_checks.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "model/sequence_runner.h"

namespace greta::cli {

namespace {

// Ctrl-C stops generation after the token in flight, so the summary line (and --report) still
// come out; a second Ctrl-C leaves at once.
volatile std::sig_atomic_t g_interrupted = 0;

extern "C" void run_on_sigint(int) {
  if (g_interrupted) std::_Exit(130);
  g_interrupted = 1;
}

void install_sigint() {
  struct sigaction sa = {};
  sa.sa_handler = run_on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // a write to stdout in progress finishes; the token loop polls the flag
  sigaction(SIGINT, &sa, nullptr);
}

struct RunOptions {
  ModelOptions model;
  SamplingOptions sampling;
  std::string prompt;
  std::string prompt_file;
  int n_predict = 128;
  int ctx = 0;
  bool ignore_eos = false;
  bool no_bos = false;
  bool special = false;
  std::string report;  // JSON file: ids and per-step top logits (parity checks, debugging)
  int report_top = 20;
  std::string force;       // JSON array of token ids fed instead of the sampled ones (teacher forcing)
  std::string prompt_ids;  // JSON array of token ids used as the prompt instead of -p text
};

std::vector<int32_t> parse_ids(const std::string& text, const char* flag, int vocab) {
  nlohmann::json f = nlohmann::json::parse(text, nullptr, false);
  if (!f.is_array()) throw Error(std::string(flag) + " expects a JSON array of token ids, e.g. [1, 2, 3]");
  std::vector<int32_t> ids;
  for (const auto& v : f) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= vocab)
      throw Error(std::string(flag) + ": " + v.dump() + " is not a token id in [0, " + std::to_string(vocab) + ")");
    ids.push_back(v.get<int32_t>());
  }
  return ids;
}

// Top `k` (id, logit) pairs, highest first.
nlohmann::json top_logits(const float* logits, int vocab, int k) {
  std::vector<int> idx(vocab);
  for (int i = 0; i < vocab; ++i) idx[i] = i;
  k = std::min(k, vocab);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int a, int b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  nlohmann::json out = nlohmann::json::array();
  for (int i = 0; i < k; ++i) out.push_back({idx[i], logits[idx[i]]});
  return out;
}

// Returns the exit status: 0, or 130 when Ctrl-C cut generation short.
int run(const RunOptions& o) {
  // The report file is opened before the model loads, so a path that cannot be written fails
  // at once rather than after the whole generation.
  std::ofstream report_out;
  if (!o.report.empty()) {
    report_out.open(o.report);
    if (!report_out) throw Error("cannot write report file '" + o.report + "'");
  }
  std::string prompt = o.prompt;
  if (!o.prompt_file.empty()) {
    std::ifstream in(o.prompt_file, std::ios::binary);
    if (!in) throw Error("cannot read prompt file '" + o.prompt_file + "'");
    prompt.assign(std::istreambuf_iterator<char>(in), {});
  }
  Loaded L = load(o.model);
  const ModelConfig& cfg = L.model->config();
  const int n_ctx = o.ctx > 0 ? o.ctx : std::min(cfg.max_context, 4096);
  std::vector<int32_t> ids = o.prompt_ids.empty()
                                 ? L.tokenizer->encode(prompt, L.tokenizer->add_bos && !o.no_bos, o.special)
                                 : parse_ids(o.prompt_ids, "--prompt-ids", cfg.vocab_size);
  if (ids.empty()) throw Error("the prompt is empty (no tokens); pass -p TEXT");
  if (int(ids.size()) >= n_ctx)
    throw Error("prompt has " + std::to_string(ids.size()) + " tokens, which does not fit the context of " +
                std::to_string(n_ctx) + " (raise -c/--ctx up to " + std::to_string(cfg.max_context) + ")");
  std::vector<int32_t> forced;
  if (!o.force.empty()) forced = parse_ids(o.force, "--force", cfg.vocab_size);
  const int n_wanted = forced.empty() ? o.n_predict : int(forced.size());
  const int n_gen = std::min(n_wanted, n_ctx - int(ids.size()));

  SequenceRunner seq(*L.model, n_ctx);
  print_kv_cache(L, seq.kv_pool().n_blocks(), seq.kv_pool().block_size());
  Sampler sampler(o.sampling.p);
  StreamDecoder dec(*L.tokenizer);
  nlohmann::json report = {{"prompt_ids", ids},
                           {"generated_ids", nlohmann::json::array()},
                           {"steps", nlohmann::json::array()}};

  // Sampling on the device when the backend can and nothing needs the logits on the host
  // (penalties, --report, --force): a step then returns one token id instead of the logits.
  const bool on_device = L.backend->supports_device_sampling() && sampler.device_eligible() && o.report.empty() &&
                         forced.empty();
  std::vector<float> logits;
  int32_t device_tok = 0;
  auto step = [&](const std::vector<int32_t>& in) {
    if (on_device) device_tok = seq.eval_sample(in, device_sample_params(sampler));
    else logits = seq.eval_last(in);
  };
  install_sigint();
  const double t0 = now_seconds();
  step(ids);
  const double t_prompt = now_seconds() - t0;
  std::vector<int32_t> history = ids;
  int generated = 0;
  bool stopped = false;
  const double t1 = now_seconds();
  for (; generated < n_gen && !g_interrupted; ++generated) {
    if (!o.report.empty()) report["steps"].push_back(top_logits(logits.data(), cfg.vocab_size, o.report_top));
    const int32_t tok = !forced.empty() ? forced[size_t(generated)]
                        : on_device     ? device_tok
                                        : sampler.sample(logits.data(), cfg.vocab_size, history);
    history.push_back(tok);
    report["generated_ids"].push_back(tok);
    const bool stop = !o.ignore_eos && forced.empty() &&
                      std::find(L.tokenizer->stop_ids.begin(), L.tokenizer->stop_ids.end(), tok) !=
                          L.tokenizer->stop_ids.end();
    if (stop) {
      ++generated;
      stopped = true;
      break;
    }
    // Models may have more embedding rows than the tokenizer has pieces (padded vocabularies);
    // such ids have no text.
    std::string text = tok < L.tokenizer->vocab_size() ? dec.feed(tok) : std::string();
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    if (generated + 1 < n_gen) step({tok});
  }
  std::string rest = dec.flush();
  std::fwrite(rest.data(), 1, rest.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
  const double t_gen = now_seconds() - t1;
  // The first generated token comes from the prompt pass; the rest each took one decode step.
  const int decode_steps = std::max(0, generated - 1);
  std::fprintf(
      stderr,
      "greta: %s on %s | load %.2f s, weights %.2f GB | prompt %zu tokens, %.1f tokens/s | generation %d tokens, "
      "%.1f tokens/s\n",
      cfg.name.c_str(), L.backend->name().c_str(), L.load_seconds, double(L.model->weight_bytes_on_backend()) / 1e9,
      ids.size(), ids.size() / std::max(t_prompt, 1e-9), generated, decode_steps / std::max(t_gen, 1e-9));
  if (g_interrupted) std::fprintf(stderr, "greta: interrupted after %d of %d tokens\n", generated, n_gen);
  else if (!stopped && n_gen < n_wanted)
    std::fprintf(stderr,
                 "greta: stopped after %d tokens: the context of %d tokens is full (raise -c/--ctx, up to %d)\n",
                 generated, n_ctx, cfg.max_context);
  if (report_out.is_open()) {
    report_out << report.dump() << "\n";
    if (!report_out.flush()) throw Error("cannot write report file '" + o.report + "'");
  }
  return g_interrupted ? 130 : 0;
}

}  // namespace

void register_run(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* sub = app.add_subcommand("run", "generate text from a prompt (streams to stdout)");
  o->model.add_to(sub);
  o->sampling.add_to(sub);
  CLI::Option* text = sub->add_option("-p,--prompt", o->prompt, "prompt text");
  CLI::Option* file =
      sub->add_option("-f,--file", o->prompt_file, "read the prompt from a file")->check(CLI::ExistingFile);
  sub->add_option("-n,--n-predict", o->n_predict, "tokens to generate")->check(integer_in(0, 1 << 24));
  sub->add_option("-c,--ctx", o->ctx, "context size in tokens (default: min(model's, 4096))")
      ->check(integer_in(0, 1 << 24));
  sub->add_flag("--ignore-eos", o->ignore_eos, "keep generating past end-of-sequence tokens");
  sub->add_flag("--no-bos", o->no_bos, "do not add the BOS token even if the model wants it");
  sub->add_flag("--special", o->special, "parse special tokens (e.g. <|im_start|>) in the prompt");
  sub->add_option("--report", o->report, "write prompt/generated ids and per-step top logits as JSON");
  sub->add_option("--report-top", o->report_top, "logits per step in --report")->check(integer_in(1, 1 << 20));
  CLI::Option* ids = sub->add_option("--prompt-ids", o->prompt_ids,
                                     "prompt as a JSON array of token ids (no tokenizer involved)");
  // One prompt source: -p, -f and --prompt-ids exclude each other.
  text->excludes(file)->excludes(ids);
  file->excludes(ids);
  sub->add_option("--force", o->force,
                  "teacher forcing: feed this JSON array of token ids instead of sampling (with --report, "
                  "scores another engine's output step by step)");
  sub->callback([o] {
    if (o->prompt.empty() && o->prompt_file.empty() && o->prompt_ids.empty())
      throw Error("no prompt: pass -p TEXT, -f FILE or --prompt-ids");
    if (const int status = run(*o)) std::exit(status);
  });
}

}  // namespace greta::cli
