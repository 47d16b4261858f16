// Resource limits of the template engine. Templates come from model files and --chat-template,
// that is from strangers, so parsing and rendering are bounded in stack depth, memory and time:
// going past a limit is a greta::Error naming the limit, never a crash or a hang. The defaults
// are far above what real chat templates need (see tests/e2e/test_chat_template_parity.py).
#pragma once
#include <cstddef>
#include <cstdint>

namespace greta::jinja {

struct TemplateLimits {
  // Nesting of blocks and expressions in the source, of lists/dicts built while rendering, and
  // of the renderer's own recursion (statements, expressions, macro calls).
  int max_depth = 200;
  // Any one string (the rendered text included) and the total string bytes one list holds.
  size_t max_string_bytes = size_t(16) << 20;
  // Any one list.
  size_t max_list_items = size_t(1) << 18;
  // For-loop iterations, all loops of one render together.
  int64_t max_loop_iterations = int64_t(1) << 20;
  // Evaluation steps of one render: statements, expressions and the items builtins walk over.
  int64_t max_steps = int64_t(10) << 20;
};

// What the render in progress on this thread has used. The renderer installs one for the
// duration of a render (RenderBudget::Scope); builtins charge it through the functions below,
// which do nothing on a thread with no render in progress.
class RenderBudget {
 public:
  explicit RenderBudget(const TemplateLimits& limits) : limits_(limits) {}
  const TemplateLimits& limits() const { return limits_; }

  class Scope {
   public:
    explicit Scope(RenderBudget& b);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    RenderBudget* saved_;
  };

  int64_t steps = 0;
  int64_t iterations = 0;

 private:
  TemplateLimits limits_;
};

// Each throws greta::Error naming the exceeded limit.
void charge_steps(int64_t n);
void charge_loop_iteration();
void check_string_size(size_t bytes);  // a string about to be built of `bytes` bytes
void check_list_size(size_t items);    // a list about to be built of `items` items
void check_depth(int depth);           // a nesting depth reached
// A substring search of `needle` bytes in `haystack` bytes: its worst case is their product.
void charge_search(size_t haystack, size_t needle);
// The limits of the render in progress (defaults when there is none).
const TemplateLimits& active_limits();

}  // namespace greta::jinja
