// Iteration-level scheduling over the paged KV pool: decides what one step computes.
//
// Policy (vLLM-style, FCFS with preemption)
// 1. Decode: every running sequence with one token left to compute gets it, oldest first.
//    If its block cannot be reserved, the youngest running sequence is preempted (blocks
//    released, sent to the front of the queue to be recomputed later); a sequence that is
//    itself the youngest preempts itself.
// 2. Prompt chunks share what the decodes left: running sequences with a prompt (or
//    recomputation) still to compute, oldest first, then queued sequences, front first, each
//    of which first attaches cached prefix blocks. A chunk is at most prefill_chunk tokens and,
//    while someone after it also wants prompt tokens, at most half the budget left, so a long
//    prompt never takes a whole step from the requests behind it (no head-of-line blocking);
//    budget the halving held back and nobody took goes back to the planned chunks, oldest
//    first. Running sequences may preempt younger ones that are not in this step. A queued
//    request that does not fit waits (FCFS). A step that had to preempt admits nobody (the
//    freed blocks go to the running sequences, not to a thrashing readmission).
//
// Guarantees
// - Progress: every call either returns a non-empty step or fails (hands back in `failed`)
//   a sequence that cannot fit in the pool even alone. So the loop never stalls.
// - The oldest running sequence is never preempted by a younger one.
// - Budget: a step holds at most max_step_tokens tokens; decode tokens never wait for prompts.
// - First token: behind one running prompt of any length, a newly queued request whose prompt
//   fits in half (rounded down) of the budget the decodes leave, and in the free KV blocks, is
//   admitted by the next schedule() and computed whole in that step: it samples its first token.
// - KV: only running sequences hold blocks; queued ones hold none.
#pragma once
#include <deque>
#include <memory>
#include <vector>

#include "engine/sequence.h"
#include "greta/engine.h"
#include "runtime/batch.h"
#include "runtime/kv_cache.h"

namespace greta {

struct ScheduledStep {
  Batch batch;
  std::vector<Sequence*> seqs;                    // parallel to batch.seqs
  std::vector<Sequence*> sampled;                 // parallel to batch.logit_rows: these get a new token
  std::vector<std::unique_ptr<Sequence>> failed;  // cannot fit even alone: end with an error
  bool empty() const { return seqs.empty(); }
};

class Scheduler {
 public:
  Scheduler(const EngineConfig& cfg);

  void enqueue(std::unique_ptr<Sequence> s);  // at the back of the queue
  ScheduledStep schedule();
  // After the forward: the step's tokens are in the cache; registers full blocks for reuse.
  void commit(const ScheduledStep& step);
  // Removes a sequence (finished, cancelled, failed), releasing its blocks. nullptr if absent.
  std::unique_ptr<Sequence> remove(uint64_t id);
  // Everything, for shutdown: blocks released, queue and running emptied.
  std::vector<std::unique_ptr<Sequence>> drain();

  const BlockPool& pool() const { return pool_; }
  int n_waiting() const { return int(waiting_.size()); }
  int n_running() const { return int(running_.size()); }
  int64_t prefix_hit_tokens() const { return prefix_hits_; }
  int64_t preemptions() const { return preemptions_; }
  int64_t admitted_prompt_tokens() const { return prompt_tokens_; }

 private:
  struct Planned {  // a prompt chunk decided on, not yet in the batch
    Sequence* s;
    int n;
  };
  // Most tokens (<= want) that s can take now without preempting anybody.
  int fit(const Sequence& s, int want) const;
  void reserve(Sequence& s, int n);  // blocks for s's next n tokens; fit() said they exist
  void plan(std::vector<Planned>& chunks, Sequence* s, int n);
  // Whether a running sequence younger than running_[i], or a queued one, could still take
  // prompt tokens in this step.
  bool wants_prompt_after(size_t i, int64_t preempted_before) const;
  void add_slice(ScheduledStep& st, Sequence* s, int n);
  void preempt(size_t running_index);
  std::unique_ptr<Sequence> take_running(size_t i);
  void insert_running(std::unique_ptr<Sequence> s);  // keeps running_ sorted by age

  EngineConfig cfg_;
  BlockPool pool_;
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;  // oldest (lowest id) first
  int64_t prefix_hits_ = 0, preemptions_ = 0, prompt_tokens_ = 0;
};

}  // namespace greta
