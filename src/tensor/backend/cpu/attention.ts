/**
 * CPU kernels for segment-masked attention with grouped-query heads, forward and backward: the
 * hot loop of CPU training. Query tokens go in tiles; a tile whose visible keys fill enough of
 * its dense [tile x keys any of its tokens sees] block runs through GEMM, any other through a
 * row-wise loop over exactly the visible keys. Scratch is allocated once per call, never per
 * token. Sizes, dtypes and segments were checked by CpuBackend; the GEMM comes in as a function,
 * so this file knows neither buffers nor which GEMM path runs.
 */

// Layouts (row-major): q, out, dq [T, H, D]; k, v [S', Hkv, D] (only the first S rows are read);
// dk, dv [S, Hkv, D]; lse [T, H]. Query head h reads kv head floor(h * Hkv / H). Token t sees the
// keys of its CSR segments: [starts[s], ends[s]) for s in [offsets[t], offsets[t + 1]).
//
// Why tiles: on this machine (2 AVX-512 cores) OpenBLAS runs these GEMM shapes at 50-100
// GFLOP/s and the TypeScript GEMM at ~5, against ~1.5 for the scalar loop, so computing a dense
// block and masking it beats visiting only the visible keys unless the block is mostly masked.
// At the `small` preset (4 x 256 packed tokens, H=8, Hkv=4, D=32) one layer's forward + backward
// went from ~330 ms (row-wise) to 35-45 ms (OpenBLAS tiles) and 130-210 ms (TypeScript tiles).
import type { FloatArray, MatmulParams } from "../types.ts";

export interface AttentionDims {
  /** T query tokens, S key slots, H query heads, Hkv kv heads, D head dim. */
  tokens: number;
  keys: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  scale: number;
}

/** C = alpha op(A) op(B) + beta C on contiguous matrices of one float type. */
export type Gemm = (a: FloatArray, b: FloatArray, c: FloatArray, p: MatmulParams) => void;

export interface AttentionOptions {
  /** The GEMM for dense tiles; null runs every tile row-wise. */
  gemm: Gemm | null;
  /** Query tokens per tile. */
  tile: number;
  /** A tile goes through GEMM when visible pairs / (tile tokens x tile keys) >= this. */
  minDensity: number;
}

/** How many tiles each path ran (the backend turns these into counters). */
export interface AttentionStats {
  denseTiles: number;
  rowTiles: number;
}

interface Tile {
  t0: number;
  t1: number;
  /**
   * The tile's keys: the union of its tokens' segments as sorted disjoint ranges, flattened to
   * [start, end, column] triples; column is where the range begins in the compacted key list.
   */
  ranges: Int32Array;
  /** Number of keys in the union: the width of the tile's dense score block. */
  span: number;
  dense: boolean;
}

const NO_RANGES = new Int32Array(0);

/** Splits [0, T) into tiles and decides each one's path from its density. */
function planTiles(offsets: Int32Array, starts: Int32Array, ends: Int32Array, T: number, o: AttentionOptions): Tile[] {
  const tiles: Tile[] = [];
  const step = Math.max(1, o.tile);
  for (let t0 = 0; t0 < T; t0 += step) {
    const t1 = Math.min(T, t0 + step);
    const segs: Array<[number, number]> = [];
    let visible = 0;
    for (let t = t0; t < t1; t++) {
      for (let sg = offsets[t]; sg < offsets[t + 1]; sg++) {
        if (ends[sg] > starts[sg]) segs.push([starts[sg], ends[sg]]);
        visible += ends[sg] - starts[sg];
      }
    }
    if (visible === 0) {
      tiles.push({ t0, t1, ranges: NO_RANGES, span: 0, dense: false });
      continue;
    }
    // Keys no token of the tile sees (sibling branches between a branch's prompt and its own
    // tokens) are left out of the dense block: a branch tile costs prompt + own branch only.
    segs.sort((a, b) => a[0] - b[0]);
    const merged: number[] = [];
    let span = 0;
    for (const [a, b] of segs) {
      const n = merged.length;
      if (n > 0 && a <= merged[n - 2]) {
        if (b > merged[n - 2]) {
          span += b - merged[n - 2];
          merged[n - 2] = b;
        }
      } else {
        merged.push(a, b, span);
        span += b - a;
      }
    }
    // A causal tile of 64 inside a 256-token sequence is 55-95% visible, a tile straddling two
    // packed sequences about half (the union skips nothing there), a branch tile much more than
    // its raw key span would suggest.
    const dense = o.gemm !== null && visible >= o.minDensity * (t1 - t0) * span;
    tiles.push({ t0, t1, ranges: Int32Array.from(merged), span, dense });
  }
  return tiles;
}

/** The query heads [start, end) that read kv head g: floor(h Hkv / H) = g. */
function groupHeads(g: number, H: number, Hkv: number): [number, number] {
  return [Math.ceil((g * H) / Hkv), Math.ceil(((g + 1) * H) / Hkv)];
}

/** a[ao .. ao+D) . b[bo .. bo+D), four partial sums to shorten the dependency chain. */
function dot(a: FloatArray, ao: number, b: FloatArray, bo: number, D: number): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let d = 0;
  for (; d + 3 < D; d += 4) {
    s0 += a[ao + d] * b[bo + d];
    s1 += a[ao + d + 1] * b[bo + d + 1];
    s2 += a[ao + d + 2] * b[bo + d + 2];
    s3 += a[ao + d + 3] * b[bo + d + 3];
  }
  for (; d < D; d++) s0 += a[ao + d] * b[bo + d];
  return s0 + s1 + s2 + s3;
}

function like(x: FloatArray, n: number): FloatArray {
  return x instanceof Float32Array ? new Float32Array(n) : new Float64Array(n);
}

/**
 * Scratch matrices of the dense path, sized for the largest dense tile of the call and typed like
 * the inputs (the GEMM takes one float type; f32 scores keep OpenBLAS on sgemm).
 */
class DenseScratch {
  readonly kg: FloatArray; // [span, D] keys of one kv head
  readonly vg: FloatArray; // [span, D] values of one kv head
  readonly qg: FloatArray; // [G * tile, D] queries of the group's heads, head-major
  readonly dog: FloatArray; // [G * tile, D] dOut rows, same order (backward)
  readonly og: FloatArray; // [G * tile, D] GEMM output rows
  readonly sc: FloatArray; // [G * tile, span] scores, then probabilities
  readonly dp: FloatArray; // [G * tile, span] dP, then dS (backward)
  readonly kvt: FloatArray; // [span, D] one dK or dV contribution (backward)
  readonly rowF: Float64Array; // [G * tile] 1/sum (forward) or delta (backward) per row

  constructor(like0: FloatArray, tiles: Tile[], maxG: number, D: number, backward: boolean) {
    let span = 0;
    let rows = 0;
    for (const t of tiles) {
      if (!t.dense) continue;
      span = Math.max(span, t.span);
      rows = Math.max(rows, maxG * (t.t1 - t.t0));
    }
    this.kg = like(like0, span * D);
    this.vg = like(like0, span * D);
    this.qg = like(like0, rows * D);
    this.og = like(like0, rows * D);
    this.sc = like(like0, rows * span);
    this.dog = like(like0, backward ? rows * D : 0);
    this.dp = like(like0, backward ? rows * span : 0);
    this.kvt = like(like0, backward ? span * D : 0);
    this.rowF = new Float64Array(rows);
  }
}

/** dst[r*D ..] = src rows of a [*, stride] array starting at first + r*rowStep, r < n. */
function gatherRows(dst: FloatArray, src: FloatArray, first: number, rowStep: number, n: number, D: number): void {
  for (let r = 0, o = 0, s = first; r < n; r++, o += D, s += rowStep) {
    for (let d = 0; d < D; d++) dst[o + d] = src[s + d];
  }
}

function gemmParams(m: number, n: number, k: number, transA: boolean, transB: boolean, alpha = 1): MatmulParams {
  return { batch: 1, m, n, k, transA, transB, strideA: 0, strideB: 0, strideC: 0, alpha, beta: 0 };
}

/** Keys of the tile's ranges (key s at element s * rowStep + first of src) to rows of dst. */
function gatherKeys(dst: FloatArray, src: FloatArray, ranges: Int32Array, first: number, rowStep: number, D: number): void {
  for (let r = 0; r < ranges.length; r += 3) {
    const a = ranges[r];
    gatherRows(dst.subarray(ranges[r + 2] * D), src, a * rowStep + first, rowStep, ranges[r + 1] - a, D);
  }
}

/**
 * Row r of a tile's score block (token t; `span` columns, one per key of the tile's ranges):
 * replaces each visible score x by exp(x - shift) and every other entry by 0; returns the sum of
 * the exps. With shift = NaN the max over visible keys is used and returned through maxOut.
 * A segment lies inside one range (ranges are the union of segments), and both are sorted, so
 * one forward walk over the ranges maps each segment to its columns.
 */
function maskedExpRow(
  sc: FloatArray,
  base: number,
  span: number,
  ranges: Int32Array,
  offsets: Int32Array,
  starts: Int32Array,
  ends: Int32Array,
  t: number,
  shift: number,
  maxOut: Float64Array,
): number {
  const segA = offsets[t];
  const segB = offsets[t + 1];
  if (Number.isNaN(shift)) {
    shift = -Infinity;
    for (let sg = segA, r = 0; sg < segB; sg++) {
      const a = starts[sg];
      if (ends[sg] <= a) continue;
      while (ranges[r + 1] <= a) r += 3;
      const j0 = base + ranges[r + 2] + a - ranges[r];
      for (let j = j0, e = j0 + ends[sg] - a; j < e; j++) if (sc[j] > shift) shift = sc[j];
    }
    maxOut[0] = shift;
  }
  if (shift === -Infinity) {
    sc.fill(0, base, base + span);
    return 0;
  }
  let sum = 0;
  let pos = base;
  for (let sg = segA, r = 0; sg < segB; sg++) {
    const a = starts[sg];
    if (ends[sg] <= a) continue;
    while (ranges[r + 1] <= a) r += 3;
    const j0 = base + ranges[r + 2] + a - ranges[r];
    const e = j0 + ends[sg] - a;
    if (j0 > pos) sc.fill(0, pos, j0);
    for (let j = j0; j < e; j++) {
      const w = Math.exp(sc[j] - shift);
      sc[j] = w;
      sum += w;
    }
    pos = e;
  }
  if (base + span > pos) sc.fill(0, pos, base + span);
  return sum;
}

// ---------------------------------------------------------------- forward

/**
 * out[t, h, :] = sum_s softmax_s(scale q[t,h,:] . k[s,g,:]) v[s,g,:] over the keys token t sees,
 * g = floor(h Hkv / H); lse[t, h] = logsumexp_s of those scaled scores. A token that sees no key
 * gets out 0 and lse -Infinity (checkLayout rules such layouts out; the kernel must still not
 * produce NaN).
 */
export function attention(
  q: FloatArray,
  k: FloatArray,
  v: FloatArray,
  offsets: Int32Array,
  starts: Int32Array,
  ends: Int32Array,
  out: FloatArray,
  lse: FloatArray,
  p: AttentionDims,
  o: AttentionOptions,
): AttentionStats {
  const tiles = planTiles(offsets, starts, ends, p.tokens, o);
  const maxG = Math.ceil(p.heads / p.kvHeads);
  const scratch = tiles.some((t) => t.dense) ? new DenseScratch(q, tiles, maxG, p.headDim, false) : null;
  const rowScores = new Float64Array(p.keys);
  const acc = new Float64Array(p.headDim);
  const stats: AttentionStats = { denseTiles: 0, rowTiles: 0 };
  for (const tile of tiles) {
    if (tile.dense && scratch && o.gemm) {
      denseForward(q, k, v, offsets, starts, ends, out, lse, p, tile, scratch, o.gemm);
      stats.denseTiles++;
    } else {
      rowForward(q, k, v, offsets, starts, ends, out, lse, p, tile.t0, tile.t1, rowScores, acc);
      stats.rowTiles++;
    }
  }
  return stats;
}

/**
 * One dense tile, per kv head g: S = scale Qg Kg^T over the tile's key span (one GEMM for all of
 * g's query heads), masked exp in place, O = P Vg (second GEMM), rows scaled by 1/sum.
 */
function denseForward(
  q: FloatArray,
  k: FloatArray,
  v: FloatArray,
  offsets: Int32Array,
  starts: Int32Array,
  ends: Int32Array,
  out: FloatArray,
  lse: FloatArray,
  p: AttentionDims,
  tile: Tile,
  w: DenseScratch,
  gemm: Gemm,
): void {
  const { heads: H, kvHeads: Hkv, headDim: D, scale } = p;
  const { t0, t1, ranges, span } = tile;
  const Bq = t1 - t0;
  const maxOut = new Float64Array(1);
  for (let g = 0; g < Hkv; g++) {
    const [hs, he] = groupHeads(g, H, Hkv);
    // All query heads of kv head g share one GEMM: rows are (head hs + r / Bq, token t0 + r % Bq),
    // so K and V are gathered once per group and M grows to G x Bq rows.
    const M = (he - hs) * Bq;
    if (M === 0) continue;
    gatherKeys(w.kg, k, ranges, g * D, Hkv * D, D);
    gatherKeys(w.vg, v, ranges, g * D, Hkv * D, D);
    for (let h = hs; h < he; h++) gatherRows(w.qg.subarray((h - hs) * Bq * D), q, (t0 * H + h) * D, H * D, Bq, D);
    gemm(w.qg, w.kg, w.sc, gemmParams(M, span, D, false, true, scale));
    for (let r = 0; r < M; r++) {
      const h = hs + Math.floor(r / Bq);
      const t = t0 + (r % Bq);
      const sum = maskedExpRow(w.sc, r * span, span, ranges, offsets, starts, ends, t, NaN, maxOut);
      w.rowF[r] = sum > 0 ? 1 / sum : 0;
      lse[t * H + h] = sum > 0 ? maxOut[0] + Math.log(sum) : -Infinity;
    }
    // Unnormalized weights times V, then one multiply by 1/sum per row (the softmax divide).
    gemm(w.sc, w.vg, w.og, gemmParams(M, D, span, false, false));
    for (let r = 0; r < M; r++) {
      const h = hs + Math.floor(r / Bq);
      const t = t0 + (r % Bq);
      const oo = (t * H + h) * D;
      const inv = w.rowF[r];
      for (let d = 0; d < D; d++) out[oo + d] = w.og[r * D + d] * inv;
    }
  }
}

/**
 * Tokens [t0, t1) one (t, h) at a time over exactly their visible keys: scores to a scratch row
 * (with their max), then exp(score - max) weights V rows into an f64 accumulator.
 */
// The row-wise path visits only visible keys, so it wins on sparse tiles (and is the whole kernel
// when no GEMM is given). Inner loops run over D with independent accumulators; everything sums
// in f64 locals.
function rowForward(
  q: FloatArray,
  k: FloatArray,
  v: FloatArray,
  offsets: Int32Array,
  starts: Int32Array,
  ends: Int32Array,
  out: FloatArray,
  lse: FloatArray,
  p: AttentionDims,
  t0: number,
  t1: number,
  scores: Float64Array,
  acc: Float64Array,
): void {
  const { heads: H, kvHeads: Hkv, headDim: D, scale } = p;
  const rowStride = Hkv * D; // elements between key s and key s+1 of one kv head
  for (let t = t0; t < t1; t++) {
    const segA = offsets[t];
    const segB = offsets[t + 1];
    for (let h = 0; h < H; h++) {
      const qo = (t * H + h) * D;
      const kvo = Math.floor((h * Hkv) / H) * D;
      let n = 0;
      let max = -Infinity;
      for (let sg = segA; sg < segB; sg++) {
        const end = ends[sg];
        for (let s = starts[sg]; s < end; s++) {
          const sc = scale * dot(q, qo, k, s * rowStride + kvo, D);
          scores[n++] = sc;
          if (sc > max) max = sc;
        }
      }
      if (n === 0) {
        out.fill(0, qo, qo + D);
        lse[t * H + h] = -Infinity;
        continue;
      }
      acc.fill(0);
      let sum = 0;
      n = 0;
      for (let sg = segA; sg < segB; sg++) {
        const end = ends[sg];
        for (let s = starts[sg]; s < end; s++) {
          const wt = Math.exp(scores[n++] - max);
          sum += wt;
          const vo = s * rowStride + kvo;
          let d = 0;
          for (; d + 3 < D; d += 4) {
            acc[d] += wt * v[vo + d];
            acc[d + 1] += wt * v[vo + d + 1];
            acc[d + 2] += wt * v[vo + d + 2];
            acc[d + 3] += wt * v[vo + d + 3];
          }
          for (; d < D; d++) acc[d] += wt * v[vo + d];
        }
      }
      const inv = 1 / sum;
      for (let d = 0; d < D; d++) out[qo + d] = acc[d] * inv;
      lse[t * H + h] = max + Math.log(sum);
    }
  }
}

// ---------------------------------------------------------------- backward

/**
 * Flash-style backward: probabilities are recomputed from the saved lse instead of stored.
 * With P = exp(scale q.k - lse), Delta[t,h] = sum_d dO[t,h,d] O[t,h,d] (= sum_s P dP):
 *   dV[s,g] += P dO;  dP = dO . v[s,g];  dS = P (dP - Delta)
 *   dQ[t,h] = scale sum_s dS k[s,g];  dK[s,g] += scale dS q[t,h]
 * dq, dk, dv are overwritten (dk, dv over their first S rows). dk and dv sum over tokens, tiles
 * and the query heads sharing a kv head, so for f32 they are accumulated in f64 and rounded once.
 */
export function attentionBackward(
  q: FloatArray,
  k: FloatArray,
  v: FloatArray,
  offsets: Int32Array,
  starts: Int32Array,
  ends: Int32Array,
  out: FloatArray,
  lse: FloatArray,
  dOut: FloatArray,
  dq: FloatArray,
  dk: FloatArray,
  dv: FloatArray,
  p: AttentionDims,
  o: AttentionOptions,
): AttentionStats {
  const kvLen = p.keys * p.kvHeads * p.headDim;
  // f64 buffers accumulate in place; f32 ones go through f64 scratch. Both [S, Hkv, D].
  const dkAcc = dk instanceof Float64Array ? dk : new Float64Array(kvLen);
  const dvAcc = dv instanceof Float64Array ? dv : new Float64Array(kvLen);
  dkAcc.fill(0, 0, kvLen);
  dvAcc.fill(0, 0, kvLen);
  const tiles = planTiles(offsets, starts, ends, p.tokens, o);
  const maxG = Math.ceil(p.heads / p.kvHeads);
  const scratch = tiles.some((t) => t.dense) ? new DenseScratch(q, tiles, maxG, p.headDim, true) : null;
  const dqAcc = new Float64Array(p.headDim);
  const stats: AttentionStats = { denseTiles: 0, rowTiles: 0 };
  for (const tile of tiles) {
    if (tile.dense && scratch && o.gemm) {
      denseBackward(q, k, v, offsets, starts, ends, out, lse, dOut, dq, dkAcc, dvAcc, p, tile, scratch, o.gemm);
      stats.denseTiles++;
    } else {
      rowBackward(q, k, v, offsets, starts, ends, out, lse, dOut, dq, dkAcc, dvAcc, p, tile.t0, tile.t1, dqAcc);
      stats.rowTiles++;
    }
  }
  if (dkAcc !== dk) dk.set(dkAcc);
  if (dvAcc !== dv) dv.set(dvAcc);
  return stats;
}

/**
 * One dense tile, per kv head g, five GEMMs over the tile's key span:
 *   S = scale Qg Kg^T -> P (masked, from lse);  dP = dOg Vg^T -> dS = scale P (dP - Delta)
 *   dQg = dS Kg;  dKg += dS^T Qg;  dVg += P^T dOg
 */
function denseBackward(
  q: FloatArray,
  k: FloatArray,
  v: FloatArray,
  offsets: Int32Array,
  starts: Int32Array,
  ends: Int32Array,
  out: FloatArray,
  lse: FloatArray,
  dOut: FloatArray,
  dq: FloatArray,
  dkAcc: Float64Array,
  dvAcc: Float64Array,
  p: AttentionDims,
  tile: Tile,
  w: DenseScratch,
  gemm: Gemm,
): void {
  const { heads: H, kvHeads: Hkv, headDim: D, scale } = p;
  const { t0, t1, ranges, span } = tile;
  const Bq = t1 - t0;
  const unused = new Float64Array(1);
  for (let g = 0; g < Hkv; g++) {
    const [hs, he] = groupHeads(g, H, Hkv);
    const M = (he - hs) * Bq;
    if (M === 0) continue;
    gatherKeys(w.kg, k, ranges, g * D, Hkv * D, D);
    gatherKeys(w.vg, v, ranges, g * D, Hkv * D, D);
    for (let h = hs; h < he; h++) {
      gatherRows(w.qg.subarray((h - hs) * Bq * D), q, (t0 * H + h) * D, H * D, Bq, D);
      gatherRows(w.dog.subarray((h - hs) * Bq * D), dOut, (t0 * H + h) * D, H * D, Bq, D);
    }
    gemm(w.qg, w.kg, w.sc, gemmParams(M, span, D, false, true, scale));
    gemm(w.dog, w.vg, w.dp, gemmParams(M, span, D, false, true));
    for (let r = 0; r < M; r++) {
      const h = hs + Math.floor(r / Bq);
      const t = t0 + (r % Bq);
      const qo = (t * H + h) * D;
      const base = r * span;
      // P = exp(S - lse): a shift by the saved lse instead of the max makes the sum 1.
      maskedExpRow(w.sc, base, span, ranges, offsets, starts, ends, t, lse[t * H + h], unused);
      const delta = dot(dOut, qo, out, qo, D);
      for (let j = base; j < base + span; j++) w.dp[j] = scale * w.sc[j] * (w.dp[j] - delta);
    }
    // dQ rows belong to this tile alone: written, not accumulated.
    gemm(w.dp, w.kg, w.og, gemmParams(M, D, span, false, false));
    for (let r = 0; r < M; r++) {
      const qo = ((t0 + (r % Bq)) * H + hs + Math.floor(r / Bq)) * D;
      for (let d = 0; d < D; d++) dq[qo + d] = w.og[r * D + d];
    }
    // dK and dV sum over every tile that sees a key: each tile's [span, D] part is computed into
    // scratch and added into the f64 accumulators, whose [S, Hkv, D] layout a GEMM cannot write.
    gemm(w.dp, w.qg, w.kvt, gemmParams(span, D, M, true, false));
    scatterAddKeys(dkAcc, w.kvt, ranges, g * D, Hkv * D, D);
    gemm(w.sc, w.dog, w.kvt, gemmParams(span, D, M, true, false));
    scatterAddKeys(dvAcc, w.kvt, ranges, g * D, Hkv * D, D);
  }
}

/** The inverse of gatherKeys, accumulating: acc row of key s += src row of its column. */
function scatterAddKeys(acc: Float64Array, src: FloatArray, ranges: Int32Array, first: number, rowStep: number, D: number): void {
  for (let r = 0; r < ranges.length; r += 3) {
    const n = ranges[r + 1] - ranges[r];
    for (let j = 0, s = ranges[r + 2] * D, a = ranges[r] * rowStep + first; j < n; j++, s += D, a += rowStep) {
      for (let d = 0; d < D; d++) acc[a + d] += src[s + d];
    }
  }
}

/** Tokens [t0, t1) one (t, h) at a time, one sweep per visible key for both dots and all three updates. */
function rowBackward(
  q: FloatArray,
  k: FloatArray,
  v: FloatArray,
  offsets: Int32Array,
  starts: Int32Array,
  ends: Int32Array,
  out: FloatArray,
  lse: FloatArray,
  dOut: FloatArray,
  dq: FloatArray,
  dkAcc: Float64Array,
  dvAcc: Float64Array,
  p: AttentionDims,
  t0: number,
  t1: number,
  dqAcc: Float64Array,
): void {
  const { heads: H, kvHeads: Hkv, headDim: D, scale } = p;
  const rowStride = Hkv * D;
  for (let t = t0; t < t1; t++) {
    const segA = offsets[t];
    const segB = offsets[t + 1];
    for (let h = 0; h < H; h++) {
      const qo = (t * H + h) * D;
      const kvo = Math.floor((h * Hkv) / H) * D;
      const l = lse[t * H + h];
      dqAcc.fill(0);
      if (segA === segB || l === -Infinity) {
        dq.fill(0, qo, qo + D);
        continue;
      }
      const delta = dot(dOut, qo, out, qo, D);
      for (let sg = segA; sg < segB; sg++) {
        const end = ends[sg];
        for (let s = starts[sg]; s < end; s++) {
          const ko = s * rowStride + kvo;
          let qk0 = 0;
          let qk1 = 0;
          let dp0 = 0;
          let dp1 = 0;
          let d = 0;
          for (; d + 1 < D; d += 2) {
            qk0 += q[qo + d] * k[ko + d];
            qk1 += q[qo + d + 1] * k[ko + d + 1];
            dp0 += dOut[qo + d] * v[ko + d];
            dp1 += dOut[qo + d + 1] * v[ko + d + 1];
          }
          if (d < D) {
            qk0 += q[qo + d] * k[ko + d];
            dp0 += dOut[qo + d] * v[ko + d];
          }
          const prob = Math.exp(scale * (qk0 + qk1) - l);
          const ds = scale * prob * (dp0 + dp1 - delta);
          for (d = 0; d < D; d++) {
            dvAcc[ko + d] += prob * dOut[qo + d];
            dkAcc[ko + d] += ds * q[qo + d];
            dqAcc[d] += ds * k[ko + d];
          }
        }
      }
      for (let d = 0; d < D; d++) dq[qo + d] = dqAcc[d];
    }
  }
}
