#include "engine/scheduler.h"

#include <algorithm>
#include <cassert>

namespace greta {

Scheduler::Scheduler(const EngineConfig& cfg) : cfg_(cfg), pool_(cfg.kv_blocks, cfg.block_size) {}

void Scheduler::enqueue(std::unique_ptr<Sequence> s) {
  // The queue stays sorted by age: newcomers are the youngest, so this is a push_back for
  // them; a preempted sequence goes back ahead of every request admitted after it (FCFS).
  auto it = waiting_.end();
  while (it != waiting_.begin() && (*(it - 1))->id > s->id) --it;
  waiting_.insert(it, std::move(s));
}

int Scheduler::fit(const Sequence& s, int want) const {
  const int bs = pool_.block_size();
  const int cap = (int(s.kv.table().size()) + pool_.n_free()) * bs - s.n_computed;
  return std::max(0, std::min(want, cap));
}

void Scheduler::add_slice(ScheduledStep& st, Sequence* s, int n) {
  reserve(*s, n);
  SeqSlice q;
  q.token_begin = st.batch.n_tokens();
  q.n_tokens = n;
  q.n_past = s->n_computed;
  q.block_table = s->kv.table();
  q.n_prompt = s->n_prompt;
  st.batch.tokens.insert(st.batch.tokens.end(), s->tokens.begin() + s->n_computed,
                         s->tokens.begin() + s->n_computed + n);
  // Only the last token of a sequence's known tokens produces a new one: the other rows of a
  // prompt chunk need no logits (a [rows, vocab] projection is the step's largest matmul).
  if (s->n_computed + n == int(s->tokens.size())) {
    st.batch.logit_rows.push_back(q.token_begin + n - 1);
    st.sampled.push_back(s);
  }
  st.batch.seqs.push_back(std::move(q));
  st.seqs.push_back(s);
  s->in_step = true;
}

void Scheduler::reserve(Sequence& s, int n) {
  const bool ok = s.kv.reserve(pool_, s.n_computed + n);
  assert(ok && "fit() promised these blocks");
  (void)ok;
}

void Scheduler::plan(std::vector<Planned>& chunks, Sequence* s, int n) {
  reserve(*s, n);
  s->in_step = true;  // its blocks are spoken for: no later sequence may preempt it
  chunks.push_back({s, n});
}

bool Scheduler::wants_prompt_after(size_t i, int64_t preempted_before) const {
  for (size_t j = i + 1; j < running_.size(); ++j)
    if (!running_[j]->in_step && running_[j]->remaining() > 0) return true;
  return !waiting_.empty() && int(running_.size()) < cfg_.max_running && preemptions_ == preempted_before;
}

std::unique_ptr<Sequence> Scheduler::take_running(size_t i) {
  std::unique_ptr<Sequence> s = std::move(running_[i]);
  running_.erase(running_.begin() + std::ptrdiff_t(i));
  return s;
}

void Scheduler::insert_running(std::unique_ptr<Sequence> s) {
  auto it = std::upper_bound(running_.begin(), running_.end(), s->id,
                             [](uint64_t id, const std::unique_ptr<Sequence>& r) { return id < r->id; });
  running_.insert(it, std::move(s));
}

void Scheduler::preempt(size_t i) {
  Sequence& s = *running_[i];
  assert(!s.in_step);
  // Its full blocks stay registered in the prefix cache, so if nobody evicts them before it
  // is readmitted, attach_prefix hands them back and little is recomputed.
  s.kv.release_all(pool_);
  s.n_computed = 0;
  ++preemptions_;
  enqueue(take_running(i));
}

ScheduledStep Scheduler::schedule() {
  ScheduledStep st;
  const int64_t preempted_before = preemptions_;
  for (auto& s : running_) s->in_step = false;
  int budget = cfg_.max_step_tokens;
  auto fail_running = [&](size_t i) {
    running_[i]->kv.release_all(pool_);
    running_[i]->n_computed = 0;
    st.failed.push_back(take_running(i));
  };

  // 1. Decode tokens, oldest first. Everything after index i is younger and not yet in the step.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence* s = running_[i].get();
    if (s->remaining() != 1) {
      ++i;
      continue;
    }
    bool keep = true;
    while (fit(*s, 1) < 1) {
      if (running_.size() == 1) {  // alone and the pool is full of its own blocks
        fail_running(i);
        keep = false;
        break;
      }
      const size_t youngest = running_.size() - 1;
      preempt(youngest);
      if (youngest == i) {
        keep = false;
        break;
      }
    }
    if (!keep) continue;  // running_[i] is now the next sequence
    add_slice(st, s, 1);
    --budget;
    ++i;
  }

  // 2. Prompt chunks: running sequences with a prompt (or recomputation) left, oldest first,
  // then newcomers from the queue, front first. While someone after it also wants prompt
  // tokens, a sequence takes at most half of the budget left (rounded up), so one long prompt
  // cannot hold every step: a short request behind it is admitted in the next step and gets
  // its whole prompt in if that fits in the other half. Whatever the halving left unused goes
  // back to the chunks already planned, oldest first, so a prompt alone still fills the step.
  std::vector<Planned> chunks;
  auto share = [&](bool others_waiting) { return others_waiting ? (budget + 1) / 2 : budget; };
  for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
    Sequence* s = running_[i].get();
    if (s->in_step) continue;
    const int want = std::min({s->remaining(), cfg_.prefill_chunk, share(wants_prompt_after(i, preempted_before))});
    int n = fit(*s, want);
    while (n == 0) {
      // Only a younger sequence that is not in this step may give way.
      size_t victim = running_.size();
      for (size_t j = running_.size(); j-- > i + 1;)
        if (!running_[j]->in_step) {
          victim = j;
          break;
        }
      if (victim == running_.size()) break;
      preempt(victim);
      n = fit(*s, want);
    }
    if (n == 0) continue;
    plan(chunks, s, n);
    budget -= n;
  }

  // 3. Admission from the queue, front first, until one does not fit. Not in a step that had to
  // preempt: the blocks just freed are needed by the running sequences' next decodes, and
  // readmitting the victim at once would only preempt it again (thrashing).
  const bool pressure = preemptions_ != preempted_before;
  while (!pressure && budget > 0 && !waiting_.empty() && int(running_.size()) < cfg_.max_running) {
    Sequence* s = waiting_.front().get();
    const int hit = s->kv.attach_prefix(pool_, s->tokens);
    s->n_computed = hit;
    const bool others = waiting_.size() > 1 && int(running_.size()) + 1 < cfg_.max_running;
    const int n = fit(*s, std::min({s->remaining(), cfg_.prefill_chunk, share(others)}));
    if (n == 0) {
      s->kv.release_all(pool_);
      s->n_computed = 0;
      if (!running_.empty()) break;  // wait for running sequences to free blocks
      // Nothing else holds blocks, so it can never fit.
      st.failed.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
      continue;
    }
    prefix_hits_ += hit;
    if (!s->admitted_once) {
      s->admitted_once = true;
      s->cached_tokens = hit;
      prompt_tokens_ += s->n_prompt;
    }
    std::unique_ptr<Sequence> own = std::move(waiting_.front());
    waiting_.pop_front();
    plan(chunks, own.get(), n);
    budget -= n;
    insert_running(std::move(own));
  }

  // The budget the halving held back for others who then took less (or could not come in).
  for (Planned& c : chunks) {
    if (budget == 0) break;
    const int more = std::min({c.s->remaining() - c.n, cfg_.prefill_chunk - c.n, budget});
    const int extra = fit(*c.s, c.n + more) - c.n;
    if (extra <= 0) continue;
    c.n += extra;
    budget -= extra;
    reserve(*c.s, c.n);
  }
  for (const Planned& c : chunks) add_slice(st, c.s, c.n);

  // 4. Progress. An empty step with work left means the oldest sequence could not take one
  // token even after every younger one gave way: it is alone with the whole pool and needs
  // more, so it can never finish. Fail it rather than spin.
  if (st.empty() && st.failed.empty()) {
    if (!running_.empty()) {
      fail_running(0);
    } else if (!waiting_.empty()) {
      st.failed.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    }
  }
  return st;
}

void Scheduler::commit(const ScheduledStep& step) {
  for (size_t i = 0; i < step.seqs.size(); ++i) {
    Sequence* s = step.seqs[i];
    s->n_computed += step.batch.seqs[i].n_tokens;
    s->kv.commit(pool_, s->tokens, s->n_computed);
  }
}

std::unique_ptr<Sequence> Scheduler::remove(uint64_t id) {
  for (size_t i = 0; i < running_.size(); ++i)
    if (running_[i]->id == id) {
      running_[i]->kv.release_all(pool_);
      return take_running(i);
    }
  for (auto it = waiting_.begin(); it != waiting_.end(); ++it)
    if ((*it)->id == id) {
      std::unique_ptr<Sequence> s = std::move(*it);
      waiting_.erase(it);
      return s;
    }
  return nullptr;
}

std::vector<std::unique_ptr<Sequence>> Scheduler::drain() {
  std::vector<std::unique_ptr<Sequence>> all;
  for (auto& s : running_) {
    s->kv.release_all(pool_);
    all.push_back(std::move(s));
  }
  running_.clear();
  for (auto& s : waiting_) all.push_back(std::move(s));
  waiting_.clear();
  return all;
}

}  // namespace greta
