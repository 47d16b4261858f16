#include "server/metrics.h"

#include <cstdio>

namespace greta::server {

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += v;
  ++count_;
}

static std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void Histogram::render(std::string& out, const std::string& name) const {
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    out += name + "_bucket{le=\"" + num(bounds_[i]) + "\"} " + std::to_string(cum) + "\n";
  }
  cum += counts_.back();
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(cum) + "\n";
  out += name + "_sum " + num(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
}

Metrics::Metrics()
    : ttft_({0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}),
      itl_({0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}) {}

void Metrics::count_request(const std::string& path, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++requests_[{path, status}];
}
void Metrics::observe_ttft(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  ttft_.observe(s);
}
void Metrics::observe_itl(double s) {
  std::lock_guard<std::mutex> lock(mu_);
  itl_.observe(s);
}
void Metrics::count_disconnect() {
  std::lock_guard<std::mutex> lock(mu_);
  ++disconnects_;
}
void Metrics::count_refused(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  ++refused_[reason];
}

namespace {
void metric(std::string& out, const char* name, const char* type, const char* help, double v) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" + name + " " + num(v) +
         "\n";
}

// One labelled family rather than five metrics: the phases add up to the engine thread's wall
// time, so rate() over all of them shows the share of each (host work, forward, idle).
void engine_phases(std::string& out, const EngineStats& s) {
  out +=
      "# HELP greta_engine_seconds_total Wall-clock seconds of the engine thread by loop phase.\n"
      "# TYPE greta_engine_seconds_total counter\n";
  const std::pair<const char*, double> phases[] = {{"idle", s.idle_s},
                                                   {"schedule", s.schedule_s},
                                                   {"forward", s.forward_s},
                                                   {"sample", s.sample_s},
                                                   {"emit", s.emit_s}};
  for (const auto& [phase, v] : phases)
    out += std::string("greta_engine_seconds_total{phase=\"") + phase + "\"} " + num(v) + "\n";
}
}  // namespace

std::string Metrics::render(const EngineStats& s) const {
  std::string out;
  std::lock_guard<std::mutex> lock(mu_);
  out +=
      "# HELP greta_http_requests_total HTTP requests by path and status code.\n"
      "# TYPE greta_http_requests_total counter\n";
  for (const auto& [key, n] : requests_)
    out += "greta_http_requests_total{path=\"" + key.first + "\",code=\"" + std::to_string(key.second) + "\"} " +
           std::to_string(n) + "\n";
  metric(out, "greta_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.", double(s.prompt_tokens));
  metric(out, "greta_generation_tokens_total", "counter", "Generated tokens.", double(s.generated_tokens));
  metric(out, "greta_prefix_cache_hit_tokens_total", "counter", "Prompt tokens served from the prefix cache.",
         double(s.prefix_hit_tokens));
  metric(out, "greta_computed_tokens_total", "counter", "Tokens run through the model (recomputation included).",
         double(s.computed_tokens));
  metric(out, "greta_preemptions_total", "counter", "Sequences preempted for lack of KV blocks.",
         double(s.preemptions));
  metric(out, "greta_finished_requests_total", "counter", "Engine requests finished (any reason).",
         double(s.finished_requests));
  metric(out, "greta_client_disconnects_total", "counter", "Requests cancelled because the client went away.",
         double(disconnects_));
  out +=
      "# HELP greta_connections_refused_total Connections answered and closed before any handler ran.\n"
      "# TYPE greta_connections_refused_total counter\n";
  for (const auto& [reason, n] : refused_)
    out += "greta_connections_refused_total{reason=\"" + reason + "\"} " + std::to_string(n) + "\n";
  metric(out, "greta_requests_waiting", "gauge", "Requests queued for admission (queue depth).", s.waiting);
  metric(out, "greta_requests_running", "gauge", "Sequences running (holding KV blocks).", s.running);
  metric(out, "greta_kv_blocks_used", "gauge", "KV blocks held by running sequences.", s.kv_blocks_used);
  metric(out, "greta_kv_blocks_cached", "gauge", "Free KV blocks still holding a reusable prefix.", s.kv_blocks_cached);
  metric(out, "greta_kv_blocks_total", "gauge", "KV blocks in the pool.", s.kv_blocks_total);
  engine_phases(out, s);
  metric(out, "greta_grammar_masks_total", "counter", "Allowed-token masks computed for constrained draws.",
         double(s.grammar_masks));
  metric(out, "greta_grammar_mask_seconds_total", "counter", "Seconds spent computing token masks (mask worker).",
         s.grammar_mask_s);
  metric(out, "greta_grammar_mask_wait_seconds_total", "counter",
         "Seconds the engine thread waited for token masks after the forward (mask time not hidden by it).",
         s.grammar_mask_wait_s);
  out +=
      "# HELP greta_time_to_first_token_seconds Time from request arrival to its first token.\n"
      "# TYPE greta_time_to_first_token_seconds histogram\n";
  ttft_.render(out, "greta_time_to_first_token_seconds");
  out +=
      "# HELP greta_inter_token_latency_seconds Time between consecutive tokens of one sequence.\n"
      "# TYPE greta_inter_token_latency_seconds histogram\n";
  itl_.render(out, "greta_inter_token_latency_seconds");
  return out;
}

}  // namespace greta::server
