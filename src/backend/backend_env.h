// The backends' environment switches: the one place the environment is read for them. Each
// row of the table names a variable, documents it and says which option it sets; the CLI
// starts from backend_options_from_env() and applies its own flags on top. Tests and
// benchmarks build BackendOptions directly instead.
#pragma once
#include <string>
#include <vector>

#include "backend/backend_options.h"

namespace greta {

struct EnvSwitch {
  const char* name;                                            // GRETA_...
  const char* values;                                          // what it takes, e.g. "0|1"
  const char* doc;                                             // what it does
  void (*apply)(BackendOptions& o, const std::string& value);  // throws greta::Error on a bad value
};

const std::vector<EnvSwitch>& backend_env_switches();

// Defaults with every variable of the table that is set (and non-empty) applied. Throws
// greta::Error naming the variable when a value is not one it takes.
BackendOptions backend_options_from_env();

// The table as text (name, values, what it does), for --help output and the README.
std::string backend_env_help();

}  // namespace greta
