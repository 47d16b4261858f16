// The synthetic model shapes: each a real model's hyper-parameters, consistent with themselves.
#include <gtest/gtest.h>

#include "core/error.h"
#include "model/synthetic.h"

namespace greta {
namespace {

TEST(SyntheticShapes, EveryShapeIsConsistent) {
  for (const std::string& name : synthetic_names()) {
    const ModelConfig c = synthetic_config(name);
    EXPECT_GT(c.n_layers, 0) << name;
    EXPECT_EQ(c.n_heads % c.n_kv_heads, 0) << name;
    EXPECT_GT(c.head_dim, 0) << name;
    EXPECT_EQ(c.head_dim % 2, 0) << name;
  }
  EXPECT_THROW(synthetic_config("llama-9"), Error);
}

TEST(SyntheticShapes, Llama32OneBIsTiedWithGroupedQueries) {
  // dim 2048, 16 layers, 32 query / 8 kv heads, ffn 8192, vocab 128256, tied embeddings.
  const ModelConfig c = synthetic_config("llama-3.2-1b");
  EXPECT_EQ(c.dim, 2048);
  EXPECT_EQ(c.n_layers, 16);
  EXPECT_EQ(c.n_heads, 32);
  EXPECT_EQ(c.n_kv_heads, 8);
  EXPECT_EQ(c.ffn_dim, 8192);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_FALSE(synthetic_config("llama-3-8b").tied_embeddings);
}

}  // namespace
}  // namespace greta
