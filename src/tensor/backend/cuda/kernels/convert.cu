// convert.cu: dtype conversions (the `cast` primitive) and the bf16 kernels the mixed-precision
// forward needs beside cuBLAS: the embedding gather from a bf16 table.
//
// Compiled per float dtype like every file (T = float or double, common.cuh); bf16 is handled as
// its 16-bit pattern (unsigned short) with bit arithmetic, since NVRTC has no cuda_bf16.h here.
// Mapping: cast kernels are grid-stride loops, one thread per element (256-thread blocks);
// embedding_bf16 runs one 256-thread block per id, striding over the row.
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
