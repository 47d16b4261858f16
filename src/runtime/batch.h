// One step of work for the model: the tokens of many sequences flattened into one list.
// Batch size 1 decode, a long prompt and many users mid-stream are all just Batches.
#pragma once
#include <cstdint>
#include <vector>

namespace greta {

// One sequence's part of a step. Its tokens are Batch::tokens[token_begin, token_begin+n_tokens)
// at positions n_past .. n_past+n_tokens-1; attention sees positions 0 .. its own.
struct SeqSlice {
  int32_t token_begin = 0;
  int32_t n_tokens = 0;
  int32_t n_past = 0;                // tokens of this sequence already in the KV cache
  std::vector<int32_t> block_table;  // physical KV blocks covering positions [0, n_past+n_tokens)
  int32_t n_prompt = -1;             // the sequence's prompt length where known (the engine), else -1
};

struct Batch {
  std::vector<int32_t> tokens;      // [n_tokens]
  std::vector<SeqSlice> seqs;       // contiguous, in token order
  std::vector<int32_t> logit_rows;  // token indices whose logits are returned, in output order

  int32_t n_tokens() const { return int32_t(tokens.size()); }
};

// Per-token view derived from a Batch (host side; backends upload it once per step).
struct StepPlan {
  int32_t block_size = 16;
  std::vector<int32_t> positions;  // [n_tokens]
  std::vector<int32_t> token_seq;  // [n_tokens] index into Batch::seqs
  std::vector<int32_t> slot;       // [n_tokens] physical KV slot = block*block_size + pos%block_size
  // Block tables flattened CSR-style: seq s owns block_ids[block_begin[s] .. block_begin[s+1]).
  std::vector<int32_t> block_begin;  // [n_seqs+1]
  std::vector<int32_t> block_ids;
  std::vector<int32_t> seq_len;  // [n_seqs] n_past + n_tokens (context after this step)
  // [n_tokens] 1 where the token is part of a prompt of >= 2 tokens: its position is below its
  // sequence's n_prompt (>= 2) when that is known, else its slice has >= 2 tokens. The CPU
  // backend follows llama.cpp, whose attention rounds differently for a prompt than for a
  // one-token decode step; keying that on the token (not on how a step was cut) keeps a
  // sequence's results the same under chunked prefill, batching and preemption's recompute.
  std::vector<uint8_t> in_prompt;

  static StepPlan build(const Batch& b, int32_t block_size);  // asserts tables cover all positions
};

}  // namespace greta
