/**
 * A cache-blocked GEMM in plain TypeScript: C = alpha op(A) op(B) + beta C for one row-major
 * matrix product, f32 or f64, split over worker threads when the product is large. It is the CPU
 * backend's fallback when OpenBLAS does not load, and the second opinion the OpenBLAS path is
 * tested against.
 *
 * It knows typed arrays, offsets and leading dimensions only: no batching and no size validation
 * (gemm.ts does both), no FFI, no Tensor. Worker threads come from pool.ts.
 */

import { availableParallelism } from "node:os";
import { invariant } from "../../../util/index.ts";
import { sharedPool } from "./pool.ts";
import type { WorkerPool } from "./pool.ts";

type Floats = Float32Array | Float64Array;

/**
 * One matrix product, offsets resolved. op(A) is [m, k], op(B) is [k, n], C is [m, n]; each
 * operand is row-major with a leading dimension (elements between consecutive stored rows), as
 * in BLAS: contiguous operands have lda = transA ? m : k, ldb = transB ? k : n, ldc = n.
 */
export interface GemmTsCall {
  m: number;
  n: number;
  k: number;
  /** A stored [k, m] (row-major) and used transposed; otherwise stored [m, k]. */
  transA: boolean;
  /** B stored [n, k] and used transposed; otherwise stored [k, n]. */
  transB: boolean;
  alpha: number;
  /** 0 means C is written without being read (NaN garbage in C is overwritten). */
  beta: number;
  a: Floats;
  offA: number;
  lda: number;
  b: Floats;
  offB: number;
  ldb: number;
  c: Floats;
  offC: number;
  ldc: number;
}

// Register block of the micro-kernel: MR rows of op(A) times NR columns of op(B), 16 accumulators
// in local variables. Measured on this 2-core EPYC (V8 emits no FMA and does not vectorize):
// 4x4, 5x4, 4x5 and 3x4 all reach about 7 GFLOP/s in the kernel alone; 8x8 spills and drops to
// 4.5. 4x4 keeps the packing arithmetic simple.
const MR = 4;
const NR = 4;
// Cache blocks (Goto/BLIS loop order jc -> pc -> ic -> jr -> ir). Packed panels are f64 so the
// micro-kernel is monomorphic and accumulates in double precision whatever the input dtype:
// a KC x NR micro-panel of B (8 KiB) stays in L1 while MC x KC of A (256 KiB) sits in L2
// (1 MiB per core here); the KC x NC panel of B (1 MiB) streams from L2/L3.
const KC = 256;
const MC = 128;
const NC = 512;
// At or below this many multiply-adds, or when op(A) or op(B) is thinner than a register block,
// packing costs as much as it saves: a direct row-at-a-time loop runs instead (decode GEMVs).
const DIRECT_MAX_MACS = 1 << 15;
// From this many multiply-adds up, the product is split over worker threads. Measured with 2
// threads on this (otherwise idle) 2-core machine, copies to shared memory included: 256^3
// (2^24) 1.9x, 1024^3 1.95x, 2048x768x256 1.9x (bench/gemm.ts); much below 2^24 the fixed costs
// (a message, two wakeups, the copies, packing the shared operand twice) eat the gain.
const PARALLEL_MIN_MACS = 1 << 24;

export interface GemmTsOptions {
  /** Threads for one product, the caller's included (default: available cores; 1: no workers). */
  threads?: number | null;
}

/**
 * Owns the packing scratch (so repeated calls allocate nothing) and uses, from its first large
 * product on, a worker pool shared per thread count. Synchronous and not re-entrant.
 */
export class GemmTs {
  readonly threads: number;
  /** Products that were split over workers so far (tests assert the parallel path ran). */
  parallelRuns = 0;
  // Packed op(A) block: ceil(mc / MR) strips, each [kc][MR] (row index fastest), zero-padded.
  private ap = new Float64Array(MC * KC);
  // Packed op(B) panel: ceil(nc / NR) strips, each [kc][NR] (column index fastest), zero-padded.
  private bp = new Float64Array(KC * NC);
  // One register tile, MR x NR, as the micro-kernel leaves it.
  private tile = new Float64Array(MR * NR);
  // One output row of the direct path, f64 accumulators.
  private row = new Float64Array(0);
  private pool: WorkerPool | null = null;
  // Shared scratch for operands that are not already in shared memory, grown on demand.
  private scratch: Record<"a" | "b" | "c", SharedArrayBuffer | null> = { a: null, b: null, c: null };

  constructor(opts: GemmTsOptions = {}) {
    this.threads = Math.max(1, opts.threads ?? availableParallelism());
  }

  /** Chunks that worker threads computed so far in this instance's pool (shared: all tasks count). */
  get workerChunks(): number {
    return this.threads > 1 ? sharedPool(this.threads - 1).workerChunks : 0;
  }

  /** Why products are not split over workers (null while they can be, or before the first try). */
  get whyNoWorkers(): string | null {
    if (this.threads <= 1) return "threads is 1";
    return this.pool?.broken ?? null;
  }

  run(g: GemmTsCall): void {
    const { m, n, k } = g;
    invariant(
      g.c.constructor === g.a.constructor && g.c.constructor === g.b.constructor,
      () => `gemm-ts: A, B and C must share one dtype, got ${g.a.constructor.name}, ${g.b.constructor.name}, ${g.c.constructor.name}`,
    );
    if (m === 0 || n === 0) return;
    if (k === 0 || g.alpha === 0) {
      // BLAS convention: with alpha 0 (or an empty sum) A and B are not read, C = beta C.
      for (let i = 0; i < m; i++) scaleC(g.c, g.offC + i * g.ldc, n, g.beta);
      return;
    }
    if (m < MR || n < NR || m * n * k <= DIRECT_MAX_MACS) {
      this.direct(g);
      return;
    }
    if (this.threads > 1 && m * n * k >= PARALLEL_MIN_MACS) {
      this.pool ??= sharedPool(this.threads - 1);
      if (this.split(this.pool, g)) {
        this.parallelRuns++;
        return;
      }
    }
    this.blocked(g);
  }

  /**
   * Row-at-a-time product for small or thin shapes. Every inner loop is stride-1 in B: without
   * transB it accumulates scaled rows of B (axpy form), with transB it takes dot products of rows.
   */
  private direct(g: GemmTsCall): void {
    const { m, n, k, a, b, c, offA, offB, offC, ldb, ldc, alpha, beta } = g;
    if (this.row.length < n) this.row = new Float64Array(n);
    const acc = this.row; // [n] f64
    // op(A)[i, p] lives at offA + i * rsA + p * csA.
    const rsA = g.transA ? 1 : g.lda;
    const csA = g.transA ? g.lda : 1;
    for (let i = 0; i < m; i++) {
      const aRow = offA + i * rsA;
      if (g.transB) {
        // B stored [n, k]: stored row j is column j of op(B).
        for (let j = 0; j < n; j++) {
          let s = 0;
          const bRow = offB + j * ldb;
          for (let p = 0; p < k; p++) s += a[aRow + p * csA] * b[bRow + p];
          acc[j] = s;
        }
      } else {
        acc.fill(0, 0, n);
        for (let p = 0; p < k; p++) {
          const aip = a[aRow + p * csA];
          const bRow = offB + p * ldb;
          for (let j = 0; j < n; j++) acc[j] += aip * b[bRow + j];
        }
      }
      const cRow = offC + i * ldc;
      if (beta === 0) for (let j = 0; j < n; j++) c[cRow + j] = alpha * acc[j];
      else for (let j = 0; j < n; j++) c[cRow + j] = alpha * acc[j] + beta * c[cRow + j];
    }
  }

  /**
   * Runs g split over the pool and the caller. Returns false, having written nothing, when the
   * shape does not split or the pool cannot be used; the caller then runs the product itself.
   */
  private split(pool: WorkerPool, g: GemmTsCall): boolean {
    if (pool.broken !== null) return false;
    const parts = pool.size + 1;
    const dim = g.m >= 2 * MR * parts ? "m" : g.n >= 2 * NR * parts ? "n" : null;
    if (dim === null) return false;
    const len = dim === "m" ? g.m : g.n;
    // Register-block aligned chunks, several per thread and at least MIN_CHUNK wide (each chunk
    // packs the whole other operand once, so thinner ones would pay for packing twice).
    const chunk = Math.ceil(Math.max(MIN_CHUNK, len / (parts * CHUNKS_PER_THREAD)) / MR) * MR;
    const nChunks = Math.ceil(len / chunk);
    if (nChunks < 2) return false;
    const a = this.share("a", g.a, g.offA, g.transA ? extent(g.k, g.m, g.lda) : extent(g.m, g.k, g.lda), true);
    const b = this.share("b", g.b, g.offB, g.transB ? extent(g.n, g.k, g.ldb) : extent(g.k, g.n, g.ldb), true);
    // C always goes through scratch; its old values are only needed when beta reads them.
    const c = this.share("c", g.c, g.offC, extent(g.m, g.n, g.ldc), g.beta !== 0, true);
    const { m, n, k, transA, transB, alpha, beta, lda, ldb, ldc } = g;
    const params: GemmChunkParams = { call: { m, n, k, transA, transB, alpha, beta, lda, ldb, ldc }, dim, chunk, len };
    // The caller's chunks go straight into its own C.
    const mine = new Uint8Array(nChunks);
    const local = (i: number) => {
      mine[i] = 1;
      this.blocked(slice(g, dim, i * chunk, Math.min(len, (i + 1) * chunk)));
    };
    if (!pool.run("gemm", [a, b, c], params, nChunks, local)) return false;
    const sharedC: GemmTsCall = { ...g, c, offC: 0 };
    for (let i = 0; i < nChunks; i++) {
      if (mine[i]) continue;
      const part = slice(sharedC, dim, i * chunk, Math.min(len, (i + 1) * chunk));
      copyBack(part, g.c, g.offC + part.offC); // shared C element 0 is the caller's offC
    }
    return true;
  }

  /**
   * A shared view of x[off : off + len]: x's own memory when it is already shared (and not
   * forced to scratch), else a scratch buffer, filled from x when `fill`.
   */
  private share(which: "a" | "b" | "c", x: Floats, off: number, len: number, fill: boolean, forceScratch = false): Floats {
    if (x.buffer instanceof SharedArrayBuffer && !forceScratch) return x.subarray(off, off + len);
    const bytes = len * x.BYTES_PER_ELEMENT;
    let buf = this.scratch[which];
    if (buf === null || buf.byteLength < bytes) {
      buf = new SharedArrayBuffer(Math.max(bytes, 2 * (buf?.byteLength ?? 0)));
      this.scratch[which] = buf;
    }
    const dst = x instanceof Float64Array ? new Float64Array(buf, 0, len) : new Float32Array(buf, 0, len);
    if (fill) dst.set(x.subarray(off, off + len));
    return dst;
  }

  /** The packed, cache-blocked product for everything but small shapes. */
  private blocked(g: GemmTsCall): void {
    const { m, n, k, c, offC, ldc, alpha } = g;
    const { ap, bp, tile } = this;
    for (let jc = 0; jc < n; jc += NC) {
      const nc = Math.min(NC, n - jc);
      for (let pc = 0; pc < k; pc += KC) {
        const kc = Math.min(KC, k - pc);
        // The first k-block applies the caller's beta; later ones accumulate onto it.
        const beta = pc === 0 ? g.beta : 1;
        packB(g, pc, kc, jc, nc, bp);
        for (let ic = 0; ic < m; ic += MC) {
          const mc = Math.min(MC, m - ic);
          packA(g, ic, mc, pc, kc, ap);
          for (let jr = 0; jr < nc; jr += NR) {
            const nr = Math.min(NR, nc - jr);
            const bo = jr * kc; // strip jr / NR starts at (jr / NR) * kc * NR
            for (let ir = 0; ir < mc; ir += MR) {
              micro4x4(kc, ap, ir * kc, bp, bo, tile);
              storeTile(tile, Math.min(MR, mc - ir), nr, alpha, beta, c, offC + (ic + ir) * ldc + jc + jr, ldc);
            }
          }
        }
      }
    }
  }
}

/** C[off : off + len] = beta C (beta 0: overwritten with zeros, never read). */
export function scaleC(c: Floats, off: number, len: number, beta: number): void {
  if (beta === 0) c.fill(0, off, off + len);
  else if (beta !== 1) for (let i = off; i < off + len; i++) c[i] *= beta;
}

/**
 * Packs op(A)[ic : ic+mc, pc : pc+kc] into strips of MR rows: ap[(i / MR) * kc * MR + p * MR + i % MR].
 * Rows past mc in the last strip are zero so the micro-kernel never branches.
 */
function packA(g: GemmTsCall, ic: number, mc: number, pc: number, kc: number, ap: Float64Array): void {
  const { a, offA, lda } = g;
  for (let i0 = 0; i0 < mc; i0 += MR) {
    const base = i0 * kc;
    const rows = Math.min(MR, mc - i0);
    for (let ii = 0; ii < MR; ii++) {
      if (ii >= rows) {
        for (let p = 0; p < kc; p++) ap[base + p * MR + ii] = 0;
        continue;
      }
      const i = ic + i0 + ii;
      if (g.transA) {
        // A stored [k, m]: op(A)[i, p] = a[p * lda + i], stride lda along p.
        let src = offA + pc * lda + i;
        for (let p = 0; p < kc; p++, src += lda) ap[base + p * MR + ii] = a[src];
      } else {
        const src = offA + i * lda + pc;
        for (let p = 0; p < kc; p++) ap[base + p * MR + ii] = a[src + p];
      }
    }
  }
}

/**
 * Packs op(B)[pc : pc+kc, jc : jc+nc] into strips of NR columns: bp[(j / NR) * kc * NR + p * NR + j % NR].
 * Columns past nc in the last strip are zero.
 */
function packB(g: GemmTsCall, pc: number, kc: number, jc: number, nc: number, bp: Float64Array): void {
  const { b, offB, ldb } = g;
  for (let j0 = 0; j0 < nc; j0 += NR) {
    const base = j0 * kc;
    const cols = Math.min(NR, nc - j0);
    if (g.transB) {
      // B stored [n, k]: op(B)[p, j] = b[j * ldb + p], stride-1 along p.
      for (let jj = 0; jj < NR; jj++) {
        if (jj >= cols) {
          for (let p = 0; p < kc; p++) bp[base + p * NR + jj] = 0;
          continue;
        }
        const src = offB + (jc + j0 + jj) * ldb + pc;
        for (let p = 0; p < kc; p++) bp[base + p * NR + jj] = b[src + p];
      }
    } else {
      // B stored [k, n]: a strip row is NR consecutive elements.
      for (let p = 0; p < kc; p++) {
        const src = offB + (pc + p) * ldb + jc + j0;
        const dst = base + p * NR;
        for (let jj = 0; jj < NR; jj++) bp[dst + jj] = jj < cols ? b[src + jj] : 0;
      }
    }
  }
}

/**
 * tile[MR x NR] = A strip [kc][MR] times B strip [kc][NR]. The 16 accumulators are locals so V8
 * keeps most of them in registers; this loop is where the time goes.
 */
// prettier-ignore
function micro4x4(kc: number, ap: Float64Array, ao: number, bp: Float64Array, bo: number, t: Float64Array): void {
  let c00 = 0,
    c01 = 0,
    c02 = 0,
    c03 = 0;
  let c10 = 0,
    c11 = 0,
    c12 = 0,
    c13 = 0;
  let c20 = 0,
    c21 = 0,
    c22 = 0,
    c23 = 0;
  let c30 = 0,
    c31 = 0,
    c32 = 0,
    c33 = 0;
  for (let p = 0; p < kc; p++) {
    const a0 = ap[ao],
      a1 = ap[ao + 1],
      a2 = ap[ao + 2],
      a3 = ap[ao + 3];
    const b0 = bp[bo],
      b1 = bp[bo + 1],
      b2 = bp[bo + 2],
      b3 = bp[bo + 3];
    c00 += a0 * b0;
    c01 += a0 * b1;
    c02 += a0 * b2;
    c03 += a0 * b3;
    c10 += a1 * b0;
    c11 += a1 * b1;
    c12 += a1 * b2;
    c13 += a1 * b3;
    c20 += a2 * b0;
    c21 += a2 * b1;
    c22 += a2 * b2;
    c23 += a2 * b3;
    c30 += a3 * b0;
    c31 += a3 * b1;
    c32 += a3 * b2;
    c33 += a3 * b3;
    ao += MR;
    bo += NR;
  }
  t[0] = c00;
  t[1] = c01;
  t[2] = c02;
  t[3] = c03;
  t[4] = c10;
  t[5] = c11;
  t[6] = c12;
  t[7] = c13;
  t[8] = c20;
  t[9] = c21;
  t[10] = c22;
  t[11] = c23;
  t[12] = c30;
  t[13] = c31;
  t[14] = c32;
  t[15] = c33;
}

/** Writes the valid mr x nr corner of a tile into C (row stride ldc): C = alpha t + beta C. */
function storeTile(t: Float64Array, mr: number, nr: number, alpha: number, beta: number, c: Floats, off: number, ldc: number): void {
  for (let i = 0; i < mr; i++) {
    const row = off + i * ldc;
    const ti = i * NR;
    if (beta === 0) for (let j = 0; j < nr; j++) c[row + j] = alpha * t[ti + j];
    else for (let j = 0; j < nr; j++) c[row + j] = alpha * t[ti + j] + beta * c[row + j];
  }
}

// ---------------------------------------------------------------------------------------------
// Worker threads (pool.ts). The API stays synchronous: C is cut into chunks of rows (or of
// columns when C has too few rows) that the caller and the workers take off a shared counter.
// Workers see A and B through SharedArrayBuffers (the caller's own when they already are shared,
// else a copy) and always write C into a shared scratch the caller copies back, so a worker can
// never write into the caller's memory, which may not be shared at all.
// ---------------------------------------------------------------------------------------------

// Chunks of C handed out per thread: several, so a thread that is descheduled (2 cores shared
// with other processes) delays the product by one chunk, not by a whole static share.
const CHUNKS_PER_THREAD = 4;
const MIN_CHUNK = 64;

/** What the "gemm" task of worker-kernels.ts receives besides [A, B, C] (each starting at its element 0). */
export interface GemmChunkParams {
  call: Omit<GemmTsCall, "a" | "b" | "c" | "offA" | "offB" | "offC">;
  /** C is cut into chunks of `chunk` rows (dim "m") or columns (dim "n") out of len, the last shorter. */
  dim: "m" | "n";
  chunk: number;
  len: number;
}

/** Chunk i of a split product, on a worker thread's GEMM (the "gemm" task). */
export function gemmChunk(a: Floats, b: Floats, c: Floats, p: GemmChunkParams, i: number, gemm: GemmTs): void {
  const whole: GemmTsCall = { ...p.call, a, offA: 0, b, offB: 0, c, offC: 0 };
  gemm.run(slice(whole, p.dim, i * p.chunk, Math.min(p.len, (i + 1) * p.chunk)));
}

/** Slice [start, end) of C along dim, as a call on the same buffers. */
function slice(g: GemmTsCall, dim: "m" | "n", start: number, end: number): GemmTsCall {
  if (dim === "m") {
    return { ...g, m: end - start, offA: g.offA + start * (g.transA ? 1 : g.lda), offC: g.offC + start * g.ldc };
  }
  return { ...g, n: end - start, offB: g.offB + start * (g.transB ? g.ldb : 1), offC: g.offC + start };
}

/** Elements from the first to one past the last that a [rows x cols] operand with leading dim ld spans. */
function extent(rows: number, cols: number, ld: number): number {
  return (rows - 1) * ld + cols;
}

/** Copies the slice `part` (a call on shared C) back into the caller's C at offset dstOff. */
function copyBack(part: GemmTsCall, dst: Floats, dstOff: number): void {
  for (let i = 0; i < part.m; i++) {
    const src = part.offC + i * part.ldc;
    dst.set(part.c.subarray(src, src + part.n), dstOff + i * part.ldc);
  }
}
