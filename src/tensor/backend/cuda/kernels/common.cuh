// common.cuh: what every npr kernel file includes first.
//
// Each kernels/*.cu file is compiled twice, once per float dtype of the Backend contract: with
// -DNPR_T=float -DNPR_SFX=f32 and with -DNPR_T=double -DNPR_SFX=f64 (compile.ts does this, for
// NVRTC and nvcc alike). `T` is that element type and KERNEL(name) declares the extern "C" entry
// point `name_f32` / `name_f64`, so the host looks kernels up by plain names, no C++ mangling.
// No system headers: NVRTC has none, and everything needed is a builtin.
//
// Reductions accumulate in double (type ACC) even for f32 data: row lengths reach the vocabulary
// (~150k) and the conformance suite compares against float64 references; the kernels that use
// it are memory-bound, so the wider arithmetic costs little.
#pragma once

#ifndef NPR_T
#define NPR_T float
#define NPR_SFX f32
#endif

typedef NPR_T T;
typedef double ACC;
typedef long long i64;

#define NPR_CAT2(a, b) a##_##b
#define NPR_CAT(a, b) NPR_CAT2(a, b)
#define KERNEL(name) extern "C" __global__ void NPR_CAT(name, NPR_SFX)

/** Largest rank of a strided view after collapsing mergeable dimensions (host checks it). */
#define MAX_RANK 8

/** Shape and two stride vectors of a broadcast/strided elementwise op, passed by value. */
struct Strided {
  i64 rank;
  i64 shape[MAX_RANK];
  i64 sa[MAX_RANK];
  i64 sb[MAX_RANK];
};

// Overloads so one body serves float and double without the C++ math headers.
__device__ __forceinline__ float t_exp(float x) { return expf(x); }
__device__ __forceinline__ double t_exp(double x) { return exp(x); }
__device__ __forceinline__ float t_log(float x) { return logf(x); }
__device__ __forceinline__ double t_log(double x) { return log(x); }
__device__ __forceinline__ float t_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double t_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float t_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double t_pow(double x, double y) { return pow(x, y); }
__device__ __forceinline__ float t_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double t_max(double a, double b) { return fmax(a, b); }

template <typename X> __device__ __forceinline__ X t_inf();
template <> __device__ __forceinline__ float t_inf<float>() { return __int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double t_inf<double>() { return __longlong_as_double(0x7ff0000000000000LL); }

/** Logistic sigmoid without overflow for large |x| (same form as the CPU reference). */
__device__ __forceinline__ T t_sigmoid(T x) {
  if (x >= T(0)) return T(1) / (T(1) + t_exp(-x));
  T e = t_exp(x);
  return e / (T(1) + e);
}

template <typename X> __device__ __forceinline__ X warp_sum(X v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename X> __device__ __forceinline__ X warp_max(X v) {
  for (int o = 16; o > 0; o >>= 1) v = t_max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/**
 * Sum over the block, returned to every thread. `sh` is 32 slots of shared scratch; the leading
 * barrier lets a block call this several times in a row with the same scratch.
 */
template <typename X> __device__ __forceinline__ X block_sum(X v, X* sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : X(0);
  return warp_sum(v);
}

template <typename X> __device__ __forceinline__ X block_max(X v, X* sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : -t_inf<X>();
  return warp_max(v);
}

/**
 * Records the first bad index a kernel met (an id or target out of range) in the backend's
 * status word err[0..2] = {code, index, value}; the host reads it at its next synchronizing call
 * and throws there, naming the op. Later errors keep the first one.
 */
__device__ __forceinline__ void report_error(int* err, int code, i64 index, int value) {
  if (atomicCAS(err, 0, code) == 0) {
    err[1] = (int)index;
    err[2] = value;
  }
}

// Programmatic dependent launch (sm_90+; no-ops before it and on a plain launch): a kernel
// launched with PDL may start while its predecessor drains; pdl_wait() blocks until the
// predecessor has finished and its writes are visible, pdl_launch_dependents() lets the next
// kernel be scheduled once every block got here (or exited). Before the wait a kernel may only
// read data no earlier kernel of the step writes (weights).
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/**
 * The small kernels' PDL entry: wait for the predecessor, then let the next kernel be scheduled
 * (scheduling it before the wait measured slower: dev/LOG.md, "PDL order").
 */
__device__ __forceinline__ void pdl_enter() {
  pdl_wait();
  pdl_launch_dependents();
}
