// greta chat: an interactive conversation in the terminal, streamed as it is produced.
// Each turn renders the whole conversation with the chat template and evaluates only what the
// KV cache does not already hold (the new prompt shares its start with the previous prompt and
// reply), so a long chat does not re-read its history every turn.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "cli/arg_checks.h"
#include "cli/chat_session.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "model/sequence_runner.h"

namespace greta::cli {

namespace {

// Set while a reply is being produced: SIGINT then only asks the token loop to stop.
volatile std::sig_atomic_t g_generating = 0;
volatile std::sig_atomic_t g_interrupted = 0;

extern "C" void on_sigint(int) {
  if (g_generating) {
    g_interrupted = 1;
    return;
  }
  // At the prompt (or while loading) Ctrl-C leaves, as in a shell. Only async-signal-safe
  // calls here; every reply has already been flushed.
  const char nl = '\n';
  ssize_t ignored = write(STDERR_FILENO, &nl, 1);
  (void)ignored;
  _exit(130);
}

void install_sigint() {
  struct sigaction sa = {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  // SA_RESTART: a Ctrl-C that lands in the middle of writing a token must not make stdio
  // drop output with EINTR; the token loop polls the flag instead.
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
}

struct ChatOptions {
  ModelOptions model;
  SamplingOptions sampling;
  int n_predict = 512;
  int ctx = 0;
  std::string chat_template;
  std::string system;
  bool ignore_eos = false;
  bool verbose = false;
};

ChatTemplate parse_template(const std::string& source, const std::string& where) {
  try {
    return ChatTemplate::parse(source);
  } catch (const Error& e) {
    throw Error("chat template from " + where + ": " + e.what());
  }
}

// Reads one message; a line ending in '\' continues on the next line. False at end of input.
bool read_message(bool tty, std::string& out) {
  out.clear();
  if (tty) std::fputs("> ", stdout), std::fflush(stdout);
  char* buf = nullptr;
  size_t cap = 0;
  bool got = false;
  while (true) {
    const ssize_t n = getline(&buf, &cap, stdin);
    if (n < 0) break;  // EOF: a pending continued message is still sent
    got = true;
    std::string line(buf, size_t(n));
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    if (!line.empty() && line.back() == '\\') {
      line.pop_back();
      out += line + "\n";
      if (tty) std::fputs(". ", stdout), std::fflush(stdout);
      continue;
    }
    out += line;
    break;
  }
  std::free(buf);
  return got;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

constexpr const char* kHelp =
    "commands: /reset (forget the conversation), /system TEXT (set the system message and reset; "
    "/system alone clears it), /exit (or Ctrl-D). End a line with \\ to continue the message on the next "
    "line. Ctrl-C stops a reply; at the prompt it exits.";

class Chat {
 public:
  Chat(const ChatOptions& o, Loaded& L, const ChatTemplate& tmpl, int n_ctx)
      : o_(o),
        L_(L),
        n_ctx_(n_ctx),
        session_(tmpl, *L.tokenizer, n_ctx, std::min(o.n_predict, n_ctx / 2)),
        seq_(*L.model, n_ctx),
        sampler_(o.sampling.p) {
    if (!o.system.empty()) session_.set_system(o.system);
    print_kv_cache(L, seq_.kv_pool().n_blocks(), seq_.kv_pool().block_size());
  }

  // One user message -> one streamed reply, recorded in the history.
  void turn(const std::string& user) {
    ChatPrompt p = session_.prepare(user);
    if (!p.ok) {
      std::fprintf(stderr, "greta: %s\n", p.error.c_str());
      return;
    }
    if (p.dropped_messages > 0)
      std::fprintf(stderr, "greta: context full (%d tokens): dropped the %d oldest messages\n", n_ctx_,
                   p.dropped_messages);
    // Usually the previous prompt and reply are a prefix of the new prompt; where the reply
    // re-tokenizes differently (or the history was cut), the cache is kept up to the first
    // difference and only the rest is evaluated.
    const size_t keep = reusable_prefix(cached_, p.tokens);
    seq_.truncate(int(keep));
    cached_.resize(keep);
    g_interrupted = 0;
    g_generating = 1;
    std::string reply;
    bool interrupted = false;
    const double t0 = now_seconds();
    int n_reply = 0;
    try {
      interrupted = generate(p.tokens, keep, reply, n_reply);
    } catch (const Error& e) {
      // The cache may be half-written: start clean next turn, keep the chat alive.
      g_generating = 0;
      seq_.reset();
      cached_.clear();
      std::fflush(stdout);
      std::fprintf(stderr, "\ngreta: error: %s\n", e.what());
      return;
    }
    g_generating = 0;
    if (interrupted) std::fprintf(stderr, "greta: reply interrupted\n");
    if (o_.verbose)
      std::fprintf(stderr, "greta: prompt %zu tokens (%zu reused from the cache), reply %d tokens, %.2f s\n",
                   p.tokens.size(), keep, n_reply, now_seconds() - t0);
    // An interrupted reply stays in the history as far as it got; one that never started
    // (Ctrl-C during the prompt pass) leaves no turn behind.
    if (!(interrupted && reply.empty())) session_.add_turn(user, std::move(reply));
  }

  ChatSession& session() { return session_; }

 private:
  // Evaluates prompt[keep:] on top of the cache and streams the reply. True if interrupted.
  bool generate(const std::vector<int32_t>& prompt, size_t keep, std::string& reply, int& n_reply) {
    const int vocab = L_.model->config().vocab_size;
    std::vector<int32_t> suffix(prompt.begin() + long(keep), prompt.end());
    std::vector<float> logits = seq_.eval_last(suffix);
    cached_ = prompt;
    std::vector<int32_t> history = prompt;  // for the sampler's repetition penalties
    const int n_gen = std::min(o_.n_predict, n_ctx_ - int(prompt.size()));
    StreamDecoder dec(*L_.tokenizer);
    const auto& stops = L_.tokenizer->stop_ids;
    bool stopped = false, interrupted = false;
    for (int i = 0; i < n_gen; ++i) {
      if (g_interrupted) {
        interrupted = true;
        break;
      }
      const int32_t tok = sampler_.sample(logits.data(), vocab, history);
      if (!o_.ignore_eos && std::find(stops.begin(), stops.end(), tok) != stops.end()) {
        stopped = true;
        break;
      }
      history.push_back(tok);
      ++n_reply;
      const std::string text = dec.feed(tok);
      reply += text;
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
      if (i + 1 < n_gen && !g_interrupted) {
        logits = seq_.eval_last({tok});
        cached_.push_back(tok);
      }
    }
    if (g_interrupted) interrupted = true;
    const std::string rest = dec.flush();
    reply += rest;
    std::fwrite(rest.data(), 1, rest.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    if (!stopped && !interrupted && n_gen < o_.n_predict)
      std::fprintf(stderr, "greta: reply cut short: the context (%d tokens) is full\n", n_ctx_);
    return interrupted;
  }

  const ChatOptions& o_;
  Loaded& L_;
  int n_ctx_;
  ChatSession session_;
  SequenceRunner seq_;
  Sampler sampler_;
  std::vector<int32_t> cached_;  // tokens whose K/V the sequence holds, in order
};

void chat(const ChatOptions& o) {
  install_sigint();
  // A template given on the command line is checked before the (slower) model load.
  std::string source, where;
  if (!o.chat_template.empty()) {
    source = load_chat_template(o.chat_template);
    where = "--chat-template " + o.chat_template;
  }
  Loaded L = load(o.model);
  if (source.empty()) {
    source = L.tokenizer->chat_template;
    where = "the model";
  }
  if (source.empty())
    throw Error(
        "the model has no chat template; pass one with --chat-template NAME|FILE (e.g. --chat-template "
        "chatml; built-in names: " +
        builtin_chat_template_names_text() + ")");
  const ChatTemplate tmpl = parse_template(source, where);
  const ModelConfig& cfg = L.model->config();
  const int n_ctx = o.ctx > 0 ? o.ctx : std::min(cfg.max_context, 4096);
  Chat c(o, L, tmpl, n_ctx);

  const bool tty = isatty(STDIN_FILENO);
  if (tty)
    std::fprintf(stderr, "greta chat: %s on %s, context %d tokens. %s\n", cfg.name.c_str(), L.backend->name().c_str(),
                 n_ctx, kHelp);
  std::string msg;
  while (read_message(tty, msg)) {
    const std::string t = trim(msg);
    if (t.empty()) continue;
    if (t[0] == '/') {
      const std::string cmd = t.substr(0, t.find_first_of(" \t\n"));
      const std::string arg = trim(t.substr(cmd.size()));
      if (cmd == "/exit" || cmd == "/quit" || cmd == "/bye") break;
      if (cmd == "/reset") {
        c.session().reset();
        if (tty) std::fprintf(stderr, "(conversation reset)\n");
      } else if (cmd == "/system") {
        c.session().set_system(arg);
        if (tty)
          std::fprintf(stderr, arg.empty() ? "(system message cleared, conversation reset)\n"
                                           : "(system message set, conversation reset)\n");
      } else if (cmd == "/help" || cmd == "/?") {
        std::fprintf(stderr, "%s\n", kHelp);
      } else {
        std::fprintf(stderr, "greta: unknown command %s; %s\n", cmd.c_str(), kHelp);
      }
      continue;
    }
    c.turn(msg);
  }
  if (tty) std::fputc('\n', stdout);
  std::fflush(stdout);
}

}  // namespace

void register_chat(CLI::App& app) {
  auto o = std::make_shared<ChatOptions>();
  CLI::App* sub = app.add_subcommand(
      "chat",
      "interactive chat in the terminal, streamed (reads messages from stdin, one per line)\n"
      "  a line ending in \\ continues the message on the next line\n"
      "  /reset forgets the conversation; /system TEXT sets the system message (and resets);\n"
      "  /exit or Ctrl-D leaves; Ctrl-C stops a reply, at the prompt it exits");
  o->model.add_to(sub);
  o->sampling.add_to(sub);
  sub->add_option("-n,--n-predict", o->n_predict, "most tokens per reply")->check(integer_in(1, 1 << 24));
  sub->add_option("-c,--ctx", o->ctx,
                  "context size in tokens (default: min(model's, 4096)); when full, the oldest turns are dropped")
      ->check(integer_in(0, 1 << 24));
  sub->add_option(
      "--chat-template", o->chat_template,
      "override the model's template: a built-in name (" + builtin_chat_template_names_text() + ") or a Jinja file");
  sub->add_option("--system", o->system, "system message to start with");
  sub->add_flag("--ignore-eos", o->ignore_eos, "keep generating past end-of-turn tokens (until -n)");
  sub->add_flag("-v,--verbose", o->verbose, "per reply on stderr: prompt tokens, how many came from the cache, time");
  sub->callback([o] { chat(*o); });
}

}  // namespace greta::cli
