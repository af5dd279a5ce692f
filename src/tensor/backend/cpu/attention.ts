/**
 * CPU kernels for segment-masked attention with grouped-query heads, forward and backward: the
 * hot loop of CPU training. Query tokens go in tiles; a tile whose visible keys fill enough of
 * its dense [tile x keys any of its tokens sees] block runs through GEMM, any other through a
 * row-wise loop over exactly the visible keys. The work comes in independent items (forward:
 * tile x kv head; backward: band x kv head, attention-plan.ts) that the backend may run on any
 * thread; scratch is per thread and kept between calls. Sizes, dtypes and segments were checked
 * by CpuBackend; the GEMM comes in as a function, so this file knows neither buffers nor which
 * GEMM path runs.
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
import { planBands, planTiles, tileStats } from "./attention-plan.ts";
import type { AttentionStats, Band, Tile } from "./attention-plan.ts";
import { expF } from "./exp.ts";

export { planBands, planTiles, tileStats };
export type { AttentionStats, Band, Tile };

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
  /** False runs every tile row-wise (no GEMM at all). */
  dense: boolean;
  /** Query tokens per tile. */
  tile: number;
  /** A tile goes through GEMM when visible pairs / (tile tokens x tile keys) >= this. */
  minDensity: number;
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

function like(f32: boolean, n: number): FloatArray {
  return f32 ? new Float32Array(n) : new Float64Array(n);
}

/**
 * Scratch of one thread, typed like the inputs (the GEMM takes one float type; f32 scores keep
 * OpenBLAS on sgemm) and grown to the largest call seen. Kept between calls: a training step
 * makes dozens of attention calls of one shape, and fresh scratch would page-fault every time.
 */
class Scratch {
  readonly f32: boolean;
  kg: FloatArray; // [span, D] keys of one kv head
  vg: FloatArray; // [span, D] values of one kv head
  qg: FloatArray; // [G * tile, D] queries of the group's heads, head-major
  dog: FloatArray; // [G * tile, D] dOut rows, same order (backward)
  og: FloatArray; // [G * tile, D] GEMM output rows
  sc: FloatArray; // [G * tile, span] scores, then probabilities
  dp: FloatArray; // [G * tile, span] dP, then dS (backward)
  kvt: FloatArray; // [span, D] one dK or dV contribution (backward)
  rowF: Float64Array = new Float64Array(0); // [G * tile] 1/sum (forward) per row
  rowScores: Float64Array = new Float64Array(0); // [S] one (t, h)'s scores on the row-wise path
  acc: Float64Array = new Float64Array(0); // [D] one output or dq row on the row-wise path
  dkAcc: Float64Array = new Float64Array(0); // [S, D] f64 dK of one kv head (backward of f32 calls)
  dvAcc: Float64Array = new Float64Array(0); // [S, D] f64 dV of one kv head

  constructor(f32: boolean) {
    this.f32 = f32;
    this.kg = this.vg = this.qg = this.dog = this.og = this.sc = this.dp = this.kvt = like(f32, 0);
  }

  /** Grows every field to what `tiles` of call p needs (the backward fields only if backward). */
  fit(tiles: readonly Tile[], p: AttentionDims, backward: boolean): this {
    const D = p.headDim;
    const maxG = Math.ceil(p.heads / p.kvHeads);
    let span = 0;
    let rows = 0;
    for (const t of tiles) {
      if (!t.dense) continue;
      span = Math.max(span, t.span);
      rows = Math.max(rows, maxG * (t.t1 - t.t0));
    }
    const f = this.f32;
    const grow = (x: FloatArray, n: number): FloatArray => (x.length >= n ? x : like(f, n));
    const grow64 = (x: Float64Array, n: number): Float64Array => (x.length >= n ? x : new Float64Array(n));
    this.kg = grow(this.kg, span * D);
    this.vg = grow(this.vg, span * D);
    this.qg = grow(this.qg, rows * D);
    this.og = grow(this.og, rows * D);
    this.sc = grow(this.sc, rows * span);
    this.rowF = grow64(this.rowF, rows);
    this.rowScores = grow64(this.rowScores, p.keys);
    this.acc = grow64(this.acc, D);
    if (backward) {
      this.dog = grow(this.dog, rows * D);
      this.dp = grow(this.dp, rows * span);
      this.kvt = grow(this.kvt, span * D);
      if (f) {
        this.dkAcc = grow64(this.dkAcc, p.keys * D);
        this.dvAcc = grow64(this.dvAcc, p.keys * D);
      }
    }
    return this;
  }
}

// NOTE: one scratch per dtype per thread (module state is per thread: each worker has its own).
// Kernels are synchronous and never nest, so one call owns it from start to end.
const scratch = { f32: new Scratch(true), f64: new Scratch(false) };

function scratchFor(x: FloatArray, tiles: readonly Tile[], p: AttentionDims, backward: boolean): Scratch {
  return (x instanceof Float32Array ? scratch.f32 : scratch.f64).fit(tiles, p, backward);
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
 * one forward walk over the ranges maps each segment to its columns. f32 blocks take expF.
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
  const f32 = sc instanceof Float32Array;
  let sum = 0;
  let pos = base;
  for (let sg = segA, r = 0; sg < segB; sg++) {
    const a = starts[sg];
    if (ends[sg] <= a) continue;
    while (ranges[r + 1] <= a) r += 3;
    const j0 = base + ranges[r + 2] + a - ranges[r];
    const e = j0 + ends[sg] - a;
    if (j0 > pos) sc.fill(0, pos, j0);
    if (f32) {
      for (let j = j0; j < e; j++) {
        const w = expF(sc[j] - shift);
        sc[j] = w;
        sum += w;
      }
    } else {
      for (let j = j0; j < e; j++) {
        const w = Math.exp(sc[j] - shift);
        sc[j] = w;
        sum += w;
      }
    }
    pos = e;
  }
  if (base + span > pos) sc.fill(0, pos, base + span);
  return sum;
}

/** The arrays of one call; layouts at the top of this file. */
export interface AttentionIO {
  q: FloatArray;
  k: FloatArray;
  v: FloatArray;
  offsets: Int32Array;
  starts: Int32Array;
  ends: Int32Array;
  out: FloatArray;
  lse: FloatArray;
}

/** The backward's extra arrays: dOut in, dq, dk, dv out. */
export interface AttentionGrads {
  dOut: FloatArray;
  dq: FloatArray;
  dk: FloatArray;
  dv: FloatArray;
}

/** The tiles of a call, with each tile's path fixed; planned once, shared by every thread. */
export function plan(io: AttentionIO, p: AttentionDims, o: AttentionOptions): Tile[] {
  return planTiles(io.offsets, io.starts, io.ends, p.tokens, o);
}

// ---------------------------------------------------------------- forward

/**
 * Forward item i: tile floor(i / Hkv), kv head g = i % Hkv and the query heads h reading it:
 * out[t, h, :] = sum_s softmax_s(scale q[t,h,:] . k[s,g,:]) v[s,g,:] over the keys token t sees,
 * lse[t, h] = logsumexp_s of those scaled scores, for exactly the item's tokens and heads. A token
 * that sees no key gets out 0 and lse -Infinity (checkLayout rules such layouts out; the kernel
 * must still not produce NaN). Items write disjoint rows, so any thread may run any item.
 */
export function forwardItem(io: AttentionIO, p: AttentionDims, tiles: readonly Tile[], item: number, gemm: Gemm): void {
  const tile = tiles[Math.floor(item / p.kvHeads)];
  const g = item % p.kvHeads;
  const w = scratchFor(io.q, tiles, p, false);
  if (tile.dense) denseForward(io, p, tile, g, w, gemm);
  else rowForward(io, p, tile.t0, tile.t1, g, w.rowScores, w.acc);
}

/**
 * One dense tile and kv head g: S = scale Qg Kg^T over the tile's key span (one GEMM for all of
 * g's query heads), masked exp in place, O = P Vg (second GEMM), rows scaled by 1/sum.
 */
function denseForward(io: AttentionIO, p: AttentionDims, tile: Tile, g: number, w: Scratch, gemm: Gemm): void {
  const { q, k, v, offsets, starts, ends, out, lse } = io;
  const { heads: H, kvHeads: Hkv, headDim: D, scale } = p;
  const { t0, t1, ranges, span } = tile;
  const Bq = t1 - t0;
  const maxOut = new Float64Array(1);
  const [hs, he] = groupHeads(g, H, Hkv);
  // All query heads of kv head g share one GEMM: rows are (head hs + r / Bq, token t0 + r % Bq),
  // so K and V are gathered once per group and M grows to G x Bq rows.
  const M = (he - hs) * Bq;
  if (M === 0) return;
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

/**
 * Tokens [t0, t1) and the query heads of kv head g, one (t, h) at a time over exactly their
 * visible keys: scores to a scratch row (with their max), then exp(score - max) weights V rows
 * into an f64 accumulator.
 */
// The row-wise path visits only visible keys, so it wins on sparse tiles (and is the whole kernel
// when no GEMM is given). Inner loops run over D with independent accumulators; everything sums
// in f64 locals.
function rowForward(io: AttentionIO, p: AttentionDims, t0: number, t1: number, g: number, scores: Float64Array, acc: Float64Array): void {
  const { q, k, v, offsets, starts, ends, out, lse } = io;
  const { heads: H, kvHeads: Hkv, headDim: D, scale } = p;
  const f32 = out instanceof Float32Array;
  const [hs, he] = groupHeads(g, H, Hkv);
  const rowStride = Hkv * D; // elements between key s and key s+1 of one kv head
  const kvo = g * D;
  for (let t = t0; t < t1; t++) {
    const segA = offsets[t];
    const segB = offsets[t + 1];
    for (let h = hs; h < he; h++) {
      const qo = (t * H + h) * D;
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
      acc.fill(0, 0, D);
      let sum = 0;
      n = 0;
      for (let sg = segA; sg < segB; sg++) {
        const end = ends[sg];
        for (let s = starts[sg]; s < end; s++) {
          const x = scores[n++] - max;
          const wt = f32 ? expF(x) : Math.exp(x);
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

// Flash-style backward: probabilities are recomputed from the saved lse instead of stored.
// With P = exp(scale q.k - lse), Delta[t,h] = sum_d dO[t,h,d] O[t,h,d] (= sum_s P dP):
//   dV[s,g] += P dO;  dP = dO . v[s,g];  dS = P (dP - Delta)
//   dQ[t,h] = scale sum_s dS k[s,g];  dK[s,g] += scale dS q[t,h]
// dq, dk, dv are overwritten (dk, dv over their first S rows): zeroUnseenKeys, then every
// backward item (band x kv head), in any order and on any threads.

/** Zeroes dk and dv on the keys no band covers (no tile sees them); bands write all the others. */
export function zeroUnseenKeys(gr: AttentionGrads, p: AttentionDims, bands: readonly Band[]): void {
  const rowLen = p.kvHeads * p.headDim;
  const covered = bands.filter((b) => b.k1 > b.k0).sort((a, b) => a.k0 - b.k0);
  let s = 0;
  for (const b of [...covered, { k0: p.keys, k1: p.keys }]) {
    if (b.k0 > s) {
      gr.dk.fill(0, s * rowLen, b.k0 * rowLen);
      gr.dv.fill(0, s * rowLen, b.k0 * rowLen);
    }
    s = Math.max(s, b.k1);
  }
}

/**
 * Backward item i: band floor(i / Hkv) and kv head i % Hkv. Writes dq of the band's tokens for
 * g's query heads and dk, dv of g over the band's keys. dk and dv sum over tokens, tiles and the
 * query heads sharing a kv head, so for f32 they are accumulated in f64 scratch and rounded once;
 * f64 ones accumulate in place. The sum runs over the band's tiles in ascending order whichever
 * thread runs the item, so threaded results are identical.
 */
export function backwardItem(
  io: AttentionIO,
  gr: AttentionGrads,
  p: AttentionDims,
  tiles: readonly Tile[],
  bands: readonly Band[],
  item: number,
  gemm: Gemm,
): void {
  const { kvHeads: Hkv, headDim: D } = p;
  const band = bands[Math.floor(item / Hkv)];
  const g = item % Hkv;
  const { k0, k1 } = band;
  const w = scratchFor(io.q, tiles, p, true);
  const rowStep = Hkv * D;
  // The accumulator of kv head g: key s, dim d at acc.off + s * acc.step + d.
  let acc: KvAcc;
  if (gr.dk instanceof Float64Array && gr.dv instanceof Float64Array) {
    acc = { dk: gr.dk, dv: gr.dv, off: g * D, step: rowStep };
    for (let s = k0, a = k0 * rowStep + g * D; s < k1; s++, a += rowStep) {
      gr.dk.fill(0, a, a + D);
      gr.dv.fill(0, a, a + D);
    }
  } else {
    // Scratch row s - k0 holds key s.
    acc = { dk: w.dkAcc, dv: w.dvAcc, off: -k0 * D, step: D };
    w.dkAcc.fill(0, 0, (k1 - k0) * D);
    w.dvAcc.fill(0, 0, (k1 - k0) * D);
  }
  for (const ti of band.tiles) {
    const tile = tiles[ti];
    if (tile.dense) denseBackward(io, gr, p, tile, g, acc, w, gemm);
    else rowBackward(io, gr, p, tile.t0, tile.t1, g, acc, w.acc);
  }
  if (acc.dk === w.dkAcc) {
    for (let s = k0, a = k0 * rowStep + g * D, b = 0; s < k1; s++, a += rowStep, b += D) {
      for (let d = 0; d < D; d++) {
        gr.dk[a + d] = acc.dk[b + d];
        gr.dv[a + d] = acc.dv[b + d];
      }
    }
  }
}

/** f64 dK and dV accumulators of one kv head: key s, dim d at off + s * step + d. */
interface KvAcc {
  dk: Float64Array;
  dv: Float64Array;
  off: number;
  step: number;
}

/**
 * One dense tile and kv head g, five GEMMs over the tile's key span:
 *   S = scale Qg Kg^T -> P (masked, from lse);  dP = dOg Vg^T -> dS = scale P (dP - Delta)
 *   dQg = dS Kg;  dKg += dS^T Qg;  dVg += P^T dOg
 */
function denseBackward(
  io: AttentionIO,
  gr: AttentionGrads,
  p: AttentionDims,
  tile: Tile,
  g: number,
  acc: KvAcc,
  w: Scratch,
  gemm: Gemm,
): void {
  const { q, k, v, offsets, starts, ends, out, lse } = io;
  const { dOut, dq } = gr;
  const { heads: H, kvHeads: Hkv, headDim: D, scale } = p;
  const { t0, t1, ranges, span } = tile;
  const Bq = t1 - t0;
  const unused = new Float64Array(1);
  const [hs, he] = groupHeads(g, H, Hkv);
  const M = (he - hs) * Bq;
  if (M === 0) return;
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
  // scratch and added into the f64 accumulators, whose layout a GEMM cannot write.
  gemm(w.dp, w.qg, w.kvt, gemmParams(span, D, M, true, false));
  scatterAddKeys(acc.dk, w.kvt, ranges, acc.off, acc.step, D);
  gemm(w.sc, w.dog, w.kvt, gemmParams(span, D, M, true, false));
  scatterAddKeys(acc.dv, w.kvt, ranges, acc.off, acc.step, D);
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

/**
 * Tokens [t0, t1) and the query heads of kv head g, one (t, h) at a time, one sweep per visible
 * key for both dots and all three updates.
 */
function rowBackward(
  io: AttentionIO,
  gr: AttentionGrads,
  p: AttentionDims,
  t0: number,
  t1: number,
  g: number,
  acc: KvAcc,
  dqAcc: Float64Array,
): void {
  const { q, k, v, offsets, starts, ends, out, lse } = io;
  const { dOut, dq } = gr;
  const { dk: dkAcc, dv: dvAcc } = acc;
  const { heads: H, kvHeads: Hkv, headDim: D, scale } = p;
  const f32 = dq instanceof Float32Array;
  const [hs, he] = groupHeads(g, H, Hkv);
  const rowStride = Hkv * D;
  const kvo = g * D;
  for (let t = t0; t < t1; t++) {
    const segA = offsets[t];
    const segB = offsets[t + 1];
    for (let h = hs; h < he; h++) {
      const qo = (t * H + h) * D;
      const l = lse[t * H + h];
      dqAcc.fill(0, 0, D);
      if (segA === segB || l === -Infinity) {
        dq.fill(0, qo, qo + D);
        continue;
      }
      const delta = dot(dOut, qo, out, qo, D);
      for (let sg = segA; sg < segB; sg++) {
        const end = ends[sg];
        for (let s = starts[sg]; s < end; s++) {
          const ko = s * rowStride + kvo;
          const ao = acc.off + s * acc.step;
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
          const x = scale * (qk0 + qk1) - l;
          const prob = f32 ? expF(x) : Math.exp(x);
          const ds = scale * prob * (dp0 + dp1 - delta);
          for (d = 0; d < D; d++) {
            dvAcc[ao + d] += prob * dOut[qo + d];
            dkAcc[ao + d] += ds * q[qo + d];
            dqAcc[d] += ds * k[ko + d];
          }
        }
      }
      for (let d = 0; d < D; d++) dq[qo + d] = dqAcc[d];
    }
  }
}
