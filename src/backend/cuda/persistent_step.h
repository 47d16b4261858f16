// The persistent decode step: a decode step's decoder layers and output projection as one
// cooperative launch (persistent_step.cu; docs/notes/decode-step.md, "The persistent step").
//
// The step is a list of phases run in order by one block per SM: GEMVs (rows of up to three
// weight matrices over the step's tokens) and attention. Each block's warps stream their share of
// every GEMV phase's weight rows into shared memory with bulk copies, ahead through the phases:
// weights never depend on the activations, so a block waiting for the previous phase keeps its
// copies of the next phase's weights in flight. Only the arithmetic of a phase waits, for the
// previous phase's done count to reach the number of blocks. Optionally the last units of each
// GEMV phase are not shared out but claimed at run time by warps that have finished their share,
// and read straight from global memory (PersistentStepArgs::claimed).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "backend/cuda/cuda_ops.h"

namespace greta::cuda {

constexpr int kPersistentMaxTokens = 8;    // decode tokens a step (one per sequence)
constexpr int kPersistentMaxSegments = 3;  // weight matrices a GEMV phase reads (q, k, v)

enum class PersistentPhaseKind : int32_t { kGemv = 0, kAttention = 1 };
// How a GEMV phase's weights lie in device memory (quant_planes.h for the packed formats). The
// packed ones take the input quantized to int8 per 32 values, as the graph path's GEMV does.
enum class PersistentWeights : int32_t {
  kBf16 = 0,  // [rows][k] bf16
  kQ8_0 = 1,  // planes: int8 quants [rows][k], fp16 scales [rows][k / 32]
  kQ4_0 = 2,  // planes: nibbles [rows][k / 2] (quant_planes.h order), fp16 scales [rows][k / 32]
};
// How a GEMV phase's input is made from `in`.
enum class PersistentInput : int32_t {
  kPlain = 0,   // in [n][k] as it is
  kNormed = 1,  // rms_norm(in [n][k]) * norm: every block stages in * norm, its outputs take 1/rms
};

// One phase. Lives in device memory (a table per model and scratch layout), never in launch
// arguments, so it may hold floats and padding.
struct PersistentPhase {
  PersistentPhaseKind kind = PersistentPhaseKind::kGemv;
  PersistentInput input = PersistentInput::kPlain;
  const bf16* in = nullptr;     // GEMV: [n][in_stride]; attention: q | k | v [n][in_stride]
  int64_t in_stride = 0;        // elements between tokens' rows
  int32_t k = 0;                // GEMV: the input's width (k % 8 == 0; packed weights: k % 32 == 0)
  float eps = 0.f;              // kNormed: the RMSNorm epsilon
  const float* norm = nullptr;  // kNormed: [k]
  PersistentWeights weights = PersistentWeights::kBf16;  // every segment's format
  // Segment s: [rows[s], k]; packed: its planes (quant_planes.h), the scales after the quants.
  const void* w[kPersistentMaxSegments] = {};
  int32_t rows[kPersistentMaxSegments] = {};  // 0: no segment
  bf16* out = nullptr;                        // [n][out_stride]; segment s's rows at columns sum(rows[< s]) on
  int64_t out_stride = 0;
  int32_t residual = 0;  // 1: out += the product (out is the residual stream, one segment)
  // 1: segments 0 and 1 are gate and up (rows[0] rows each), taken a pair (gate row u, up row u)
  // at a time by one warp, which writes silu(g) u to out column u.
  int32_t gated = 0;
  // Attention: heads, RoPE and the layer's cache; q, k, v from `in`, the heads' outputs to out.
  int32_t n_heads = 0;
  float scale = 0.f;  // score scale (1/sqrt(head_dim) or the model's)
  KVLayerDev kv;
};

// Values a block traces per phase (PersistentStepArgs::trace).
constexpr int kPersistentTraceFields = 4;

// Launch arguments: plain values compared by their bytes (step_graph.h), so no floats.
struct PersistentStepArgs {
  const PersistentPhase* phases = nullptr;  // [n_phases]
  const float* inv_freq = nullptr;          // RoPE [head_dim / 2]
  int32_t* counters = nullptr;              // [persistent_step_counters], zeroed by the launcher
  float* partials = nullptr;                // [n_tokens][n_heads][max_parts][head_dim + 2] attention partitions
  // Null, or [n_phases][blocks][kPersistentTraceFields]: ns summed over steps of each block's wait
  // before the phase, its staging of the phase's input and its work, then the SM it ran on in the
  // last step (CudaOptions::step_profile; persistent_trace.h).
  int64_t* trace = nullptr;
  int32_t n_phases = 0;
  int32_t n_tokens = 0;
  int32_t neox = 0;        // RoPE pairs (i, i + hd/2) rather than (2i, 2i + 1)
  int32_t part_len = 0;    // attention: positions a partition
  int32_t max_parts = 0;   // partitions of the longest context
  int32_t slots = 0;       // ring slots a warp
  int32_t claimed = 0;     // percent (0..50) of each GEMV phase's units, its last ones, claimed at run time
  int32_t n_kv_heads = 0;  // the attention merge counts' kv heads
  int32_t max_k = 0;       // widest GEMV input: the shared-memory input is [n_tokens][max_k]
  // Shared memory of an attention item or a residual phase (persistent_step_scratch_floats).
  int32_t scratch_floats = 0;
  DevStep st;
};

// Head sizes the attention phase takes (64, 96, 128).
bool persistent_step_head_dim_supported(int head_dim);
// Scratch shared memory in floats: an attention item's for q heads of `group` per kv head of
// head_dim values, or the residual rows a block of `blocks` adds to in a residual phase of
// residual_rows rows, for n_tokens tokens.
int persistent_step_scratch_floats(int group, int head_dim, int n_tokens, int residual_rows, int blocks);
// The residual values (tokens x a block's rows) a residual phase of residual_rows rows stages,
// and the most it can.
int persistent_step_residual_floats(int n_tokens, int residual_rows, int blocks);
int persistent_step_max_residual_floats();
// Ring slots a warp gets in smem_limit bytes for n tokens of inputs up to max_k wide, or 0 when
// fewer than two fit; `packed`: some phase has packed weights (the ring's slots hold their scales too).
int persistent_step_slots(int n_tokens, int max_k, int scratch_floats, bool packed, size_t smem_limit);
// Dynamic shared memory of a block.
size_t persistent_step_smem(int n_tokens, int max_k, int scratch_floats, bool packed, int slots);
// Counters the step needs: a done count and a claim count per phase, an attention merge count
// per (token, kv head).
size_t persistent_step_counters(int n_phases, int n_tokens, int n_kv_heads);
// Blocks of the launch: one per SM when its shared memory fits, else 0.
int persistent_step_blocks(const PersistentStepArgs& a, bool packed, int n_sms);

// Zeroes the counters and launches the step with `blocks` co-resident blocks (cooperative).
void persistent_step(PersistentStepArgs a, int blocks, bool packed, cudaStream_t s);

}  // namespace greta::cuda
