#include "runtime/sampler.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <cmath>
#include <limits>
#include <string>

#include "core/error.h"

namespace greta {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// NaN -> -inf (a broken logit must never be picked); +inf -> FLT_MAX so that max-subtraction
// gives 0 instead of inf-inf = NaN, and several +inf logits tie instead of poisoning sums.
inline float clean(float x) {
  if (std::isnan(x)) return kNegInf;
  if (x == std::numeric_limits<float>::infinity()) return std::numeric_limits<float>::max();
  return x;
}

void require(bool ok, const char* field, float value, const char* expected) {
  if (!ok) {
    throw Error("sampling parameter '" + std::string(field) + "' = " + std::to_string(value) + ": expected " +
                expected);
  }
}
}  // namespace

void SamplingParams::validate() const {
  require(!std::isnan(temperature), "temperature", temperature, "a number (<= 0 means greedy)");
  require(top_p > 0.0f && top_p <= 1.0f, "top_p", top_p, "a value in (0, 1]");
  require(min_p >= 0.0f && min_p <= 1.0f, "min_p", min_p, "a value in [0, 1]");
  require(std::isfinite(repeat_penalty) && repeat_penalty > 0.0f, "repeat_penalty", repeat_penalty,
          "a finite value > 0 (1 disables it)");
  require(repeat_last_n >= -1, "repeat_last_n", float(repeat_last_n),
          "-1 (whole history), 0 (off) or a positive window");
  require(std::isfinite(presence_penalty), "presence_penalty", presence_penalty, "a finite value");
  require(std::isfinite(frequency_penalty), "frequency_penalty", frequency_penalty, "a finite value");
  require(penalty_prompt_len >= -1, "penalty_prompt_len", float(penalty_prompt_len),
          "-1 (window over the whole history) or the prompt length");
}

Sampler::Sampler(const SamplingParams& p) : p_(p) {
  p_.validate();
  seed_ = p_.seed;
  if (seed_ == 0) {
    // random_device alone may be deterministic on some platforms; mixing in the clock keeps
    // unseeded requests distinct there too.
    std::random_device rd;
    const uint64_t t = uint64_t(std::chrono::high_resolution_clock::now().time_since_epoch().count());
    seed_ = (uint64_t(rd()) << 32 | rd()) ^ (t * 0x9e3779b97f4a7c15ull);
    if (seed_ == 0) seed_ = 1;
  }
  rng_.seed(seed_);
}

bool Sampler::device_eligible() const {
  if (p_.repeat_last_n == 0 && p_.penalty_prompt_len < 0) return true;  // penalties look at no history
  return p_.repeat_penalty == 1.0f && p_.presence_penalty == 0.0f && p_.frequency_penalty == 0.0f;
}

// Penalties over the last repeat_last_n tokens of history, like llama.cpp: the repetition
// penalty applies once per distinct token, presence once, frequency once per occurrence.
void Sampler::apply_penalties(const std::vector<int32_t>& history, int vocab) {
  const bool any = p_.repeat_penalty != 1.0f || p_.presence_penalty != 0.0f || p_.frequency_penalty != 0.0f;
  if (!any || history.empty()) return;
  if (p_.penalty_prompt_len >= 0) {
    apply_openai_penalties(history, vocab);
    return;
  }
  if (p_.repeat_last_n == 0) return;
  const size_t n = p_.repeat_last_n < 0 ? history.size() : std::min(history.size(), size_t(p_.repeat_last_n));
  window_.clear();
  for (size_t i = history.size() - n; i < history.size(); ++i) {
    const int32_t t = history[i];
    if (t >= 0 && t < vocab) window_.push_back(t);  // ids from elsewhere may be out of range
  }
  // Sorting the (small) window counts occurrences without a vocab-sized table.
  std::sort(window_.begin(), window_.end());
  for (size_t i = 0; i < window_.size();) {
    size_t j = i;
    while (j < window_.size() && window_[j] == window_[i]) ++j;
    float& l = work_[size_t(window_[i])];
    if (p_.repeat_penalty != 1.0f) l = l <= 0.0f ? l * p_.repeat_penalty : l / p_.repeat_penalty;
    l -= float(j - i) * p_.frequency_penalty + p_.presence_penalty;
    i = j;
  }
}

// OpenAI / vLLM semantics (SamplingParams::penalty_prompt_len >= 0): the repetition penalty
// once per distinct token of the whole history, then presence once and frequency once per
// occurrence over the generated tokens only.
void Sampler::apply_openai_penalties(const std::vector<int32_t>& history, int vocab) {
  const size_t n_prompt = std::min(history.size(), size_t(p_.penalty_prompt_len));
  auto collect = [&](size_t from) {  // valid ids of history[from..], sorted
    window_.clear();
    for (size_t i = from; i < history.size(); ++i)
      if (history[i] >= 0 && history[i] < vocab) window_.push_back(history[i]);
    std::sort(window_.begin(), window_.end());
  };
  if (p_.repeat_penalty != 1.0f) {
    collect(0);
    for (size_t i = 0; i < window_.size(); ++i) {
      if (i > 0 && window_[i] == window_[i - 1]) continue;
      float& l = work_[size_t(window_[i])];
      l = l <= 0.0f ? l * p_.repeat_penalty : l / p_.repeat_penalty;
    }
  }
  if (p_.presence_penalty == 0.0f && p_.frequency_penalty == 0.0f) return;
  collect(n_prompt);
  for (size_t i = 0; i < window_.size();) {
    size_t j = i;
    while (j < window_.size() && window_[j] == window_[i]) ++j;
    work_[size_t(window_[i])] -= float(j - i) * p_.frequency_penalty + p_.presence_penalty;
    i = j;
  }
}

namespace {
// Total order: higher logit first, then lower id, so every selection below is reproducible.
struct Better {
  template <class C>
  bool operator()(const C& a, const C& b) const {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
  }
};
}  // namespace

void Sampler::top_k(int k) {
  if (k <= 0 || size_t(k) >= cand_.size()) return;
  std::nth_element(cand_.begin(), cand_.begin() + k, cand_.end(), Better{});
  cand_.resize(size_t(k));
  std::sort(cand_.begin(), cand_.end(), Better{});  // O(k log k); k is small
}

// top-p and min-p both keep a prefix of the candidates sorted by logit, so the kept set is
// the shorter prefix. top-p's probabilities are those of the candidates left after top-k
// (as in llama.cpp), so its normaliser is taken before min-p shrinks the set.
//
// Finding the nucleus without sorting all V: one pass drops every candidate's probability
// mass into a bucket by its distance below the max logit; walking the buckets from the top
// finds the bucket where the cumulative mass crosses top_p. Only candidates in that bucket
// or above can be in the nucleus, so only they are sorted and walked exactly.
void Sampler::top_p_min_p() {
  const bool use_p = p_.top_p<1.0f, use_min = p_.min_p> 0.0f;
  if ((!use_p && !use_min) || cand_.size() <= 1) return;
  float mx = kNegInf;
  for (const Cand& c : cand_) mx = std::max(mx, c.logit);

  constexpr int kBuckets = 1024;
  constexpr double kRange = 40.0;  // exp(-40) ~ 4e-18: everything further shares the last bucket
  const auto bucket = [mx](float l) {
    const double d = double(mx) - double(l);
    return d >= kRange ? kBuckets - 1 : int(d * (kBuckets / kRange));
  };
  int cut = kBuckets - 1;
  double target = 0;
  if (use_p) {
    mass_.assign(kBuckets, 0.0);
    double z = 0;
    for (const Cand& c : cand_) {
      const double e = std::exp(double(c.logit) - mx);
      z += e;
      mass_[size_t(bucket(c.logit))] += e;
    }
    target = double(p_.top_p) * z;
    double cum = 0;
    for (int b = 0; b < kBuckets; ++b) {
      cum += mass_[size_t(b)];
      if (cum >= target) {
        cut = b;
        break;
      }
    }
  }
  // p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p). Stable compaction, so
  // an already sorted list (after top-k) stays sorted.
  const double min_thr = use_min ? double(mx) + std::log(double(p_.min_p)) : -HUGE_VAL;
  size_t w = 0;
  for (const Cand& c : cand_)
    if (double(c.logit) >= min_thr && bucket(c.logit) <= cut) cand_[w++] = c;
  cand_.resize(w);
  if (!use_p || cand_.size() <= 1) return;

  if (!std::is_sorted(cand_.begin(), cand_.end(), Better{})) std::sort(cand_.begin(), cand_.end(), Better{});
  double cum = 0;
  for (size_t i = 0; i < cand_.size(); ++i) {
    cum += std::exp(double(cand_[i].logit) - mx);
    if (cum >= target) {
      cand_.resize(i + 1);  // the crossing token is kept, so at least one survives
      return;
    }
  }
  // Summation order differs from the bucket pass; if rounding left cum just short of the
  // target, every kept candidate belongs to the nucleus anyway.
}

int32_t Sampler::draw(float* prob) {
  float mx = kNegInf;
  for (const Cand& c : cand_) mx = std::max(mx, c.logit);
  const double inv_t = 1.0 / double(p_.temperature);
  double sum = 0;
  for (const Cand& c : cand_) sum += std::exp((double(c.logit) - mx) * inv_t);
  const double u = uniform01(rng_()) * sum;
  double acc = 0;
  size_t pick = cand_.size() - 1;
  for (size_t i = 0; i < cand_.size(); ++i) {
    acc += std::exp((double(cand_[i].logit) - mx) * inv_t);
    if (u < acc) {
      pick = i;
      break;
    }
  }
  // The fallback (u >= acc after rounding) must not land on a zero-weight tail candidate.
  while (pick > 0 && std::exp((double(cand_[pick].logit) - mx) * inv_t) == 0.0) --pick;
  *prob = float(std::exp((double(cand_[pick].logit) - mx) * inv_t) / sum);
  return cand_[pick].id;
}

// Candidates with -inf can never be drawn; dropping them also makes "nothing drawable"
// explicit (cand_ empty), which falls back to greedy (token 0 when everything is -inf).
bool Sampler::filter(int vocab) {
  cand_.clear();
  if (p_.temperature > 0.0f) {
    for (int i = 0; i < vocab; ++i)
      if (work_[size_t(i)] != kNegInf) cand_.push_back({work_[size_t(i)], i});
  }
  if (cand_.empty()) return false;
  top_k(p_.top_k);
  top_p_min_p();
  return true;
}

int32_t Sampler::greedy(int vocab) const {
  int32_t best = 0;  // strict > keeps the lowest id among ties
  for (int i = 1; i < vocab; ++i)
    if (work_[size_t(i)] > work_[size_t(best)]) best = i;
  return best;
}

void Sampler::load(const float* logits, int vocab) {
  if (vocab < 1) throw Error("sampler: vocab size " + std::to_string(vocab) + ", expected >= 1");
  work_.resize(size_t(vocab));
  for (int i = 0; i < vocab; ++i) work_[size_t(i)] = clean(logits[i]);
}

// A bias that lifts a -inf logit leaves it -inf: a broken or masked token stays undrawable.
void Sampler::apply_constraints(int vocab, const uint32_t* allowed) {
  for (const auto& [id, b] : bias_)
    if (id >= 0 && id < vocab) work_[size_t(id)] = clean(work_[size_t(id)] + b);
  if (!allowed) return;
  for (int i = 0; i < vocab; ++i)
    if (!((allowed[size_t(i) >> 5] >> (i & 31)) & 1u)) work_[size_t(i)] = kNegInf;
}

std::vector<TokenProb> Sampler::distribution(const float* logits, int vocab, const std::vector<int32_t>& history,
                                             const uint32_t* allowed) {
  load(logits, vocab);
  apply_constraints(vocab, allowed);
  apply_penalties(history, vocab);
  if (!filter(vocab)) return {{greedy(vocab), 1.0}};
  // The weights draw() uses, normalised.
  float mx = kNegInf;
  for (const Cand& c : cand_) mx = std::max(mx, c.logit);
  const double inv_t = 1.0 / double(p_.temperature);
  std::vector<TokenProb> out;
  double sum = 0;
  for (const Cand& c : cand_) {
    out.push_back({c.id, std::exp((double(c.logit) - mx) * inv_t)});
    sum += out.back().prob;
  }
  for (TokenProb& t : out) t.prob /= sum;
  std::sort(out.begin(), out.end(), [](const TokenProb& a, const TokenProb& b) { return a.token < b.token; });
  return out;
}

SampleResult Sampler::sample_full(const float* logits, int vocab, const std::vector<int32_t>& history, int n_logprobs,
                                  const uint32_t* allowed) {
  SampleResult r;
  load(logits, vocab);

  // Raw-model log-softmax (before penalties and filters), as OpenAI's logprobs report it.
  // All -inf (every logit NaN/-inf) has no distribution: report -inf rather than NaN.
  double lse = 0;
  bool degenerate = false;
  if (n_logprobs >= 0) {
    float mx = kNegInf;
    for (float x : work_) mx = std::max(mx, x);
    degenerate = mx == kNegInf;
    if (!degenerate) {
      double s = 0;
      for (float x : work_) s += std::exp(double(x) - mx);
      lse = double(mx) + std::log(s);
    }
    if (n_logprobs > 0) {
      const size_t n = std::min(size_t(n_logprobs), size_t(vocab));
      cand_.resize(size_t(vocab));
      for (int i = 0; i < vocab; ++i) cand_[size_t(i)] = {work_[size_t(i)], i};
      std::partial_sort(cand_.begin(), cand_.begin() + ptrdiff_t(n), cand_.end(), Better{});
      r.top.resize(n);
      for (size_t i = 0; i < n; ++i)
        r.top[i] = {cand_[i].id, degenerate ? kNegInf : float(double(cand_[i].logit) - lse)};
    }
  }

  apply_constraints(vocab, allowed);
  apply_penalties(history, vocab);
  if (!filter(vocab)) {
    r.token = greedy(vocab);
    r.prob = 1.0f;
  } else {
    r.token = draw(&r.prob);
  }
  if (n_logprobs >= 0) r.logprob = degenerate ? kNegInf : float(double(clean(logits[r.token])) - lse);
  return r;
}

}  // namespace greta
