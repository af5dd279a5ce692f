// sample.cu: on-device sampling of B rows of logits, the host sampler's processors in float64
// (engine/sampling/sampler.ts): repetition penalty over a scope, a forced id or banned ids,
// temperature, top-k, top-p, min-p, one inverse-CDF draw in id order from a given uniform u, and
// the log-prob of the raw logits at the chosen id.
//
// Two kernels (cuda/sampling.ts launches them):
// - sample_part, grid (G, B), PT threads: block (g, b) owns ids [g CH, (g + 1) CH) of row b. It
//   reads its logits once into shared memory (T -> double) and writes a partial record: raw max
//   and sum of exp (the log-prob's), penalized max (+ lowest argmax for greedy rows) or, for
//   sampled rows, max and sum of exp of y = x / temperature and, when a filter is on, its local
//   candidates: the ids whose y exceeds a cut (at most C of them, in id order). The last block of
//   a greedy or forced row (an atomic counter per row) combines the partials and writes the
//   result, so those rows need this kernel only.
// - sample_finish, one SB-thread block per sampled row: combines the partials (fixed order) and
//   draws. Without a filter the draw is the full-row inverse CDF: chunk masses give the chunk,
//   which is re-read and scanned exactly. With top-k / top-p / min-p it works on the "complete
//   set" (ids with y above the largest cut: every id there is a candidate), sorted by y: exact
//   when the kept set provably lies inside it (top-k within it; top-p's threshold or min-p's
//   bound above the cut). Otherwise (ties across cuts, wide nuclei, huge k) it falls back to the
//   one-block path below (slow_row), which reads the whole row through the f64 scratch row.
//
// slow_row (the fallback) and the shared row pieces live in sample-slow.cuh.
//
// packed (i32 words; written by the host as one buffer, see cuda/sampling.ts):
//   words [0, 16 B): B records of REC doubles {temperature, topK, topP, minP, penalty, u, mode,
//   forced}; mode 0 greedy, 1 forced, 2 sampled.
//   then rows[B] (logits row of each), penOff[B + 1], banOff[B + 1] (offsets into ids), ids[...].
// out (i32 words): logprob f64 [B] (2 B words), then id i32 [B], then the path of each row [B]
// (PATH_* below: statistics for tests and benchmarks).
#include "sample-slow.cuh"

// ---------------------------------------------------------------- the split pass (sample_part)

/**
 * Threads of a sample_part block (8 ids each; 4 blocks an SM: the blocks are short and latency-
 * bound, so more of them resident matters more than threads), ids per block (chunk), finishing
 * capacity (candidates a row).
 */
#define PT 256
#define CH 2048
#define CAPF 4096
/** Doubles per partial record: {rawMax, rawSum, max, sum, cut (u64 bits), argmax, count, -}. */
#define PREC 8
/** Histogram bins of the local cut: y below the block's max by [j / 16, (j + 1) / 16). */
#define HB 256

/**
 * An order-preserving key of a double (larger y, larger key; -0 as +0, as the host's comparisons
 * see them). Key 0 is no double's (it is the -NaN pattern's): "no cut" below every id.
 */
__device__ __forceinline__ u64 ykey(double y) {
  const u64 b = (u64)__double_as_longlong(y == 0 ? 0.0 : y);
  return (b >> 63) ? ~b : (b | 0x8000000000000000ull);
}
__device__ __forceinline__ double ykey_inv(u64 k) {
  const u64 b = (k >> 63) ? (k & 0x7fffffffffffffffull) : ~k;
  return __longlong_as_double((long long)b);
}

/** Exclusive rank of this thread among the block's threads with keep set (thread order). */
__device__ __forceinline__ int block_rank(bool keep, int* shw, int* total) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  const unsigned bal = __ballot_sync(0xffffffffu, keep);
  __syncthreads(); // shw may still be read by the previous call
  if (lane == 0) shw[w] = __popc(bal);
  __syncthreads();
  int off = 0, tot = 0;
  for (int j = 0; j < nw; j++) {
    const int c = shw[j];
    if (j < w) off += c;
    tot += c;
  }
  *total = tot;
  return off + __popc(bal & ((1u << lane) - 1));
}

/** Max over the block with the lowest id on ties (greedy's argmax), to every thread. */
__device__ __forceinline__ void block_argmax(double& v, int& id, double* shd, int* shi) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    const double ov = __shfl_xor_sync(0xffffffffu, v, o);
    const int oi = __shfl_xor_sync(0xffffffffu, id, o);
    if (ov > v || (ov == v && oi < id)) v = ov, id = oi;
  }
  __syncthreads();
  if (lane == 0) shd[w] = v, shi[w] = id;
  __syncthreads();
  v = shd[0], id = shi[0];
  for (int j = 1; j < nw; j++) {
    if (shd[j] > v || (shd[j] == v && shi[j] < id)) v = shd[j], id = shi[j];
  }
}

/** Max of u64 keys over the block, to every thread. */
__device__ __forceinline__ u64 block_umax(u64 v, u64* sh) {
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    const u64 ov = __shfl_xor_sync(0xffffffffu, v, o);
    v = ov > v ? ov : v;
  }
  __syncthreads();
  if (lane == 0) sh[w] = v;
  __syncthreads();
  v = sh[0];
  for (int j = 1; j < nw; j++) v = sh[j] > v ? sh[j] : v;
  return v;
}

/**
 * The host's processors on xs = logits of ids [start, start + len) in double: the penalty over the
 * row's (unique) penalty ids in the chunk, then bans, then / temperature when `divide`. Every
 * block reads the row's whole id lists (short) and keeps the ids of its chunk.
 */
__device__ void apply_processors(double* xs, const RowP& r, i64 start, int len, bool divide) {
  const double NEG = -t_inf<double>();
  for (int j = r.p0 + threadIdx.x; j < r.p1; j += blockDim.x) {
    const i64 at = (i64)r.ids[j] - start;
    if (at < 0 || at >= len) continue;
    const double x = xs[at];
    xs[at] = x > 0 ? x / r.pen : x * r.pen;
  }
  __syncthreads();
  for (int j = r.b0 + threadIdx.x; j < r.b1; j += blockDim.x) {
    const i64 at = (i64)r.ids[j] - start;
    if (at >= 0 && at < len) xs[at] = NEG;
  }
  __syncthreads();
  if (divide) {
    for (int i = threadIdx.x; i < len; i += blockDim.x) xs[i] = xs[i] / r.temp;
    __syncthreads();
  }
}

/** The histogram bin of y below the block's max ym (> -inf): 1/16 wide, the last one open. */
__device__ __forceinline__ int cut_bin(double ym, double y) {
  const double d = __dsub_rn(ym, y);
  return d < (HB - 1) / 16.0 ? (int)__dmul_rn(d, 16.0) : HB - 1;
}

/**
 * Block (g, b) of row b: see the file header. part[b, g, :] is its PREC record; ckey/cid[b, g C +
 * j] its j-th candidate (j < count); counter[b] counts finished blocks of greedy / forced rows
 * (the last one resets it to 0 for the next call).
 */
extern "C" __global__ void __launch_bounds__(PT, 4) NPR_CAT(sample_part, NPR_SFX)(
    const T* logits, const int* packed, double* part, u64* ckey, int* cid, int* counter, int* out, i64 V, int B, int C) {
  __shared__ double xs[CH];
  __shared__ unsigned hist[HB];
  __shared__ double shd[32];
  __shared__ int shi[32];
  __shared__ u64 shk[32];
  __shared__ int flag;
  const int g = blockIdx.x, b = blockIdx.y, G = gridDim.x, tid = threadIdx.x;
  const double NEG = -t_inf<double>();
  const RowP r = row_params(logits, packed, V, B, b);
  const i64 start = (i64)g * CH;
  const int len = (int)min((i64)CH, V - start);

  // Raw logits: their max and sum of exp (the log-prob), before any processor.
  double Mg = NEG;
  for (int i = tid; i < len; i += PT) {
    const double l = (double)r.L[start + i];
    xs[i] = l;
    Mg = fmax(Mg, l);
  }
  Mg = block_max(Mg, shd);
  double sr = 0;
  if (Mg > NEG) {
    for (int i = tid; i < len; i += PT) sr += exp(xs[i] - Mg);
  }
  sr = block_sum(sr, shd);
  __syncthreads();
  double mx = NEG, sx = 0;
  int arg = 0x7fffffff, nc = 0;
  u64 cut = 0;
  if (r.mode != MODE_FORCED) apply_processors(xs, r, start, len, r.mode == MODE_SAMPLED);
  if (r.mode == MODE_GREEDY) {
    for (int i = tid; i < len; i += PT) {
      const double x = xs[i];
      if (x > mx || (x == mx && (int)start + i < arg)) mx = x, arg = (int)start + i;
    }
    block_argmax(mx, arg, shd, shi);
  } else if (r.mode == MODE_SAMPLED) {
    for (int i = tid; i < len; i += PT) mx = fmax(mx, xs[i]);
    mx = block_max(mx, shd);
    if (mx > NEG) {
      for (int i = tid; i < len; i += PT) sx += exp(xs[i] - mx);
    }
    sx = block_sum(sx, shd);
    if (has_filter(r, V) && C > 0) {
      // The local cut: the largest key of the non-candidates, the candidates (key > cut) at most C.
      // A histogram of y's distance below the block's max picks which bins are candidates.
      if (len > C && mx > NEG) {
        for (int j = tid; j < HB; j += PT) hist[j] = 0;
        __syncthreads();
        for (int i = tid; i < len; i += PT) atomicAdd(&hist[cut_bin(mx, xs[i])], 1u);
        __syncthreads();
        if (tid < 32) {
          // Lane l holds bins [8 l, 8 l + 8): the largest bin count j with sum(hist[< j]) <= C.
          unsigned c = 0;
          for (int j = 0; j < 8; j++) c += hist[8 * tid + j];
          unsigned inc = c;
          for (int o = 1; o < 32; o <<= 1) {
            const unsigned y = __shfl_up_sync(0xffffffffu, inc, o);
            if (tid >= o) inc += y;
          }
          unsigned below = inc - c;
          int best = -1;
          for (int j = 0; j < 8; j++) {
            if (below <= (unsigned)C) best = 8 * tid + j;
            below += hist[8 * tid + j];
          }
          for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
          if (tid == 0) flag = best;
        }
        __syncthreads();
        const int bstar = flag;
        u64 c = 0;
        for (int i = tid; i < len; i += PT) {
          if (cut_bin(mx, xs[i]) >= bstar) {
            const u64 k = ykey(xs[i]);
            c = k > c ? k : c;
          }
        }
        cut = block_umax(c, shk);
      } else if (len > C) {
        cut = ykey(NEG); // every score -inf: no candidate
      }
      // Candidates in id order: PT ids per step, ranks from ballots.
      u64* K = ckey + (i64)b * CAPF + (i64)g * C;
      int* I = cid + (i64)b * CAPF + (i64)g * C;
      for (int i0 = 0; i0 < len; i0 += PT) {
        const int i = i0 + tid;
        const u64 k = i < len ? ykey(xs[i]) : 0;
        const bool keep = i < len && k > cut;
        int tot;
        const int at = nc + block_rank(keep, shi, &tot);
        if (keep) K[at] = k, I[at] = (int)start + i;
        nc += tot;
      }
    }
  }
  double* P = part + ((i64)b * G + g) * PREC;
  if (tid == 0) {
    P[0] = Mg, P[1] = sr, P[2] = mx, P[3] = sx;
    P[4] = __longlong_as_double((long long)cut);
    P[5] = (double)arg, P[6] = (double)nc;
  }
  if (r.mode == MODE_SAMPLED) return; // sample_finish draws

  // Greedy and forced rows: the last block to finish combines the partials (in g order).
  __threadfence();
  __syncthreads();
  if (tid == 0) flag = atomicAdd(&counter[b], 1) == G - 1;
  __syncthreads();
  if (!flag) return;
  __threadfence();
  const double* Pb = part + (i64)b * G * PREC;
  double M = NEG;
  for (int j = tid; j < G; j += PT) M = fmax(M, __ldcg(Pb + j * PREC));
  M = block_max(M, shd);
  double sum = 0, best = NEG;
  int bestId = 0x7fffffff;
  for (int j = tid; j < G; j += PT) {
    const double m = __ldcg(Pb + j * PREC);
    if (m > NEG) sum += __ldcg(Pb + j * PREC + 1) * exp(m - M);
    const double v = __ldcg(Pb + j * PREC + 2);
    const int a = (int)__ldcg(Pb + j * PREC + 5);
    if (v > best || (v == best && a < bestId)) best = v, bestId = a;
  }
  sum = block_sum(sum, shd);
  block_argmax(best, bestId, shd, shi);
  if (tid == 0) {
    int id;
    if (r.mode == MODE_GREEDY) id = bestId == 0x7fffffff ? 0 : bestId;
    else id = r.forced >= 0 && r.forced < V && (double)r.L[r.forced] > NEG ? r.forced : 0;
    reinterpret_cast<double*>(out)[b] = (double)r.L[id] - M - log(sum);
    out[2 * B + b] = id;
    out[3 * B + b] = PATH_PART;
    counter[b] = 0;
  }
}

// ---------------------------------------------------------------- the finishing pass (sample_finish)

/** Shared memory of the fast paths: the complete set in id order and sorted by y descending. */
struct FastSmem {
  u64 lkey[CAPF]; // id order: y's key, id, e = exp(y - max)
  int lid[CAPF];
  double le[CAPF];
  u64 skey[CAPF]; // sorted: key, position in the id-order list, probability e / zk
  int spos[CAPF];
  double sp[CAPF];
};
/** Dynamic shared memory of sample_finish (SAMPLE_FINISH_SMEM in cuda/sampling.ts). */
#define FINISH_SMEM (164 * 1024)
union FinishSmem {
  SampleSmem slow;
  FastSmem fast;
};
static_assert(sizeof(FinishSmem) <= FINISH_SMEM, "FINISH_SMEM too small");

/** Row b's combined partials. */
struct RowSums {
  double M, sumRaw; // raw logits: max, sum of exp(l - M)
  double best, Z;   // y = x / temperature: max, sum of exp(y - best)
  u64 cut;          // the largest local cut: ids with a larger key are all candidates
};

/** Shared scratch of the finishing helpers (static, outside the union). */
struct Fin {
  double dsc[NWARP + 1];
  int isc[NWARP + 1];
  double q[1024]; // chunk masses (full-row draw)
  int n[1024];    // candidates per block
  int pick[4];
  double val[4];
};

/** The inclusive scan (in id order) of 4 probabilities per thread, for the draws below. */
__device__ __forceinline__ void draw_update(Fin& fs, int i, double p, double cumInc, double u) {
  if (p != 0 && u < cumInc) atomicMin(&fs.pick[0], i);
  if (p != 0) atomicMax(&fs.pick[1], i);
}

/**
 * Full-row draw (no filter): the chunk whose masses' running sum first passes u, re-read and
 * scanned with exact probabilities; later chunks when rounding leaves u past its end. Returns
 * -1 when no id has a nonzero probability (the caller then takes slow_row).
 */
__device__ int full_draw(FastSmem& f, Fin& fs, const RowP& r, const double* Pb, int G, i64 V, const RowSums& s) {
  const int tid = threadIdx.x;
  double q = 0;
  if (tid < G) {
    const double ym = Pb[tid * PREC + 2];
    q = ym > -t_inf<double>() ? Pb[tid * PREC + 3] * exp(ym - s.best) / s.Z : 0;
  }
  double qtot;
  const double qx = block_excl(q, fs.dsc, &qtot);
  if (tid < G) fs.q[tid] = q;
  if (tid == 0) fs.pick[2] = 0x7fffffff, fs.pick[3] = -1;
  __syncthreads();
  if (tid < G && q > 0 && r.u < qx + q) atomicMin(&fs.pick[2], tid);
  if (tid < G && q > 0) atomicMax(&fs.pick[3], tid);
  __syncthreads();
  int g = fs.pick[2] != 0x7fffffff ? fs.pick[2] : fs.pick[3];
  if (g < 0) return -1;
  if (tid == g) fs.val[0] = qx;
  __syncthreads();
  double cum = fs.val[0];
  int last = -1;
  double* xs = f.le; // CH <= CAPF doubles
  for (;;) {
    const i64 start = (i64)g * CH;
    const int len = (int)min((i64)CH, V - start);
    __syncthreads();
    for (int i = tid; i < len; i += SB) xs[i] = (double)r.L[start + i];
    __syncthreads();
    apply_processors(xs, r, start, len, true);
    // Thread t holds ids [2 t, 2 t + 2) of the chunk (CH = 2 SB).
    const int i0 = 2 * tid;
    const double p0 = i0 < len ? exp(xs[i0] - s.best) / s.Z : 0;
    const double p1 = i0 + 1 < len ? exp(xs[i0 + 1] - s.best) / s.Z : 0;
    double tot;
    const double base = cum + block_excl(p0 + p1, fs.dsc, &tot);
    if (tid == 0) fs.pick[0] = 0x7fffffff, fs.pick[1] = -1;
    __syncthreads();
    draw_update(fs, i0, p0, base + p0, r.u);
    draw_update(fs, i0 + 1, p1, base + p0 + p1, r.u);
    __syncthreads();
    if (fs.pick[1] >= 0) last = (int)start + fs.pick[1];
    if (fs.pick[0] != 0x7fffffff) return (int)start + fs.pick[0];
    cum += tot;
    int next = -1;
    for (int j = g + 1; j < G; j++) {
      if (fs.q[j] > 0) {
        next = j;
        break;
      }
    }
    if (next < 0) return last;
    g = next;
  }
}

/** In-place bitonic sort of skey/spos[0, n2) by key descending, position ascending on ties. */
__device__ void sort_desc(FastSmem& f, int n2) {
  for (int k = 2; k <= n2; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      // Pair t compares i (bit j clear) with o = i + j.
      for (int t = threadIdx.x; t < n2 / 2; t += SB) {
        const int i = (t & ~(j - 1)) * 2 + (t & (j - 1));
        const int o = i + j;
        const u64 ka = f.skey[i], kb = f.skey[o];
        const int pa = f.spos[i], pb = f.spos[o];
        const bool aFirst = ka > kb || (ka == kb && pa < pb);
        // Blocks with (i & k) == 0 end in the final order, the others reversed (bitonic merge).
        if (((i & k) == 0) != aFirst) {
          f.skey[i] = kb, f.skey[o] = ka;
          f.spos[i] = pb, f.spos[o] = pa;
        }
      }
      __syncthreads();
    }
  }
}

/**
 * Top-k / top-p / min-p inside the complete set (ids with key > s.cut, every one a candidate of
 * its block), then the id-order draw over the kept ids. Returns -1 when the kept set may reach
 * outside the complete set (the caller then takes slow_row).
 */
__device__ int cand_draw(FastSmem& f, Fin& fs, const RowP& r, const double* Pb, const u64* K, const int* I, int G, int C, i64 V, const RowSums& s) {
  const int tid = threadIdx.x;
  const bool useTopK = r.topK > 0 && r.topK < (double)V, useTopP = r.topP < 1, useMinP = r.minP > 0;
  // The complete set in id order (blocks in order, each block's candidates in id order).
  for (int g = tid; g < G; g += SB) fs.n[g] = (int)Pb[g * PREC + 6];
  __syncthreads();
  int n = 0;
  for (int q0 = 0; q0 < G * C; q0 += SB) {
    const int q = q0 + tid;
    const bool valid = q < G * C && q % C < fs.n[q / C];
    const u64 k = valid ? K[q] : 0;
    const bool keep = valid && k > s.cut;
    int tot;
    const int at = n + block_rank(keep, fs.isc, &tot);
    if (keep) f.lkey[at] = k, f.lid[at] = I[q];
    n += tot;
  }
  if (n == 0) return -1;
  if (useTopK && (double)n < r.topK) return -1;
  int n2 = 1;
  while (n2 < n) n2 <<= 1;
  __syncthreads();
  for (int i = tid; i < n2; i += SB) {
    if (i < n) {
      f.le[i] = exp(ykey_inv(f.lkey[i]) - s.best);
      f.skey[i] = f.lkey[i], f.spos[i] = i;
    } else {
      f.skey[i] = 0, f.spos[i] = 0x7fffffff;
    }
  }
  __syncthreads();
  sort_desc(f, n2);
  // Top-k: the k-th largest y; the survivors' mass zk (all ids' Z without top-k).
  u64 tk = 0;
  double zk = s.Z;
  if (useTopK) {
    tk = f.skey[(int)r.topK - 1];
    double z = 0;
    for (int i = tid; i < n; i += SB) z += f.lkey[i] >= tk ? f.le[i] : 0;
    zk = block_sum(z, fs.dsc);
  }
  int ns = 0; // survivors: a prefix of the sorted list
  for (int j = tid; j < n; j += SB) ns += f.skey[j] >= tk;
  ns = (int)block_sum((double)ns, fs.dsc);
  // Top-p: the host's sequential sum of sorted probabilities, in one thread (same order, same
  // rounding: ties at the threshold are decided as there).
  for (int j = tid; j < ns; j += SB) f.sp[j] = f.le[f.spos[j]] / zk;
  __syncthreads();
  bool topP = useTopP;
  if (useTopP) {
    if (tid == 0) {
      double cum = 0;
      int j = 0;
      while (j < ns && cum < r.topP) {
        // Eight loads ahead of the dependent adds.
        double v[8];
        const int m = min(8, ns - j);
#pragma unroll
        for (int t = 0; t < 8; t++) v[t] = t < m ? f.sp[j + t] : 0;
#pragma unroll
        for (int t = 0; t < 8; t++) {
          if (t < m && cum < r.topP) cum += v[t], j++;
        }
      }
      fs.pick[0] = cum < r.topP ? 0 : j; // 0: the sum never reached topP inside the set
    }
    __syncthreads();
  }
  const int kp = useTopP ? fs.pick[0] : 0;
  const double te = kp > 0 ? f.le[f.spos[kp - 1]] : 0; // e at top-p's threshold
  const double tp = kp > 0 ? f.sp[kp - 1] : 0;
  // Is the kept set inside the complete set? Ids outside have e <= eCut (exp is monotone). With
  // top-k it is (k <= n above); with no cut at all the set is the whole row.
  if (!useTopK && s.cut != 0) {
    const double eCut = exp(ykey_inv(s.cut) - s.best);
    const bool minInside = useMinP && eCut < r.minP * (1 - 1e-9);
    if (useTopP && kp > 0) {
      if (!(te > eCut * (1 + 1e-9))) return -1;
    } else if (!minInside) {
      return -1;
    }
  }
  if (kp == 0) topP = false; // the whole (top-k) set reaches the mass: top-p keeps it all
  // Ties at top-p's threshold: the host keeps kp - #(p > tp) of them, lowest ids first.
  int gt = 0;
  if (topP) {
    for (int j = tid; j < ns; j += SB) gt += f.sp[j] > tp;
    gt = (int)block_sum((double)gt, fs.dsc);
  }
  const int tieKeep = kp - gt;
  const double minThr = r.minP * (1.0 / zk);
  // The kept ids in id order: thread t holds positions [4 t, 4 t + 4).
  const int i0 = 4 * tid;
  double e[4];
  bool surv[4], tie[4];
  int ties = 0;
#pragma unroll
  for (int t = 0; t < 4; t++) {
    const int i = i0 + t;
    surv[t] = i < n && f.lkey[i] >= tk;
    e[t] = surv[t] ? f.le[i] : 0;
    tie[t] = topP && surv[t] && e[t] / zk == tp;
    ties += tie[t];
  }
  double tiesTot;
  int rank = (int)block_excl((double)ties, fs.dsc, &tiesTot);
  double z = 0;
#pragma unroll
  for (int t = 0; t < 4; t++) {
    bool keep = surv[t];
    const double p = e[t] / zk;
    if (keep && useMinP && p < minThr) keep = false;
    if (keep && topP && !(p > tp || (tie[t] && rank < tieKeep))) keep = false;
    if (tie[t]) rank++;
    if (!keep) e[t] = 0;
    z += e[t];
  }
  double Zk;
  (void)block_excl(z, fs.dsc, &Zk);
  // The draw: the first kept id whose running probability passes u, else the last nonzero one.
  double p[4], loc = 0;
#pragma unroll
  for (int t = 0; t < 4; t++) p[t] = e[t] / Zk, loc += p[t];
  double tot;
  double cum = block_excl(loc, fs.dsc, &tot);
  if (tid == 0) fs.pick[0] = 0x7fffffff, fs.pick[1] = -1;
  __syncthreads();
#pragma unroll
  for (int t = 0; t < 4; t++) {
    cum += p[t];
    draw_update(fs, i0 + t, p[t], cum, r.u);
  }
  __syncthreads();
  const int at = fs.pick[0] != 0x7fffffff ? fs.pick[0] : fs.pick[1];
  return at >= 0 ? f.lid[at] : -1;
}

/** Draws the sampled rows (one block each); greedy and forced rows were done by sample_part. */
extern "C" __global__ void __launch_bounds__(SB) NPR_CAT(sample_finish, NPR_SFX)(
    const T* logits, const int* packed, const double* part, const u64* ckey, const int* cid, double* scratch, int* out, i64 V, int B, int C) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  FinishSmem& sm = *reinterpret_cast<FinishSmem*>(smem_raw);
  __shared__ Fin fs;
  const int b = blockIdx.x, tid = threadIdx.x;
  const RowP r = row_params(logits, packed, V, B, b);
  if (r.mode != MODE_SAMPLED) return;
  const int G = (int)((V + CH - 1) / CH);
  const double NEG = -t_inf<double>();
  const double* Pb = part + (i64)b * G * PREC;
  // Combine the partials, each sum in a fixed order (deterministic).
  RowSums s;
  double M = NEG, best = NEG;
  u64 cut = 0;
  for (int j = tid; j < G; j += SB) {
    M = fmax(M, Pb[j * PREC]);
    best = fmax(best, Pb[j * PREC + 2]);
    const u64 c = (u64)__double_as_longlong(Pb[j * PREC + 4]);
    cut = c > cut ? c : cut;
  }
  s.M = block_max(M, fs.dsc);
  s.best = block_max(best, fs.dsc);
  s.cut = block_umax(cut, reinterpret_cast<u64*>(fs.dsc));
  double sr = 0, z = 0;
  for (int j = tid; j < G; j += SB) {
    const double m = Pb[j * PREC], ym = Pb[j * PREC + 2];
    if (m > NEG) sr += Pb[j * PREC + 1] * exp(m - s.M);
    if (ym > NEG) z += Pb[j * PREC + 3] * exp(ym - s.best);
  }
  s.sumRaw = block_sum(sr, fs.dsc);
  s.Z = block_sum(z, fs.dsc);
  int id = -1, path;
  if (!(s.best > NEG)) {
    id = (int)V - 1, path = PATH_NOSCORE; // the host's softmax is NaN and its scan ends on the last id
  } else if (!has_filter(r, V)) {
    id = full_draw(sm.fast, fs, r, Pb, G, V, s), path = PATH_FULL;
  } else if (C > 0) {
    id = cand_draw(sm.fast, fs, r, Pb, ckey + (i64)b * CAPF, cid + (i64)b * CAPF, G, C, V, s), path = PATH_CAND;
  }
  if (id < 0) id = slow_row(sm.slow, r, scratch + (i64)b * V, V), path = PATH_SLOW;
  if (tid == 0) {
    reinterpret_cast<double*>(out)[b] = (double)r.L[id] - s.M - log(s.sumRaw);
    out[2 * B + b] = id;
    out[3 * B + b] = path;
  }
}
