// One request inside the engine: its tokens, its place in the KV cache, and the per-request
// state that turns sampled tokens into events (sampler, stream decoder, stop strings).
// Owned and touched only by the engine thread.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/grammar_state.h"
#include "engine/stop_matcher.h"
#include "greta/engine.h"
#include "runtime/kv_cache.h"
#include "runtime/sampler.h"
#include "tokenizer/tokenizer.h"

namespace greta {

struct Sequence {
  Sequence(uint64_t id_, GenerationRequest r, EventCallback cb, const Tokenizer& tok)
      : id(id_),
        req(std::move(r)),
        on_event(std::make_shared<const EventCallback>(std::move(cb))),
        tokens(req.prompt),
        n_prompt(int(req.prompt.size())),
        sampler(req.sampling),
        decoder(tok),
        stop(req.stop) {
    sampler.set_logit_bias(req.logit_bias);
    for (const auto& [id, b] : req.logit_bias) {
      bias_ids.push_back(id);
      bias_values.push_back(b);
    }
  }

  // --- scheduling (scheduler.cpp) ---
  uint64_t id;  // also the age: lower id = older = scheduled first
  GenerationRequest req;
  std::shared_ptr<const EventCallback> on_event;  // shared with events still being delivered
  std::vector<int32_t> tokens;                    // prompt + generated so far
  int n_prompt;
  int n_computed = 0;  // tokens[0, n_computed) are in the KV cache
  SequenceKV kv;
  bool admitted_once = false;  // prompt counted in stats; cached_tokens fixed
  bool in_step = false;        // has a slice in the step being built

  int remaining() const { return int(tokens.size()) - n_computed; }
  int n_generated() const { return int(tokens.size()) - n_prompt; }

  // --- turning tokens into events (engine.cpp) ---
  Sampler sampler;
  StreamDecoder decoder;
  StopMatcher stop;
  int cached_tokens = 0;
  // logit_bias as the device sampler takes it (DeviceSampleParams), parallel arrays.
  std::vector<int32_t> bias_ids;
  std::vector<float> bias_values;
  // Constrained requests (req.grammar): made at the first draw; its mask is recomputed before
  // every draw. A mask that could not be computed ends the request with this error.
  std::unique_ptr<GrammarState> grammar;
  std::string grammar_error;
};

}  // namespace greta
