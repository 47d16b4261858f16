// Host emulation of the CUDA primitives sample.cu uses: one OS thread per CUDA thread, a
// std::barrier per block and per warp. Warp intrinsics deadlock unless all 32 lanes call them.
#pragma once
#include <atomic>
#include <barrier>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __restrict__
#define __shared__ static
struct Dim { unsigned x = 0, y = 0, z = 0; };
inline thread_local Dim threadIdx, blockIdx;
inline Dim blockDim, gridDim;
struct __nv_bfloat16 { uint16_t x; };
inline float __bfloat162float(__nv_bfloat16 b) { return std::bit_cast<float>(uint32_t(b.x) << 16); }
inline unsigned __float_as_uint(float f) { return std::bit_cast<unsigned>(f); }
inline float __uint_as_float(unsigned u) { return std::bit_cast<float>(u); }
inline unsigned long long __float2ull_rn(float f) { return (unsigned long long)std::nearbyint(double(f)); }
inline unsigned long long __double2ull_rn(double d) { return (unsigned long long)std::nearbyint(d); }
inline int __ffs(unsigned x) { return __builtin_ffs(int(x)); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
using std::isnan; using std::isinf; using std::exp; using std::log; using std::ceil;
inline std::barrier<>* g_block;
struct WarpX { std::barrier<> bar{32}; uint64_t slot[32]; };
inline WarpX* g_warps;
inline void __syncthreads() { g_block->arrive_and_wait(); }
inline int lane_() { return threadIdx.x & 31; }
inline WarpX& wx() { return g_warps[threadIdx.x >> 5]; }
template <class T> uint64_t bits_(T v) { uint64_t b = 0; std::memcpy(&b, &v, sizeof(T)); return b; }
template <class T> T from_(uint64_t b) { T v; std::memcpy(&v, &b, sizeof(T)); return v; }
template <class T> T exch_(T v, int src) {
  WarpX& w = wx(); w.slot[lane_()] = bits_(v); w.bar.arrive_and_wait();
  T r = from_<T>(w.slot[src]); w.bar.arrive_and_wait(); return r;
}
template <class T> T __shfl_sync(unsigned, T v, int src) { return exch_(v, src & 31); }
template <class T> T __shfl_xor_sync(unsigned, T v, int m) { return exch_(v, lane_() ^ m); }
template <class T> T __shfl_up_sync(unsigned, T v, unsigned d) { int s = lane_() - int(d); return exch_(v, s < 0 ? lane_() : s); }
inline unsigned __ballot_sync(unsigned, bool p) {
  WarpX& w = wx(); w.slot[lane_()] = p; w.bar.arrive_and_wait();
  unsigned b = 0; for (int i = 0; i < 32; ++i) b |= unsigned(w.slot[i] != 0) << i;
  w.bar.arrive_and_wait(); return b;
}
inline bool __all_sync(unsigned m, bool p) { return __ballot_sync(m, p) == 0xffffffffu; }
inline unsigned __match_any_sync(unsigned, int v) {
  WarpX& w = wx(); w.slot[lane_()] = uint64_t(uint32_t(v)); w.bar.arrive_and_wait();
  unsigned b = 0; for (int i = 0; i < 32; ++i) b |= unsigned(w.slot[i] == uint64_t(uint32_t(v))) << i;
  w.bar.arrive_and_wait(); return b;
}
inline unsigned atomicAdd(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return std::atomic_ref<unsigned long long>(*p).fetch_add(v);
}
using cudaStream_t = void*;
inline void emu_launch(unsigned grid, unsigned threads, const std::function<void()>& body) {
  blockDim.x = threads; gridDim.x = grid;
  for (unsigned b = 0; b < grid; ++b) {
    std::barrier<> blk(threads); g_block = &blk;
    std::vector<WarpX> warps(threads / 32); g_warps = warps.data();
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < threads; ++t) ts.emplace_back([&, t] { threadIdx.x = t; blockIdx.x = b; body(); });
    for (auto& t : ts) t.join();
  }
}
namespace greta::cuda {
using bf16 = __nv_bfloat16;
struct SampleRowParams { float temperature = 0; int top_k = 0; float top_p = 1; float min_p = 0; double u = 0; };
constexpr int64_t kSampleMaxVocab = int64_t(1) << 24;
[[noreturn]] inline void fail(const std::string& w, const char*, int) { throw std::runtime_error(w); }
}
#define GRETA_CUDA_LAUNCH_CHECK()
