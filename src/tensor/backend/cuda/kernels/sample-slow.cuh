// sample-slow.cuh: the shared pieces of sample.cu (packed row parameters, block scans, the
// PATH_* codes) and its one-block fallback, slow_row: the row is copied into scratch[b, :] (f64
// [B, V]) as x, later e = exp(x / temperature - max). Top-k and top-p are radix selects over the
// bit pattern of e (non-negative doubles sort as their bits): 12-bit then 11-bit digits,
// histograms of counts and of mass in shared memory; once the candidates of a digit fit in CAP
// they are compacted into shared memory and the remaining digits read only them. The final draw
// scans the kept set in id order, one contiguous range per warp, the warp with the crossing found
// sequentially. Included by sample.cu only (compile.ts passes it as a header).
#pragma once
#include "common.cuh"

#define SB 1024
#define NWARP (SB / 32)
#define NBINS 4096
#define CAP 4096
#define REC 8

typedef unsigned long long u64;

/** Dynamic shared memory of sample_rows (the host passes sizeof via SAMPLE_SMEM in sampling.ts). */
struct SampleSmem {
  unsigned int cnt[NBINS];
  double mass[NBINS];
  u64 lkey[CAP];
  int lid[CAP];
  double dred[NWARP + 1];
  unsigned int ured[NWARP + 1];
  int ired[NWARP + 1];
  // Radix-select state shared by the block.
  int chosen;
  unsigned int above;
  double massAbove;
  int listN;
  int useList;
};

__device__ __forceinline__ double e_of(u64 k) { return __longlong_as_double((long long)k); }
__device__ __forceinline__ u64 key_of(double e) { return (u64)__double_as_longlong(e); }

/** Exclusive scan over the block in thread order; *total gets the sum (every thread). */
template <typename X> __device__ X block_excl(X v, X* sh, X* total) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  X inc = v;
  for (int o = 1; o < 32; o <<= 1) {
    X y = __shfl_up_sync(0xffffffffu, inc, o);
    if (lane >= o) inc += y;
  }
  __syncthreads();
  if (lane == 31) sh[w] = inc;
  __syncthreads();
  if (w == 0) {
    X s = sh[lane];
    X si = s;
    for (int o = 1; o < 32; o <<= 1) {
      X y = __shfl_up_sync(0xffffffffu, si, o);
      if (lane >= o) si += y;
    }
    sh[lane] = si - s;
    if (lane == 31) sh[NWARP] = si;
  }
  __syncthreads();
  *total = sh[NWARP];
  return sh[w] + inc - v;
}

/** Item i of the current source: the compacted list or the scratch row. */
__device__ __forceinline__ u64 item_key(const SampleSmem& s, const double* S, int i) {
  return s.useList ? s.lkey[i] : key_of(S[i]);
}
__device__ __forceinline__ int item_id(const SampleSmem& s, int i) { return s.useList ? s.lid[i] : i; }

struct Sel {
  u64 t;          // the selected key
  unsigned above; // eligible items with key > t
  unsigned eq;    // eligible items with key == t
  double massAbove;
  int found;
};

/**
 * Radix select over eligible items (key >= lo) in descending key order: the key of the k-th item
 * (byMass = 0) or of the first item whose cumulative probability (mass / z) reaches target. May
 * compact the candidates into the list (s.useList = 1) when it was not in use (listFree).
 */
__device__ Sel radix_select(SampleSmem& s, const double* S, int n0, u64 lo, int byMass, unsigned k, double target, double z, int listFree) {
  const int shifts[6] = {52, 41, 30, 19, 8, 0};
  const int widths[6] = {12, 11, 11, 11, 11, 8};
  u64 prefix = 0, himask = 0;
  unsigned above = 0;
  double massAbove = 0;
  int n = n0;
  Sel r;
  r.found = 1;
  for (int d = 0; d < 6; d++) {
    const int sh = shifts[d], bins = 1 << widths[d];
    for (int b = threadIdx.x; b < bins; b += SB) s.cnt[b] = 0, s.mass[b] = 0;
    if (threadIdx.x == 0) s.chosen = 0x7fffffff;
    __syncthreads();
    // Most items fall into a few bins (the first digit is e's exponent), so lanes of a warp with
    // the same bin add once, through their leader: shared atomics on one address serialize.
    for (int i0 = 0; i0 < n; i0 += SB) {
      const int i = i0 + threadIdx.x;
      const u64 key = i < n ? item_key(s, S, i) : 0;
      const bool ok = i < n && key >= lo && (key & himask) == prefix;
      const int b = ok ? (int)((key >> sh) & (u64)(bins - 1)) : -1;
      const unsigned grp = __match_any_sync(0xffffffffu, b);
      const bool leader = ok && (threadIdx.x & 31) == __ffs(grp) - 1;
      if (leader) atomicAdd(&s.cnt[b], (unsigned)__popc(grp));
      if (byMass) {
        const double e = ok ? e_of(key) : 0.0;
        double tot = 0;
        for (int l = 0; l < 32; l++) {
          const double v = __shfl_sync(0xffffffffu, e, l);
          if ((grp >> l) & 1u) tot += v;
        }
        if (leader) atomicAdd(&s.mass[b], tot);
      }
    }
    __syncthreads();
    // Bins in descending order: thread t holds positions [t * per, (t + 1) * per).
    const int per = bins >= SB ? bins / SB : 1;
    unsigned c = 0;
    double m = 0;
    const int p0 = threadIdx.x * per;
    for (int j = 0; j < per && p0 + j < bins; j++) c += s.cnt[bins - 1 - (p0 + j)], m += s.mass[bins - 1 - (p0 + j)];
    unsigned ctot;
    double mtot;
    unsigned cx = block_excl(c, s.ured, &ctot);
    double mx = block_excl(m, s.dred, &mtot);
    for (int j = 0; j < per && p0 + j < bins; j++) {
      const int b = bins - 1 - (p0 + j);
      const unsigned cc = above + cx + s.cnt[b];
      const double mm = massAbove + mx + s.mass[b];
      if (byMass ? (mm / z >= target && s.cnt[b] > 0) : (cc >= k)) {
        atomicMin(&s.chosen, p0 + j);
        break;
      }
      cx += s.cnt[b];
      mx += s.mass[b];
    }
    __syncthreads();
    const int pos = s.chosen;
    if (pos == 0x7fffffff) {
      r.found = 0; // the mass never reaches the target (rounding): the caller keeps everything
      return r;
    }
    // The owner of the chosen position publishes the sums above it.
    if (threadIdx.x == pos / per) { // its cx, mx stopped at pos: the sums of the bins before it
      s.above = above + cx;
      s.massAbove = massAbove + mx;
    }
    __syncthreads();
    const int b = bins - 1 - pos;
    above = s.above;
    massAbove = s.massAbove;
    const unsigned inBin = s.cnt[b];
    prefix |= (u64)b << sh;
    himask |= (u64)(bins - 1) << sh;
    if (d == 5) {
      r.t = prefix;
      r.eq = inBin;
      break;
    }
    // Few candidates left: copy them (any order) into the list, so later digits skip the row.
    if (!s.useList && listFree && inBin <= CAP) {
      if (threadIdx.x == 0) s.listN = 0;
      __syncthreads();
      for (int i = threadIdx.x; i < n; i += SB) {
        const u64 key = key_of(S[i]);
        if (key < lo || (key & himask) != prefix) continue;
        const int at = atomicAdd(&s.listN, 1);
        s.lkey[at] = key;
        s.lid[at] = i;
      }
      __syncthreads();
      if (threadIdx.x == 0) s.useList = 1;
      __syncthreads();
      n = s.listN;
    }
    __syncthreads();
  }
  r.above = above;
  r.massAbove = massAbove;
  return r;
}

/**
 * Copies the items with key >= lo, in id order, from the scratch row into the list (the caller
 * knows they fit). One step of SB ids at a time: ballots give each kept item its slot.
 */
__device__ void compact_ordered(SampleSmem& s, const double* S, int V, u64 lo) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  int base = 0;
  for (int i0 = 0; i0 < V; i0 += SB) {
    const int i = i0 + threadIdx.x;
    const u64 key = i < V ? key_of(S[i]) : 0;
    const bool keep = i < V && key >= lo;
    const unsigned bal = __ballot_sync(0xffffffffu, keep);
    if (lane == 0) s.ired[w] = __popc(bal);
    __syncthreads();
    int off = base, tot = 0;
    for (int j = 0; j < NWARP; j++) {
      if (j < w) off += s.ired[j];
      tot += s.ired[j];
    }
    if (keep) {
      const int at = off + __popc(bal & ((1u << lane) - 1));
      s.lkey[at] = key;
      s.lid[at] = i;
    }
    base += tot;
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    s.listN = base;
    s.useList = 1;
  }
  __syncthreads();
}

/** What the final scan keeps: key >= tk, min-p, and top-p's key > tp or a tie of rank < tieKeep. */
struct Keep {
  u64 tk, tp;
  long long tieKeep;
  int topP, minP;
  double zk, minThr;
};

__device__ __forceinline__ bool kept(const Keep& k, u64 key, long long rank) {
  if (key < k.tk) return false;
  if (k.minP && e_of(key) / k.zk < k.minThr) return false;
  if (k.topP && key <= k.tp && !(key == k.tp && rank < k.tieKeep)) return false;
  return true;
}

/**
 * The draw: the first kept id (in id order) whose cumulative probability exceeds u, skipping
 * zero probabilities; the last kept id with a nonzero one when rounding leaves u above the total.
 * Warp w scans items [w * span, (w + 1) * span) of the current source.
 */
__device__ int final_draw(SampleSmem& s, const double* S, int n, const Keep& k, double u) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  const int span = ((n + NWARP - 1) / NWARP + 31) / 32 * 32;
  const int lo = w * span, hi = min(n, lo + span);
  const unsigned lt = (1u << lane) - 1;
  // Pass 1: ties of the top-p key per warp, so each tie knows its rank in id order.
  long long ties = 0;
  if (k.topP) {
    for (int i0 = lo; i0 < hi; i0 += 32) {
      const int i = i0 + lane;
      ties += __popc(__ballot_sync(0xffffffffu, i < hi && item_key(s, S, i) == k.tp && item_key(s, S, i) >= k.tk));
    }
  }
  __shared__ long long tieBase[NWARP];
  __shared__ double zw[NWARP], qw[NWARP];
  __shared__ int lastW[NWARP];
  __shared__ int pick[2];
  if (lane == 0) tieBase[w] = ties;
  __syncthreads();
  if (threadIdx.x == 0) {
    long long c = 0;
    for (int j = 0; j < NWARP; j++) {
      const long long t = tieBase[j];
      tieBase[j] = c;
      c += t;
    }
  }
  __syncthreads();
  // Pass 2: the kept mass Z (the final softmax's denominator).
  double z = 0;
  long long r = tieBase[w];
  for (int i0 = lo; i0 < hi; i0 += 32) {
    const int i = i0 + lane;
    const u64 key = i < hi ? item_key(s, S, i) : 0;
    const bool tie = i < hi && k.topP && key == k.tp && key >= k.tk;
    const unsigned bt = __ballot_sync(0xffffffffu, tie);
    if (i < hi && kept(k, key, r + __popc(bt & lt))) z += e_of(key);
    r += __popc(bt);
  }
  z = warp_sum(z);
  if (lane == 0) zw[w] = z;
  __syncthreads();
  double Z = 0;
  for (int j = 0; j < NWARP; j++) Z += zw[j];
  // Pass 3: probability mass per warp and the last id with a nonzero probability.
  double q = 0;
  int last = -1;
  r = tieBase[w];
  for (int i0 = lo; i0 < hi; i0 += 32) {
    const int i = i0 + lane;
    const u64 key = i < hi ? item_key(s, S, i) : 0;
    const bool tie = i < hi && k.topP && key == k.tp && key >= k.tk;
    const unsigned bt = __ballot_sync(0xffffffffu, tie);
    if (i < hi && kept(k, key, r + __popc(bt & lt))) {
      const double p = e_of(key) / Z;
      if (p != 0) q += p, last = max(last, i);
    }
    r += __popc(bt);
  }
  q = warp_sum(q);
  for (int o = 16; o > 0; o >>= 1) last = max(last, __shfl_xor_sync(0xffffffffu, last, o));
  if (lane == 0) qw[w] = q, lastW[w] = last;
  __syncthreads();
  if (threadIdx.x == 0) {
    double cum = 0;
    int cw = -1, lastAll = -1;
    for (int j = 0; j < NWARP; j++) {
      if (lastW[j] >= 0) lastAll = lastW[j];
      if (cw < 0 && qw[j] > 0 && u < cum + qw[j]) cw = j;
      if (cw < 0) cum += qw[j];
    }
    pick[0] = cw;
    pick[1] = lastAll;
    zw[0] = cum; // the mass before the chosen warp
  }
  __syncthreads();
  const int cw = pick[0];
  int id = pick[1];
  __syncthreads();
  if (cw >= 0 && w == cw) {
    // Pass 4 (one warp): walk the chosen warp's range with an inclusive scan per step.
    double cum = zw[0];
    int found = -1, lastKept = -1;
    r = tieBase[w];
    for (int i0 = lo; i0 < hi && found < 0; i0 += 32) {
      const int i = i0 + lane;
      const u64 key = i < hi ? item_key(s, S, i) : 0;
      const bool tie = i < hi && k.topP && key == k.tp && key >= k.tk;
      const unsigned bt = __ballot_sync(0xffffffffu, tie);
      double p = 0;
      if (i < hi && kept(k, key, r + __popc(bt & lt))) p = e_of(key) / Z;
      r += __popc(bt);
      double inc = p;
      for (int o = 1; o < 32; o <<= 1) {
        const double y = __shfl_up_sync(0xffffffffu, inc, o);
        if (lane >= o) inc += y;
      }
      const unsigned hit = __ballot_sync(0xffffffffu, p != 0 && u < cum + inc);
      const unsigned nz = __ballot_sync(0xffffffffu, p != 0);
      if (hit) found = i0 + __ffs(hit) - 1;
      if (nz) lastKept = i0 + 31 - __clz(nz);
      cum += __shfl_sync(0xffffffffu, inc, 31);
    }
    if (lane == 0) pick[0] = found >= 0 ? found : lastKept;
  }
  __syncthreads();
  if (cw >= 0) id = pick[0];
  __syncthreads();
  return id >= 0 ? item_id(s, id) : -1;
}


// ---------------------------------------------------------------- a row's parameters

#define MODE_GREEDY 0
#define MODE_FORCED 1
#define MODE_SAMPLED 2
/** Paths a row took (out's third part). */
#define PATH_PART 0     // greedy or forced: sample_part's last block
#define PATH_FULL 1     // no filter: chunk masses, then one chunk scanned
#define PATH_CAND 2     // filters decided inside the complete set
#define PATH_SLOW 3     // slow_row
#define PATH_NOSCORE 4  // every score -inf

/** One record of packed, and where the row's logits and id lists are. */
struct RowP {
  double temp, topK, topP, minP, pen, u;
  int mode, forced;
  const T* L; // logits[rows[b], :]
  const int* ids;
  int p0, p1, b0, b1; // penalty ids [p0, p1), ban ids [b0, b1) of ids
};

__device__ __forceinline__ RowP row_params(const T* logits, const int* packed, i64 V, int B, int b) {
  RowP r;
  const double* rec = reinterpret_cast<const double*>(packed) + (i64)b * REC;
  r.temp = rec[0], r.topK = rec[1], r.topP = rec[2], r.minP = rec[3], r.pen = rec[4], r.u = rec[5];
  r.mode = (int)rec[6], r.forced = (int)rec[7];
  const int* ints = packed + 2 * REC * B;
  const int* penOff = ints + B;
  const int* banOff = penOff + B + 1;
  r.ids = banOff + B + 1;
  r.L = logits + (i64)ints[b] * V;
  r.p0 = penOff[b], r.p1 = penOff[b + 1], r.b0 = banOff[b], r.b1 = banOff[b + 1];
  return r;
}

/** Whether a sampled row filters at all (the same test in both kernels). */
__device__ __forceinline__ bool has_filter(const RowP& r, i64 V) {
  return (r.topK > 0 && r.topK < (double)V) || r.topP < 1 || r.minP > 0;
}

/**
 * The one-block fallback for a sampled row (h3's kernel body): x into the scratch row S, then e,
 * radix selects and the id-order draw. Returns the id (the caller computes the log-prob).
 */
__device__ int slow_row(SampleSmem& s, const RowP& r, double* S, i64 V) {
  __shared__ double shd[32];

  const double NEG = -t_inf<double>();
  const double temp = r.temp, topK = r.topK, topP = r.topP, minP = r.minP, pen = r.pen, u = r.u;
  __syncthreads(); // the shared memory aliases the fast path's, which other threads may still read
  if (threadIdx.x == 0) s.useList = 0;
  for (i64 i = threadIdx.x; i < V; i += SB) S[i] = (double)r.L[i];
  __syncthreads();
  // Repetition penalty (ids unique, host-deduplicated), then bans: HF's processor order.
  for (int j = r.p0 + threadIdx.x; j < r.p1; j += SB) {
    const int id = r.ids[j];
    if (id < 0 || id >= V) continue;
    const double x = S[id];
    S[id] = x > 0 ? x / pen : x * pen;
  }
  __syncthreads();
  for (int j = r.b0 + threadIdx.x; j < r.b1; j += SB) {
    const int id = r.ids[j];
    if (id >= 0 && id < V) S[id] = NEG;
  }
  __syncthreads();
  // The max of x (the caller saw it is finite).
  double best = NEG;
  for (i64 i = threadIdx.x; i < V; i += SB) best = fmax(best, S[i]);
  best = block_max(best, shd);

  // e = exp(x / temperature - max) in place, and its sum.
  const double m = best / temp;
  double Z = 0;
  for (i64 i = threadIdx.x; i < V; i += SB) {
    const double e = exp(S[i] / temp - m);
    S[i] = e;
    Z += e;
  }
  Z = block_sum(Z, shd);
  __syncthreads();
  Keep k;
  k.tk = 0, k.tp = 0, k.tieKeep = 0, k.topP = 0, k.minP = 0, k.zk = Z, k.minThr = 0;
  const bool useTopK = topK > 0 && topK < (double)V;
  if (useTopK) {
    const Sel sk = radix_select(s, S, (int)V, 0, 0, (unsigned)topK, 0, 1, 1);
    k.tk = sk.t;
    __syncthreads();
    if (threadIdx.x == 0) s.useList = 0;
    __syncthreads();
    // Keep the survivors (id order) in shared memory when they fit: everything after reads them.
    if (sk.above + sk.eq <= CAP) compact_ordered(s, S, (int)V, k.tk);
    // The survivors' mass: the denominator of the softmax top-p and min-p see.
    const int n = s.useList ? s.listN : (int)V;
    double zk = 0;
    for (int i = threadIdx.x; i < n; i += SB) {
      const u64 key = item_key(s, S, i);
      if (key >= k.tk) zk += e_of(key);
    }
    k.zk = block_sum(zk, shd);
    __syncthreads();
  }
  if (topP < 1) {
    const int wasList = s.useList;
    const int n = wasList ? s.listN : (int)V;
    const Sel sp = radix_select(s, S, n, k.tk, 1, 0, topP, k.zk, !wasList);
    __syncthreads();
    if (threadIdx.x == 0) s.useList = wasList;
    __syncthreads();
    k.topP = 1;
    if (sp.found) {
      // Ties at the threshold: as many as the host's sequential sum takes, lowest ids first.
      // The host adds probabilities (e / Z), not masses: ties at the top of the row (e = 1,
      // massAbove = 0) then round exactly as its sum does (ten tied ids of p 0.1 reach 0.9 only
      // at the tenth), which an e-space sum would not.
      const double pt = e_of(sp.t) / k.zk;
      long long j = 0;
      if (pt == 0) {
        j = sp.eq;
      } else {
        double cum = sp.massAbove / k.zk;
        while (j < (long long)sp.eq && cum < topP) cum += pt, j++;
        if (j == 0) j = 1;
      }
      k.tp = sp.t;
      k.tieKeep = j;
    } else {
      k.tp = k.tk;
      k.tieKeep = 0x7fffffffffffffffLL;
    }
  }
  if (minP > 0) {
    k.minP = 1;
    k.minThr = minP * (1.0 / k.zk);
  }
  const int id = final_draw(s, S, s.useList ? s.listN : (int)V, k, u);
  __syncthreads();
  return id < 0 ? 0 : id; // no nonzero probability at all (cannot happen with a finite max)
}
