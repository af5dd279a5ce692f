// attention.cu: segment-masked grouped-query attention, forward and backward, flash-style: the
// softmax is computed online over the visible keys, so no [T, S] score matrix ever exists.
//
// Mapping: one warp per (token t, query head h) row, ATT_WARPS = 4 warps (128 threads) per block,
// grid = ceil(T * H / 4). Query head h reads kv head g = floor(h * Hkv / H). The warp walks token
// t's CSR segments [starts[s], ends[s]) for s in [offsets[t], offsets[t + 1]), 32 keys at a time:
// lane i scores key base + i against the scaled query held in shared memory, the warp updates
// the running max and sum, then every lane accumulates its slice of the output (dims lane,
// lane + 32, ...) over the chunk's keys. Head dims up to ATT_MAX_D = 256.
// Layouts (row-major): q, out, dO, dq [T, H, D]; k, v [S', Hkv, D] (rows >= S never read: the
// segments are clamped to [0, S)); dk, dv [S, Hkv, D]; lse [T, H].
// Backward: the same walk recomputes p = exp(score - lse); dq is accumulated in registers, dk
// and dv with atomicAdd (the host zeroes them first), so their summation order is not fixed.
// Inputs are f32 or f64 (bf16 storage comes with the mixed-precision work); accumulation in T.
#include "common.cuh"

#define ATT_WARPS 4
#define ATT_MAX_D 256
#define ATT_PER_LANE (ATT_MAX_D / 32)

KERNEL(attention)(const T* q, const T* k, const T* v, const int* offsets, const int* starts, const int* ends,
                  T* out, T* lse, int tokens, int keys, int heads, int kvHeads, int D, T scale) {
  __shared__ T qs[ATT_WARPS][ATT_MAX_D];
  __shared__ T ps[ATT_WARPS][32];
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const i64 row = (i64)blockIdx.x * ATT_WARPS + w;
  if (row >= (i64)tokens * heads) return;  // whole warps leave; no block barrier follows
  const int t = (int)(row / heads), h = (int)(row % heads);
  const int g = (h * kvHeads) / heads;
  for (int d = lane; d < D; d += 32) qs[w][d] = q[row * D + d] * scale;
  __syncwarp();

  T acc[ATT_PER_LANE];
#pragma unroll
  for (int i = 0; i < ATT_PER_LANE; i++) acc[i] = T(0);
  T m = -t_inf<T>(), l = T(0);
  for (int sg = offsets[t]; sg < offsets[t + 1]; sg++) {
    const int s0 = max(starts[sg], 0), s1 = min(ends[sg], keys);
    for (int base = s0; base < s1; base += 32) {
      const int s = base + lane;
      T sc = -t_inf<T>();
      if (s < s1) {
        const T* kr = k + ((i64)s * kvHeads + g) * D;
        T dot = T(0);
        for (int d = 0; d < D; d++) dot += qs[w][d] * kr[d];
        sc = dot;
      }
      const T mnew = t_max(m, warp_max(sc));  // finite: lane 0's key is always in range
      const T corr = t_exp(m - mnew);
      const T p = s < s1 ? t_exp(sc - mnew) : T(0);
      l = l * corr + warp_sum(p);
      ps[w][lane] = p;
      __syncwarp();
      const int cnt = min(32, s1 - base);
#pragma unroll
      for (int i = 0; i < ATT_PER_LANE; i++) acc[i] *= corr;
      for (int j = 0; j < cnt; j++) {
        const T pj = ps[w][j];
        const T* vr = v + ((i64)(base + j) * kvHeads + g) * D;
#pragma unroll
        for (int i = 0; i < ATT_PER_LANE; i++) {
          const int d = lane + 32 * i;
          if (d < D) acc[i] += pj * vr[d];
        }
      }
      __syncwarp();
      m = mnew;
    }
  }
  // A token that sees no key gets out 0 and lse -inf, like the CPU reference.
  const T inv = l > T(0) ? T(1) / l : T(0);
#pragma unroll
  for (int i = 0; i < ATT_PER_LANE; i++) {
    const int d = lane + 32 * i;
    if (d < D) out[row * D + d] = acc[i] * inv;
  }
  if (lane == 0) lse[row] = l > T(0) ? m + t_log(l) : -t_inf<T>();
}

KERNEL(attention_backward)(const T* q, const T* k, const T* v, const int* offsets, const int* starts, const int* ends,
                           const T* out, const T* lse, const T* dout, T* dq, T* dk, T* dv,
                           int tokens, int keys, int heads, int kvHeads, int D, T scale) {
  __shared__ T qs[ATT_WARPS][ATT_MAX_D];
  __shared__ T dos[ATT_WARPS][ATT_MAX_D];
  __shared__ T dss[ATT_WARPS][32];
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const i64 row = (i64)blockIdx.x * ATT_WARPS + w;
  if (row >= (i64)tokens * heads) return;
  const int t = (int)(row / heads), h = (int)(row % heads);
  const int g = (h * kvHeads) / heads;
  // delta = sum_d dO O: the softmax-backward term shared by every key of this row.
  T delta = T(0);
  for (int d = lane; d < D; d += 32) {
    qs[w][d] = q[row * D + d] * scale;
    dos[w][d] = dout[row * D + d];
    delta += dout[row * D + d] * out[row * D + d];
  }
  delta = warp_sum(delta);
  __syncwarp();
  const T L = lse[row];

  T acc[ATT_PER_LANE];
#pragma unroll
  for (int i = 0; i < ATT_PER_LANE; i++) acc[i] = T(0);
  if (L != -t_inf<T>()) {
    for (int sg = offsets[t]; sg < offsets[t + 1]; sg++) {
      const int s0 = max(starts[sg], 0), s1 = min(ends[sg], keys);
      for (int base = s0; base < s1; base += 32) {
        const int s = base + lane;
        T ds = T(0);
        if (s < s1) {
          const i64 kvo = ((i64)s * kvHeads + g) * D;
          T sc = T(0), dp = T(0);
          for (int d = 0; d < D; d++) {
            sc += qs[w][d] * k[kvo + d];
            dp += dos[w][d] * v[kvo + d];
          }
          const T p = t_exp(sc - L);
          ds = p * (dp - delta);
          // dv[s] += p dO; dk[s] += scale ds q (qs already holds scale q).
          for (int d = 0; d < D; d++) {
            atomicAdd(&dv[kvo + d], p * dos[w][d]);
            atomicAdd(&dk[kvo + d], ds * qs[w][d]);
          }
        }
        dss[w][lane] = ds;
        __syncwarp();
        const int cnt = min(32, s1 - base);
        for (int j = 0; j < cnt; j++) {
          const T dj = dss[w][j];
          const T* kr = k + ((i64)(base + j) * kvHeads + g) * D;
#pragma unroll
          for (int i = 0; i < ATT_PER_LANE; i++) {
            const int d = lane + 32 * i;
            if (d < D) acc[i] += dj * kr[d];
          }
        }
        __syncwarp();
      }
    }
  }
#pragma unroll
  for (int i = 0; i < ATT_PER_LANE; i++) {
    const int d = lane + 32 * i;
    if (d < D) dq[row * D + d] = acc[i] * scale;
  }
}
