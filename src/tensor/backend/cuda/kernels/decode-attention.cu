// decode-attention.cu: paged decode attention that reads each key once per step for all the rows
// that see it (siblings' shared prefix once) and splits long rows over many blocks (split-K).
// The host planner (src/engine/attention-plan.ts) cuts the step's keys into work items: a few slot
// ranges plus the mask of rows that see all of them. Two kernels:
//
// decode_attention_partial_d{64,128,256}: grid-stride over units (item, kv head g), unit =
//   item * Hkv + g, units < numItems * Hkv (numItems is read from the plan on the device, so a
//   captured graph serves any plan within its capacity; blocks past the work exit). DA_THREADS =
//   128 (4 warps) per block. The block lists the item's slots in shared memory, loads the queries
//   of every row in the mask x the G = H / Hkv query heads of group g (scaled) in passes of
//   DA_QMAX, then walks the keys in tiles of DA_KT = 32 slots (K and V rows staged in shared
//   memory by cp.async, 16-byte copies): lane j scores key j against each of its warp's QW queries, the warp
//   keeps an online softmax (max m, sum l) per query and accumulates acc[d] = sum p v[d] (lane
//   owns dims lane, lane + 32, ...). Writes unnormalized partials per (partial slot, head).
// decode_attention_combine: grid (B, H), 128 threads: merges a row's partials per head,
//   out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s, lse = M + log L; a row with no
//   partial (padding) gets out 0 and lse -inf.
//
// Layouts (row-major): q, out [B, H, D]; k, v pages [S', Hkv, D] (slot-major; slots are clamped
// to [0, keys)); lse [B, H]; scratch = pacc [P, H, D] then pml [P, H, 2] (m, l), P = partials
// capacity. plan (i32), with I = items capacity, R = ranges capacity:
//   [0] numItems | mask[I] | pbase[I] | rangeOff[I + 1] | starts[R] | ends[R] | rowOff[B + 1] | rowSlots[P]
// Row r's partial in item i is pbase[i] + popcount(mask[i] & ((1 << r) - 1)).
// Head dim: a multiple of 4 (the 4-wide loads), at most 32 * PL of the entry point; k and v
// 16-byte aligned. Accumulation in T (f32 or f64).
// PDL (programmatic dependent launch, sm_90+, when the host launches with it): both kernels run
// pdl_enter first, so nothing here (plan, q, pages, scratch, out) is touched before the previous
// kernel has completed; `early` schedules the next kernel before that wait (the following GEMV's
// blocks then stream weights while attention runs), else right after it.
#include "common.cuh"

// The PDL helpers (same as decode.cu's; no-ops before sm_90 and on a plain launch).
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
__device__ __forceinline__ void pdl_enter(int early) {
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
__device__ __forceinline__ void cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::);
#endif
}

/** Field offsets of the packed plan (attention-plan.ts planLayout computes the same). */
struct PlanOff {
  int mask, pbase, roff, starts, ends, rowOff, rowSlots;
};
__device__ __forceinline__ PlanOff plan_off(int B, int I, int R) {
  PlanOff o;
  o.mask = 1;
  o.pbase = 1 + I;
  o.roff = 1 + 2 * I;
  o.starts = 2 + 3 * I;
  o.ends = o.starts + R;
  o.rowOff = o.ends + R;
  o.rowSlots = o.rowOff + B + 1;
  return o;
}

// Shared memory of the partial kernel (dynamic; decode-attention.ts daSmemBytes computes the size):
// Ks, Vs [DA_KT][D + 4]; Qs [DA_QMAX][D + 4]; Ps [DA_WARPS][DA_QW_MAX][DA_KT]; slots [DA_MAX_CHUNK]; rowsOf [32].

/** The keys of one unit against one pass of queries; QW queries per warp (warp w: [w QW, w QW + QW)). */
template <int PL, int QW>
__device__ __forceinline__ void da_pass(const T* __restrict__ k, const T* __restrict__ v, T* Ks, T* Vs, const T* Qs, T* Ps,
                                        const int* slots, int n, int g, int Hkv, int H, int G, int D, int qb, int nqp,
                                        int pbase, T* __restrict__ pacc, T* __restrict__ pml) {
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int DP = D + 4, D4 = D >> 2;
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
  for (int t0 = 0; t0 < n; t0 += DA_KT) {
    const int cnt = min(DA_KT, n - t0);
    __syncthreads();  // the previous tile is consumed (and the queries and slot list are written)
    // Rows past cnt are left as they are: their scores are replaced by -inf (a select, so stale
    // values do not matter) and the P V loop stops at cnt.
    for (int idx = threadIdx.x; idx < cnt * D4; idx += DA_THREADS) {
      const int j = idx / D4, c = (idx - j * D4) << 2;
      const i64 off = ((i64)slots[t0 + j] * Hkv + g) * D + c;
#pragma unroll
      for (int b = 0; b < (int)sizeof(T) * 4; b += 16) {
        cp_async16(reinterpret_cast<char*>(Ks + j * DP + c) + b, reinterpret_cast<const char*>(k + off) + b);
        cp_async16(reinterpret_cast<char*>(Vs + j * DP + c) + b, reinterpret_cast<const char*>(v + off) + b);
      }
    }
    cp_async_wait_all();
    __syncthreads();
    if (nmine == 0) continue;  // warp-uniform: this warp has no query in this pass
    // Scores: lane j holds q . k_j for each of the warp's queries (rows past nqp are zero queries).
    T s[QW];
#pragma unroll
    for (int qq = 0; qq < QW; qq++) s[qq] = T(0);
    const T* kr = Ks + lane * DP;
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
        vv[i] = d < D ? Vs[j * DP + d] : T(0);
      }
#pragma unroll
      for (int qq = 0; qq < QW; qq++) {
        const T pj = Pw[qq * DA_KT + j];
#pragma unroll
        for (int i = 0; i < PL; i++) acc[qq][i] += pj * vv[i];
      }
    }
    __syncwarp();  // Pw is rewritten by the next tile
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

template <int PL>
__device__ __forceinline__ void da_partial(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v, const int* __restrict__ plan,
                                           T* __restrict__ pacc, T* __restrict__ pml, int B, int I, int R, int P, int keys, int H,
                                           int Hkv, int D, T scale) {
  extern __shared__ __align__(16) unsigned char da_smem[];
  const int DP = D + 4;
  T* Ks = reinterpret_cast<T*>(da_smem);
  T* Vs = Ks + DA_KT * DP;
  T* Qs = Vs + DA_KT * DP;
  T* Ps = Qs + DA_QMAX * DP;
  int* slots = reinterpret_cast<int*>(Ps + DA_WARPS * DA_QW_MAX * DA_KT);
  int* rowsOf = slots + DA_MAX_CHUNK;
  const PlanOff o = plan_off(B, I, R);
  const int numItems = min(plan[0], I);
  const int G = H / Hkv;
  for (int unit = blockIdx.x; unit < numItems * Hkv; unit += gridDim.x) {
    const int item = unit / Hkv, g = unit - item * Hkv;
    const unsigned mask = (unsigned)plan[o.mask + item];
    const int pbase = plan[o.pbase + item];
    const int r0 = plan[o.roff + item], r1 = plan[o.roff + item + 1];
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
      __syncthreads();  // rowsOf is written; the previous pass is done with Qs
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
      if (qw <= 1) da_pass<PL, 1>(k, v, Ks, Vs, Qs, Ps, slots, n, g, Hkv, H, G, D, qb, nqp, pbase, pacc, pml);
      else if (qw <= 2) da_pass<PL, 2>(k, v, Ks, Vs, Qs, Ps, slots, n, g, Hkv, H, G, D, qb, nqp, pbase, pacc, pml);
      else if (qw <= 4) da_pass<PL, 4>(k, v, Ks, Vs, Qs, Ps, slots, n, g, Hkv, H, G, D, qb, nqp, pbase, pacc, pml);
      else da_pass<PL, 8>(k, v, Ks, Vs, Qs, Ps, slots, n, g, Hkv, H, G, D, qb, nqp, pbase, pacc, pml);
    }
  }
}

#define DA_PARTIAL(HD)                                                                                                           \
  KERNEL(decode_attention_partial_d##HD)(const T* q, const T* k, const T* v, const int* plan, T* pacc, T* pml, int B, int I, int R, \
                                         int P, int keys, int H, int Hkv, int D, T scale, int early) {                              \
    pdl_enter(early);                                                                                                            \
    da_partial<HD / 32>(q, k, v, plan, pacc, pml, B, I, R, P, keys, H, Hkv, D, scale);                                           \
  }
DA_PARTIAL(64)
DA_PARTIAL(128)
DA_PARTIAL(256)

KERNEL(decode_attention_combine)(const int* plan, const T* pacc, const T* pml, T* out, T* lse, int B, int I, int R, int P, int H, int D,
                                 int early) {
  pdl_enter(early);
  const int row = blockIdx.x, h = blockIdx.y;
  const PlanOff o = plan_off(B, I, R);
  const int a = max(plan[o.rowOff + row], 0), b = min(plan[o.rowOff + row + 1], P);
  T M = -t_inf<T>();
  for (int s = a; s < b; s++) {
    const int slot = plan[o.rowSlots + s];
    if (slot >= 0 && slot < P) M = t_max(M, pml[((i64)slot * H + h) * 2]);
  }
  // Weights e^(m_s - M); empty partials (m -inf) weigh 0, and so does everything when M is -inf.
  const bool any = M != -t_inf<T>();
  T L = T(0);
  if (any) {
    for (int s = a; s < b; s++) {
      const int slot = plan[o.rowSlots + s];
      if (slot < 0 || slot >= P) continue;
      const i64 ps = (i64)slot * H + h;
      L += pml[ps * 2 + 1] * t_exp(pml[ps * 2] - M);
    }
  }
  const T inv = L > T(0) ? T(1) / L : T(0);
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    T acc = T(0);
    if (L > T(0)) {
      for (int s = a; s < b; s++) {
        const int slot = plan[o.rowSlots + s];
        if (slot < 0 || slot >= P) continue;
        const i64 ps = (i64)slot * H + h;
        acc += pacc[ps * D + d] * t_exp(pml[ps * 2] - M);
      }
    }
    out[((i64)row * H + h) * D + d] = acc * inv;
  }
  if (threadIdx.x == 0) lse[(i64)row * H + h] = L > T(0) ? M + t_log(L) : -t_inf<T>();
}
