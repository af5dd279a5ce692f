// dev/cuda/decode_attention.cu: the paged decode attention with the variants that were measured. A
// scratchpad, not part of npr: the product kernel is src/tensor/backend/cuda/kernels/decode-attention.cu
// (version 1 below, its other versions' code removed). decode_attention.ts compiles this file with
// NVRTC, validates every version against a float64 reference, then times them (dev/LOG.md).
//
// Versions (host arguments of decode_attention_partial_d<HD> and decode_attention_combine):
//   1  one key-tile buffer; the row's partials merged by the partial kernel's last block for a single
//      row (`fuse` 1), by the separate combine kernel for several rows (`fuse` 0): the product.
//   2  `fuse` 1 for several rows too (the last block of each row merges; one launch).
//   3  `fuse` 0 for a single row too (always the combine kernel).
//   4  `stages` 2: double-buffered key tiles (the next tile in flight while this one is used).
//   5  `early` 1: schedule the next kernel before the PDL wait (the product waits first).
// The original description of the kernels follows.
//
// decode-attention.cu: paged decode attention that reads each key once per step for all the rows
// that see it (siblings' shared prefix once) and splits long rows over many blocks (split-K).
// The host planner (src/tensor/backend/decode-attention-plan.ts) cuts the step's keys into work items: a few slot
// ranges plus the mask of rows that see all of them. One kernel (a separate combine is kept for
// comparison):
//
// decode_attention_partial_d{64,128,256}: grid-stride over units (item, kv head g), unit =
//   item * Hkv + g, units < numItems * Hkv (numItems is read from the plan on the device, so a
//   captured graph serves any plan within its capacity; blocks past the work exit). DA_THREADS =
//   128 (4 warps) per block. The block lists the item's slots in shared memory, loads the queries
//   of every row in the mask x the G = H / Hkv query heads of group g (scaled) in passes of
//   DA_QMAX, then walks the keys in tiles of DA_KT = 32 slots (K and V rows staged in shared
//   memory by cp.async, 16-byte copies; with `stages` 2 the next tile is in flight while this one
//   is used): lane j scores key j against each of its warp's QW queries, the warp keeps an online
//   softmax (max m, sum l) per query and accumulates acc[d] = sum p v[d] (lane owns dims lane,
//   lane + 32, ...). Writes unnormalized partials per (partial slot, head).
//   With `fuse` (the host's default for one row): the block then counts itself in for every row of its mask
//   (one counter per (row, g mod DA_CNT) in the plan) and the block that completes a counter
//   merges that row's partials for the heads of the kv groups g' = g (mod DA_CNT), in the row's
//   slot order (so the result does not depend on which block finishes last), and resets the
//   counter to 0 for the next launch. Rows without partials (padding) are written by block
//   row % gridDim.x.
// decode_attention_combine (only without `fuse`; the previous op, kept to compare): grid (B, H),
//   128 threads, the same merge with serial sums (other rounding).
// Merge: out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s, lse = M + log L; a row with no
//   partial (padding) gets out 0 and lse -inf.
//
// Layouts (row-major): q, out [B, H, D]; k, v pages [S', Hkv, D] (slot-major; slots are clamped
// to [0, keys)); lse [B, H]; scratch = pacc [P, H, D] then pml [P, H, 2] (m, l), P = partials
// capacity. plan (i32), with I = items capacity, R = ranges capacity:
//   [0] numItems | mask[I] | pbase[I] | rangeOff[I + 1] | starts[R] | ends[R] | rowOff[B + 1] | rowSlots[P]
//   | counters[B * DA_CNT] (0 when the host packs the plan; each launch leaves them 0)
// Row r's partial in item i is pbase[i] + popcount(mask[i] & ((1 << r) - 1)).
// Head dim: a multiple of 4 (the 4-wide loads), at most 32 * PL of the entry point; k and v
// 16-byte aligned. Accumulation in T (f32 or f64).
// PDL (programmatic dependent launch, sm_90+, when the host launches with it): both kernels run
// pdl_enter first, so nothing here (plan, q, pages, scratch, out) is touched before the previous
// kernel has completed; `early` schedules the next kernel before that wait (the following GEMV's
// blocks then stream weights while attention runs), else right after it.
#include "common.cuh"

// PDL helpers (pdl_wait, pdl_launch_dependents): common.cuh.
/** The PDL order (the product's pdl_enter is `early` 0). */
__device__ __forceinline__ void dev_pdl_enter(int early) {
  if (early) pdl_launch_dependents();
  pdl_wait();
  if (!early) pdl_launch_dependents();
}

#define DA_WARPS 4
#define DA_THREADS (32 * DA_WARPS)
#define DA_KT 32
#define DA_QW_MAX 8
#define DA_QMAX (DA_WARPS * DA_QW_MAX)
#define DA_MAX_CHUNK 512
// Completion counters per row in the plan (decode-attention-plan.ts PLAN_COUNTERS_PER_ROW): kv group g
// counts in at g % DA_CNT, so up to DA_CNT blocks merge one row's heads side by side.
#define DA_CNT 8

// 4-wide shared-memory loads (16-byte aligned): one float4, or two double2.
__device__ __forceinline__ void ld4(const float* p, float (&x)[4]) {
  const float4 t = *reinterpret_cast<const float4*>(p);
  x[0] = t.x; x[1] = t.y; x[2] = t.z; x[3] = t.w;
}
__device__ __forceinline__ void ld4(const double* p, double (&x)[4]) {
  const double2 a = *reinterpret_cast<const double2*>(p), b = *reinterpret_cast<const double2*>(p + 2);
  x[0] = a.x; x[1] = a.y; x[2] = b.x; x[3] = b.y;
}
// Asynchronous global -> shared copies of 16 bytes (sm_80+; plain copies before): a tile's loads
// are all in flight at once instead of one latency per load-store pair of the copy loop.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
#else
  *reinterpret_cast<int4*>(smem) = *reinterpret_cast<const int4*>(gmem);
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
/** Waits until at most N of this thread's committed groups are still in flight. */
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

/** Field offsets of the packed plan (decode-attention-plan.ts planLayout computes the same). */
struct PlanOff {
  int mask, pbase, roff, starts, ends, rowOff, rowSlots, counters;
};
__device__ __forceinline__ PlanOff plan_off(int B, int I, int R, int P) {
  PlanOff o;
  o.mask = 1;
  o.pbase = 1 + I;
  o.roff = 1 + 2 * I;
  o.starts = 2 + 3 * I;
  o.ends = o.starts + R;
  o.rowOff = o.ends + R;
  o.rowSlots = o.rowOff + B + 1;
  o.counters = o.rowSlots + P;
  return o;
}

/**
 * The separate combine kernel's merge (the previous op, kept for comparison): row `row`'s
 * partials of head h into out / lse, the caller's nt threads sharing the head dim, each summing
 * the partials serially in the row's slot order (a chain of dependent loads per partial: slow for
 * rows of many partials). Partials are read through L2 (__ldcg), never a stale L1 line.
 */
__device__ __forceinline__ void da_combine_head(const int* plan, const PlanOff& o, const T* pacc, const T* pml, T* out, T* lse, int row,
                                                int h, int P, int H, int D, int tid, int nt) {
  const int a = max(plan[o.rowOff + row], 0), b = min(plan[o.rowOff + row + 1], P);
  T M = -t_inf<T>();
  for (int s = a; s < b; s++) {
    const int slot = plan[o.rowSlots + s];
    if (slot >= 0 && slot < P) M = t_max(M, __ldcg(pml + ((i64)slot * H + h) * 2));
  }
  // Weights e^(m_s - M); empty partials (m -inf) weigh 0, and so does everything when M is -inf.
  const bool any = M != -t_inf<T>();
  T L = T(0);
  if (any) {
    for (int s = a; s < b; s++) {
      const int slot = plan[o.rowSlots + s];
      if (slot < 0 || slot >= P) continue;
      const i64 ps = (i64)slot * H + h;
      L += __ldcg(pml + ps * 2 + 1) * t_exp(__ldcg(pml + ps * 2) - M);
    }
  }
  const T inv = L > T(0) ? T(1) / L : T(0);
  for (int d = tid; d < D; d += nt) {
    T acc = T(0);
    if (L > T(0)) {
      for (int s = a; s < b; s++) {
        const int slot = plan[o.rowSlots + s];
        if (slot < 0 || slot >= P) continue;
        const i64 ps = (i64)slot * H + h;
        acc += __ldcg(pacc + ps * D + d) * t_exp(__ldcg(pml + ps * 2) - M);
      }
    }
    out[((i64)row * H + h) * D + d] = acc * inv;
  }
  if (tid == 0) lse[(i64)row * H + h] = L > T(0) ? M + t_log(L) : -t_inf<T>();
}

/**
 * The fused path's merge: one warp merges row `row`'s partials of head h into out / lse. Lane j
 * loads partial j of each 32-wide chunk of the row's slot list (its slot, m, l: chunk 0 stays in
 * registers), M = the warp's max; then per chunk the weights w = e^(m - M) and L = sum l w, and
 * lane j's dims d = j + 32 i accumulate sum_s w_s acc_s[d] over the chunk's partials (slot and
 * weight broadcast by shuffle, so the loads of successive partials are independent and overlap).
 * Fixed order (chunks in slot order, a fixed shuffle tree): the same bits whichever block runs it.
 */
template <int PL>
__device__ __forceinline__ void da_merge_head_warp(const int* plan, const PlanOff& o, const T* pacc, const T* pml, T* out, T* lse, int row,
                                                   int h, int P, int H, int D, int lane) {
  const int a = max(plan[o.rowOff + row], 0), b = min(plan[o.rowOff + row + 1], P);
  int slot0 = -1;
  T m0 = -t_inf<T>(), l0 = T(0), mx = -t_inf<T>();
  for (int s0 = a; s0 < b; s0 += 32) {
    int slot = s0 + lane < b ? plan[o.rowSlots + s0 + lane] : -1;
    if (slot >= P) slot = -1;
    T m = -t_inf<T>(), l = T(0);
    if (slot >= 0) {
      m = __ldcg(pml + ((i64)slot * H + h) * 2);
      l = __ldcg(pml + ((i64)slot * H + h) * 2 + 1);
    }
    if (s0 == a) {
      slot0 = slot;
      m0 = m;
      l0 = l;
    }
    mx = t_max(mx, m);
  }
  const T M = warp_max(mx);
  T L = T(0), acc[PL];
#pragma unroll
  for (int i = 0; i < PL; i++) acc[i] = T(0);
  // Empty partials (m -inf) weigh 0, and so does everything when M is -inf.
  if (M != -t_inf<T>()) {
    for (int s0 = a; s0 < b; s0 += 32) {
      int slot = slot0;
      T m = m0, l = l0;
      if (s0 != a) {
        slot = s0 + lane < b ? plan[o.rowSlots + s0 + lane] : -1;
        if (slot >= P) slot = -1;
        m = -t_inf<T>();
        l = T(0);
        if (slot >= 0) {
          m = __ldcg(pml + ((i64)slot * H + h) * 2);
          l = __ldcg(pml + ((i64)slot * H + h) * 2 + 1);
        }
      }
      const T w = slot >= 0 ? t_exp(m - M) : T(0);
      L += l * w;
      const int cnt = min(32, b - s0);
#pragma unroll 4
      for (int j = 0; j < cnt; j++) {
        const int sj = __shfl_sync(0xffffffffu, slot, j);
        const T wj = __shfl_sync(0xffffffffu, w, j);
        if (sj < 0) continue;  // warp-uniform
        const T* pr = pacc + ((i64)sj * H + h) * D;
#pragma unroll
        for (int i = 0; i < PL; i++) {
          const int d = lane + 32 * i;
          if (d < D) acc[i] += __ldcg(pr + d) * wj;
        }
      }
    }
    L = warp_sum(L);
  }
  const T inv = L > T(0) ? T(1) / L : T(0);
#pragma unroll
  for (int i = 0; i < PL; i++) {
    const int d = lane + 32 * i;
    if (d < D) out[((i64)row * H + h) * D + d] = acc[i] * inv;
  }
  if (lane == 0) lse[(i64)row * H + h] = L > T(0) ? M + t_log(L) : -t_inf<T>();
}

// Shared memory of the partial kernel (dynamic; decode-attention.ts smemBytes computes the size):
// Ks [stages][DA_KT][D + 4]; Vs [stages][DA_KT][D + 4]; Qs [DA_QMAX][D + 4];
// Ps [DA_WARPS][DA_QW_MAX][DA_KT]; slots [DA_MAX_CHUNK]; rowsOf [32]; done [32].

/** Queues (cp.async, one committed group per thread) keys [t0, t0 + cnt) of the slot list into Kb / Vb. */
__device__ __forceinline__ void da_issue_tile(const T* __restrict__ k, const T* __restrict__ v, T* Kb, T* Vb, const int* slots, int t0,
                                              int cnt, int g, int Hkv, int D) {
  const int DP = D + 4, D4 = D >> 2;
  for (int idx = threadIdx.x; idx < cnt * D4; idx += DA_THREADS) {
    const int j = idx / D4, c = (idx - j * D4) << 2;
    const i64 off = ((i64)slots[t0 + j] * Hkv + g) * D + c;
#pragma unroll
    for (int b = 0; b < (int)sizeof(T) * 4; b += 16) {
      cp_async16(reinterpret_cast<char*>(Kb + j * DP + c) + b, reinterpret_cast<const char*>(k + off) + b);
      cp_async16(reinterpret_cast<char*>(Vb + j * DP + c) + b, reinterpret_cast<const char*>(v + off) + b);
    }
  }
  cp_async_commit();
}

/**
 * The keys of one unit against one pass of queries; QW queries per warp (warp w: [w QW, w QW + QW)).
 * Tile 0 is already queued into buffer 0 by the caller (it overlaps the query load).
 */
template <int PL, int QW>
__device__ __forceinline__ void da_pass(const T* __restrict__ k, const T* __restrict__ v, T* Ks, T* Vs, const T* Qs, T* Ps,
                                        const int* slots, int n, int stages, int g, int Hkv, int H, int G, int D, int qb, int nqp,
                                        int pbase, T* pacc, T* pml) {
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int DP = D + 4;
  const int i0 = w * QW;
  const int nmine = max(0, min(QW, nqp - i0));
  T m[QW], l[QW], acc[QW][PL];
#pragma unroll
  for (int qq = 0; qq < QW; qq++) {
    m[qq] = -t_inf<T>();
    l[qq] = T(0);
#pragma unroll
    for (int i = 0; i < PL; i++) acc[qq][i] = T(0);
  }
  T* Pw = Ps + w * DA_QW_MAX * DA_KT;
  for (int t = 0; t * DA_KT < n; t++) {
    const int t0 = t * DA_KT, cnt = min(DA_KT, n - t0);
    const bool more = t0 + DA_KT < n;
    const int buf = stages == 2 ? (t & 1) : 0;
    // Two buffers: tile t + 1 goes into the one tile t - 1 used (released by the barrier that
    // ended that tile) and stays in flight while tile t is used.
    if (more && stages == 2) {
      da_issue_tile(k, v, Ks + ((t + 1) & 1) * DA_KT * DP, Vs + ((t + 1) & 1) * DA_KT * DP, slots, t0 + DA_KT, min(DA_KT, n - t0 - DA_KT), g,
                    Hkv, D);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // tile t (and, on the first tile, the queries) visible to every warp
    // Rows past cnt hold stale data: their scores are replaced by -inf (a select, so stale values
    // do not matter) and the P V loop stops at cnt.
    if (nmine > 0) {  // warp-uniform: a warp past the pass's queries only keeps the barriers
      const T* Kt = Ks + buf * DA_KT * DP;
      const T* Vt = Vs + buf * DA_KT * DP;
      // Scores: lane j holds q . k_j for each of the warp's queries (rows past nqp are zero queries).
      T s[QW];
#pragma unroll
      for (int qq = 0; qq < QW; qq++) s[qq] = T(0);
      const T* kr = Kt + lane * DP;
#pragma unroll 2
      for (int d = 0; d < D; d += 4) {
        T kx[4];
        ld4(kr + d, kx);
#pragma unroll
        for (int qq = 0; qq < QW; qq++) {
          T qx[4];
          ld4(Qs + (i0 + qq) * DP + d, qx);
          s[qq] += qx[0] * kx[0] + qx[1] * kx[1] + qx[2] * kx[2] + qx[3] * kx[3];
        }
      }
      // Online softmax per query; p goes to shared memory for the P V product.
#pragma unroll
      for (int qq = 0; qq < QW; qq++) {
        const T sc = lane < cnt ? s[qq] : -t_inf<T>();
        const T mnew = t_max(m[qq], warp_max(sc));  // finite: key 0 of the tile is valid
        const T corr = t_exp(m[qq] - mnew);
        const T p = lane < cnt ? t_exp(sc - mnew) : T(0);
        l[qq] = l[qq] * corr + warp_sum(p);
        m[qq] = mnew;
        Pw[qq * DA_KT + lane] = p;
#pragma unroll
        for (int i = 0; i < PL; i++) acc[qq][i] *= corr;
      }
      __syncwarp();
      for (int j = 0; j < cnt; j++) {
        T vv[PL];
#pragma unroll
        for (int i = 0; i < PL; i++) {
          const int d = lane + 32 * i;
          vv[i] = d < D ? Vt[j * DP + d] : T(0);
        }
#pragma unroll
        for (int qq = 0; qq < QW; qq++) {
          const T pj = Pw[qq * DA_KT + j];
#pragma unroll
          for (int i = 0; i < PL; i++) acc[qq][i] += pj * vv[i];
        }
      }
    }
    __syncthreads();  // tile t's buffer (and Pw) consumed before anything refills it
    if (more && stages != 2) da_issue_tile(k, v, Ks, Vs, slots, t0 + DA_KT, min(DA_KT, n - t0 - DA_KT), g, Hkv, D);
  }
  // Unnormalized partials (an item whose slots were all clamped away leaves m -inf, l 0, acc 0).
#pragma unroll
  for (int qq = 0; qq < QW; qq++) {
    if (qq >= nmine) break;
    const int qi = qb + i0 + qq;
    const int h = g * G + qi % G;
    const i64 ps = (i64)(pbase + qi / G) * H + h;
#pragma unroll
    for (int i = 0; i < PL; i++) {
      const int d = lane + 32 * i;
      if (d < D) pacc[ps * D + d] = acc[qq][i];
    }
    if (lane == 0) {
      pml[ps * 2] = m[qq];
      pml[ps * 2 + 1] = l[qq];
    }
  }
}

/**
 * After a unit's partials are written: counts the block in for each row of the unit's mask at
 * counter (row, g % DA_CNT); the block that brings a counter to its total (the row's partial
 * count x the kv groups sharing the counter) resets it to 0 and merges that row's heads of those
 * groups, one warp per head (da_merge_head_warp). Threadfence before the count (this block's partials are visible to
 * whoever finishes the row) and after it (the finisher reads everyone's).
 */
template <int PL>
__device__ __forceinline__ void da_finish_unit(int* plan, const PlanOff& o, const T* pacc, const T* pml, T* out, T* lse, const int* rowsOf,
                                               int* done, unsigned mask, int g, int B, int P, int H, int Hkv, int D) {
  const int G = H / Hkv, c = g % DA_CNT;
  const int nr = __popc(mask);
  __threadfence();
  __syncthreads();  // every thread's partial writes are fenced before the count
  if ((int)threadIdx.x < nr) {
    const int row = rowsOf[threadIdx.x];
    int last = 0;
    if (row < B) {
      const int parts = plan[o.rowOff + row + 1] - plan[o.rowOff + row];
      const int total = parts * ((Hkv - 1 - c) / DA_CNT + 1);
      int* ctr = plan + o.counters + row * DA_CNT + c;
      if (atomicAdd(ctr, 1) + 1 == total) {
        atomicExch(ctr, 0);  // every other count of this launch is in: ready for the next one
        last = 1;
      }
    }
    done[threadIdx.x] = last;
  }
  __syncthreads();
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int ngroups = (Hkv - 1 - c) / DA_CNT + 1;
  for (int i = 0; i < nr; i++) {
    if (!done[i]) continue;  // block-uniform
    __threadfence();
    const int row = rowsOf[i];
    for (int hi = w; hi < ngroups * G; hi += DA_WARPS) {
      const int h = (c + DA_CNT * (hi / G)) * G + hi % G;
      da_merge_head_warp<PL>(plan, o, pacc, pml, out, lse, row, h, P, H, D, lane);
    }
  }
}

template <int PL>
__device__ __forceinline__ void da_partial(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, int* plan,
                                           T* pacc, T* pml, T* out, T* lse, int B, int I, int R, int P, int keys,
                                           int H, int Hkv, int D, T scale, int stages, int fuse) {
  extern __shared__ __align__(16) unsigned char da_smem[];
  const int DP = D + 4;
  T* Ks = reinterpret_cast<T*>(da_smem);
  T* Vs = Ks + stages * DA_KT * DP;
  T* Qs = Vs + stages * DA_KT * DP;
  T* Ps = Qs + DA_QMAX * DP;
  int* slots = reinterpret_cast<int*>(Ps + DA_WARPS * DA_QW_MAX * DA_KT);
  int* rowsOf = slots + DA_MAX_CHUNK;
  int* done = rowsOf + 32;
  const PlanOff o = plan_off(B, I, R, P);
  const int numItems = min(plan[0], I);
  const int G = H / Hkv;
  // Padding row blockIdx.x's partial count, loaded now and used at the end (off the critical path).
  const int pad0 = fuse && (int)blockIdx.x < B ? plan[o.rowOff + blockIdx.x + 1] - plan[o.rowOff + blockIdx.x] : 1;
  // Units run to the capacity I * Hkv, so the item's fields (in bounds) load beside numItems.
  for (int unit = blockIdx.x; unit < I * Hkv; unit += gridDim.x) {
    const int item = unit / Hkv, g = unit - item * Hkv;
    const unsigned mask = (unsigned)plan[o.mask + item];
    const int pbase = plan[o.pbase + item];
    const int r0 = plan[o.roff + item], r1 = plan[o.roff + item + 1];
    if (item >= numItems) break;  // block-uniform; later units are further out
    __syncthreads();  // the previous unit is done with shared memory
    // The item's slots, in order, clamped to the page array and to the list's capacity.
    int n = 0;
    for (int r = r0; r < r1; r++) {
      const int s0 = max(plan[o.starts + r], 0);
      const int len = min(min(plan[o.ends + r], keys) - s0, DA_MAX_CHUNK - n);
      if (len <= 0) continue;
      for (int j = threadIdx.x; j < len; j += DA_THREADS) slots[n + j] = s0 + j;
      n += len;
    }
    if (threadIdx.x == 0) {
      int c = 0;
      for (unsigned mm = mask; mm != 0u && c < 32; mm &= mm - 1u) rowsOf[c++] = __ffs((int)mm) - 1;
    }
    // Partials past the capacity would be written out of bounds: a bad plan computes nothing.
    const int nq = (pbase + __popc(mask) <= P && pbase >= 0) ? __popc(mask) * G : 0;
    for (int qb = 0; qb < nq; qb += DA_QMAX) {
      const int nqp = min(DA_QMAX, nq - qb);
      __syncthreads();  // slots and rowsOf are written; the previous pass is done with Qs and the tiles
      // Tile 0 is in flight while the queries are staged.
      da_issue_tile(k, v, Ks, Vs, slots, 0, min(DA_KT, n), g, Hkv, D);
      for (int idx = threadIdx.x; idx < DA_QMAX * D; idx += DA_THREADS) {
        const int i = idx / D, d = idx - i * D;
        T val = T(0);
        if (i < nqp) {
          const int qi = qb + i;
          const int row = rowsOf[qi / G];
          val = row < B ? q[((i64)row * H + g * G + qi % G) * D + d] * scale : T(0);
        }
        Qs[i * DP + d] = val;
      }
      // Fewest queries per warp that cover the pass (a warp past them idles through the tiles).
      const int qw = (nqp + DA_WARPS - 1) / DA_WARPS;
      if (qw <= 1) da_pass<PL, 1>(k, v, Ks, Vs, Qs, Ps, slots, n, stages, g, Hkv, H, G, D, qb, nqp, pbase, pacc, pml);
      else if (qw <= 2) da_pass<PL, 2>(k, v, Ks, Vs, Qs, Ps, slots, n, stages, g, Hkv, H, G, D, qb, nqp, pbase, pacc, pml);
      else if (qw <= 4) da_pass<PL, 4>(k, v, Ks, Vs, Qs, Ps, slots, n, stages, g, Hkv, H, G, D, qb, nqp, pbase, pacc, pml);
      else da_pass<PL, 8>(k, v, Ks, Vs, Qs, Ps, slots, n, stages, g, Hkv, H, G, D, qb, nqp, pbase, pacc, pml);
    }
    if (fuse) da_finish_unit<PL>(plan, o, pacc, pml, out, lse, rowsOf, done, mask, g, B, P, H, Hkv, D);
  }
  if (fuse) {
    // Padding rows (no partials): nobody counts in for them, so block row % gridDim.x writes them.
    for (int row = blockIdx.x; row < B; row += gridDim.x) {
      const int parts = row == (int)blockIdx.x ? pad0 : plan[o.rowOff + row + 1] - plan[o.rowOff + row];
      if (parts > 0) continue;
      for (int h = threadIdx.x >> 5; h < H; h += DA_WARPS) da_merge_head_warp<PL>(plan, o, pacc, pml, out, lse, row, h, P, H, D, threadIdx.x & 31);
    }
  }
}

#define DA_PARTIAL(HD)                                                                                                              \
  KERNEL(decode_attention_partial_d##HD)(const T* q, const T* k, const T* v, int* plan, T* pacc, T* pml, T* out, T* lse, int B, int I,  \
                                         int R, int P, int keys, int H, int Hkv, int D, T scale, int stages, int fuse, int early) {     \
    dev_pdl_enter(early);                                                                                                               \
    da_partial<HD / 32>(q, k, v, plan, pacc, pml, out, lse, B, I, R, P, keys, H, Hkv, D, scale, stages, fuse);                      \
  }
DA_PARTIAL(64)
DA_PARTIAL(128)
DA_PARTIAL(256)

KERNEL(decode_attention_combine)(const int* plan, const T* pacc, const T* pml, T* out, T* lse, int B, int I, int R, int P, int H, int D,
                                 int early) {
  dev_pdl_enter(early);
  const PlanOff o = plan_off(B, I, R, P);
  da_combine_head(plan, o, pacc, pml, out, lse, blockIdx.x, blockIdx.y, P, H, D, threadIdx.x, blockDim.x);
}
