// flash-attention.cu: tiled segment-masked GQA attention on tensor cores (training path), forward
// and backward, FlashAttention-2 style. Inputs, outputs and gradients stay f32 buffers (the Backend
// contract); tiles are rounded to bf16 in shared memory and multiplied with mma.sync m16n8k16
// (bf16 x bf16 -> f32), softmax statistics and every accumulator are f32. Precision: q, k, v, dO,
// P and dS are rounded to bf16 (8-bit mantissa) before each product, so results differ from the
// f32 kernels of attention.cu by ~1e-2 relative; that kernel stays the reference path.
//
// Tiles: 64 queries x 64 keys, 128 threads (4 warps). Head dims 64 and 128 only (template HD);
// the host falls back to attention.cu for anything else, for f64, or before sm_80.
// Masking: for a tile pair each query row builds a 64-bit mask of the keys it sees from its CSR
// segments (clamped to [0, keys)); a tile pair no query sees is skipped whole. Layouts as in
// attention.cu: q, out, dO, dq [T, H, D]; k, v, dk, dv [S, Hkv, D]; lse, delta [T, H].
// Forward: grid (ceil(T/64), H); one warp owns 16 query rows. Backward: grid (ceil(S/64), Hkv);
// one block owns a key tile of one kv head and loops over the query heads of its group and the
// query tiles, so dK/dV are summed in registers without atomics; dQ is summed with f32 atomics
// (the host zeroes dq first), so its summation order is not fixed.
#include "common.cuh"

#define FA_TILE 64
#define FA_THREADS 128
#define FA_LOG2E 1.4426950408889634f
#define FA_LN2 0.6931471805599453f

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800

/** Two floats rounded to bf16 (round to nearest even) in one register: lo in bits 0..15. */
__device__ __forceinline__ u32 fa_pack(float lo, float hi) {
  u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

/** c += a (16x16 bf16, row) * b (16x8 bf16, col), f32 accumulators; PTX fragment layouts. */
__device__ __forceinline__ void fa_mma(float* c, const u32* a, u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/** Two bf16 of a shared row (column even, so 4-byte aligned) as one register. */
__device__ __forceinline__ u32 fa_ld2(const u16* s) { return *reinterpret_cast<const u32*>(s); }

/** Two bf16 of the same column in consecutive rows (stride ld) as one register: a transposed read. */
__device__ __forceinline__ u32 fa_ldcol(const u16* s, int ld) { return (u32)s[0] | ((u32)s[ld] << 16); }

/** Bits of the key tile [k0, k0 + 64) that token t sees (segments clamped to [0, keys)). */
__device__ __forceinline__ u64 fa_tile_mask(const int* offsets, const int* starts, const int* ends, int t, int k0, int keys) {
  u64 m = 0;
  const int hi = min(k0 + FA_TILE, keys);
  for (int sg = offsets[t]; sg < offsets[t + 1]; sg++) {
    const int a = max(starts[sg], k0), b = min(ends[sg], hi);
    if (a < b) m |= (b - a == 64 ? ~0ull : ((1ull << (b - a)) - 1ull)) << (a - k0);
  }
  return m;
}

/**
 * rows x HD floats from global rows src + (r0 + r) * rowStride (rows >= nrows read as 0) into a
 * bf16 tile at dst with row stride ld; float4 loads (the host checks 16-byte alignment).
 */
template <int HD>
__device__ __forceinline__ void fa_load_tile(const float* src, i64 rowStride, int r0, int nrows, u16* dst, int ld) {
  for (int i = threadIdx.x; i < FA_TILE * (HD / 4); i += FA_THREADS) {
    const int r = i / (HD / 4), c = (i % (HD / 4)) * 4;
    float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
    if (r0 + r < nrows) x = *reinterpret_cast<const float4*>(src + (i64)(r0 + r) * rowStride + c);
    u32* d = reinterpret_cast<u32*>(dst + r * ld + c);
    d[0] = fa_pack(x.x, x.y);
    d[1] = fa_pack(x.z, x.w);
  }
}

template <int HD>
__device__ __forceinline__ void fa_forward(const float* q, const float* k, const float* v, const int* offsets, const int* starts,
                                           const int* ends, float* out, float* lse, int tokens, int keys, int heads, int kvHeads,
                                           float scale) {
  constexpr int LD = HD + 8;        // padded bf16 row stride: fragment reads hit 32 distinct banks
  constexpr int LDV = FA_TILE + 8;  // V is stored transposed, [HD][keys]
  __shared__ __align__(16) u16 kq[FA_TILE * LD];  // the Q tile first, then each K tile
  __shared__ __align__(16) u16 vt[HD * LDV];
  __shared__ u64 masks[FA_TILE];
  __shared__ int range[2];
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q4 = lane & 3;
  const int t0 = blockIdx.x * FA_TILE, h = blockIdx.y;
  const int kvh = (h * kvHeads) / heads;
  const float sl2 = scale * FA_LOG2E;  // scores are kept in log2 units: exp2f is one instruction

  // The union of the tile's segments bounds the key tiles to visit.
  if (threadIdx.x == 0) { range[0] = 0x7fffffff; range[1] = 0; }
  __syncthreads();
  if (threadIdx.x < FA_TILE && t0 + threadIdx.x < tokens) {
    const int t = t0 + threadIdx.x;
    int lo = 0x7fffffff, hi = 0;
    for (int sg = offsets[t]; sg < offsets[t + 1]; sg++) {
      const int a = max(starts[sg], 0), b = min(ends[sg], keys);
      if (a < b) { lo = min(lo, a); hi = max(hi, b); }
    }
    if (lo < hi) { atomicMin(&range[0], lo); atomicMax(&range[1], hi); }
  }
  fa_load_tile<HD>(q + (i64)h * HD, (i64)heads * HD, t0, tokens, kq, LD);
  __syncthreads();
  // This warp's 16 query rows as A fragments for every k-step (HD / 16 x 4 registers).
  u32 qf[HD / 16][4];
  const int r0 = w * 16 + g;
#pragma unroll
  for (int kk = 0; kk < HD / 16; kk++) {
    const int c = kk * 16 + q4 * 2;
    qf[kk][0] = fa_ld2(kq + r0 * LD + c);
    qf[kk][1] = fa_ld2(kq + (r0 + 8) * LD + c);
    qf[kk][2] = fa_ld2(kq + r0 * LD + c + 8);
    qf[kk][3] = fa_ld2(kq + (r0 + 8) * LD + c + 8);
  }
  const int lo = range[0], hi = range[1];
  __syncthreads();

  float o[HD / 8][4];
#pragma unroll
  for (int i = 0; i < HD / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m0 = -t_inf<float>(), m1 = -t_inf<float>(), l0 = 0.f, l1 = 0.f;  // rows r0 and r0 + 8

  for (int k0 = lo < hi ? (lo / FA_TILE) * FA_TILE : hi; k0 < hi; k0 += FA_TILE) {
    u64 mine = 0;
    if (threadIdx.x < FA_TILE) {
      const int t = t0 + threadIdx.x;
      mine = t < tokens ? fa_tile_mask(offsets, starts, ends, t, k0, keys) : 0ull;
      masks[threadIdx.x] = mine;
    }
    if (!__syncthreads_or(mine != 0ull)) continue;  // no query of the tile sees these keys
    // K tile row-major, V tile transposed (so P @ V reads both operands as register pairs).
    fa_load_tile<HD>(k + (i64)kvh * HD, (i64)kvHeads * HD, k0, keys, kq, LD);
    for (int i = threadIdx.x; i < FA_TILE * (HD / 4); i += FA_THREADS) {
      const int r = i / (HD / 4), c = (i % (HD / 4)) * 4;
      float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
      if (k0 + r < keys) x = *reinterpret_cast<const float4*>(v + ((i64)(k0 + r) * kvHeads + kvh) * HD + c);
      const u32 a = fa_pack(x.x, x.y), b = fa_pack(x.z, x.w);
      vt[(c + 0) * LDV + r] = (u16)(a & 0xffff);
      vt[(c + 1) * LDV + r] = (u16)(a >> 16);
      vt[(c + 2) * LDV + r] = (u16)(b & 0xffff);
      vt[(c + 3) * LDV + r] = (u16)(b >> 16);
    }
    __syncthreads();
    const u64 mk0 = masks[r0], mk1 = masks[r0 + 8];
    if (__any_sync(0xffffffffu, (mk0 | mk1) != 0ull)) {
      // S = Q K^T for 16 rows x 64 keys: 8 n-tiles of 8 keys.
      float s[8][4];
#pragma unroll
      for (int nt = 0; nt < 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < HD / 16; kk++) {
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
          const u16* kr = kq + (nt * 8 + g) * LD + kk * 16 + q4 * 2;
          fa_mma(s[nt], qf[kk], fa_ld2(kr), fa_ld2(kr + 8));
        }
      }
      // Mask, scale to log2 units, running max per row (the 4 lanes of a quad share a row).
      float mx0 = -t_inf<float>(), mx1 = -t_inf<float>();
#pragma unroll
      for (int nt = 0; nt < 8; nt++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int col = nt * 8 + q4 * 2 + (e & 1);
          const u64 mk = e < 2 ? mk0 : mk1;
          s[nt][e] = (mk >> col) & 1ull ? s[nt][e] * sl2 : -t_inf<float>();
        }
        mx0 = fmaxf(mx0, fmaxf(s[nt][0], s[nt][1]));
        mx1 = fmaxf(mx1, fmaxf(s[nt][2], s[nt][3]));
      }
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
      const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
      // A row that has seen no key yet keeps base 0: its p are exp2(-inf) = 0 and l, o stay 0.
      const float b0 = n0 == -t_inf<float>() ? 0.f : n0, b1 = n1 == -t_inf<float>() ? 0.f : n1;
      const float c0 = exp2f(m0 - b0), c1 = exp2f(m1 - b1);
      m0 = n0;
      m1 = n1;
      float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
      for (int nt = 0; nt < 8; nt++) {
        s[nt][0] = exp2f(s[nt][0] - b0);
        s[nt][1] = exp2f(s[nt][1] - b0);
        s[nt][2] = exp2f(s[nt][2] - b1);
        s[nt][3] = exp2f(s[nt][3] - b1);
        ps0 += s[nt][0] + s[nt][1];
        ps1 += s[nt][2] + s[nt][3];
      }
      l0 = l0 * c0 + ps0;  // per-lane partial sums; the quad adds them up at the end
      l1 = l1 * c1 + ps1;
#pragma unroll
      for (int i = 0; i < HD / 8; i++) {
        o[i][0] *= c0;
        o[i][1] *= c0;
        o[i][2] *= c1;
        o[i][3] *= c1;
      }
      // O += P V: the S accumulators of n-tiles 2kk, 2kk+1 are exactly the A fragment of k-step kk.
#pragma unroll
      for (int kk = 0; kk < FA_TILE / 16; kk++) {
        u32 a[4];
        a[0] = fa_pack(s[2 * kk][0], s[2 * kk][1]);
        a[1] = fa_pack(s[2 * kk][2], s[2 * kk][3]);
        a[2] = fa_pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        a[3] = fa_pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int nt = 0; nt < HD / 8; nt++) {
          const u16* vr = vt + (nt * 8 + g) * LDV + kk * 16 + q4 * 2;
          fa_mma(o[nt], a, fa_ld2(vr), fa_ld2(vr + 8));
        }
      }
    }
    __syncthreads();
  }

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  // A token that sees no key gets out 0 and lse -inf, like the CPU reference.
  const float i0 = l0 > 0.f ? 1.f / l0 : 0.f, i1 = l1 > 0.f ? 1.f / l1 : 0.f;
  const int ta = t0 + r0, tb = ta + 8;
#pragma unroll
  for (int nt = 0; nt < HD / 8; nt++) {
    const int d = nt * 8 + q4 * 2;
    if (ta < tokens) *reinterpret_cast<float2*>(out + ((i64)ta * heads + h) * HD + d) = make_float2(o[nt][0] * i0, o[nt][1] * i0);
    if (tb < tokens) *reinterpret_cast<float2*>(out + ((i64)tb * heads + h) * HD + d) = make_float2(o[nt][2] * i1, o[nt][3] * i1);
  }
  if (q4 == 0) {
    if (ta < tokens) lse[(i64)ta * heads + h] = l0 > 0.f ? m0 * FA_LN2 + logf(l0) : -t_inf<float>();
    if (tb < tokens) lse[(i64)tb * heads + h] = l1 > 0.f ? m1 * FA_LN2 + logf(l1) : -t_inf<float>();
  }
}

/** Bytes of dynamic shared memory of fa_backward<HD> (the host sets the kernel's limit to it). */
#define FA_BWD_SMEM(HD) (4 * FA_TILE * ((HD) + 8) * 2 + FA_TILE * (FA_TILE + 8) * 2 + FA_TILE * 8 + FA_TILE * 8)

template <int HD>
__device__ __forceinline__ void fa_backward(const float* q, const float* k, const float* v, const int* offsets, const int* starts,
                                            const int* ends, const float* lse, const float* delta, const float* dout, float* dq,
                                            float* dk, float* dv, int tokens, int keys, int heads, int kvHeads, float scale) {
  constexpr int LD = HD + 8;
  constexpr int LDS = FA_TILE + 8;
  extern __shared__ __align__(16) unsigned char fa_smem[];
  u16* ks = reinterpret_cast<u16*>(fa_smem);  // [64 keys][LD]
  u16* vs = ks + FA_TILE * LD;                // [64 keys][LD]
  u16* qs = vs + FA_TILE * LD;                // [64 queries][LD]
  u16* dos = qs + FA_TILE * LD;               // [64 queries][LD]
  u16* dss = dos + FA_TILE * LD;              // dS as [64 queries][LDS keys]
  u64* masks = reinterpret_cast<u64*>(dss + FA_TILE * LDS);
  float* lses = reinterpret_cast<float*>(masks + FA_TILE);  // lse of the query rows, log2 units
  float* dels = lses + FA_TILE;
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q4 = lane & 3;
  const int k0 = blockIdx.x * FA_TILE, kvh = blockIdx.y;
  const float sl2 = scale * FA_LOG2E;
  // Query heads h with floor(h * Hkv / H) == kvh.
  const int hBegin = (kvh * heads + kvHeads - 1) / kvHeads, hEnd = ((kvh + 1) * heads + kvHeads - 1) / kvHeads;

  fa_load_tile<HD>(k + (i64)kvh * HD, (i64)kvHeads * HD, k0, keys, ks, LD);
  fa_load_tile<HD>(v + (i64)kvh * HD, (i64)kvHeads * HD, k0, keys, vs, LD);

  float dka[HD / 8][4], dva[HD / 8][4];  // this warp's 16 keys x HD
#pragma unroll
  for (int i = 0; i < HD / 8; i++) dka[i][0] = dka[i][1] = dka[i][2] = dka[i][3] = dva[i][0] = dva[i][1] = dva[i][2] = dva[i][3] = 0.f;
  const int kr0 = w * 16 + g;  // local key rows kr0, kr0 + 8 of this lane

  for (int t0 = 0; t0 < tokens; t0 += FA_TILE) {
    u64 mine = 0;
    if (threadIdx.x < FA_TILE) {
      const int t = t0 + threadIdx.x;
      mine = t < tokens ? fa_tile_mask(offsets, starts, ends, t, k0, keys) : 0ull;
      masks[threadIdx.x] = mine;
    }
    if (!__syncthreads_or(mine != 0ull)) continue;
    for (int h = hBegin; h < hEnd; h++) {
      fa_load_tile<HD>(q + (i64)h * HD, (i64)heads * HD, t0, tokens, qs, LD);
      fa_load_tile<HD>(dout + (i64)h * HD, (i64)heads * HD, t0, tokens, dos, LD);
      if (threadIdx.x < FA_TILE) {
        const int t = t0 + threadIdx.x;
        lses[threadIdx.x] = t < tokens ? lse[(i64)t * heads + h] * FA_LOG2E : 0.f;
        dels[threadIdx.x] = t < tokens ? delta[(i64)t * heads + h] : 0.f;
      }
      __syncthreads();
      // Two chunks of 32 queries keep S^T and dP^T at 16 registers each.
#pragma unroll
      for (int ch = 0; ch < 2; ch++) {
        float st[4][4], dpt[4][4];
#pragma unroll
        for (int nt = 0; nt < 4; nt++) st[nt][0] = st[nt][1] = st[nt][2] = st[nt][3] = dpt[nt][0] = dpt[nt][1] = dpt[nt][2] = dpt[nt][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
          const int c = kk * 16 + q4 * 2;
          u32 ka[4], va[4];
          ka[0] = fa_ld2(ks + kr0 * LD + c);
          ka[1] = fa_ld2(ks + (kr0 + 8) * LD + c);
          ka[2] = fa_ld2(ks + kr0 * LD + c + 8);
          ka[3] = fa_ld2(ks + (kr0 + 8) * LD + c + 8);
          va[0] = fa_ld2(vs + kr0 * LD + c);
          va[1] = fa_ld2(vs + (kr0 + 8) * LD + c);
          va[2] = fa_ld2(vs + kr0 * LD + c + 8);
          va[3] = fa_ld2(vs + (kr0 + 8) * LD + c + 8);
#pragma unroll
          for (int nt = 0; nt < 4; nt++) {
            const int qr = ch * 32 + nt * 8 + g;
            fa_mma(st[nt], ka, fa_ld2(qs + qr * LD + c), fa_ld2(qs + qr * LD + c + 8));     // S^T = K Q^T
            fa_mma(dpt[nt], va, fa_ld2(dos + qr * LD + c), fa_ld2(dos + qr * LD + c + 8));  // dP^T = V dO^T
          }
        }
        // P^T = exp(S^T - lse) where visible; dS^T = P^T (dP^T - delta). st <- P^T, dpt <- dS^T.
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
#pragma unroll
          for (int e = 0; e < 4; e++) {
            const int ql = ch * 32 + nt * 8 + q4 * 2 + (e & 1), kl = kr0 + (e < 2 ? 0 : 8);
            const float p = (masks[ql] >> kl) & 1ull ? exp2f(st[nt][e] * sl2 - lses[ql]) : 0.f;
            st[nt][e] = p;
            dpt[nt][e] = p * (dpt[nt][e] - dels[ql]);
            dss[ql * LDS + kl] = (u16)(fa_pack(dpt[nt][e], 0.f) & 0xffff);
          }
        }
        // dV += P^T dO and dK += dS^T Q over this chunk's 32 queries (2 k-steps of 16).
#pragma unroll
        for (int kk = 0; kk < 2; kk++) {
          u32 pa[4], da[4];
          pa[0] = fa_pack(st[2 * kk][0], st[2 * kk][1]);
          pa[1] = fa_pack(st[2 * kk][2], st[2 * kk][3]);
          pa[2] = fa_pack(st[2 * kk + 1][0], st[2 * kk + 1][1]);
          pa[3] = fa_pack(st[2 * kk + 1][2], st[2 * kk + 1][3]);
          da[0] = fa_pack(dpt[2 * kk][0], dpt[2 * kk][1]);
          da[1] = fa_pack(dpt[2 * kk][2], dpt[2 * kk][3]);
          da[2] = fa_pack(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]);
          da[3] = fa_pack(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3]);
          const int qb = ch * 32 + kk * 16 + q4 * 2;
#pragma unroll
          for (int nt = 0; nt < HD / 8; nt++) {
            const int d = nt * 8 + g;
            fa_mma(dva[nt], pa, fa_ldcol(dos + qb * LD + d, LD), fa_ldcol(dos + (qb + 8) * LD + d, LD));
            fa_mma(dka[nt], da, fa_ldcol(qs + qb * LD + d, LD), fa_ldcol(qs + (qb + 8) * LD + d, LD));
          }
        }
      }
      __syncthreads();
      // dQ[16 queries of this warp] += dS (16 x 64 keys) K (64 keys x HD), 64 dims at a time.
      const int qa = w * 16 + g;
      const bool liveA = masks[qa] != 0ull, liveB = masks[qa + 8] != 0ull;
      if (__any_sync(0xffffffffu, liveA || liveB)) {
#pragma unroll
        for (int dh = 0; dh < HD / 64; dh++) {
          float acc[8][4];
#pragma unroll
          for (int nt = 0; nt < 8; nt++) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
#pragma unroll
          for (int kk = 0; kk < FA_TILE / 16; kk++) {
            const int c = kk * 16 + q4 * 2;
            u32 a[4];
            a[0] = fa_ld2(dss + qa * LDS + c);
            a[1] = fa_ld2(dss + (qa + 8) * LDS + c);
            a[2] = fa_ld2(dss + qa * LDS + c + 8);
            a[3] = fa_ld2(dss + (qa + 8) * LDS + c + 8);
#pragma unroll
            for (int nt = 0; nt < 8; nt++) {
              const int d = dh * 64 + nt * 8 + g;
              fa_mma(acc[nt], a, fa_ldcol(ks + c * LD + d, LD), fa_ldcol(ks + (c + 8) * LD + d, LD));
            }
          }
          const int ta = t0 + qa, tb = ta + 8;
#pragma unroll
          for (int nt = 0; nt < 8; nt++) {
            const int d = dh * 64 + nt * 8 + q4 * 2;
            if (liveA && ta < tokens) {
              float* p = dq + ((i64)ta * heads + h) * HD + d;
              atomicAdd(p, acc[nt][0] * scale);
              atomicAdd(p + 1, acc[nt][1] * scale);
            }
            if (liveB && tb < tokens) {
              float* p = dq + ((i64)tb * heads + h) * HD + d;
              atomicAdd(p, acc[nt][2] * scale);
              atomicAdd(p + 1, acc[nt][3] * scale);
            }
          }
        }
      }
      __syncthreads();  // qs, dos, dss are refilled by the next head or query tile
    }
  }

  // Every key row of [0, keys) belongs to exactly one block and kv head: plain stores, no memset.
  const int sa = k0 + kr0, sb = sa + 8;
#pragma unroll
  for (int nt = 0; nt < HD / 8; nt++) {
    const int d = nt * 8 + q4 * 2;
    if (sa < keys) {
      const i64 o = ((i64)sa * kvHeads + kvh) * HD + d;
      *reinterpret_cast<float2*>(dk + o) = make_float2(dka[nt][0] * scale, dka[nt][1] * scale);
      *reinterpret_cast<float2*>(dv + o) = make_float2(dva[nt][0], dva[nt][1]);
    }
    if (sb < keys) {
      const i64 o = ((i64)sb * kvHeads + kvh) * HD + d;
      *reinterpret_cast<float2*>(dk + o) = make_float2(dka[nt][2] * scale, dka[nt][3] * scale);
      *reinterpret_cast<float2*>(dv + o) = make_float2(dva[nt][2], dva[nt][3]);
    }
  }
}

// Entry points, with attention.cu's argument list (D is the template's HD, checked by the host). Only the f32 instances are launched (the host sends f64 to attention.cu); the
// f64 compile of this file yields the same f32 code under *_f64 names.
#define FA_ARGS_F const float *q, const float *k, const float *v, const int *offsets, const int *starts, const int *ends, \
                  float *out, float *lse, int tokens, int keys, int heads, int kvHeads, int D, float scale
#define FA_ARGS_B const float *q, const float *k, const float *v, const int *offsets, const int *starts, const int *ends, \
                  const float *lse, const float *delta, const float *dout, float *dq, float *dk, float *dv,        \
                  int tokens, int keys, int heads, int kvHeads, int D, float scale
KERNEL(flash_fwd_d64)(FA_ARGS_F) { fa_forward<64>(q, k, v, offsets, starts, ends, out, lse, tokens, keys, heads, kvHeads, scale); }
KERNEL(flash_fwd_d128)(FA_ARGS_F) { fa_forward<128>(q, k, v, offsets, starts, ends, out, lse, tokens, keys, heads, kvHeads, scale); }
KERNEL(flash_bwd_d64)(FA_ARGS_B) {
  fa_backward<64>(q, k, v, offsets, starts, ends, lse, delta, dout, dq, dk, dv, tokens, keys, heads, kvHeads, scale);
}
KERNEL(flash_bwd_d128)(FA_ARGS_B) {
  fa_backward<128>(q, k, v, offsets, starts, ends, lse, delta, dout, dq, dk, dv, tokens, keys, heads, kvHeads, scale);
}

/** delta[r] = sum_d dO[r, d] O[r, d] over rows r < rows of D floats: one warp per row, 4 per block. */
KERNEL(flash_bwd_delta)(const float* out, const float* dout, float* delta, int rows, int D) {
  const int r = blockIdx.x * 4 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (r >= rows) return;
  float s = 0.f;
  for (int d = lane; d < D; d += 32) s += out[(i64)r * D + d] * dout[(i64)r * D + d];
  s = warp_sum(s);
  if (lane == 0) delta[r] = s;
}

#endif
