// Syntax tree of a parsed template. One generic node per kind keeps the tree small; each kind
// documents which fields it uses. Every node carries the line:col it came from for errors.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "chat/jinja_value.h"

namespace greta::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    Const,     // value
    Name,      // name
    List,      // args = items (is_tuple for tuples)
    Dict,      // args = key0, val0, key1, val1, ...
    Getattr,   // args[0] = object, name = attribute
    Getitem,   // args[0] = object, args[1] = index
    Slice,     // args[0] = object, args[1..3] = start, stop, step (null when omitted)
    Call,      // args[0] = callee, args[1..] positional, kwargs
    Filter,    // args[0] = input, args[1..] positional, kwargs, name = filter
    Test,      // args[0] = input, args[1..] positional, name = test, negated
    Not,       // args[0]
    Neg,       // args[0]
    Pos,       // args[0]
    Binary,    // args[0] op args[1], name = "+", "-", "*", "/", "//", "%", "**"
    Concat,    // args joined with ~
    Compare,   // args[0] ops[0] args[1] ops[1] args[2] ... (chained like Python)
    And,       // args[0] and args[1]
    Or,        // args[0] or args[1]
    CondExpr,  // args[0] = condition, args[1] = then, args[2] = else (may be null)
  };
  Kind kind;
  int line = 0, col = 0;
  Value value;
  std::string name;
  std::vector<ExprPtr> args;
  std::vector<std::string> ops;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  bool negated = false;
  bool is_tuple = false;
  int height = 1;  // of this subtree: bounded by the parser (TemplateLimits::max_depth)
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  enum class Kind {
    Text,      // text
    Output,    // expr
    If,        // branches: (condition, body); the else branch has a null condition
    For,       // targets, expr = iterable, filter (may be null), body, else_body
    Set,       // targets (or target_ns + target_attr), expr
    SetBlock,  // targets[0], body (captured output)
    Break,
    Continue,
    Scope,  // body rendered in place ({% generation %} of transformers' AssistantTracker)
    Macro,  // name, params (with defaults, null when none), body
  };
  Kind kind;
  int line = 0, col = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;
  std::vector<std::string> targets;
  std::string target_ns, target_attr;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body, else_body;
  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> params;
};

}  // namespace greta::jinja
