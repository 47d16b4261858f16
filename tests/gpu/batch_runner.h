// Several sequences of one model over one block pool, stepped together as a ragged batch: what
// the GPU model tests drive two backends (or two settings of one) with, step for step.
#pragma once
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <vector>

#include "model/llama.h"
#include "runtime/kv_cache.h"

namespace greta::gputest {

struct BatchRunner {
  LlamaModel model;
  BlockPool pool;
  std::unique_ptr<KVStorage> kv;
  std::map<int, SequenceKV> seqs;
  std::map<int, int> n_past;
  BatchRunner(const ModelFile& f, Backend& b, int n_blocks = 64, int block_size = 16)
      : model(f, b), pool(n_blocks, block_size), kv(model.make_kv(n_blocks, block_size)) {}
  ~BatchRunner() {
    for (auto& [id, s] : seqs) s.release_all(pool);
  }
  // new_tokens: sequence id -> tokens appended this step; returns the last token's logits of each.
  std::vector<float> step(const std::map<int, std::vector<int32_t>>& new_tokens) {
    Batch b;
    for (const auto& [id, toks] : new_tokens) {
      SequenceKV& s = seqs[id];
      const int past = n_past[id];
      EXPECT_TRUE(s.reserve(pool, past + int(toks.size())));
      SeqSlice sl;
      sl.token_begin = b.n_tokens();
      sl.n_tokens = int(toks.size());
      sl.n_past = past;
      sl.block_table = s.table();
      b.tokens.insert(b.tokens.end(), toks.begin(), toks.end());
      b.logit_rows.push_back(b.n_tokens() - 1);
      b.seqs.push_back(std::move(sl));
      n_past[id] = past + int(toks.size());
    }
    std::vector<float> logits(b.logit_rows.size() * size_t(model.config().vocab_size));
    model.forward(b, *kv, LlamaModel::HostLogits{logits.data()});
    return logits;
  }
  void finish(int id) {
    seqs[id].release_all(pool);
    seqs.erase(id);
    n_past.erase(id);
  }
};

}  // namespace greta::gputest
