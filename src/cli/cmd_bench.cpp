// greta bench: decode, batched-decode and prefill speed, one JSON line per measurement.
// Every line carries a check made in the same run, so a broken kernel cannot report a speed:
//  - decode: the greedy tokens produced one step at a time (picked on the device where the
//    backend can) are re-scored in one batched prefill pass; both paths must agree (same
//    tokens, close logits);
//  - batched decode: the first and last sequence of the batch are re-run alone;
//  - prefill: the last token's logits from the batched prompt pass must equal those of a
//    decode step over the same cache.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "backend/kv_cache_dtype.h"
#include "cli/arg_checks.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "model/sequence_runner.h"
#include "runtime/kv_cache.h"

namespace greta::cli {

namespace {

struct BenchOptions {
  ModelOptions model;
  int prompt = 16;
  int gen = 128;
  int reps = 2;
  int at_pos = 0;  // also decode `long_gen` tokens after a prompt of this length
  int long_gen = 32;
  std::vector<int> batches;  // batched decode sizes
  int batch_steps = 32;
  std::vector<int> prefill;  // prompt lengths for time-to-first-token
};

int argmax(const float* x, int n) { return int(std::max_element(x, x + n) - x); }

std::vector<int32_t> fixed_tokens(int n, int vocab, int salt) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = int32_t((1009LL * (i + 1) + 7919LL * salt) % vocab);
  return t;
}

// Compares logits rows produced by two paths. A token counts as a mismatch only when the
// reference prefers another token by a clear margin (near-ties may flip in low precision).
// `scale` widens both bounds where the two paths differ by more than rounding: with FP8 W8A8
// (Backend::fp8_activation_min_tokens) a batched step's e4m3 activations (~2^-5 relative a value)
// meet a reference that took the W8A16 GEMV, or the reverse; measured logit differences reach
// 5.6% of the largest logit over 32 layers. Likewise one-token steps with int8 activations
// (Backend::int8_activation_max_tokens, GGUF weights as llama.cpp runs them) against a re-score
// in bf16: one near-tie token of 128 flipped past the plain margin (synthetic Llama-2-7B Q4_0).
struct Check {
  double scale = 1;
  double max_diff = 0, max_abs = 0;
  int mismatches = 0, rows = 0;
  int64_t nonfinite = 0;  // logits that are NaN or infinite on either side: a failure (max and
                          // argmax would pass over them)
  void row(const float* got, const float* ref, int vocab, int got_token) {
    double row_abs = 0;
    for (int v = 0; v < vocab; ++v) {
      if (!std::isfinite(got[v]) || !std::isfinite(ref[v])) {
        ++nonfinite;
        continue;
      }
      max_diff = std::max(max_diff, double(std::fabs(got[v] - ref[v])));
      row_abs = std::max(row_abs, double(std::fabs(ref[v])));
    }
    max_abs = std::max(max_abs, row_abs);
    const int tr = argmax(ref, vocab);
    if (tr != got_token && ref[tr] - ref[got_token] > 0.02 * scale * std::max(1.0, row_abs)) ++mismatches;
    ++rows;
  }
  bool ok() const { return nonfinite == 0 && mismatches == 0 && max_diff <= 0.05 * scale * std::max(1.0, max_abs); }
  void put(nlohmann::json& j) const {
    j["check"] = ok() ? "pass" : "FAIL";
    j["check_max_logit_diff"] = max_diff;
    j["check_token_mismatches"] = mismatches;
    j["check_nonfinite_logits"] = nonfinite;
    j["check_bound"] = 0.05 * scale;  // of the largest |logit|
  }
};

struct Ctx {
  Loaded L;
  nlohmann::json base;
  double bandwidth = 0;  // GB/s measured on the device, 0 if unknown
  bool all_ok = true;
  int vocab() const { return L.model->config().vocab_size; }
  Check check() const {
    const bool quantized = L.backend->fp8_activation_min_tokens() > 0 || L.backend->int8_activation_max_tokens() > 0;
    return Check{.scale = quantized ? 2.0 : 1.0};
  }
  // K+V bytes read by attention for one token at context `pos` (a windowed layer reads its
  // window's keys only), FP8 rows' scales included.
  double kv_bytes(double pos) const {
    const ModelConfig& c = L.model->config();
    double positions = 0;
    for (int l = 0; l < c.n_layers; ++l)
      positions += c.layer_window(l) > 0 ? std::min(pos, double(c.layer_window(l))) : pos;
    return positions * double(kv_cache_desc(L, 0, 16).token_layer_bytes(L.backend->kv_dtype()));
  }
  void emit(nlohmann::json j, const Check& chk, double bytes_per_token, double tokens_per_s) {
    j.update(base);
    chk.put(j);
    if (bytes_per_token > 0) {
      j["bytes_per_token"] = bytes_per_token;
      j["achieved_gb_s"] = bytes_per_token * tokens_per_s / 1e9;
      if (bandwidth > 0) j["pct_of_bandwidth"] = 100.0 * bytes_per_token * tokens_per_s / 1e9 / bandwidth;
    }
    all_ok = all_ok && chk.ok();
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  }
};

// Batch-1 decode of `gen` tokens after `prompt_len` prompt tokens; checked by re-scoring.
void bench_decode(Ctx& c, int prompt_len, int gen, int reps, const char* measure) {
  const int vocab = c.vocab();
  std::vector<int32_t> prompt = fixed_tokens(prompt_len, vocab, 0);
  SequenceRunner seq(*c.L.model, prompt_len + gen + 1);
  double best = 1e30, best_prefill = 1e30;
  std::vector<int32_t> gen_ids;
  std::vector<float> dec_logits;
  // Where the backend can, greedy tokens are picked on the device (a step returns one id,
  // as `greta run` does), so the timed loop is the real decode loop.
  const bool on_device = c.L.backend->supports_device_sampling();
  const DeviceSampleParams greedy;  // temperature 0: argmax, lowest id on ties
  for (int rep = 0; rep < std::max(1, reps); ++rep) {
    seq.reset();
    gen_ids.clear();
    dec_logits.clear();
    std::vector<float> logits;
    int32_t tok = 0;
    auto step = [&](const std::vector<int32_t>& in) {
      if (on_device) tok = seq.eval_sample(in, greedy);
      else logits = seq.eval_last(in);
    };
    const double t0 = now_seconds();
    step(prompt);
    const double t1 = now_seconds();
    for (int i = 0; i < gen; ++i) {
      if (!on_device) {
        dec_logits.insert(dec_logits.end(), logits.begin(), logits.end());
        tok = argmax(logits.data(), vocab);
      }
      gen_ids.push_back(tok);
      if (i + 1 < gen) step({tok});
    }
    best = std::min(best, now_seconds() - t1);
    best_prefill = std::min(best_prefill, t1 - t0);
  }
  if (on_device) {
    // The timed run brought back only token ids. Untimed, the same tokens are fed one step at
    // a time with the logits copied back, so the check below still compares step-by-step
    // logits with the re-scored ones, and the device's tokens with the re-scored argmax.
    seq.reset();
    std::vector<float> logits = seq.eval_last(prompt);
    for (int i = 0; i < gen; ++i) {
      dec_logits.insert(dec_logits.end(), logits.begin(), logits.end());
      if (i + 1 < gen) logits = seq.eval_last({gen_ids[size_t(i)]});
    }
  }
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), gen_ids.begin(), gen_ids.end() - 1);
  std::vector<int32_t> want;
  for (int i = 0; i < gen; ++i) want.push_back(prompt_len - 1 + i);
  // With FP8 W8A8 the re-score goes in steps too small to quantize activations, so it takes
  // the decode's own weight-only arithmetic (another kernel and tile) and the check stays tight.
  const int fp8_from = c.L.backend->fp8_activation_min_tokens();
  SequenceRunner rescore(*c.L.model, prompt_len + gen + 1, fp8_from > 1 ? fp8_from - 1 : 512);
  std::vector<float> ref = rescore.eval(all, want);
  // int8 activations exist only in one-token steps, which a re-score cannot reproduce in bulk.
  Check chk{.scale = c.L.backend->int8_activation_max_tokens() > 0 ? 2.0 : 1.0};
  for (int i = 0; i < gen; ++i)
    chk.row(dec_logits.data() + size_t(i) * vocab, ref.data() + size_t(i) * vocab, vocab, gen_ids[i]);
  const double steps = std::max(1, gen - 1);
  const double tps = steps / best;
  const double bytes = double(c.L.model->weight_bytes_per_token()) + c.kv_bytes(prompt_len + gen / 2.0);
  c.emit({{"measure", measure},
          {"batch", 1},
          {"prompt_len", prompt_len},
          {"gen_len", gen},
          {"tokens_per_s", tps},
          {"ms_per_token", 1000.0 / tps},
          {"prefill_ms", best_prefill * 1000},
          {"sampling", on_device ? "device" : "host"}},
         chk, bytes, tps);
}

// B sequences decoding together: every step carries one token of each sequence. Greedy
// tokens are picked on the device where the backend can (as the engine does), else on the host.
void bench_batch(Ctx& c, int B, int steps) {
  const int vocab = c.vocab(), prompt_len = 16, bs = 16;
  const int per_seq_blocks = (prompt_len + steps + bs) / bs + 1;
  BlockPool pool(B * per_seq_blocks, bs);
  std::unique_ptr<KVStorage> kv = c.L.model->make_kv(pool.n_blocks(), bs);
  std::vector<SequenceKV> seqs(B);
  std::vector<std::vector<int32_t>> toks(B);
  for (int s = 0; s < B; ++s) toks[s] = fixed_tokens(prompt_len, vocab, s + 1);
  const bool on_device = c.L.backend->supports_device_sampling();
  const std::vector<DeviceSampleParams> greedy(static_cast<size_t>(B));  // temperature 0: argmax, lowest id on ties
  std::vector<int32_t> picked(static_cast<size_t>(B));
  std::vector<float> probs(static_cast<size_t>(B));
  // One step; device: the greedy tokens land in `picked`; host: the logits in `logits`.
  auto step = [&](const std::vector<std::vector<int32_t>>& in, int n_past, std::vector<float>& logits, bool device) {
    Batch b;
    for (int s = 0; s < B; ++s) {
      if (!seqs[s].reserve(pool, n_past + int(in[s].size()))) throw Error("bench: KV pool too small");
      SeqSlice q;
      q.token_begin = b.n_tokens();
      q.n_tokens = int(in[s].size());
      q.n_past = n_past;
      q.block_table = seqs[s].table();
      b.tokens.insert(b.tokens.end(), in[s].begin(), in[s].end());
      b.logit_rows.push_back(q.token_begin + q.n_tokens - 1);
      b.seqs.push_back(std::move(q));
    }
    if (device) {
      c.L.model->forward(b, *kv, LlamaModel::DeviceDraw{greedy, picked.data(), probs.data()});
    } else {
      logits.resize(size_t(B) * vocab);
      c.L.model->forward(b, *kv, LlamaModel::HostLogits{logits.data()});
      for (int s = 0; s < B; ++s) picked[size_t(s)] = argmax(logits.data() + size_t(s) * vocab, vocab);
    }
  };
  std::vector<float> logits;
  std::vector<std::vector<float>> first_last_logits(2);  // per step, seqs 0 and B-1
  std::vector<std::vector<int32_t>> in(B, std::vector<int32_t>(1));
  // Runs the prompt and `steps` decode steps; `timed`: with device sampling where possible,
  // else (the untimed replay) feeding back `toks` and keeping the logits of seqs 0 and B-1.
  auto run = [&](bool timed) {
    const std::vector<std::vector<int32_t>> prompts = [&] {
      std::vector<std::vector<int32_t>> p(B);
      for (int s = 0; s < B; ++s) p[s].assign(toks[s].begin(), toks[s].begin() + prompt_len);
      return p;
    }();
    const bool device = timed && on_device;
    step(prompts, 0, logits, device);
    double t0 = now_seconds();
    for (int i = 0; i < steps; ++i) {
      for (int s = 0; s < B; ++s) {
        if (timed) toks[s].push_back(picked[size_t(s)]);
        in[s][0] = toks[s][size_t(prompt_len + i)];
      }
      if (!device) {
        first_last_logits[0].insert(first_last_logits[0].end(), logits.begin(), logits.begin() + vocab);
        first_last_logits[1].insert(first_last_logits[1].end(), logits.end() - vocab, logits.end());
      }
      if (i + 1 < steps) step(in, prompt_len + i, logits, device);
    }
    const double dt = now_seconds() - t0;
    for (auto& q : seqs) q.release_all(pool);
    return dt;
  };
  const double dt = run(true);
  if (on_device) run(false);  // untimed: the logits the check below compares
  // Check: sequences 0 and B-1 run alone must produce the same greedy tokens and close logits.
  Check chk = c.check();
  for (int k = 0; k < 2; ++k) {
    const int s = k == 0 ? 0 : B - 1;
    std::vector<int32_t> all(toks[s].begin(), toks[s].end() - 1);
    std::vector<int32_t> want;
    for (int i = 0; i < steps; ++i) want.push_back(prompt_len - 1 + i);
    SequenceRunner alone(*c.L.model, prompt_len + steps + 1);
    std::vector<float> ref = alone.eval(all, want);
    for (int i = 0; i < steps; ++i)
      chk.row(first_last_logits[k].data() + size_t(i) * vocab, ref.data() + size_t(i) * vocab, vocab,
              toks[s][prompt_len + i]);
  }
  const double tps = double(B) * std::max(1, steps - 1) / dt;
  const double bytes_per_step = double(c.L.model->weight_bytes_per_token()) + B * c.kv_bytes(prompt_len + steps / 2.0);
  c.emit({{"measure", "decode_batch"},
          {"batch", B},
          {"prompt_len", prompt_len},
          {"gen_len", steps},
          {"tokens_per_s", tps},
          {"ms_per_step", 1000.0 * dt / std::max(1, steps - 1)},
          {"sampling", on_device ? "device" : "host"}},
         chk, bytes_per_step / B, tps);
}

// Time to first token for a prompt of `len` tokens (one batched pass, logits of the last token).
void bench_prefill(Ctx& c, int len, int reps) {
  const int vocab = c.vocab();
  std::vector<int32_t> prompt = fixed_tokens(len, vocab, 99);
  SequenceRunner seq(*c.L.model, len + 1, /*max_step_tokens=*/len);
  double best = 1e30;
  std::vector<float> logits;
  for (int rep = 0; rep < std::max(1, reps); ++rep) {
    seq.reset();
    const double t0 = now_seconds();
    logits = seq.eval_last(prompt);
    best = std::min(best, now_seconds() - t0);
  }
  // Check: prompt minus its last token in one pass, then the last token as a decode step.
  seq.reset();
  seq.eval_last(std::vector<int32_t>(prompt.begin(), prompt.end() - 1));
  std::vector<float> ref = seq.eval_last({prompt.back()});
  Check chk = c.check();
  chk.row(logits.data(), ref.data(), vocab, argmax(logits.data(), vocab));
  c.emit({{"measure", "prefill"},
          {"batch", 1},
          {"prompt_len", len},
          {"ttft_ms", best * 1000},
          {"tokens_per_s", len / best}},
         chk, 0, 0);
}

void bench(const BenchOptions& o) {
  Ctx c;
  c.L = load(o.model, /*need_tokenizer=*/false);
  c.bandwidth = c.L.backend->measure_bandwidth_gbs();
  const ModelConfig& cfg = c.L.model->config();
  c.base = {{"model", cfg.name},
            {"format", c.L.file->format()},
            {"device", c.L.backend->name()},
            {"commit", commit_id()},
            {"weight_bytes", c.L.model->weight_bytes_per_token()},
            {"weight_bytes_on_device", c.L.model->weight_bytes_on_backend()},
            {"weight_dtype", std::string(dtype_name(c.L.model->matmul_dtype()))},
            {"kv_dtype", kv_cache_dtype_name(c.L.backend->kv_dtype())}};
  if (c.bandwidth > 0) c.base["device_bandwidth_gb_s"] = c.bandwidth;
  bench_decode(c, o.prompt, o.gen, o.reps, "decode");
  if (o.at_pos > 0) bench_decode(c, o.at_pos, o.long_gen, 1, "decode_long");
  for (int b : o.batches) bench_batch(c, b, o.batch_steps);
  for (int p : o.prefill) bench_prefill(c, p, o.reps);
  if (!c.all_ok)
    throw Error("benchmark output check failed (see the FAIL lines): a speed from wrong output is no result");
}

}  // namespace

void register_bench(CLI::App& app) {
  auto o = std::make_shared<BenchOptions>();
  CLI::App* sub = app.add_subcommand("bench",
                                     "measure decode, batched decode and prefill speed (JSON lines, output checked)");
  o->model.add_to(sub);
  o->model.add_synthetic_to(sub);
  sub->add_option("-p,--prompt-len", o->prompt, "prompt tokens before batch-1 decode")->check(integer_in(1, 1 << 20));
  sub->add_option("-n,--gen-len", o->gen, "tokens generated at batch 1")->check(integer_in(2, 1 << 20));
  sub->add_option("-r,--reps", o->reps, "repetitions (best is reported)")->check(integer_in(1, 1000));
  sub->add_option("--at-pos", o->at_pos, "also decode after a prompt of this many tokens")
      ->check(integer_in(0, 1 << 20));
  sub->add_option("--long-gen", o->long_gen, "tokens generated for --at-pos")->check(integer_in(2, 1 << 20));
  sub->add_option("--batch", o->batches, "batched decode sizes, e.g. --batch 8 32 128")->check(integer_in(1, 4096));
  sub->add_option("--batch-steps", o->batch_steps, "decode steps per batched run")->check(integer_in(2, 1 << 20));
  sub->add_option("--prefill", o->prefill, "prompt lengths for time to first token, e.g. --prefill 512 2048")
      ->check(integer_in(2, 1 << 20));
  sub->callback([o] { bench(*o); });
}

}  // namespace greta::cli
