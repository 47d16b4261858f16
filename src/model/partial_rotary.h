// Partial rotary embedding (Phi-4-mini: partial_rotary_factor 0.75, RoPE on 96 of 128 dims).
//
// transformers and llama.cpp (NeoX pairing) rotate dims i and i + rope_dim/2 for i < rope_dim/2
// and pass dims >= rope_dim through; greta's RoPE rotates i and i + head_dim/2 over the whole
// head. The load reorders each head's q and k rows so the two agree: rotated pair i stays at
// (i, i + head_dim/2), the pass-through dims fill the slots i in [rope_dim/2, head_dim/2) and
// their partners, and those slots get inv_freq 0 (cos 1, sin 0: left as they are). q and k meet
// only in the dot product q.k, which the same reordering of both leaves unchanged; v and the
// output projection are untouched.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace greta {

// order[j] = the checkpoint's row (within one head) that becomes row j.
std::vector<int> partial_rotary_order(int head_dim, int rope_dim);

// LongRoPE's attention factor s scales cos and sin, so only the rotated dims of q and k:
// q.k = s^2 q_rot.k_rot + q_pass.k_pass. greta multiplies the whole score by s^2
// (model/longrope.h), so q's pass-through rows are scaled by 1/s^2 at load: `bytes` holds
// n_heads * head_dim rows of `cols` values of `type`, reordered as above. Float types scale each
// value, block types their blocks' scales (and mins), which scale every value of the block.
// Throws greta::Error naming `name` for a type without such scales (FP8, int4).
void scale_pass_through_rows(uint8_t* bytes, DType type, int64_t n_rows, int64_t cols, int head_dim, int rope_dim,
                             float c, const std::string& name);

}  // namespace greta
