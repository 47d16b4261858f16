#include "chat/jinja_render.h"

#include <unordered_map>

#include "chat/jinja_builtins.h"
#include "chat/jinja_limits.h"
#include "chat/jinja_pystr.h"

namespace greta::jinja {

namespace {

enum class Flow { Normal, Break, Continue };

// Output is a string Value: it carries which of its bytes came from caller data.
using Out = Value;

size_t text_bytes(const Value& v) { return v.is_string() ? v.s.size() : 0; }

class Renderer {
 public:
  explicit Renderer(const Dict& vars) {
    scopes_.emplace_back();
    for (const auto& kv : vars.items) scopes_[0][kv.first] = kv.second;
  }

  void run(const Body& program, Out& out) {
    if (render_body(program, out) != Flow::Normal) fail_at(0, 0, "'break' or 'continue' outside of a loop");
  }

 private:
  using Scope = std::unordered_map<std::string, Value>;
  std::vector<Scope> scopes_;
  std::unordered_map<std::string, const Stmt*> macros_;
  int loop_depth_ = 0;
  int call_depth_ = 0;
  int depth_ = 0;  // renderer recursion: statements, expressions, macro calls

  // Bounds the renderer's recursion and counts one evaluation step.
  struct Enter {
    template <class N>
    Enter(Renderer& r, const N& at) : r_(r) {
      charge_steps(1);
      if (++r_.depth_ > active_limits().max_depth)
        fail_at(at.line, at.col,
                "rendering nests deeper than the limit of " + std::to_string(active_limits().max_depth) + " levels");
    }
    ~Enter() { --r_.depth_; }
    Renderer& r_;
  };

  // Results of builtins computed from caller data are data as a whole; the text they read and
  // make counts toward the step budget.
  static Value from_builtin(Value r, const Value& in, const Args& a) {
    bool data = has_data(in);
    size_t bytes = text_bytes(in) + text_bytes(r);
    for (const Value& v : a.pos) data = data || has_data(v), bytes += text_bytes(v);
    for (const auto& kv : a.kw) data = data || has_data(kv.second), bytes += text_bytes(kv.second);
    charge_steps(int64_t(bytes / 256));
    return with_data_of(std::move(r), data);
  }

  [[noreturn]] static void fail_at(int line, int col, const std::string& what) {
    throw Error("chat template " + std::to_string(line) + ":" + std::to_string(col) + ": " + what);
  }

  // Runs f, giving errors from builtins the position of node n (raise_exception passes through).
  template <class N, class F>
  auto located(const N& n, F&& f) -> decltype(f()) {
    try {
      return f();
    } catch (const TemplateRaise&) {
      throw;
    } catch (const Error& e) {
      std::string msg = e.what();
      if (msg.rfind("chat template ", 0) == 0) throw;
      fail_at(n.line, n.col, msg);
    }
  }

  Value lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return f->second;
    }
    if (macros_.count(name)) return Value::function("macro:" + name);
    if (is_global_function(name)) return Value::function(name);
    return Value::undefined("'" + name + "' is undefined");
  }

  // ---- statements ----------------------------------------------------------------------
  Flow render_body(const Body& body, Out& out) {
    for (const auto& s : body) {
      Flow f = render_stmt(*s, out);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  void assign(const std::vector<std::string>& targets, const Value& v, const Stmt& at) {
    if (targets.size() == 1) {
      scopes_.back()[targets[0]] = v;
      return;
    }
    std::vector<Value> parts = located(at, [&] { return py_iterate(v); });
    if (parts.size() != targets.size())
      fail_at(at.line, at.col,
              "cannot unpack " + std::to_string(parts.size()) + " values into " + std::to_string(targets.size()) +
                  " names");
    for (size_t k = 0; k < targets.size(); ++k) scopes_.back()[targets[k]] = parts[k];
  }

  Flow render_stmt(const Stmt& s, Out& out) {
    Enter enter(*this, s);
    switch (s.kind) {
      case Stmt::Kind::Text: located(s, [&] { append_text(out, s.text, false); }); return Flow::Normal;
      case Stmt::Kind::Output: {
        Value v = eval(*s.expr);
        located(s, [&] {
          const size_t before = out.s.size();
          append_text(out, v);
          charge_steps(int64_t((out.s.size() - before) / 256));
        });
        return Flow::Normal;
      }
      case Stmt::Kind::If:
        for (const auto& [cond, body] : s.branches) {
          if (!cond || eval(*cond).truthy()) return render_body(body, out);
        }
        return Flow::Normal;
      case Stmt::Kind::For: return render_for(s, out);
      case Stmt::Kind::Set: {
        Value v = eval(*s.expr);
        if (!s.target_ns.empty()) {
          Value ns = lookup(s.target_ns);
          if (ns.kind != Value::Kind::Namespace)
            fail_at(s.line, s.col, "cannot assign attribute on non-namespace object '" + s.target_ns + "'");
          // Namespaces are mutable: one holding another could form a cycle or grow without bound.
          if (v.kind == Value::Kind::Namespace || v.holds_namespace)
            fail_at(s.line, s.col, "a namespace cannot hold another namespace in chat templates");
          ns.dict->holds_data = ns.dict->holds_data || has_data(v);
          ns.dict->set(s.target_attr, std::move(v));
        } else {
          assign(s.targets, v, s);
        }
        return Flow::Normal;
      }
      case Stmt::Kind::SetBlock: {
        Out captured = Value::string("");
        if (render_body(s.body, captured) != Flow::Normal) fail_at(s.line, s.col, "'break'/'continue' in set block");
        scopes_.back()[s.targets[0]] = std::move(captured);
        return Flow::Normal;
      }
      case Stmt::Kind::Break:
      case Stmt::Kind::Continue:
        if (loop_depth_ == 0) fail_at(s.line, s.col, "'break' or 'continue' outside of a loop");
        return s.kind == Stmt::Kind::Break ? Flow::Break : Flow::Continue;
      case Stmt::Kind::Scope: return render_body(s.body, out);
      case Stmt::Kind::Macro: macros_[s.name] = &s; return Flow::Normal;
    }
    return Flow::Normal;
  }

  Flow render_for(const Stmt& s, Out& out) {
    Value iterable = eval(*s.expr);
    std::vector<Value> items = located(s, [&] { return py_iterate(iterable); });
    if (s.filter) {
      // `for x in xs if cond`: the condition sees the loop target, not `loop`.
      std::vector<Value> kept;
      for (const Value& item : items) {
        scopes_.emplace_back();
        assign(s.targets, item, s);
        bool keep = eval(*s.filter).truthy();
        scopes_.pop_back();
        if (keep) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) return render_body(s.else_body, out);
    const int64_t n = static_cast<int64_t>(items.size());
    ++loop_depth_;
    for (int64_t k = 0; k < n; ++k) {
      located(s, [] { charge_loop_iteration(); });
      scopes_.emplace_back();
      Dict loop;
      loop.set("index", Value::integer(k + 1));
      loop.set("index0", Value::integer(k));
      loop.set("revindex", Value::integer(n - k));
      loop.set("revindex0", Value::integer(n - k - 1));
      loop.set("first", Value::boolean(k == 0));
      loop.set("last", Value::boolean(k == n - 1));
      loop.set("length", Value::integer(n));
      loop.set("depth", Value::integer(1));
      loop.set("depth0", Value::integer(0));
      loop.set("previtem", k > 0 ? items[k - 1] : Value::undefined("there is no previous item"));
      loop.set("nextitem", k + 1 < n ? items[k + 1] : Value::undefined("there is no next item"));
      scopes_.back()["loop"] = Value::make_dict(std::move(loop));
      assign(s.targets, items[k], s);
      Flow f = render_body(s.body, out);
      scopes_.pop_back();
      if (f == Flow::Break) break;
    }
    --loop_depth_;
    return Flow::Normal;
  }

  // ---- expressions ---------------------------------------------------------------------
  Args eval_args(const Expr& e, size_t first) {
    Args a;
    for (size_t k = first; k < e.args.size(); ++k) a.pos.push_back(eval(*e.args[k]));
    for (const auto& [name, ex] : e.kwargs) a.kw.emplace_back(name, eval(*ex));
    return a;
  }

  static std::optional<int64_t> slice_bound(const Value& v, const Expr& at) {
    if (v.is_none()) return std::nullopt;
    if (v.kind != Value::Kind::Int && v.kind != Value::Kind::Bool)
      fail_at(at.line, at.col, "slice indices must be integers or None");
    return v.as_int();
  }

  Value call_macro(const Stmt& m, const Args& a, const Expr& at) {
    if (++call_depth_ > 64) fail_at(at.line, at.col, "macro recursion too deep");
    if (a.pos.size() > m.params.size())
      fail_at(at.line, at.col, "macro '" + m.name + "' takes " + std::to_string(m.params.size()) + " arguments");
    std::vector<Scope> saved;
    saved.swap(scopes_);
    scopes_.push_back(saved[0]);  // macros see the template's top-level names
    scopes_.emplace_back();
    int saved_loops = loop_depth_;
    loop_depth_ = 0;
    for (size_t k = 0; k < m.params.size(); ++k) {
      const auto& [pname, dflt] = m.params[k];
      const Value* v = a.get(k, pname.c_str());
      scopes_.back()[pname] = v ? *v : dflt ? eval(*dflt) : Value::undefined("'" + pname + "' is undefined");
    }
    Out out = Value::string("");
    try {
      render_body(m.body, out);
    } catch (...) {
      scopes_.swap(saved);
      loop_depth_ = saved_loops;
      --call_depth_;
      throw;
    }
    scopes_.swap(saved);
    loop_depth_ = saved_loops;
    --call_depth_;
    return out;
  }

  Value eval(const Expr& e) {
    Enter enter(*this, e);
    switch (e.kind) {
      case Expr::Kind::Const: return e.value;
      case Expr::Kind::Name: return lookup(e.name);
      case Expr::Kind::List: {
        List l;
        for (const auto& x : e.args) l.push_back(eval(*x));
        return located(e, [&] { return Value::make_list(std::move(l), e.is_tuple); });
      }
      case Expr::Kind::Dict: {
        Dict d;
        bool key_data = false;
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
          Value key = eval(*e.args[k]);
          if (!key.is_string()) fail_at(e.line, e.col, "dict keys must be strings in chat templates");
          key_data = key_data || has_data(key);
          d.set(key.s, eval(*e.args[k + 1]));
        }
        Value v = located(e, [&] { return Value::make_dict(std::move(d)); });
        v.holds_data = v.holds_data || key_data;  // the keys it yields are then data
        return v;
      }
      case Expr::Kind::Getattr: {
        Value obj = eval(*e.args[0]);
        return located(e, [&] { return py_getattr(obj, e.name); });
      }
      case Expr::Kind::Getitem: {
        Value obj = eval(*e.args[0]);
        Value key = eval(*e.args[1]);
        return located(e, [&] { return py_getitem(obj, key); });
      }
      case Expr::Kind::Slice: {
        Value obj = eval(*e.args[0]);
        std::optional<int64_t> b[3];
        for (int k = 0; k < 3; ++k)
          if (e.args[k + 1]) b[k] = slice_bound(eval(*e.args[k + 1]), e);
        if (obj.is_undefined()) located(e, [&]() -> int { undefined_error(obj); });
        int64_t step = b[2].value_or(1);
        return located(e, [&] {
          charge_steps(int64_t(text_bytes(obj) / 256));
          if (obj.is_string()) return with_data_of(Value::string(py_slice_str(obj.s, b[0], b[1], step)), has_data(obj));
          if (!obj.is_list())
            return Value::undefined(std::string("'").append(obj.type_name()).append("' object is not subscriptable"));
          List l;
          for (int64_t k : py_slice_indices(static_cast<int64_t>(obj.list->size()), b[0], b[1], step))
            l.push_back((*obj.list)[k]);
          charge_steps(int64_t(l.size()));
          return with_data_of(Value::make_list(std::move(l), obj.is_tuple), obj.data);
        });
      }
      case Expr::Kind::Call: {
        Value callee = eval(*e.args[0]);
        Args a = eval_args(e, 1);
        return located(e, [&]() -> Value {
          if (callee.is_undefined()) undefined_error(callee);
          if (callee.kind != Value::Kind::Function) throw Error("'" + callee.type_name() + "' object is not callable");
          if (callee.self) return from_builtin(call_method(*callee.self, callee.s, a), *callee.self, a);
          if (callee.s.rfind("macro:", 0) == 0) return call_macro(*macros_.at(callee.s.substr(6)), a, e);
          return from_builtin(call_global(callee.s, a), Value::none(), a);
        });
      }
      case Expr::Kind::Filter: {
        Value in = eval(*e.args[0]);
        Args a = eval_args(e, 1);
        return located(e, [&] { return from_builtin(apply_filter(e.name, in, a), in, a); });
      }
      case Expr::Kind::Test: {
        Value in = eval(*e.args[0]);
        Args a = eval_args(e, 1);
        bool r = located(e, [&] { return apply_test(e.name, in, a); });
        return from_builtin(Value::boolean(r != e.negated), in, a);
      }
      case Expr::Kind::Not: return Value::boolean(!eval(*e.args[0]).truthy());
      case Expr::Kind::Neg:
      case Expr::Kind::Pos: {
        Value v = eval(*e.args[0]);
        return located(e, [&]() -> Value {
          if (v.is_undefined()) undefined_error(v);
          if (!v.is_number())
            throw Error("bad operand type for unary " + std::string(e.kind == Expr::Kind::Neg ? "-" : "+") + ": '" +
                        v.type_name() + "'");
          if (e.kind == Expr::Kind::Pos)
            return with_data_of(v.kind == Value::Kind::Float ? v : Value::integer(v.as_int()), has_data(v));
          if (v.kind != Value::Kind::Float && v.as_int() == INT64_MIN)
            throw Error("integer overflow: -(" + std::to_string(INT64_MIN) + ") does not fit in 64 bits");
          return with_data_of(v.kind == Value::Kind::Float ? Value::number(-v.f) : Value::integer(-v.as_int()),
                              has_data(v));
        });
      }
      case Expr::Kind::Binary: {
        Value l = eval(*e.args[0]);
        Value r = eval(*e.args[1]);
        return located(e, [&] {
          // String and list results carry their own provenance (see binary_op); numbers from data are data.
          Value out = binary_op(e.name, l, r);
          charge_steps(int64_t(text_bytes(out) / 256));
          return l.is_number() && r.is_number() ? with_data_of(std::move(out), has_data(l) || has_data(r)) : out;
        });
      }
      case Expr::Kind::Concat: {
        Value s = Value::string("");
        for (const auto& x : e.args) {
          Value v = eval(*x);
          located(e, [&] { append_text(s, v); });
        }
        charge_steps(int64_t(s.s.size() / 256));
        return s;
      }
      case Expr::Kind::Compare: {
        Value left = eval(*e.args[0]);
        for (size_t k = 0; k < e.ops.size(); ++k) {
          Value right = eval(*e.args[k + 1]);
          const std::string& op = e.ops[k];
          bool ok = located(e, [&]() -> bool {
            if (op == "==") return py_equal(left, right);
            if (op == "!=") return !py_equal(left, right);
            if (op == "in") return contains(right, left);
            if (op == "notin") return !contains(right, left);
            if (left.is_undefined()) undefined_error(left);
            if (right.is_undefined()) undefined_error(right);
            auto c = py_compare(left, right);
            if (!c)
              throw Error("'" + op + "' not supported between instances of '" + left.type_name() + "' and '" +
                          right.type_name() + "'");
            return op == "<" ? *c < 0 : op == "<=" ? *c <= 0 : op == ">" ? *c > 0 : *c >= 0;
          });
          if (!ok) return Value::boolean(false);
          left = std::move(right);
        }
        return Value::boolean(true);
      }
      case Expr::Kind::And: {
        Value l = eval(*e.args[0]);
        return l.truthy() ? eval(*e.args[1]) : l;
      }
      case Expr::Kind::Or: {
        Value l = eval(*e.args[0]);
        return l.truthy() ? l : eval(*e.args[1]);
      }
      case Expr::Kind::CondExpr: {
        if (eval(*e.args[0]).truthy()) return eval(*e.args[1]);
        return e.args[2]
                   ? eval(*e.args[2])
                   : Value::undefined("the inline if-expression evaluated to false and no else section was defined");
      }
    }
    return Value::undefined();
  }
};

}  // namespace

Rendered render_program(const Body& program, const Dict& variables, const TemplateLimits& limits) {
  RenderBudget budget(limits);
  RenderBudget::Scope scope(budget);
  Renderer r(variables);
  Out out = Value::string("");
  r.run(program, out);
  std::vector<Span> spans = data_spans_of(out);  // before out.s is moved from
  return {std::move(out.s), std::move(spans)};
}

}  // namespace greta::jinja
