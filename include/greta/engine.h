// The serving engine: many generation requests share one model through continuous batching
// over the paged KV cache. One engine thread runs the steps; any thread may submit or cancel.
//
// Guarantees
// - Iteration-level batching: a request joins or leaves between two steps. Each step takes one
//   decode token from every running sequence first, then fills the rest of the token budget with
//   prompt chunks (chunked prefill), oldest request first.
// - Prefix caching: full KV blocks are shared between requests with the same token prefix
//   (a repeated system prompt is computed once while its blocks stay cached).
// - Out of KV blocks: the youngest running sequence is preempted (its blocks freed) and later
//   recomputed from its prompt + generated tokens; its output does not change. A request that
//   cannot fit even alone ends with an error event. The engine never aborts and never stalls.
// - Every accepted request gets exactly one event with finished = true, from the engine thread,
//   and no event after it (also on cancel and on engine destruction).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "greta/error.h"
#include "greta/sampling.h"

namespace greta {

class LlamaModel;
class Tokenizer;
namespace grammar {
class Grammar;
}

struct EngineConfig {
  int kv_blocks = 1024;       // KV pool size in blocks (the one KV budget for all requests)
  int block_size = 16;        // tokens per KV block
  int max_step_tokens = 512;  // token budget of one step (decode tokens + prompt chunks)
  int max_running = 64;       // most sequences in flight at once (<= max_step_tokens)
  int max_queue = 256;        // most requests waiting for admission; more are rejected
  int prefill_chunk = 512;    // most prompt tokens of one sequence in one step
  int max_context = 0;        // prompt + max_tokens limit; 0: min(model context, KV pool)

  void validate() const;  // throws greta::Error naming the field and its valid range
};

struct GenerationRequest {
  std::vector<int32_t> prompt;    // token ids, already templated and tokenized
  SamplingParams sampling;        // its own Sampler (and seed) per request
  int max_tokens = 16;            // >= 1
  bool ignore_eos = false;        // keep going past the tokenizer's stop ids
  std::vector<std::string> stop;  // stop strings (non-empty); the match is not emitted
  bool logprobs = false;          // fill TokenEvent::logprob
  int top_logprobs = 0;           // also the N most likely tokens (needs logprobs)
  // OpenAI's logit_bias: (token id, bias) pairs, ids distinct and in the model's vocabulary.
  std::vector<std::pair<int32_t, float>> logit_bias;
  // Constrained decoding: every token keeps the output a prefix of the grammar's language,
  // and once the grammar is complete the request ends (Stop). Null: unconstrained.
  std::shared_ptr<const grammar::Grammar> grammar;
};

// Why a request ended. The wire names ("stop", "length", ...) belong to the API that reports them.
enum class FinishReason {
  None,       // not finished yet
  Stop,       // an end-of-sequence token or a stop string
  Length,     // max_tokens or the context reached
  Cancelled,  // cancel(), a consumer callback that threw, or engine shutdown
  Error,      // the request could not go on (TokenEvent::error says why)
};

// One sampled token, or the end of a request. Text is only ever complete UTF-8 characters:
// it may be empty when a token ends mid-character or could start a stop string (held back
// until resolved, then emitted with a later event).
struct TokenEvent {
  uint64_t request_id = 0;
  int32_t token = -1;             // -1 on a finish event that carries no token (cancel, error)
  std::string text;               // decoded text released by this event
  float logprob = 0;              // of `token` (when requested)
  std::vector<TokenLogprob> top;  // top_logprobs most likely tokens (when requested)
  bool finished = false;
  FinishReason finish_reason = FinishReason::None;  // set when finished
  std::string error;                                // message when finish_reason == Error
  int prompt_tokens = 0;                            // usage, valid on every event
  int completion_tokens = 0;                        // tokens generated so far, this one included
  int cached_tokens = 0;                            // prompt tokens served from the prefix cache at admission
};

using EventCallback = std::function<void(const TokenEvent&)>;

// Why submit() refused a request; a server maps kind() to an HTTP status.
class RequestError : public Error {
 public:
  enum class Kind {
    Invalid,       // bad request: empty prompt, bad token id, too long, bad parameters (400)
    QueueFull,     // too many requests waiting, try again later (429)
    ShuttingDown,  // the engine is being destroyed (503)
  };
  RequestError(Kind k, const std::string& msg) : Error(msg), kind_(k) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

struct EngineStats {
  int waiting = 0;  // queued, including preempted sequences
  int running = 0;  // admitted sequences holding KV blocks
  int kv_blocks_total = 0;
  int kv_blocks_used = 0;         // held by running sequences
  int kv_blocks_cached = 0;       // free but still holding a reusable prefix
  int64_t prefix_hit_tokens = 0;  // prompt tokens taken from the prefix cache
  int64_t prompt_tokens = 0;      // prompt tokens of admitted requests (counted once each)
  int64_t computed_tokens = 0;    // tokens run through the model (recomputation included)
  int64_t generated_tokens = 0;
  int64_t steps = 0;
  int64_t preemptions = 0;
  int64_t finished_requests = 0;  // every reason, cancelled and error included
  // Wall-clock seconds of the engine thread per phase of its loop, cumulative. Every instant of
  // the loop is charged to exactly one phase, so they add up to the engine's lifetime and show
  // where a step's time goes: host work between GPU steps, the forward itself, or waiting.
  double idle_s = 0;      // waiting for work (a running wait is included up to the snapshot)
  double schedule_s = 0;  // queue hand-over, cancellations, scheduling, up to the forward call
  double forward_s = 0;   // the model's forward (device work and its sync included)
  double sample_s = 0;    // commit, sampling, token bookkeeping (on_token)
  double emit_s = 0;      // publishing stats and handing the step's events to the emitter thread
  // Constrained decoding: token masks computed (one per constrained draw), the seconds they took
  // on the mask worker, and the seconds the engine thread waited for them after its forward
  // (what the forward did not hide).
  int64_t grammar_masks = 0;
  double grammar_mask_s = 0;
  double grammar_mask_wait_s = 0;
};

class Engine {
 public:
  // The model and tokenizer must outlive the engine, and nobody else may run the model while
  // the engine exists (it owns the model's scratch on its thread). Throws greta::Error on a
  // bad config.
  Engine(LlamaModel& model, const Tokenizer& tokenizer, EngineConfig cfg = {});
  // Stops the thread; requests still queued or running finish as Cancelled.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Thread-safe. Queues the request and returns its id (> 0). on_event runs on the engine's
  // event thread (one thread for all requests, events in order) for every generated token and
  // once with finished = true; it must not block for long (it delays every request's events)
  // and may call submit/cancel/stats. If it throws, the request is cancelled. Throws
  // RequestError when the request is refused.
  uint64_t submit(GenerationRequest req, EventCallback on_event);

  // Thread-safe. Ends the request as Cancelled at the next step boundary at the latest and
  // frees its KV blocks. Returns false if the id is unknown or already finished.
  bool cancel(uint64_t id);

  EngineStats stats() const;  // thread-safe snapshot, taken after the last step
  const EngineConfig& config() const;
  int max_context() const;  // the limit for prompt + max_tokens

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace greta
