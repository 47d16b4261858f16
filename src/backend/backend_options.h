// What each backend can be told, as plain structs. They are built in one place: the CLI starts
// from backend_options_from_env (backend_env.h, the one table of developer switches) and sets
// what its flags say; tests and benchmarks build them directly. No backend reads the
// environment itself.
#pragma once
#include <cstdint>
#include <string>

namespace greta {

// The element type of the paged KV cache, chosen at start (--kv-dtype; backend/kv_cache_dtype.h
// names and parses the values). Auto: the backend's own (CPU: F16, llama.cpp's default and the
// arithmetic the CPU attention follows; CUDA: BF16). FP8: e4m3 values with a float scale per
// (token, kv head) row, set when the row is written; about half the bytes of F16 / BF16, so twice
// the tokens in the same memory (docs/notes/kv-cache-fp8.md).
enum class KVCacheDType : uint8_t { Auto, F16, BF16, FP8 };

struct CpuOptions {
  int n_threads = 0;  // <= 0: std::thread::hardware_concurrency()
  // Quantized weights dequantized row by row and multiplied with float activations instead of
  // int8-quantized ones. Several times slower; for reference runs where activation quantization
  // error (~1/254 of each 32-value block's largest activation) must not enter the comparison.
  bool exact_matmul = false;
  // Non-empty: every op's output is written to this directory as a float32 .npy file, for
  // op-by-op comparison with llama.cpp (backend/cpu/dump.h, tools/compare_dumps.py).
  std::string dump_dir = {};
  // F16 (Auto), BF16 or FP8; attention reads each in place (no dequantized copy of the cache).
  KVCacheDType kv_dtype = KVCacheDType::Auto;
};

// Every choice below but fp8_tensor_cores and packed_int8_acts changes only the launch plan:
// results differ between settings by floating-point rounding at most. The defaults are the
// measured best (docs/notes/).
struct CudaOptions {
  int device = 0;                   // CUDA device index
  bool graphs = true;               // decode steps replayed as CUDA graphs (else launched one by one)
  int gemv_max_tokens = 16;         // steps of up to this many tokens use the streaming GEMV, more use
                                    // cuBLASLt (1..32; docs/notes/gemv.md); bf16 weights only
  int packed_gemv_max_tokens = 32;  // packed weights: the decode GEMV (with its fused epilogues) up
                                    // to this many tokens a step (1..32) ...
  int packed_gemm_max_tokens = 64;  // ... the batched packed GEMM (gemm_packed.h) up to this many
                                    // (0: none), and beyond, dequantized slices and cuBLASLt
                                    // (docs/notes/quantized-weights.md, "Batched steps")
  int int8_gemm_max_tokens = -1;    // GGUF 32-value block formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) with
                                    // int8 activations (packed_int8_acts): steps past the decode GEMV
                                    // up to this many tokens (0..64, all formats) on the int8
                                    // tensor-core GEMM (gemm_int8.h) instead of the packed GEMM or
                                    // the slices; -1: each format's measured best (Q8_0 64, the
                                    // others 0; docs/notes/quantized-weights.md)
  bool prefill_tc = true;           // prompt attention on tensor cores where the head size allows
  bool split_k = true;              // split-K for GEMVs with few row tiles and a long k (down projections)
  int packed_split_k_min = 0;       // GGUF formats, one token with int8 activations: residual GEMVs
                                    // with few row tiles and k of at least this split k over 2 blocks
                                    // (0: never; docs/notes/quantized-weights.md)
  bool gemv_pipeline = true;        // decode GEMVs software-pipeline their weight stream
  bool attn_last_merge = true;      // decode attention partitions merged by their last block (else by
                                    // a second kernel) when there are few of them
  bool step_profile = false;        // per-step device timing of decode steps, printed at destruction
  bool packed_weights = true;       // quantized weights (GGUF, FP8, int4) stay in their format on the
                                    // device (read and dequantized by the GEMV;
                                    // docs/notes/quantized-weights.md); false: converted to bf16 at upload
  bool packed_int8_acts = true;     // GGUF block formats: one-token GEMVs quantize x to
                                    // int8 per 32 values, as llama.cpp and the CPU backend do, and
                                    // take dp4a dot products (docs/notes/quantized-weights.md);
                                    // false: bf16 x on the mma path
  bool fp8_tensor_cores = true;     // FP8 weights with one scale a row: steps past the decode GEMV
                                    // quantize the activations to e4m3 per token and multiply on the
                                    // FP8 tensor cores (W8A8; docs/notes/fp8-gemm.md), which adds the
                                    // activations' rounding; false: W8A16 as the other formats
  int w8a8_gemm_max_tokens = 0;     // ... and up to this many tokens (0..64) on greta's own W8A8 kernel
                                    // (gemm_w8a8.h) instead of cuBLASLt's FP8 GEMM; off until it
                                    // measures faster (docs/notes/fp8-gemm.md)
  bool persistent_decode = false;   // decode steps of the plain Llama form with bf16, Q8_0 or Q4_0
                                    // weights and up to 8 tokens as one persistent launch
                                    // (persistent_step.h) instead of a graph of kernels; off until it
                                    // measures faster (docs/notes/decode-step.md)
  int persistent_claimed = 0;       // ... the last this many percent (0..50) of each GEMV phase's rows
                                    // are claimed at run time by warps done with their share, not
                                    // split by blocks (docs/notes/decode-step.md, "Claimed units")
  int moe_gemm_min_tokens = 256;    // mixture of experts: steps of at least this many tokens run
                                    // uncaptured, their experts as cuBLASLt GEMMs over the gathered
                                    // tokens (a wait a layer for the counts); smaller ones on the
                                    // device-routed expert kernels, captured (docs/notes/moe.md)
  // The kernels read a BF16 cache (Auto, BF16); F16 and FP8 are refused when the backend is made.
  KVCacheDType kv_dtype = KVCacheDType::Auto;
};

struct BackendOptions {
  std::string device = "cpu";  // "cpu", "cuda" or "cuda:N" (N overrides cuda.device)
  CpuOptions cpu;
  CudaOptions cuda;
};

}  // namespace greta
