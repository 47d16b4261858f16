// The engine thread: takes submitted requests, runs scheduled steps through the model, samples,
// and turns tokens into events. Locking: `mu` guards only the hand-over state (incoming
// requests, cancellations, failed callbacks, the live-id set, the published stats); the model,
// the scheduler and every Sequence belong to the engine thread alone. Callbacks run on the
// EventEmitter's thread, in order, with no lock held (so they may call submit/cancel/stats).
#include "greta/engine.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "engine/background_job.h"
#include "engine/event_emitter.h"
#include "engine/scheduler.h"
#include "model/llama.h"

namespace greta {

void EngineConfig::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw Error("engine config: " + what);
  };
  need(kv_blocks >= 1, "kv_blocks must be >= 1, got " + std::to_string(kv_blocks));
  need(block_size >= 1, "block_size must be >= 1, got " + std::to_string(block_size));
  // KV slots (block * block_size + offset) are 32-bit in the engine and the backends.
  need(int64_t(kv_blocks) * block_size <= INT32_MAX,
       "kv_blocks x block_size = " + std::to_string(int64_t(kv_blocks) * block_size) + " token slots, more than " +
           std::to_string(INT32_MAX));
  need(max_step_tokens >= 1, "max_step_tokens must be >= 1, got " + std::to_string(max_step_tokens));
  // Every running sequence must be able to decode in every step.
  need(max_running >= 1 && max_running <= max_step_tokens,
       "max_running must be in [1, max_step_tokens=" + std::to_string(max_step_tokens) + "], got " +
           std::to_string(max_running));
  need(max_queue >= 0, "max_queue must be >= 0, got " + std::to_string(max_queue));
  need(prefill_chunk >= 1, "prefill_chunk must be >= 1, got " + std::to_string(prefill_chunk));
  need(max_context >= 0, "max_context must be >= 0 (0: automatic), got " + std::to_string(max_context));
}

namespace {

// Charges wall-clock time to the phases of the engine loop: each lap adds the time since the
// previous lap to one phase, so nothing falls between phases and a lap costs one clock read.
class PhaseClock {
 public:
  using Clock = std::chrono::steady_clock;
  void lap(double& phase_s) {
    const Clock::time_point now = Clock::now();
    phase_s += seconds(now - last_);
    last_ = now;
  }
  Clock::time_point last() const { return last_; }
  static double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

 private:
  Clock::time_point last_ = Clock::now();
};

// Cumulative seconds per phase (EngineStats has the meaning of each).
struct PhaseTimes {
  double idle = 0, schedule = 0, forward = 0, sample = 0, emit = 0;
};

}  // namespace

struct Engine::Impl {
  using Emit = EventEmitter::Item;

  Impl(LlamaModel& m, const Tokenizer& t, const EngineConfig& c)
      : model(m), tok(t), cfg(c), vocab(m.config().vocab_size), sched(c) {
    const int pool_tokens = cfg.kv_blocks * cfg.block_size;
    const int model_ctx = m.config().max_context > 0 ? m.config().max_context : pool_tokens;
    n_ctx = cfg.max_context > 0 ? cfg.max_context : std::min(model_ctx, pool_tokens);
    kv = model.make_kv(cfg.kv_blocks, cfg.block_size);
    publish_stats();
  }

  LlamaModel& model;
  const Tokenizer& tok;
  EngineConfig cfg;
  int vocab;
  int n_ctx = 0;
  std::unique_ptr<KVStorage> kv;

  // Engine thread only.
  Scheduler sched;
  std::vector<float> logits;                   // [sampled rows, vocab]
  std::vector<DeviceSampleParams> dev_params;  // device sampling: settings, tokens, probs [sampled rows]
  std::vector<int32_t> dev_tokens;
  std::vector<float> dev_probs;
  std::shared_ptr<const grammar::TokenVocabulary> grammar_vocab;  // made at the first constrained request
  BackgroundJob masks_job;  // the step's token masks, computed while its forward runs
  int64_t n_masks = 0;      // written by the mask worker, read once it has finished
  double mask_s = 0, mask_wait_s = 0;
  // Finished this iteration: the step's ScheduledStep still points at them, so they are freed
  // at the end of the step (their events hold the callbacks, not the sequences).
  std::vector<std::unique_ptr<Sequence>> done;
  int64_t computed = 0, generated = 0, steps = 0, finished = 0;
  PhaseClock clock;
  PhaseTimes times;

  // Shared, under mu.
  mutable std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  uint64_t next_id = 1;
  std::vector<std::unique_ptr<Sequence>> incoming;
  std::vector<uint64_t> cancels;
  std::unordered_set<uint64_t> live;
  std::vector<uint64_t> ended;            // finished this iteration: leave `live` before the events go out
  std::vector<uint64_t> callback_failed;  // requests whose consumer threw (from the emitter)
  EngineStats stats;
  bool waiting_for_work = false;             // idle since idle_since
  PhaseClock::Clock::time_point idle_since;  // so stats() can count a wait still in progress

  std::thread thread;
  // Declared after mu, cv and callback_failed, which its failure hook uses; destroyed first.
  EventEmitter emitter{[this](uint64_t id) {
    {
      std::lock_guard<std::mutex> lk(mu);
      callback_failed.push_back(id);
    }
    cv.notify_all();
  }};

  void publish_stats() {                // under mu
    stats.waiting = sched.n_waiting();  // stats() adds `incoming`
    stats.running = sched.n_running();
    stats.kv_blocks_total = sched.pool().n_blocks();
    stats.kv_blocks_used = sched.pool().n_used();
    stats.kv_blocks_cached = sched.pool().n_cached();
    stats.prefix_hit_tokens = sched.prefix_hit_tokens();
    stats.prompt_tokens = sched.admitted_prompt_tokens();
    stats.computed_tokens = computed;
    stats.generated_tokens = generated;
    stats.steps = steps;
    stats.preemptions = sched.preemptions();
    stats.finished_requests = finished;
    stats.grammar_masks = n_masks;
    stats.grammar_mask_s = mask_s;
    stats.grammar_mask_wait_s = mask_wait_s;
    publish_times();
  }

  void publish_times() {  // under mu
    stats.idle_s = times.idle;
    stats.schedule_s = times.schedule;
    stats.forward_s = times.forward;
    stats.sample_s = times.sample;
    stats.emit_s = times.emit;
  }

  TokenEvent event_for(const Sequence& s) const {
    TokenEvent ev;
    ev.request_id = s.id;
    ev.prompt_tokens = s.n_prompt;
    ev.completion_tokens = s.n_generated();
    ev.cached_tokens = s.cached_tokens;
    return ev;
  }

  // Ends a sequence already taken out of the scheduler.
  void end(std::unique_ptr<Sequence> s, TokenEvent ev, FinishReason reason, const std::string& error,
           std::vector<Emit>& out) {
    ev.finished = true;
    ev.finish_reason = reason;
    ev.error = error;
    ended.push_back(s->id);
    ++finished;
    out.push_back({s->on_event, std::move(ev)});
    done.push_back(std::move(s));
  }

  void end_without_token(std::unique_ptr<Sequence> s, FinishReason reason, const std::string& error,
                         std::vector<Emit>& out) {
    TokenEvent ev = event_for(*s);
    end(std::move(s), std::move(ev), reason, error, out);
  }

  // Text left in the decoder and the stop matcher when the stream ends without a stop match.
  // Returns true if the flushed bytes themselves completed a stop string.
  static bool flush_text(Sequence& s, std::string& text) {
    StopMatcher::Result r = s.stop.feed(s.decoder.flush());
    text += r.text;
    if (!r.matched) text += s.stop.flush();
    return r.matched;
  }

  // Appends the sampled token and decides whether the sequence ends here.
  void on_token(Sequence& s, const SampleResult& res, std::vector<Emit>& out) {
    s.tokens.push_back(res.token);
    ++generated;
    TokenEvent ev = event_for(s);
    ev.token = res.token;
    ev.logprob = res.logprob;
    ev.top = res.top;
    FinishReason reason = FinishReason::None;
    // A grammar allows a stop token only where the output is complete: it ends the request even
    // with ignore_eos, which would otherwise leave a finished grammar nothing to allow.
    const bool eos = (!s.req.ignore_eos || s.grammar) &&
                     std::find(tok.stop_ids.begin(), tok.stop_ids.end(), res.token) != tok.stop_ids.end();
    bool grammar_done = false;
    if (s.grammar && !eos) {
      if (!s.grammar->accept(res.token)) {
        end(sched.remove(s.id), std::move(ev), FinishReason::Error,
            "token " + std::to_string(res.token) + " does not continue the request's grammar", out);
        return;
      }
      grammar_done = s.grammar->finished();
    }
    if (eos) {
      flush_text(s, ev.text);  // the stop token itself has no text
      reason = FinishReason::Stop;
    } else {
      // Models may have more embedding rows than their tokenizer has tokens (padding, or a
      // tokenizer that was cut down): such a token is real output with no text, as in `greta run`.
      StopMatcher::Result r = s.stop.feed(res.token < tok.vocab_size() ? s.decoder.feed(res.token) : std::string());
      ev.text = std::move(r.text);
      if (r.matched) {
        reason = FinishReason::Stop;
      } else if (grammar_done) {
        flush_text(s, ev.text);
        reason = FinishReason::Stop;
      } else if (s.n_generated() >= s.req.max_tokens || int(s.tokens.size()) >= n_ctx) {
        reason = flush_text(s, ev.text) ? FinishReason::Stop : FinishReason::Length;
      }
    }
    if (reason == FinishReason::None) {
      out.push_back({s.on_event, std::move(ev)});
      return;
    }
    end(sched.remove(s.id), std::move(ev), reason, "", out);
  }

  // One step: schedule, forward, sample. Charges its time to the schedule, forward and sample
  // phases (the queue hand-over before it counts as scheduling too).
  void run_step(std::vector<Emit>& out) {
    ScheduledStep st = sched.schedule();
    end_failed(st, out);
    if (st.empty()) {
      clock.lap(times.schedule);
      return;
    }
    const bool on_device = samples_on_device(st);
    start_masks(st);
    clock.lap(times.schedule);
    const bool ran = forward(st, on_device, out);
    clock.lap(times.forward);
    if (!ran) return;
    sample(st, on_device, out);
    clock.lap(times.sample);
  }

  void end_failed(ScheduledStep& st, std::vector<Emit>& out) {
    for (auto& f : st.failed) {
      const std::string msg = "request needs more KV cache than the whole pool holds (" +
                              std::to_string(f->tokens.size()) + "+ tokens, pool " +
                              std::to_string(cfg.kv_blocks * cfg.block_size) + " tokens)";
      end_without_token(std::move(f), FinishReason::Error, msg, out);
    }
  }

  // The allowed-token mask of every constrained sequence that draws in this step, computed on
  // the worker while the forward runs: the device path attaches the masks to the step's
  // sampling settings once the logits are ready (DeviceDraw::before_draw), the host path
  // applies them in the Sampler after the forward. Until finish_masks() the worker owns the
  // grammar state of the step's sequences (and grammar_vocab); the engine thread touches
  // neither. A mask that cannot be computed ends its sequence after the step.
  void start_masks(const ScheduledStep& st) {
    const bool any = std::any_of(st.sampled.begin(), st.sampled.end(),
                                 [](const Sequence* s) { return s->req.grammar && s->grammar_error.empty(); });
    if (any) masks_job.start([this, &st] { prepare_masks(st); });
  }

  // Never throws (prepare_masks keeps every failure on its sequence), so this is safe in the
  // forward's error path too.
  void finish_masks() noexcept {
    const PhaseClock::Clock::time_point t0 = PhaseClock::Clock::now();
    masks_job.wait();
    mask_wait_s += PhaseClock::seconds(PhaseClock::Clock::now() - t0);
  }

  void prepare_masks(const ScheduledStep& st) noexcept {
    for (Sequence* s : st.sampled) {
      if (!s->req.grammar || !s->grammar_error.empty()) continue;
      try {
        if (!s->grammar) {
          if (!grammar_vocab) grammar_vocab = grammar_vocabulary(tok, vocab);
          s->grammar = std::make_unique<GrammarState>(s->req.grammar, grammar_vocab);
        }
        const PhaseClock::Clock::time_point t0 = PhaseClock::Clock::now();
        s->grammar->compute_mask();
        mask_s += PhaseClock::seconds(PhaseClock::Clock::now() - t0);
        ++n_masks;
        if (s->grammar->mask_empty())
          s->grammar_error = s->grammar->can_end() ? "" : "no token of the vocabulary continues the request's grammar";
      } catch (const std::exception& e) {
        s->grammar_error = e.what();
      } catch (...) {
        s->grammar_error = "the request's token mask could not be computed";
      }
    }
  }

  // Constraints of row s for the host Sampler: its grammar's mask, or none.
  static const uint32_t* allowed_of(const Sequence& s) {
    return s.grammar && s.grammar_error.empty() && !s.grammar->mask_empty() ? s.grammar->mask().data() : nullptr;
  }

  // Sampling on the device when every sampled row can (no penalties, no logprobs): the step
  // then returns one token per row instead of rows * vocab logits.
  bool samples_on_device(const ScheduledStep& st) const {
    bool on_device = !st.sampled.empty() && model.backend().supports_device_sampling();
    for (const Sequence* s : st.sampled) on_device = on_device && !s->req.logprobs && s->sampler.device_eligible();
    return on_device;
  }

  // Runs the step through the model. Returns false when the backend failed: that ends the
  // requests of this step, not the engine.
  bool forward(const ScheduledStep& st, bool on_device, std::vector<Emit>& out) {
    try {
      if (on_device) {
        dev_params.clear();
        for (Sequence* s : st.sampled) {
          DeviceSampleParams p = device_sample_params(s->sampler);
          p.bias_ids = s->bias_ids.data();
          p.bias_values = s->bias_values.data();
          p.n_bias = int(s->bias_ids.size());
          dev_params.push_back(p);
        }
        dev_tokens.resize(st.sampled.size());
        dev_probs.resize(st.sampled.size());
        auto attach_masks = [&] {
          finish_masks();
          for (size_t r = 0; r < st.sampled.size(); ++r) dev_params[r].allowed = allowed_of(*st.sampled[r]);
        };
        model.forward(st.batch, *kv,
                      LlamaModel::DeviceDraw{dev_params, dev_tokens.data(), dev_probs.data(), attach_masks});
      } else {
        logits.resize(st.batch.logit_rows.size() * size_t(vocab));
        model.forward(st.batch, *kv, LlamaModel::HostLogits{logits.data()});
      }
    } catch (const std::exception& e) {
      finish_masks();  // the worker may still be reading these sequences
      for (Sequence* s : st.seqs) end_without_token(sched.remove(s->id), FinishReason::Error, e.what(), out);
      return false;
    }
    finish_masks();
    return true;
  }

  void sample(const ScheduledStep& st, bool on_device, std::vector<Emit>& out) {
    sched.commit(st);
    computed += st.batch.n_tokens();
    ++steps;
    for (size_t r = 0; r < st.sampled.size(); ++r) {
      Sequence* s = st.sampled[r];
      try {
        if (s->req.grammar && (!s->grammar_error.empty() || s->grammar->mask_empty())) {
          end_constrained(*s, out);
          continue;
        }
        SampleResult res;
        if (on_device) {
          res.token = dev_tokens[r];
          res.prob = dev_probs[r];
        } else {
          const int n_lp = s->req.logprobs ? s->req.top_logprobs : -1;
          res = s->sampler.sample_full(logits.data() + r * size_t(vocab), vocab, s->tokens, n_lp, allowed_of(*s));
        }
        on_token(*s, res, out);
      } catch (const std::exception& e) {
        if (auto own = sched.remove(s->id)) end_without_token(std::move(own), FinishReason::Error, e.what(), out);
      }
    }
  }

  // A constrained sequence with nothing to draw: its grammar is complete and the vocabulary has
  // no stop token (Stop), or its mask failed or allows nothing (Error).
  void end_constrained(Sequence& s, std::vector<Emit>& out) {
    std::unique_ptr<Sequence> own = sched.remove(s.id);
    if (!s.grammar_error.empty()) {
      end_without_token(std::move(own), FinishReason::Error, s.grammar_error, out);
      return;
    }
    TokenEvent ev = event_for(s);
    flush_text(s, ev.text);
    end(std::move(own), std::move(ev), FinishReason::Stop, "", out);
  }

  // Hands the step's events to the emitter thread and returns while they are delivered; the
  // step is over, so its finished sequences go.
  void emit(std::vector<Emit>& out) {
    emitter.post(out);
    done.clear();
  }

  // Waits (under mu, held by lk) until there is something to do; the wait is the idle phase.
  void wait_for_work(std::unique_lock<std::mutex>& lk) {
    publish_times();  // the last step's emit phase, now complete
    waiting_for_work = true;
    idle_since = clock.last();
    cv.wait(lk, [&] {
      return stopping || !incoming.empty() || !cancels.empty() || !callback_failed.empty() ||
             sched.n_waiting() + sched.n_running() > 0;
    });
    waiting_for_work = false;
    clock.lap(times.idle);
    stats.idle_s = times.idle;
  }

  void loop() {
    std::vector<Emit> out;
    for (;;) {
      std::vector<uint64_t> to_cancel;
      {
        std::unique_lock<std::mutex> lk(mu);
        wait_for_work(lk);
        if (stopping) break;
        for (auto& s : incoming) sched.enqueue(std::move(s));
        incoming.clear();
        stats.waiting = sched.n_waiting();  // keeps the queue limit exact until the next publish
        to_cancel.swap(cancels);
        to_cancel.insert(to_cancel.end(), callback_failed.begin(), callback_failed.end());
        callback_failed.clear();
      }
      for (uint64_t id : to_cancel)
        if (auto s = sched.remove(id)) end_without_token(std::move(s), FinishReason::Cancelled, "", out);
      run_step(out);
      {
        std::lock_guard<std::mutex> lk(mu);
        for (uint64_t id : ended) live.erase(id);
        ended.clear();
        publish_stats();
      }
      emit(out);
      clock.lap(times.emit);  // published at the next wait, which takes the lock anyway
    }
    // Shutdown: everything still known ends as cancelled.
    std::vector<std::unique_ptr<Sequence>> rest = sched.drain();
    {
      std::lock_guard<std::mutex> lk(mu);
      for (auto& s : incoming) rest.push_back(std::move(s));
      incoming.clear();
      for (auto& s : rest) live.erase(s->id);
    }
    for (auto& s : rest) end_without_token(std::move(s), FinishReason::Cancelled, "", out);
    {
      std::lock_guard<std::mutex> lk(mu);
      ended.clear();
      publish_stats();
    }
    emit(out);
    emitter.flush();  // every event is out before the engine thread ends
  }
};

namespace {

void check_logit_bias(const std::vector<std::pair<int32_t, float>>& bias, int vocab) {
  std::vector<int32_t> ids;
  for (const auto& [id, b] : bias) {
    if (id < 0 || id >= vocab)
      throw RequestError(RequestError::Kind::Invalid, "logit_bias: token id " + std::to_string(id) +
                                                          " is outside the vocabulary [0, " + std::to_string(vocab) +
                                                          ")");
    if (!std::isfinite(b))
      throw RequestError(RequestError::Kind::Invalid,
                         "logit_bias: the bias of token " + std::to_string(id) + " is not a finite number");
    ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  if (std::adjacent_find(ids.begin(), ids.end()) != ids.end())
    throw RequestError(RequestError::Kind::Invalid, "logit_bias: a token id appears twice");
}

}  // namespace

Engine::Engine(LlamaModel& model, const Tokenizer& tokenizer, EngineConfig cfg) {
  cfg.validate();
  impl_ = std::make_unique<Impl>(model, tokenizer, cfg);
  impl_->thread = std::thread([this] { impl_->loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

uint64_t Engine::submit(GenerationRequest req, EventCallback on_event) {
  using K = RequestError::Kind;
  Impl& I = *impl_;
  auto invalid = [](const std::string& m) { return RequestError(K::Invalid, m); };
  if (!on_event) throw invalid("submit: on_event callback is empty");
  if (req.prompt.empty()) throw invalid("prompt is empty (no tokens)");
  for (size_t i = 0; i < req.prompt.size(); ++i)
    if (req.prompt[i] < 0 || req.prompt[i] >= I.vocab)
      throw invalid("prompt token " + std::to_string(i) + " is " + std::to_string(req.prompt[i]) +
                    ", expected an id in [0, " + std::to_string(I.vocab) + ")");
  if (req.max_tokens < 1) throw invalid("max_tokens must be >= 1, got " + std::to_string(req.max_tokens));
  if (int64_t(req.prompt.size()) + req.max_tokens > I.n_ctx)
    throw invalid("prompt (" + std::to_string(req.prompt.size()) + " tokens) + max_tokens (" +
                  std::to_string(req.max_tokens) + ") exceeds the context of " + std::to_string(I.n_ctx) + " tokens");
  for (const std::string& s : req.stop)
    if (s.empty()) throw invalid("stop strings must be non-empty");
  if (req.top_logprobs < 0) throw invalid("top_logprobs must be >= 0, got " + std::to_string(req.top_logprobs));
  if (req.top_logprobs > 0 && !req.logprobs) throw invalid("top_logprobs needs logprobs = true");
  check_logit_bias(req.logit_bias, I.vocab);
  try {
    req.sampling.validate();
  } catch (const Error& e) {
    throw invalid(e.what());
  }

  std::unique_lock<std::mutex> lk(I.mu);
  if (I.stopping) throw RequestError(K::ShuttingDown, "the engine is shutting down");
  if (I.stats.waiting + int(I.incoming.size()) >= I.cfg.max_queue)  // preempted ones count too
    throw RequestError(K::QueueFull,
                       "too many requests waiting (" + std::to_string(I.cfg.max_queue) + "); try again later");
  const uint64_t id = I.next_id++;
  // Built under the lock so ids enter the queue in order; the Sampler is cheap to construct.
  I.incoming.push_back(std::make_unique<Sequence>(id, std::move(req), std::move(on_event), I.tok));
  I.live.insert(id);
  lk.unlock();
  I.cv.notify_all();
  return id;
}

bool Engine::cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    if (!impl_->live.count(id)) return false;
    impl_->cancels.push_back(id);
  }
  impl_->cv.notify_all();
  return true;
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  EngineStats s = impl_->stats;
  s.waiting += int(impl_->incoming.size());
  if (impl_->waiting_for_work)  // a long idle spell shows as it happens, not only once it ends
    s.idle_s += PhaseClock::seconds(PhaseClock::Clock::now() - impl_->idle_since);
  return s;
}

const EngineConfig& Engine::config() const { return impl_->cfg; }
int Engine::max_context() const { return impl_->n_ctx; }

}  // namespace greta
