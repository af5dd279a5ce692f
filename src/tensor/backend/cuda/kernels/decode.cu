// decode.cu: the fused ops of the decode step (host side: ../decode.ts), for bf16 weights, an f32
// residual stream and f32 KV pages, at most 16 rows (one new token per sequence).
//
// dec_rmsnorm_bf16: one 256-thread block per row; out16[r, :] = bf16(x[r, :] rstd w), rstd from a
//   double sum of squares, as nn.cu's rmsnorm followed by convert.cu's cast (same roundings).
// dec_gemv_<x>_nt<NT>_t<TILES>: the weight-streaming GEMV, y[b, j] = sum_k x[b, k] w[j, k] with
//   fp32 accumulation, on tensor cores (mma.sync m16n8k16, bf16 in, f32 out) with the operands
//   swapped: 16 weight rows are the M side, the (at most 8 per n-tile) batch rows the N side, so
//   the weights are read once for all rows. One block per 16-row tile of one matrix (TILES = 2:
//   the same 16 rows of two matrices, gate and up); its nw warps split k into interleaved 32-wide
//   steps, each warp streaming its weights through a cp.async ring of DG_STAGES stages; the warps'
//   partial sums meet in shared memory and are added in warp order (the same bits every run).
//   Several matrices (q, k, v) share a launch: `DgMats.start` gives each its first tile. x is bf16
//   [rows, ldx], or f32 (rounded to bf16 as it is read, which equals a cast before the GEMM), or
//   the f32 residual RMSNormed as it is read (each block first computes every row's rstd:
//   dec_rmsnorm_bf16 fused away for few rows); small x is staged in shared memory once per block.
//   Epilogues: 0 store f32 (+ bias), 1 add into f32 (+ bias; the residual), 2 SwiGLU of the two
//   tiles rounded to bf16.
// dec_qk_norm_rope: one warp per (row, head) over the H query heads then the Hkv kv heads (4
//   warps per block): RMSNorm over D, rotate-half RoPE at the row's position (angles in double
//   from the host's theta^(2j/D) table, as nn.cu's rope), q back in place, k and v into page slot
//   slots[b] of keys / values ([slots, Hkv, D]); slot -1 (a padding row) writes nothing.
// Programmatic dependent launch (PDL, sm_90+; the host launches these kernels with it when the
//   backend's `pdl` is on): each kernel may start while the previous kernel of the stream still
//   runs. Before pdl_wait() a kernel touches only the read-only weights (a GEMV fills its cp.async
//   ring); everything the step writes (residual, q/k/v, KV pages, activations) is read or written
//   after it. pdl_wait() returns once the previous kernel has completed and its writes are
//   visible; as every kernel of the step waits so, the order is transitive. Each kernel lets the
//   next one be scheduled right after its wait (pdl_launch_dependents), so the next kernel's
//   blocks take SMs as this one's last wave drains.
// Variants measured and left out of this file (a k-split GEMV, 8 ring stages, L2 prefetch of the
//   next or own weights, scheduling the next kernel before the wait): dev/cuda/decode_gemv.cu and
//   dev/LOG.md.
// Every kernel here is f32-only: the f64 instance of this file is compiled but never launched.
#include "common.cuh"

typedef unsigned short u16;
typedef unsigned int u32;

// PDL helpers (pdl_wait, pdl_launch_dependents, pdl_enter): common.cuh.

/** f32 -> bf16 bits, nearest even, NaN made quiet: convert.cu's float_to_bf16. */
__device__ __forceinline__ u16 dg_bf16(float f) {
  const u32 u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x0040u);
  return (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/** Two floats as two bf16 (nearest even) in one register, lo in bits 0..15. */
__device__ __forceinline__ u32 dg_pack(float lo, float hi) { return (u32)dg_bf16(lo) | ((u32)dg_bf16(hi) << 16); }

KERNEL(dec_rmsnorm_bf16)(const float* x, const float* w, u16* out, i64 dim, double eps) {
  __shared__ double sh[32];
  pdl_enter();
  const float* xr = x + (i64)blockIdx.x * dim;
  double ss = 0;
  for (i64 j = threadIdx.x; j < dim; j += blockDim.x) ss += (double)xr[j] * (double)xr[j];
  ss = block_sum(ss, sh);
  const double rs = 1.0 / sqrt(ss / (double)dim + eps);
  u16* o = out + (i64)blockIdx.x * dim;
  for (i64 j = threadIdx.x; j < dim; j += blockDim.x) o[j] = dg_bf16((float)((double)xr[j] * rs * (double)w[j]));
}

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800

/**
 * The matrices of one GEMV launch, by value (all int64: the host packs it as one i64 array).
 * Matrix m: weight w[m] bf16 [n[m], k]; bias[m] f32 [n[m]] or 0; output y[m] with row b at
 * y[m] + b * ldy[m] (f32, or bf16 for SwiGLU); its 16-row tiles are blocks [start[m], start[m + 1]).
 */
struct DgMats {
  i64 count;
  i64 w[4];
  i64 bias[4];
  i64 y[4];
  i64 n[4];
  i64 ldy[4];
  i64 start[5];
};

/** L2 cache policy of the weight stream: each weight is read once per launch (evict first). */
__device__ __forceinline__ unsigned long long dg_policy_first() {
  unsigned long long p;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
  return p;
}

/**
 * 16 bytes global -> shared without registers (cp.async, L2 only: weights are read once); a
 * false `ok` writes 16 zero bytes instead (src-size 0: nothing is read).
 */
__device__ __forceinline__ void dg_cp16(void* smem, const void* gmem, bool ok, unsigned long long policy) {
  const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;" ::"r"(s), "l"(gmem), "r"(ok ? 16 : 0), "l"(policy));
}

__device__ __forceinline__ void dg_commit() { asm volatile("cp.async.commit_group;" ::); }

/** Waits until at most N of this thread's committed copy groups are pending. */
template <int N>
__device__ __forceinline__ void dg_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N));
}

/** c += a (16 x 16, row) * b (16 x 8, col), bf16 in, f32 accumulators (PTX fragment layouts). */
__device__ __forceinline__ void dg_mma(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/** x modes of the GEMV: bf16 rows, f32 rows rounded to bf16, f32 rows RMSNormed then rounded. */
#define DG_X16 0
#define DG_X32 1
#define DG_XNORM 2

/**
 * 8 consecutive x values [off, off + 8) of row `row` as 8 bf16 (nearest even). DG_XNORM: the
 * value is rmsnorm's, (float)(x rs w) with rs in double, so the rounding equals dec_rmsnorm_bf16's.
 */
template <int XM>
__device__ __forceinline__ uint4 dg_ld_x(const void* x, i64 row, i64 ldx, i64 off, const float* nw, double rs) {
  if (XM == DG_X16) return __ldg((const uint4*)((const u16*)x + row * ldx + off));
  const float4* p = (const float4*)((const float*)x + row * ldx + off);
  float4 a = __ldg(p), b = __ldg(p + 1);
  if (XM == DG_XNORM) {
    const float4 wa = __ldg((const float4*)(nw + off)), wb = __ldg((const float4*)(nw + off) + 1);
    a = make_float4((float)((double)a.x * rs * (double)wa.x), (float)((double)a.y * rs * (double)wa.y), (float)((double)a.z * rs * (double)wa.z), (float)((double)a.w * rs * (double)wa.w));
    b = make_float4((float)((double)b.x * rs * (double)wb.x), (float)((double)b.y * rs * (double)wb.y), (float)((double)b.z * rs * (double)wb.z), (float)((double)b.w * rs * (double)wb.w));
  }
  return make_uint4(dg_pack(a.x, a.y), dg_pack(a.z, a.w), dg_pack(b.x, b.y), dg_pack(b.z, b.w));
}

__device__ __forceinline__ float dg_sigmoid(float x) {
  if (x >= 0.f) return 1.f / (1.f + expf(-x));
  const float e = expf(x);
  return e / (1.f + e);
}

/**
 * Why this layout: a warp step covers k [32 s, 32 s + 32) of its 16 rows. Lane (g = lane / 4,
 * t = lane % 4) takes the 8 consecutive weights [32 s + 8 t, + 8) of rows g and g + 8 (16 bytes
 * each) and the same 8 x values of batch row g (+ 8 nt). Summation over k does not care which
 * physical k feeds which logical k of the mma, as long as weights and x agree: logical k {2t,
 * 2t+1, 2t+8, 2t+9} of the first mma are physical 8t + {0, 1, 2, 3}, of the second 8t + {4..7}.
 * So every load is a plain 16-byte vector, no shuffles.
 * Why cp.async: with register loads, ptxas moved each step's loads down to the mmas that use
 * them (measured: 2 loads in flight per warp, 1.9-2.6 TB/s); copies into a per-warp ring of S
 * stages hold no registers, so S - 1 steps stay in flight whatever the scheduler does. Each lane
 * reads back only the bytes it copied itself, so the ring needs no barrier, only wait_group.
 * Dynamic shared memory: nw * S * TILES * 1 KiB of rings (reused for the cross-warp sums at the
 * end), then, when `staged`, x as bf16 [rows, k + 8].
 */
template <int NT, int TILES, int S, int XM>
__device__ __forceinline__ void dg_gemv(const void* x, i64 ldx, const DgMats& M, int rows, i64 k, int epi, const float* normw, double eps,
                                        int staged) {
  extern __shared__ uint4 dg_smem[];
  __shared__ double rsh[16];
  __shared__ double rsp[16][16];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  // Block = one 16-row tile; its warps cover the 32-wide k-steps [0, steps).
  const int tile = (int)blockIdx.x;
  const i64 steps = (k + 31) >> 5;
  int m = 0;
  while (m + 1 < M.count && tile >= M.start[m + 1]) m++;
  const i64 row0 = (tile - M.start[m]) * 16;
  const i64 n = M.n[m];
  // Weight rows of this lane: tile i's rows g and g + 8 (TILES = 2: matrices 0 and 1).
  const u16* wr[TILES][2];
  bool rok[TILES][2];
#pragma unroll
  for (int i = 0; i < TILES; i++) {
    const u16* w = (const u16*)M.w[TILES == 1 ? m : i];
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const i64 r = row0 + g + 8 * h;
      rok[i][h] = r < n;
      wr[i][h] = w + (rok[i][h] ? r : row0) * k;
    }
  }
  bool xok[NT];
#pragma unroll
  for (int nt = 0; nt < NT; nt++) xok[nt] = nt * 8 + g < rows;
  float acc[TILES][NT][4];
#pragma unroll
  for (int i = 0; i < TILES; i++)
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][nt][e] = 0.f;
  // This warp's steps are warp, warp + nw, ... < steps: cnt of them. Ring:
  // [warp][stage][tile][h][lane].
  const i64 cnt = steps > warp ? (steps - warp + nw - 1) / nw : 0;
  uint4* ring = dg_smem + (i64)warp * S * TILES * 2 * 32;
  const unsigned long long policy = dg_policy_first();
  auto issue = [&](i64 i) {
    uint4* st = ring + (i % S) * (TILES * 2 * 32);
    const i64 kk = (warp + i * nw) * 32 + 8 * t;
    const bool ok = i < cnt && kk < k;  // k % 8 == 0: a chunk of 8 is all in or all out
    const i64 kc = ok ? kk : 0;
#pragma unroll
    for (int i2 = 0; i2 < TILES; i2++)
#pragma unroll
      for (int h = 0; h < 2; h++) dg_cp16(st + (i2 * 2 + h) * 32 + lane, wr[i2][h] + kc, ok && rok[i2][h], policy);
  };
#pragma unroll
  for (int i = 0; i < S - 1; i++) {
    issue(i);
    dg_commit();
  }
  // Everything above read only weights; x, the residual and y belong to earlier kernels.
  pdl_wait();
  pdl_launch_dependents();
  if (XM == DG_XNORM) {
    // rstd of every row, the whole block over each row (x [rows, k] f32 is a few KB the previous
    // kernel just wrote, in L2), while the first stages are in flight. Partials per warp, then
    // summed in warp order.
    for (int b = 0; b < rows; b++) {
      const float* xr = (const float*)x + (i64)b * ldx;
      double ss = 0;
      for (i64 j = 4 * (i64)threadIdx.x; j < k; j += 4 * (i64)blockDim.x) {
        const float4 v = __ldg((const float4*)(xr + j));
        ss += (double)v.x * (double)v.x + (double)v.y * (double)v.y + (double)v.z * (double)v.z + (double)v.w * (double)v.w;
      }
      ss = warp_sum(ss);
      if (lane == 0) rsp[b][warp] = ss;
    }
    __syncthreads();
    if ((int)threadIdx.x < rows) {
      double ss = 0;
      for (int w = 0; w < nw; w++) ss += rsp[threadIdx.x][w];
      rsh[threadIdx.x] = 1.0 / sqrt(ss / (double)k + eps);
    }
    __syncthreads();
  }
  // staged: x as bf16 [rows, xld] in shared memory after the rings, written once per block, so
  // the loop's critical path (wait, shared loads, mma) has no global load in it. The host stages
  // when rows * k is small (few rows); the 8-element pad spreads rows over the banks.
  const i64 xld = k + 8;
  u16* xs = (u16*)(dg_smem + (i64)nw * S * TILES * 2 * 32);
  if (staged) {
    const i64 k8 = k >> 3;
    for (i64 idx = threadIdx.x; idx < (i64)rows * k8; idx += blockDim.x) {
      const i64 b = idx / k8, c = (idx - b * k8) * 8;
      *(uint4*)(xs + b * xld + c) = dg_ld_x<XM>(x, b, ldx, c, normw, XM == DG_XNORM ? rsh[b] : 1.0);
    }
    __syncthreads();
  }
  double rs[NT];
#pragma unroll
  for (int nt = 0; nt < NT; nt++) rs[nt] = XM == DG_XNORM && xok[nt] ? rsh[nt * 8 + g] : 1.0;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  for (i64 i = 0; i < cnt; i++) {
    dg_wait<S - 2>();  // S - 1 + i groups committed, at most S - 2 pending: step i has landed
    const uint4* st = ring + (i % S) * (TILES * 2 * 32);
    uint4 wv[TILES][2], xv[NT];
#pragma unroll
    for (int i2 = 0; i2 < TILES; i2++)
#pragma unroll
      for (int h = 0; h < 2; h++) wv[i2][h] = st[(i2 * 2 + h) * 32 + lane];
    const i64 kk = (warp + i * nw) * 32 + 8 * t;
    const bool ok = kk < k;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
      if (!(ok && xok[nt])) xv[nt] = zero;
      else if (staged) xv[nt] = *(const uint4*)(xs + (nt * 8 + g) * xld + kk);
      else xv[nt] = dg_ld_x<XM>(x, nt * 8 + g, ldx, kk, normw, rs[nt]);
    }
    // Refill the stage read one iteration ago (its registers are consumed), then multiply.
    issue(i + S - 1);
    dg_commit();
#pragma unroll
    for (int i2 = 0; i2 < TILES; i2++)
#pragma unroll
      for (int nt = 0; nt < NT; nt++) {
        const uint4 a = wv[i2][0], b = wv[i2][1], xx = xv[nt];
        dg_mma(acc[i2][nt], a.x, b.x, a.y, b.y, xx.x, xx.y);
        dg_mma(acc[i2][nt], a.z, b.z, a.w, b.w, xx.z, xx.w);
      }
  }
  dg_wait<0>();
  __syncthreads();
  // Fragment (row g / g + 8, batch column 2t, 2t + 1 of n-tile nt) into the shared partials,
  // red[warp][tile][row][column] over the (now idle) ring.
  float* red = (float*)dg_smem;
#define DG_RED(w, i, r, c) red[(((w) * TILES + (i)) * 16 + (r)) * 16 + (c)]
#pragma unroll
  for (int i = 0; i < TILES; i++)
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
      const int c = nt * 8 + 2 * t;
      DG_RED(warp, i, g, c) = acc[i][nt][0];
      DG_RED(warp, i, g, c + 1) = acc[i][nt][1];
      DG_RED(warp, i, g + 8, c) = acc[i][nt][2];
      DG_RED(warp, i, g + 8, c + 1) = acc[i][nt][3];
    }
  __syncthreads();
  // One output (batch row b, weight row r) per thread; consecutive threads, consecutive rows: the
  // warps' partials summed in warp order, then the epilogue.
  for (int o = threadIdx.x; o < 16 * rows; o += blockDim.x) {
    const int b = o >> 4, r = o & 15;
    const i64 j = row0 + r;
    if (j >= n) continue;
    float v[TILES];
#pragma unroll
    for (int i = 0; i < TILES; i++) {
      float s = 0.f;
      for (int w = 0; w < nw; w++) s += DG_RED(w, i, r, b);
      v[i] = s;
    }
    if (TILES == 2) {
      // epi 2: SwiGLU of gate (tile 0) and up (tile 1), as elementwise.cu's swiglu, then bf16.
      const float gt = v[0];
      ((u16*)M.y[0])[b * M.ldy[0] + j] = dg_bf16(gt * dg_sigmoid(gt) * v[TILES - 1]);
    } else {
      float y = v[0];
      if (M.bias[m]) y += ((const float*)M.bias[m])[j];
      float* p = (float*)M.y[m] + b * M.ldy[m] + j;
      *p = epi == 1 ? *p + y : y;
    }
  }
#undef DG_RED
}

/** Ring stages of every GEMV instance (3 steps of 32 k in flight per warp; ../decode.ts sizes the rings). */
#define DG_STAGES 4

// Instances: x mode (x16 bf16, x32 f32, xn f32 RMSNormed with normw), NT n-tiles of 8 batch rows,
// TILES weight tiles per block.
#define DG_GEMV(XN, XM, NT, TILES)                                                                                  \
  KERNEL(dec_gemv_##XN##_nt##NT##_t##TILES)(const void* x, i64 ldx, DgMats mats, int rows, i64 k, int epi, const float* normw, \
                                            double eps, int staged) {                                            \
    dg_gemv<NT, TILES, DG_STAGES, XM>(x, ldx, mats, rows, k, epi, normw, eps, staged);                           \
  }
#define DG_GEMV_NT(XN, XM, NT) DG_GEMV(XN, XM, NT, 1) DG_GEMV(XN, XM, NT, 2)
DG_GEMV_NT(x16, DG_X16, 1)
DG_GEMV_NT(x16, DG_X16, 2)
DG_GEMV_NT(x32, DG_X32, 1)
DG_GEMV_NT(x32, DG_X32, 2)
DG_GEMV_NT(xn, DG_XNORM, 1)
DG_GEMV_NT(xn, DG_XNORM, 2)

#endif

KERNEL(dec_qk_norm_rope)(float* q, const float* k, const float* v, const float* qw, const float* kw, const int* pos, const int* slots,
                         float* keys, float* values, int rows, int H, int Hkv, int D, double eps, const double* denom) {
  pdl_enter();
  const int lane = threadIdx.x & 31;
  const i64 gw = (i64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (gw >= (i64)rows * (H + Hkv)) return;
  const int b = (int)(gw / (H + Hkv)), h = (int)(gw % (H + Hkv));
  const bool isQ = h < H;
  const int kh = h - H;
  const float* src = isQ ? q + ((i64)b * H + h) * D : k + ((i64)b * Hkv + kh) * D;
  const float* w = isQ ? qw : kw;
  const int slot = slots[b];
  // A padding row's k/v go nowhere (its q is still computed, and attends to nothing).
  if (!isQ && slot < 0) return;
  double ss = 0;
  for (int j = lane; j < D; j += 32) ss += (double)src[j] * (double)src[j];
  ss = warp_sum(ss);
  const double rs = 1.0 / sqrt(ss / (double)D + eps);
  const double p = (double)pos[b];
  const int half = D / 2;
  float* dst = isQ ? q + ((i64)b * H + h) * D : keys + ((i64)slot * Hkv + kh) * D;
  // Each lane reads and writes only its own pairs (j, j + D/2), so q is rotated in place.
  for (int j = lane; j < half; j += 32) {
    const float x1 = (float)((double)src[j] * rs * (double)w[j]);
    const float x2 = (float)((double)src[j + half] * rs * (double)w[j + half]);
    double s, c;
    sincos(p / denom[j], &s, &c);
    dst[j] = (float)((double)x1 * c - (double)x2 * s);
    dst[j + half] = (float)((double)x2 * c + (double)x1 * s);
  }
  if (!isQ) {
    const float* vr = v + ((i64)b * Hkv + kh) * D;
    float* vd = values + ((i64)slot * Hkv + kh) * D;
    for (int j = lane; j < D; j += 32) vd[j] = vr[j];
  }
}
