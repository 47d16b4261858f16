// greta perplexity: perplexity of a model on a text file, the way llama.cpp's tool scores it:
// the text is cut into chunks of --ctx tokens, each chunk is evaluated from an empty cache,
// and only the second half of each chunk is scored (every scored token has >= ctx/2 context).
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/kv_cache_dtype.h"
#include "cli/arg_checks.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "model/sequence_runner.h"

namespace greta::cli {

namespace {

struct PplOptions {
  ModelOptions model;
  std::string file;
  int ctx = 512;
  int chunks = 0;  // 0 = all
};

void perplexity(const PplOptions& o) {
  std::ifstream in(o.file, std::ios::binary);
  if (!in) throw Error("cannot read '" + o.file + "'");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  Loaded L = load(o.model);
  const int vocab = L.model->config().vocab_size;
  std::vector<int32_t> ids = L.tokenizer->encode(text, L.tokenizer->add_bos, false);
  int n_chunks = int(ids.size()) / o.ctx;
  if (o.chunks > 0) n_chunks = std::min(n_chunks, o.chunks);
  if (n_chunks == 0)
    throw Error("'" + o.file + "' has " + std::to_string(ids.size()) + " tokens, fewer than one chunk of " +
                std::to_string(o.ctx));
  SequenceRunner seq(*L.model, o.ctx);
  print_kv_cache(L, seq.kv_pool().n_blocks(), seq.kv_pool().block_size());
  const int first = o.ctx / 2;
  std::vector<int32_t> want;
  for (int j = first; j < o.ctx - 1; ++j) want.push_back(j);
  double nll = 0;
  int64_t count = 0;
  const double t0 = now_seconds();
  for (int c = 0; c < n_chunks; ++c) {
    std::vector<int32_t> chunk(ids.begin() + int64_t(c) * o.ctx, ids.begin() + int64_t(c + 1) * o.ctx);
    seq.reset();
    std::vector<float> logits = seq.eval(chunk, want);
    for (size_t w = 0; w < want.size(); ++w) {
      const float* row = logits.data() + w * vocab;
      double mx = row[0];
      for (int i = 1; i < vocab; ++i) mx = std::max(mx, double(row[i]));
      double sum = 0;
      for (int i = 0; i < vocab; ++i) sum += std::exp(double(row[i]) - mx);
      const int32_t next = chunk[want[w] + 1];
      nll += -(double(row[next]) - mx - std::log(sum));
      ++count;
    }
    std::fprintf(stderr, "chunk %d/%d: ppl so far %.4f\n", c + 1, n_chunks, std::exp(nll / count));
  }
  nlohmann::json j = {{"file", o.file},
                      {"tokens", ids.size()},
                      {"ctx", o.ctx},
                      {"chunks", n_chunks},
                      {"scored", count},
                      {"perplexity", std::exp(nll / count)},
                      {"seconds", now_seconds() - t0},
                      {"device", L.backend->name()},
                      {"kv_dtype", kv_cache_dtype_name(L.backend->kv_dtype())}};
  std::printf("%s\n", j.dump().c_str());
}

}  // namespace

void register_perplexity(CLI::App& app) {
  auto o = std::make_shared<PplOptions>();
  CLI::App* sub = app.add_subcommand("perplexity", "perplexity of the model on a text file");
  o->model.add_to(sub);
  sub->add_option("-f,--file", o->file, "text file")->required()->check(CLI::ExistingFile);
  sub->add_option("-c,--ctx", o->ctx, "chunk length in tokens")->check(integer_in(4, 1 << 20));
  sub->add_option("--chunks", o->chunks, "score at most this many chunks (0 = all)")->check(integer_in(0, 1 << 20));
  sub->callback([o] { perplexity(*o); });
}

}  // namespace greta::cli
