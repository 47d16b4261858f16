// greta bench: decode and prefill speed of a model, one JSON line per measurement.
// Every result line is checked in the same run: the greedy tokens produced one at a time
// by the decode path are re-scored in one batched prefill pass, and the two must agree,
// so a broken kernel cannot report a speed.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "model/sequence_runner.h"

namespace greta::cli {

namespace {

struct BenchOptions {
  ModelOptions model;
  int prompt = 16;
  int gen = 128;
  int reps = 3;
};

int argmax(const float* x, int n) {
  return int(std::max_element(x, x + n) - x);
}

void bench(const BenchOptions& o) {
  Loaded L = load(o.model);
  const ModelConfig& cfg = L.model->config();
  const int vocab = cfg.vocab_size;
  const int n_ctx = o.prompt + o.gen + 1;
  // A fixed, model-independent prompt: token ids spread over the vocabulary.
  std::vector<int32_t> prompt(o.prompt);
  for (int i = 0; i < o.prompt; ++i) prompt[i] = int32_t((1009LL * (i + 1)) % vocab);

  SequenceRunner seq(*L.model, n_ctx);
  double best_prefill = 1e30, best_decode = 1e30;
  std::vector<int32_t> gen;
  std::vector<float> decode_logits;  // [gen, vocab] of the last rep, for the check
  for (int rep = 0; rep < std::max(1, o.reps); ++rep) {
    seq.reset();
    gen.clear();
    decode_logits.clear();
    const double t0 = now_seconds();
    std::vector<float> logits = seq.eval_last(prompt);
    const double t1 = now_seconds();
    for (int i = 0; i < o.gen; ++i) {
      decode_logits.insert(decode_logits.end(), logits.begin(), logits.end());
      const int32_t tok = argmax(logits.data(), vocab);
      gen.push_back(tok);
      if (i + 1 < o.gen) logits = seq.eval_last({tok});
    }
    const double t2 = now_seconds();
    best_prefill = std::min(best_prefill, t1 - t0);
    best_decode = std::min(best_decode, t2 - t1);
  }
  // Check: score prompt + generated tokens in one prefill pass; every position must predict the
  // same greedy token as the decode path did, with logits close.
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), gen.begin(), gen.end() - 1);
  std::vector<int32_t> want;
  for (int i = 0; i < o.gen; ++i) want.push_back(o.prompt - 1 + i);
  seq.reset();
  std::vector<float> ref = seq.eval(all, want);
  double max_diff = 0, max_abs = 0;
  int mismatches = 0;
  for (int i = 0; i < o.gen; ++i) {
    const float* a = decode_logits.data() + size_t(i) * vocab;
    const float* b = ref.data() + size_t(i) * vocab;
    for (int v = 0; v < vocab; ++v) {
      max_diff = std::max(max_diff, double(std::fabs(a[v] - b[v])));
      max_abs = std::max(max_abs, double(std::fabs(b[v])));
    }
    // A token counts as a mismatch only if the prefill pass prefers another token by a clear margin.
    const int ta = gen[i], tb = argmax(b, vocab);
    if (ta != tb && b[tb] - b[ta] > 1e-3f * std::max(1.0, max_abs)) ++mismatches;
  }
  const bool ok = mismatches == 0 && max_diff <= 0.05 * std::max(1.0, max_abs);
  const size_t bytes = L.model->weight_bytes_per_token();
  const double decode_steps = std::max(1, o.gen - 1);
  const double tps = decode_steps / best_decode;
  nlohmann::json base = {{"model", cfg.name}, {"format", L.file->format()}, {"device", L.backend->name()},
                         {"commit", commit_id()}, {"batch", 1}, {"check", ok ? "pass" : "FAIL"},
                         {"check_max_logit_diff", max_diff}, {"check_token_mismatches", mismatches}};
  nlohmann::json dec = base;
  dec.update({{"measure", "decode"}, {"prompt_len", o.prompt}, {"gen_len", o.gen}, {"tokens_per_s", tps},
              {"ms_per_token", 1000.0 / tps}, {"bytes_per_token", bytes}, {"achieved_gb_s", bytes * tps / 1e9}});
  nlohmann::json pre = base;
  pre.update({{"measure", "prefill"}, {"prompt_len", o.prompt}, {"tokens_per_s", o.prompt / best_prefill},
              {"ms", best_prefill * 1000.0}});
  std::printf("%s\n%s\n", dec.dump().c_str(), pre.dump().c_str());
  if (!ok) throw Error("benchmark output check failed: decode and prefill disagree (max logit diff " +
                       std::to_string(max_diff) + ", " + std::to_string(mismatches) + " token mismatches)");
}

}  // namespace

void register_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* sub = app.add_subcommand("bench", "measure decode and prefill speed (JSON lines), output checked");
  o->model.add_to(sub);
  sub->add_option("-p,--prompt-len", o->prompt, "prompt tokens")->check(CLI::Range(1, 1 << 20));
  sub->add_option("-n,--gen-len", o->gen, "generated tokens")->check(CLI::Range(2, 1 << 20));
  sub->add_option("-r,--reps", o->reps, "repetitions (best is reported)")->check(CLI::Range(1, 1000));
  sub->callback([o] { bench(*o); });
}

}  // namespace greta::cli
