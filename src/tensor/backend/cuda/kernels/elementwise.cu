// elementwise.cu: fill, strided copy, unary (+ backward), broadcast binary (min, max and the le
// mask included), select by mask (where), tensor-scalar, SwiGLU (+ backward), reduceSum and the
// fused AdamW step.
//
// Mapping: every kernel here is a grid-stride loop, one thread per output element, launched with
// 256-thread blocks and min(ceil(n / 256), 65535) blocks (index.ts `grid1d`). reduce_sum_rows is
// the exception: one 256-thread block per row. Pointers are the buffers' element 0 (offsets are
// applied by the host as address arithmetic); every array is row-major and contiguous unless a
// Strided descriptor says otherwise. Elementwise outputs may alias their inputs: each thread
// reads its element before writing the same index.
// Op codes follow the order of UNARY_OPS / BINARY_OPS / SCALAR_OPS in backend/types.ts.
#include "common.cuh"

#define GRID_STRIDE(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)blockDim.x * gridDim.x)

/** Offset of flat output index i in a view with `shape` and `strides` (row-major walk). */
__device__ __forceinline__ i64 strided_offset(i64 i, const i64* shape, const i64* strides, int rank) {
  i64 off = 0;
  for (int d = rank - 1; d >= 0; d--) {
    const i64 s = shape[d];
    off += (i % s) * strides[d];
    i /= s;
  }
  return off;
}

/** out[0:n] = value (f64 only: f32 and i32 fills are cuMemsetD32 bit patterns). */
KERNEL(fill)(T* out, i64 n, T value) {
  GRID_STRIDE(i, n) out[i] = value;
}

/**
 * out[dst + i] = src[src0 + offset(i)]: the region desc.shape of src at strides desc.sa,
 * gathered contiguously. The f32 instance also serves i32 buffers (a 4-byte move keeps the bits).
 */
KERNEL(copy)(const T* src, T* out, Strided desc, i64 n, i64 src0, i64 dst0) {
  GRID_STRIDE(i, n) out[dst0 + i] = src[src0 + strided_offset(i, desc.shape, desc.sa, (int)desc.rank)];
}

/** out = f(x); op: 0 neg, 1 exp, 2 log, 3 sqrt, 4 rsqrt, 5 silu, 6 square, 7 sigmoid. */
KERNEL(unary)(const T* x, T* out, i64 n, int op) {
  GRID_STRIDE(i, n) {
    const T v = x[i];
    T r;
    switch (op) {
      case 0: r = -v; break;
      case 1: r = t_exp(v); break;
      case 2: r = t_log(v); break;
      case 3: r = t_sqrt(v); break;
      case 4: r = T(1) / t_sqrt(v); break;  // not rsqrtf: its 2-ulp error fails the pointwise tolerance
      case 5: r = v * t_sigmoid(v); break;
      case 6: r = v * v; break;
      default: r = t_sigmoid(v); break;
    }
    out[i] = r;
  }
}

/** dx = dy f'(x); exp, sqrt, rsqrt and sigmoid read y = f(x) instead of x (the other may be any buffer). */
KERNEL(unary_backward)(const T* x, const T* y, const T* dy, T* dx, i64 n, int op) {
  GRID_STRIDE(i, n) {
    const T g = dy[i];
    T r;
    switch (op) {
      case 0: r = -g; break;
      case 1: r = g * y[i]; break;
      case 2: r = g / x[i]; break;
      case 3: r = (T(0.5) * g) / y[i]; break;
      case 4: { const T s = y[i]; r = T(-0.5) * g * s * s * s; break; }
      case 5: { const T v = x[i], s = t_sigmoid(v); r = g * s * (T(1) + v * (T(1) - s)); break; }
      case 6: r = T(2) * x[i] * g; break;
      default: { const T s = y[i]; r = g * s * (T(1) - s); break; }
    }
    dx[i] = r;
  }
}

/**
 * out[i] = a[offset_a(i)] op b[offset_b(i)], broadcasting through zero strides; op: 0 add, 1 sub,
 * 2 mul, 3 div, 4 min, 5 max, 6 le. min/max return a on a tie, and NaN when either operand is NaN
 * (`u != u` keeps a NaN a; a NaN b fails the comparison and is returned), as the CPU reference
 * does: not fminf/fmaxf, which drop NaNs. le is 1 where u <= v, else 0 (NaN included).
 */
KERNEL(binary)(const T* a, const T* b, T* out, Strided desc, i64 n, int op) {
  const int rank = (int)desc.rank;
  GRID_STRIDE(i, n) {
    i64 oa = 0, ob = 0, r = i;
    for (int d = rank - 1; d >= 0; d--) {
      const i64 s = desc.shape[d], c = r % s;
      oa += c * desc.sa[d];
      ob += c * desc.sb[d];
      r /= s;
    }
    const T u = a[oa], v = b[ob];
    T w;
    switch (op) {
      case 0: w = u + v; break;
      case 1: w = u - v; break;
      case 2: w = u * v; break;
      case 3: w = u / v; break;
      case 4: w = (u <= v || u != u) ? u : v; break;
      case 5: w = (u >= v || u != u) ? u : v; break;
      default: w = u <= v ? T(1) : T(0); break;
    }
    out[i] = w;
  }
}

/** Shape and three stride vectors (mask, a, b) of `where`; the host packs it (buffers.ts `strided`). */
struct Strided3 {
  i64 rank;
  i64 shape[MAX_RANK];
  i64 sm[MAX_RANK];
  i64 sa[MAX_RANK];
  i64 sb[MAX_RANK];
};

/** Offsets of flat output index i in mask, a and b (row-major walk over desc.shape). */
__device__ __forceinline__ void where_offsets(i64 i, const Strided3& desc, i64& om, i64& oa, i64& ob) {
  om = 0; oa = 0; ob = 0;
  for (int d = (int)desc.rank - 1; d >= 0; d--) {
    const i64 s = desc.shape[d], c = i % s;
    om += c * desc.sm[d];
    oa += c * desc.sa[d];
    ob += c * desc.sb[d];
    i /= s;
  }
}

/** out[i] = mask != 0 ? a : b, all three broadcast; a float mask of type T (NaN counts as nonzero). */
KERNEL(where)(const T* mask, const T* a, const T* b, T* out, Strided3 desc, i64 n) {
  GRID_STRIDE(i, n) {
    i64 om, oa, ob;
    where_offsets(i, desc, om, oa, ob);
    out[i] = mask[om] != T(0) ? a[oa] : b[ob];
  }
}

/** where with an i32 mask. */
KERNEL(where_i32)(const int* mask, const T* a, const T* b, T* out, Strided3 desc, i64 n) {
  GRID_STRIDE(i, n) {
    i64 om, oa, ob;
    where_offsets(i, desc, om, oa, ob);
    out[i] = mask[om] != 0 ? a[oa] : b[ob];
  }
}

/** out = x + s, x * s or x ** s; op: 0 add, 1 mul, 2 pow. */
KERNEL(scalar)(const T* x, T* out, i64 n, int op, T s) {
  GRID_STRIDE(i, n) {
    const T v = x[i];
    out[i] = op == 0 ? v + s : op == 1 ? v * s : (s == T(2) ? v * v : t_pow(v, s));
  }
}

/** out = silu(gate) * up. */
KERNEL(swiglu)(const T* gate, const T* up, T* out, i64 n) {
  GRID_STRIDE(i, n) {
    const T g = gate[i];
    out[i] = g * t_sigmoid(g) * up[i];
  }
}

/** dUp = dy silu(gate); dGate = dy up s (1 + g (1 - s)), s = sigmoid(gate). */
KERNEL(swiglu_backward)(const T* gate, const T* up, const T* dy, T* dgate, T* dup, i64 n) {
  GRID_STRIDE(i, n) {
    const T g = gate[i], s = t_sigmoid(g), d = dy[i], u = up[i];
    dup[i] = d * g * s;
    dgate[i] = d * u * s * (T(1) + g * (T(1) - s));
  }
}

/** out[o, j] = sum_r x[o, r, j]; x viewed as [outer, reduce, inner]; one thread per output. */
KERNEL(reduce_sum)(const T* x, T* out, i64 outer, i64 reduce, i64 inner) {
  GRID_STRIDE(i, outer * inner) {
    const i64 o = i / inner, j = i % inner;
    const T* p = x + o * reduce * inner + j;
    ACC s = 0;
    for (i64 r = 0; r < reduce; r++) s += (ACC)p[r * inner];
    out[i] = (T)s;
  }
}

/** inner == 1: out[o] = sum of row o of x [outer, reduce]; one block per row (grid = outer). */
KERNEL(reduce_sum_rows)(const T* x, T* out, i64 reduce) {
  __shared__ ACC sh[32];
  const T* row = x + (i64)blockIdx.x * reduce;
  ACC s = 0;
  for (i64 j = threadIdx.x; j < reduce; j += blockDim.x) s += (ACC)row[j];
  s = block_sum(s, sh);
  if (threadIdx.x == 0) out[blockIdx.x] = (T)s;
}

/**
 * One AdamW step in place: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * p -= lr (wd p + (m / bc1) / (sqrt(v / bc2) + eps)); bc1, bc2 = 1 - beta^step (host-computed).
 */
KERNEL(adamw)(T* param, const T* grad, T* m, T* v, i64 n, T lr, T b1, T b2, T eps, T wd, T bc1, T bc2) {
  GRID_STRIDE(i, n) {
    const T g = grad[i];
    const T mi = b1 * m[i] + (T(1) - b1) * g;
    const T vi = b2 * v[i] + (T(1) - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const T p = param[i];
    param[i] = p - lr * (wd * p + mi / bc1 / (t_sqrt(vi / bc2) + eps));
  }
}
