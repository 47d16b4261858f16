// The backends' environment table (backend_env.h): defaults when nothing is set, each switch
// reaching its option, and bad values refused with the variable's name.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "backend/backend_env.h"
#include "core/error.h"

namespace greta {
namespace {

// Sets one variable for the lifetime of the object, then unsets it.
struct EnvVar {
  std::string name;
  EnvVar(std::string n, const char* v) : name(std::move(n)) { setenv(name.c_str(), v, 1); }
  ~EnvVar() { unsetenv(name.c_str()); }
};

TEST(BackendEnv, DefaultsWhenUnset) {
  for (const EnvSwitch& s : backend_env_switches()) unsetenv(s.name);
  const BackendOptions o = backend_options_from_env();
  const BackendOptions d;
  EXPECT_EQ(o.cuda.graphs, d.cuda.graphs);
  EXPECT_EQ(o.cuda.gemv_max_tokens, d.cuda.gemv_max_tokens);
  EXPECT_EQ(o.cuda.split_k, d.cuda.split_k);
  EXPECT_EQ(o.cuda.int8_gemm_max_tokens, -1);  // each format's measured limit, chosen by the backend
  EXPECT_EQ(o.cpu.exact_matmul, d.cpu.exact_matmul);
  EXPECT_TRUE(o.cpu.dump_dir.empty());
}

TEST(BackendEnv, EachSwitchSetsItsOption) {
  {
    EnvVar a("GRETA_CUDA_GRAPHS", "0"), b("GRETA_CUDA_GEMV_MAX_TOKENS", "7"), c("GRETA_CPU_EXACT_MATMUL", "1"),
        d("GRETA_DUMP_DIR", "/tmp/x"), e("GRETA_CUDA_SPLITK", "0"), f("GRETA_CUDA_GEMV_PIPE", "0"),
        g("GRETA_CUDA_PREFILL_TC", "0"), h("GRETA_CUDA_ATTN_LAST_MERGE", "0"), i("GRETA_CUDA_STEP_PROFILE", "1"),
        j("GRETA_CUDA_MOE_GEMM_MIN_TOKENS", "17"), k("GRETA_CUDA_INT8_ACTS", "0"),
        l("GRETA_CUDA_INT8_GEMM_MAX_TOKENS", "0"), m("GRETA_CUDA_PERSISTENT_DECODE", "1"),
        n("GRETA_CUDA_PERSISTENT_CLAIMED", "12"), q("GRETA_CUDA_PACKED_SPLITK_MIN_K", "8192");
    const BackendOptions o = backend_options_from_env();
    EXPECT_FALSE(o.cuda.graphs);
    EXPECT_EQ(o.cuda.gemv_max_tokens, 7);
    EXPECT_TRUE(o.cpu.exact_matmul);
    EXPECT_EQ(o.cpu.dump_dir, "/tmp/x");
    EXPECT_FALSE(o.cuda.split_k);
    EXPECT_FALSE(o.cuda.gemv_pipeline);
    EXPECT_FALSE(o.cuda.prefill_tc);
    EXPECT_FALSE(o.cuda.attn_last_merge);
    EXPECT_TRUE(o.cuda.step_profile);
    EXPECT_EQ(o.cuda.moe_gemm_min_tokens, 17);
    EXPECT_FALSE(o.cuda.packed_int8_acts);
    EXPECT_EQ(o.cuda.int8_gemm_max_tokens, 0);  // off for every format, Q8_0 included
    EXPECT_TRUE(o.cuda.persistent_decode);
    EXPECT_EQ(o.cuda.persistent_claimed, 12);
    EXPECT_EQ(o.cuda.packed_split_k_min, 8192);
  }
  EXPECT_TRUE(backend_options_from_env().cuda.graphs);  // unset again: the default
}

TEST(BackendEnv, BadValuesNameTheVariable) {
  for (auto [name, value] :
       {std::pair{"GRETA_CUDA_GRAPHS", "yes"}, std::pair{"GRETA_CUDA_GEMV_MAX_TOKENS", "33"},
        std::pair{"GRETA_CUDA_GEMV_MAX_TOKENS", "abc"}, std::pair{"GRETA_CUDA_GEMV_MAX_TOKENS", "0"},
        std::pair{"GRETA_CUDA_INT8_GEMM_MAX_TOKENS", "-1"}, std::pair{"GRETA_CUDA_INT8_GEMM_MAX_TOKENS", "65"},
        std::pair{"GRETA_CUDA_PERSISTENT_CLAIMED", "51"}, std::pair{"GRETA_CUDA_PERSISTENT_CLAIMED", "-2"},
        std::pair{"GRETA_CUDA_PACKED_SPLITK_MIN_K", "-1"}}) {
    EnvVar v(name, value);
    try {
      backend_options_from_env();
      ADD_FAILURE() << name << "=" << value << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
}

TEST(BackendEnv, HelpListsEverySwitch) {
  const std::string help = backend_env_help();
  for (const EnvSwitch& s : backend_env_switches()) {
    EXPECT_EQ(std::string(s.name).rfind("GRETA_", 0), 0u) << s.name;
    EXPECT_NE(help.find(s.name), std::string::npos) << s.name;
  }
}

}  // namespace
}  // namespace greta
