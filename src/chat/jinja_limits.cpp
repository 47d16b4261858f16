#include "chat/jinja_limits.h"

#include <string>

#include "core/error.h"

namespace greta::jinja {

namespace {
thread_local RenderBudget* t_budget = nullptr;
const TemplateLimits kDefaultLimits{};

[[noreturn]] void over(const std::string& what, const std::string& limit) {
  throw Error("template exceeds the " + what + " limit of " + limit);
}
}  // namespace

RenderBudget::Scope::Scope(RenderBudget& b) : saved_(t_budget) { t_budget = &b; }
RenderBudget::Scope::~Scope() { t_budget = saved_; }

const TemplateLimits& active_limits() { return t_budget ? t_budget->limits() : kDefaultLimits; }

void charge_steps(int64_t n) {
  if (!t_budget) return;
  t_budget->steps += n;
  if (t_budget->steps > t_budget->limits().max_steps)
    over("evaluation step", std::to_string(t_budget->limits().max_steps) + " steps per render");
}

void charge_search(size_t haystack, size_t needle) {
  // Both are bounded by max_string_bytes, so the product fits in 64 bits.
  charge_steps(1 + int64_t(uint64_t(haystack) * uint64_t(needle) / 4096));
}

void charge_loop_iteration() {
  if (!t_budget) return;
  if (++t_budget->iterations > t_budget->limits().max_loop_iterations)
    over("loop iteration", std::to_string(t_budget->limits().max_loop_iterations) + " iterations per render");
}

void check_string_size(size_t bytes) {
  const size_t lim = active_limits().max_string_bytes;
  if (bytes > lim) over("string size", std::to_string(lim) + " bytes");
}

void check_list_size(size_t items) {
  const size_t lim = active_limits().max_list_items;
  if (items > lim) over("list size", std::to_string(lim) + " items");
}

void check_depth(int depth) {
  const int lim = active_limits().max_depth;
  if (depth > lim) over("nesting depth", std::to_string(lim) + " levels");
}

}  // namespace greta::jinja
