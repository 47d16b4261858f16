#include "chat/jinja_parser.h"

#include "chat/jinja_lexer.h"
#include "chat/jinja_limits.h"
#include "core/error.h"

namespace greta::jinja {

namespace {

class Parser {
 public:
  explicit Parser(std::vector<Token> toks) : t_(std::move(toks)) {}

  Body parse_all() {
    std::string stop;
    Body b = parse_body({}, &stop);
    return b;
  }

 private:
  std::vector<Token> t_;
  size_t p_ = 0;

  const Token& cur() const { return t_[p_]; }
  const Token& peek(size_t k = 1) const { return t_[std::min(p_ + k, t_.size() - 1)]; }
  const Token& next() { return t_[p_ < t_.size() - 1 ? p_++ : p_]; }

  [[noreturn]] static void fail_at(int line, int col, const std::string& what) {
    throw Error("chat template " + std::to_string(line) + ":" + std::to_string(col) + ": " + what);
  }
  [[noreturn]] static void fail(const Token& at, const std::string& what) { fail_at(at.line, at.col, what); }
  static std::string describe(const Token& t) {
    switch (t.kind) {
      case Tok::Eof: return "end of template";
      case Tok::BlockEnd: return "end of statement block '%}'";
      case Tok::VarEnd: return "end of print statement '}}'";
      case Tok::String: return "string literal";
      default: return "'" + t.text + "'";
    }
  }

  bool is_op(const char* op) const { return cur().kind == Tok::Op && cur().text == op; }
  bool is_name(const char* n) const { return cur().kind == Tok::Name && cur().text == n; }
  void expect_op(const char* op) {
    if (!is_op(op)) fail(cur(), std::string("expected '") + op + "', got " + describe(cur()));
    next();
  }
  std::string expect_name() {
    if (cur().kind != Tok::Name) fail(cur(), "expected a name, got " + describe(cur()));
    return next().text;
  }
  void expect_block_end() {
    if (cur().kind != Tok::BlockEnd) fail(cur(), "expected end of statement block '%}', got " + describe(cur()));
    next();
  }

  // Recursion guard: blocks and parenthesised expressions nest by recursion here, so their
  // depth is bounded before it can overflow the stack.
  int nesting_ = 0;
  struct Nest {
    Nest(Parser& p, const Token& at) : p_(p) {
      if (++p_.nesting_ > active_limits().max_depth)
        fail(at, "nesting deeper than the limit of " + std::to_string(active_limits().max_depth) + " levels");
    }
    ~Nest() { --p_.nesting_; }
    Parser& p_;
  };

  // Operator chains (1+1+1+...) nest without recursion here, so every composite node's height is
  // checked as it is built: the renderer walks (and the destructor frees) the tree recursively.
  template <class P>
  P sealed(P n) {
    int h = 0;
    for (const auto& a : n->args)
      if (a) h = std::max(h, a->height);
    for (const auto& kv : n->kwargs) h = std::max(h, kv.second->height);
    n->height = h + 1;
    if (n->height > active_limits().max_depth)
      fail_at(n->line, n->col,
              "expression nested deeper than the limit of " + std::to_string(active_limits().max_depth) + " levels");
    return n;
  }

  template <class N>
  static std::unique_ptr<N> make(typename N::Kind k, const Token& at) {
    auto n = std::make_unique<N>();
    n->kind = k;
    n->line = at.line;
    n->col = at.col;
    return n;
  }

  // ---- statements ------------------------------------------------------------
  // Parses until a {% name %} in `ends` (left unconsumed after the name; *stop gets the name).
  Body parse_body(const std::vector<std::string>& ends, std::string* stop) {
    Body body;
    while (true) {
      const Token& tk = cur();
      if (tk.kind == Tok::Eof) {
        if (!ends.empty()) {
          std::string want;
          for (const auto& e : ends) want += (want.empty() ? "'" : " or '") + e + "'";
          fail(tk, "unexpected end of template, expected " + want);
        }
        *stop = "";
        return body;
      }
      if (tk.kind == Tok::Text) {
        auto s = make<Stmt>(Stmt::Kind::Text, tk);
        s->text = tk.text;
        body.push_back(std::move(s));
        next();
      } else if (tk.kind == Tok::VarBegin) {
        next();
        auto s = make<Stmt>(Stmt::Kind::Output, tk);
        s->expr = parse_tuple();
        if (cur().kind != Tok::VarEnd) fail(cur(), "expected end of print statement '}}', got " + describe(cur()));
        next();
        body.push_back(std::move(s));
      } else if (tk.kind == Tok::BlockBegin) {
        next();
        const Token& nm = cur();
        if (nm.kind != Tok::Name) fail(nm, "expected a tag name after '{%', got " + describe(nm));
        for (const auto& e : ends) {
          if (nm.text == e) {
            next();
            *stop = e;
            return body;
          }
        }
        body.push_back(parse_statement());
      } else {
        fail(tk, "unexpected " + describe(tk));
      }
    }
  }

  StmtPtr parse_statement() {
    const Token& nm = cur();
    Nest guard(*this, nm);
    const std::string tag = nm.text;
    next();
    std::string stop;
    if (tag == "if") {
      auto s = make<Stmt>(Stmt::Kind::If, nm);
      ExprPtr cond = parse_tuple();
      expect_block_end();
      while (true) {
        Body b = parse_body({"elif", "else", "endif"}, &stop);
        s->branches.emplace_back(std::move(cond), std::move(b));
        if (stop == "elif") {
          cond = parse_tuple();
          expect_block_end();
        } else if (stop == "else") {
          expect_block_end();
          Body eb = parse_body({"endif"}, &stop);
          s->branches.emplace_back(nullptr, std::move(eb));
          expect_block_end();
          break;
        } else {
          expect_block_end();
          break;
        }
      }
      return s;
    }
    if (tag == "for") {
      auto s = make<Stmt>(Stmt::Kind::For, nm);
      s->targets.push_back(expect_name());
      while (is_op(",")) {
        next();
        s->targets.push_back(expect_name());
      }
      if (!is_name("in")) fail(cur(), "expected 'in' in for loop, got " + describe(cur()));
      next();
      s->expr = parse_tuple(/*with_condexpr=*/false);
      if (is_name("if")) {
        next();
        s->filter = parse_expression();
      }
      if (is_name("recursive")) fail(cur(), "unsupported construct 'recursive' for loop");
      expect_block_end();
      s->body = parse_body({"endfor", "else"}, &stop);
      if (stop == "else") {
        expect_block_end();
        s->else_body = parse_body({"endfor"}, &stop);
      }
      expect_block_end();
      return s;
    }
    if (tag == "set") {
      std::string first = expect_name();
      if (is_op(".")) {
        next();
        auto s = make<Stmt>(Stmt::Kind::Set, nm);
        s->target_ns = first;
        s->target_attr = expect_name();
        expect_op("=");
        s->expr = parse_tuple();
        expect_block_end();
        return s;
      }
      std::vector<std::string> targets{first};
      while (is_op(",")) {
        next();
        targets.push_back(expect_name());
      }
      if (cur().kind == Tok::BlockEnd && targets.size() == 1) {
        next();
        auto s = make<Stmt>(Stmt::Kind::SetBlock, nm);
        s->targets = targets;
        s->body = parse_body({"endset"}, &stop);
        expect_block_end();
        return s;
      }
      if (is_op("|")) fail(cur(), "unsupported construct: filtered block set");
      auto s = make<Stmt>(Stmt::Kind::Set, nm);
      s->targets = targets;
      expect_op("=");
      s->expr = parse_tuple();
      expect_block_end();
      return s;
    }
    if (tag == "break" || tag == "continue") {
      auto s = make<Stmt>(tag == "break" ? Stmt::Kind::Break : Stmt::Kind::Continue, nm);
      expect_block_end();
      return s;
    }
    if (tag == "generation") {
      auto s = make<Stmt>(Stmt::Kind::Scope, nm);
      expect_block_end();
      s->body = parse_body({"endgeneration"}, &stop);
      expect_block_end();
      return s;
    }
    if (tag == "macro") {
      auto s = make<Stmt>(Stmt::Kind::Macro, nm);
      s->name = expect_name();
      expect_op("(");
      while (!is_op(")")) {
        std::string pname = expect_name();
        ExprPtr def;
        if (is_op("=")) {
          next();
          def = parse_expression();
        }
        s->params.emplace_back(pname, std::move(def));
        if (!is_op(",")) break;
        next();
      }
      expect_op(")");
      expect_block_end();
      s->body = parse_body({"endmacro"}, &stop);
      if (cur().kind == Tok::Name && cur().text == s->name) next();
      expect_block_end();
      return s;
    }
    fail(nm, "unsupported tag '" + tag + "'");
  }

  // ---- expressions (jinja2 precedence) -------------------------------------------
  ExprPtr parse_tuple(bool with_condexpr = true) {
    const Token& at = cur();
    ExprPtr first = with_condexpr ? parse_expression() : parse_or();
    if (!is_op(",")) return first;
    auto t = make<Expr>(Expr::Kind::List, at);
    t->is_tuple = true;
    t->args.push_back(std::move(first));
    while (is_op(",")) {
      next();
      if (cur().kind == Tok::BlockEnd || cur().kind == Tok::VarEnd || is_op(")")) break;
      t->args.push_back(with_condexpr ? parse_expression() : parse_or());
    }
    return sealed(std::move(t));
  }

  ExprPtr parse_expression() {
    Nest guard(*this, cur());
    ExprPtr e = parse_or();
    while (is_name("if")) {
      const Token& at = next();
      auto c = make<Expr>(Expr::Kind::CondExpr, at);
      ExprPtr cond = parse_or();
      ExprPtr other;
      if (is_name("else")) {
        next();
        other = parse_expression();
      }
      c->args.push_back(std::move(cond));
      c->args.push_back(std::move(e));
      c->args.push_back(std::move(other));
      e = sealed(std::move(c));
    }
    return e;
  }

  ExprPtr binary(Expr::Kind k, const Token& at, ExprPtr l, ExprPtr r, std::string op = {}) {
    auto b = make<Expr>(k, at);
    b->name = std::move(op);
    b->args.push_back(std::move(l));
    b->args.push_back(std::move(r));
    return sealed(std::move(b));
  }

  ExprPtr parse_or() {
    ExprPtr l = parse_and();
    while (is_name("or")) {
      const Token& at = next();
      l = binary(Expr::Kind::Or, at, std::move(l), parse_and());
    }
    return l;
  }
  ExprPtr parse_and() {
    ExprPtr l = parse_not();
    while (is_name("and")) {
      const Token& at = next();
      l = binary(Expr::Kind::And, at, std::move(l), parse_not());
    }
    return l;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      const Token& at = next();
      Nest guard(*this, at);
      auto n = make<Expr>(Expr::Kind::Not, at);
      n->args.push_back(parse_not());
      return sealed(std::move(n));
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    const Token& at = cur();
    ExprPtr first = parse_math1();
    std::unique_ptr<Expr> cmp;
    while (true) {
      std::string op;
      if (cur().kind == Tok::Op && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                    cur().text == "<=" || cur().text == ">" || cur().text == ">=")) {
        op = next().text;
      } else if (is_name("in")) {
        next();
        op = "in";
      } else if (is_name("not") && peek().kind == Tok::Name && peek().text == "in") {
        next();
        next();
        op = "notin";
      } else {
        break;
      }
      if (!cmp) {
        cmp = make<Expr>(Expr::Kind::Compare, at);
        cmp->args.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(parse_math1());
    }
    return cmp ? sealed(std::move(cmp)) : std::move(first);
  }
  ExprPtr parse_math1() {
    ExprPtr l = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& at = next();
      l = binary(Expr::Kind::Binary, at, std::move(l), parse_concat(), at.text);
    }
    return l;
  }
  ExprPtr parse_concat() {
    const Token& at = cur();
    ExprPtr first = parse_math2();
    if (!is_op("~")) return first;
    auto c = make<Expr>(Expr::Kind::Concat, at);
    c->args.push_back(std::move(first));
    while (is_op("~")) {
      next();
      c->args.push_back(parse_math2());
    }
    return sealed(std::move(c));
  }
  ExprPtr parse_math2() {
    ExprPtr l = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& at = next();
      l = binary(Expr::Kind::Binary, at, std::move(l), parse_pow(), at.text);
    }
    return l;
  }
  ExprPtr parse_pow() {
    ExprPtr l = parse_unary();
    while (is_op("**")) {
      const Token& at = next();
      l = binary(Expr::Kind::Binary, at, std::move(l), parse_unary(), "**");
    }
    return l;
  }
  ExprPtr parse_unary(bool with_filter = true) {
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      const Token& at = next();
      Nest guard(*this, at);
      node = make<Expr>(at.text == "-" ? Expr::Kind::Neg : Expr::Kind::Pos, at);
      node->args.push_back(parse_unary(false));
      node = sealed(std::move(node));
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    const Token& tk = cur();
    if (tk.kind == Tok::Name) {
      next();
      auto c = make<Expr>(Expr::Kind::Const, tk);
      if (tk.text == "true" || tk.text == "True") c->value = Value::boolean(true);
      else if (tk.text == "false" || tk.text == "False") c->value = Value::boolean(false);
      else if (tk.text == "none" || tk.text == "None") c->value = Value::none();
      else {
        c->kind = Expr::Kind::Name;
        c->name = tk.text;
      }
      return c;
    }
    if (tk.kind == Tok::String) {
      std::string s;
      while (cur().kind == Tok::String) s += next().text;  // adjacent literals concatenate
      auto c = make<Expr>(Expr::Kind::Const, tk);
      c->value = Value::string(std::move(s));
      return c;
    }
    if (tk.kind == Tok::Int || tk.kind == Tok::Float) {
      next();
      auto c = make<Expr>(Expr::Kind::Const, tk);
      c->value = tk.kind == Tok::Int ? Value::integer(tk.ival) : Value::number(tk.fval);
      return c;
    }
    if (is_op("(")) {
      next();
      if (is_op(")")) {
        next();
        auto t = make<Expr>(Expr::Kind::List, tk);
        t->is_tuple = true;
        return t;
      }
      ExprPtr e = parse_expression();
      if (is_op(",")) {
        auto t = make<Expr>(Expr::Kind::List, tk);
        t->is_tuple = true;
        t->args.push_back(std::move(e));
        while (is_op(",")) {
          next();
          if (is_op(")")) break;
          t->args.push_back(parse_expression());
        }
        e = sealed(std::move(t));
      }
      expect_op(")");
      return e;
    }
    if (is_op("[")) {
      next();
      auto l = make<Expr>(Expr::Kind::List, tk);
      while (!is_op("]")) {
        l->args.push_back(parse_expression());
        if (!is_op(",")) break;
        next();
      }
      expect_op("]");
      return sealed(std::move(l));
    }
    if (is_op("{")) {
      next();
      auto d = make<Expr>(Expr::Kind::Dict, tk);
      while (!is_op("}")) {
        d->args.push_back(parse_expression());
        expect_op(":");
        d->args.push_back(parse_expression());
        if (!is_op(",")) break;
        next();
      }
      expect_op("}");
      return sealed(std::move(d));
    }
    fail(tk, "unexpected " + describe(tk) + " in expression");
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".")) {
        const Token& at = next();
        if (cur().kind == Tok::Int) {
          auto g = make<Expr>(Expr::Kind::Getitem, at);
          auto idx = make<Expr>(Expr::Kind::Const, cur());
          idx->value = Value::integer(next().ival);
          g->args.push_back(std::move(node));
          g->args.push_back(std::move(idx));
          node = sealed(std::move(g));
        } else {
          auto g = make<Expr>(Expr::Kind::Getattr, at);
          g->name = expect_name();
          g->args.push_back(std::move(node));
          node = sealed(std::move(g));
        }
      } else if (is_op("[")) {
        node = parse_subscript(std::move(node));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }

  ExprPtr parse_subscript(ExprPtr obj) {
    const Token& at = next();  // '['
    ExprPtr parts[3];
    int n = 0;
    bool slice = false;
    while (true) {
      if (is_op(":")) {
        slice = true;
        next();
        if (++n > 2) fail(at, "invalid slice");
        continue;
      }
      if (is_op("]")) break;
      if (parts[n]) fail(cur(), "expected ':' or ']' in subscript, got " + describe(cur()));
      parts[n] = parse_expression();
    }
    expect_op("]");
    if (!slice) {
      if (!parts[0]) fail(at, "empty subscript");
      auto g = make<Expr>(Expr::Kind::Getitem, at);
      g->args.push_back(std::move(obj));
      g->args.push_back(std::move(parts[0]));
      return sealed(std::move(g));
    }
    auto s = make<Expr>(Expr::Kind::Slice, at);
    s->args.push_back(std::move(obj));
    for (auto& p : parts) s->args.push_back(std::move(p));
    return sealed(std::move(s));
  }

  // Arguments of a call, filter or test: positional then keyword (name=value).
  void parse_args(Expr& into) {
    expect_op("(");
    while (!is_op(")")) {
      if (is_op("*") || is_op("**")) fail(cur(), "unsupported construct: *args / **kwargs in call");
      if (cur().kind == Tok::Name && peek().kind == Tok::Op && peek().text == "=") {
        std::string key = next().text;
        next();
        into.kwargs.emplace_back(key, parse_expression());
      } else {
        if (!into.kwargs.empty()) fail(cur(), "positional argument after keyword argument");
        into.args.push_back(parse_expression());
      }
      if (!is_op(",")) break;
      next();
    }
    expect_op(")");
  }

  ExprPtr parse_call(ExprPtr callee) {
    auto c = make<Expr>(Expr::Kind::Call, cur());
    c->args.push_back(std::move(callee));
    parse_args(*c);
    return sealed(std::move(c));
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (is_op("|")) {
        next();
        const Token& nt = cur();
        std::string name = expect_name();
        if (!is_known_filter(name)) fail(nt, "unsupported filter '" + name + "'");
        auto f = make<Expr>(Expr::Kind::Filter, nt);
        f->name = name;
        f->args.push_back(std::move(node));
        if (is_op("(")) parse_args(*f);
        node = sealed(std::move(f));
      } else if (is_name("is")) {
        next();
        bool neg = false;
        if (is_name("not")) {
          next();
          neg = true;
        }
        const Token& nt = cur();
        std::string name = expect_name();
        if (!is_known_test(name)) fail(nt, "unsupported test '" + name + "'");
        auto t = make<Expr>(Expr::Kind::Test, nt);
        t->name = name;
        t->negated = neg;
        t->args.push_back(std::move(node));
        if (is_op("(")) {
          parse_args(*t);
        } else if ((cur().kind == Tok::Name && cur().text != "else" && cur().text != "or" && cur().text != "and") ||
                   cur().kind == Tok::String || cur().kind == Tok::Int || cur().kind == Tok::Float || is_op("[") ||
                   is_op("{")) {
          // `x is divisibleby 3`, `x is sameas none`: one argument without parentheses.
          ExprPtr arg = parse_primary();
          arg = parse_postfix(std::move(arg));
          t->args.push_back(std::move(arg));
        }
        node = sealed(std::move(t));
      } else if (is_op("(")) {
        node = parse_call(std::move(node));
      } else {
        return node;
      }
    }
  }
};

}  // namespace

Body parse_template(const std::string& source) { return Parser(tokenize(source)).parse_all(); }

}  // namespace greta::jinja
