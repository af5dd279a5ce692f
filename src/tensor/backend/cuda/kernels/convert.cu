// convert.cu: dtype conversions (the `cast` primitive) and the bf16 kernels the mixed-precision
// forward needs beside cuBLAS: the embedding gather from a bf16 table, and the decode GEMV.
//
// Compiled per float dtype like every file (T = float or double, common.cuh); bf16 is handled as
// its 16-bit pattern (unsigned short) with bit arithmetic, since NVRTC has no cuda_bf16.h here.
// Mapping: cast kernels are grid-stride loops, one thread per element (256-thread blocks);
// embedding_bf16 runs one 256-thread block per id, striding over the row; gemv_bf16_m<M> runs
// 1-8 warps per output column (8 warps per block), see its comment.
// Layouts: x, out [n]; table [V, dim] bf16; ids [n] i32; out [n, dim] T.
// Rounding equals tensor/dtype.ts: nearest even from the exact value; a double is first rounded
// to odd into float (which makes the two steps one correct rounding); NaN becomes 0x7fc0 (sign
// kept).
#include "common.cuh"

typedef unsigned short bf16_t;

__device__ __forceinline__ float bf16_to_float(bf16_t b) { return __uint_as_float(((unsigned)b) << 16); }

/** f32 bits -> bf16 bits, round to nearest even; NaN made quiet. */
__device__ __forceinline__ bf16_t float_to_bf16(float f) {
  const unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x0040u);
  return (bf16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/** double -> float rounded to odd: truncate, then set the last bit if anything was cut off. */
__device__ __forceinline__ float double_to_float_odd(double d) {
  const float t = __double2float_rz(d);
  if (d != d || (double)t == d) return t;
  return __uint_as_float(__float_as_uint(t) | 1u);
}

__device__ __forceinline__ bf16_t to_bf16(float x) { return float_to_bf16(x); }
__device__ __forceinline__ bf16_t to_bf16(double x) { return float_to_bf16(double_to_float_odd(x)); }

/** out = bf16(x), T -> bf16. */
KERNEL(cast_to_bf16)(const T* x, bf16_t* out, i64 n) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) out[i] = to_bf16(x[i]);
}

/** out = x widened, bf16 -> T (exact). */
KERNEL(cast_from_bf16)(const bf16_t* x, T* out, i64 n) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) out[i] = (T)bf16_to_float(x[i]);
}

/** out = (T) x from f32 (exact widening for double; a copy for float). */
KERNEL(cast_from_f32)(const float* x, T* out, i64 n) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) out[i] = (T)x[i];
}

/** out = (float) x, T -> f32 (nearest even for double: the C conversion's default mode). */
KERNEL(cast_to_f32)(const T* x, float* out, i64 n) {
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) out[i] = (float)x[i];
}

/** out[i, :] = table[ids[i], :] widened from bf16; a bad id is reported as in nn.cu's embedding. */
KERNEL(embedding_bf16)(const bf16_t* table, const int* ids, T* out, i64 dim, i64 V, int* err) {
  const i64 i = blockIdx.x;
  const int id = ids[i];
  if (id < 0 || id >= V) {
    if (threadIdx.x == 0) report_error(err, 1, i, id);
    return;
  }
  for (i64 j = threadIdx.x; j < dim; j += blockDim.x) out[i * dim + j] = (T)bf16_to_float(table[(i64)id * dim + j]);
}

/** 8 bf16 packed in 16 bytes, widened into f[0..8). */
__device__ __forceinline__ void unpack8(uint4 v, float* f) {
  const unsigned u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; i++) {
    f[2 * i] = __uint_as_float(u[i] << 16);
    f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
  }
}

/**
 * Decode GEMV: y[m, n] (f32) = alpha * x[m, k] . w[n, k]^T + beta * y, x and w bf16, fp32
 * accumulation, for the few rows (m <= M <= 16) of a decode step. cuBLAS's m = 1 kernels stream
 * the weights at ~56% of copy bandwidth; here `split` warps own output column j, i.e. row j of w
 * (k contiguous), and their lanes read it in 16-byte chunks (8 bf16) strided by the warp, so every
 * weight byte is read once with full 512-byte warp transactions; the m rows of x (a few KB, hot
 * in L1/L2) are read beside it. Lane partial sums are reduced with shuffles.
 * The host dispatches here only when k % 8 == 0 and x, w are 16-byte aligned (else cuBLAS).
 * Summation order differs from cuBLAS's, so results agree to fp32 rounding, not bit for bit.
 */
template <int M>
__device__ __forceinline__ void gemv_bf16_body(const bf16_t* x, const bf16_t* w, float* y, i64 m, i64 n, i64 k,
                                               float alpha, float beta, int split) {
  // 8 warps per block; `split` (1, 2, 4 or 8) warps share one column, each taking every
  // split-th 32-chunk stretch of k, so narrow matrices (n of a few thousand) still put enough
  // loads in flight on every SM. Partial sums meet in shared memory.
  __shared__ float part[8][M];
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  const i64 j = (i64)blockIdx.x * (8 / split) + wid / split;
  const int piece = wid % split;
  float acc[M];
#pragma unroll
  for (int r = 0; r < M; r++) acc[r] = 0.f;
  const i64 k8 = k >> 3;
  if (j < n) {
    const uint4* wr = (const uint4*)(w + j * k);
    const uint4* xv = (const uint4*)x;
#pragma unroll 4
    for (i64 c = piece * 32 + lane; c < k8; c += 32 * split) {
      float wf[8];
      unpack8(__ldg(wr + c), wf);
#pragma unroll
      for (int r = 0; r < M; r++) {
        if (r < m) {
          float xf[8];
          unpack8(__ldg(xv + r * k8 + c), xf);
#pragma unroll
          for (int e = 0; e < 8; e++) acc[r] = fmaf(wf[e], xf[e], acc[r]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < M; r++) {
    const float v = warp_sum(acc[r]);
    if (lane == 0) part[wid][r] = v;
  }
  __syncthreads();
  if (piece == 0 && lane == 0 && j < n) {
#pragma unroll
    for (int r = 0; r < M; r++) {
      if (r < m) {
        float v = 0.f;
        for (int p = 0; p < split; p++) v += part[wid + p][r];
        float* o = y + r * n + j;
        *o = beta == 0.f ? alpha * v : alpha * v + beta * *o;
      }
    }
  }
}

KERNEL(gemv_bf16_m1)(const bf16_t* x, const bf16_t* w, float* y, i64 m, i64 n, i64 k, float alpha, float beta, int split) { gemv_bf16_body<1>(x, w, y, m, n, k, alpha, beta, split); }
KERNEL(gemv_bf16_m2)(const bf16_t* x, const bf16_t* w, float* y, i64 m, i64 n, i64 k, float alpha, float beta, int split) { gemv_bf16_body<2>(x, w, y, m, n, k, alpha, beta, split); }
KERNEL(gemv_bf16_m4)(const bf16_t* x, const bf16_t* w, float* y, i64 m, i64 n, i64 k, float alpha, float beta, int split) { gemv_bf16_body<4>(x, w, y, m, n, k, alpha, beta, split); }
KERNEL(gemv_bf16_m8)(const bf16_t* x, const bf16_t* w, float* y, i64 m, i64 n, i64 k, float alpha, float beta, int split) { gemv_bf16_body<8>(x, w, y, m, n, k, alpha, beta, split); }
KERNEL(gemv_bf16_m16)(const bf16_t* x, const bf16_t* w, float* y, i64 m, i64 n, i64 k, float alpha, float beta, int split) { gemv_bf16_body<16>(x, w, y, m, n, k, alpha, beta, split); }
