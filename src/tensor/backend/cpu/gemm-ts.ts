/**
 * A cache-blocked GEMM in plain TypeScript: C = alpha op(A) op(B) + beta C for one row-major
 * matrix product, f32 or f64, split over worker threads when the product is large. It is the CPU
 * backend's fallback when OpenBLAS does not load, and the second opinion the OpenBLAS path is
 * tested against.
 *
 * It knows typed arrays, offsets and leading dimensions only: no batching and no size validation
 * (gemm.ts does both), no FFI, no Tensor. This module is also the worker threads' entry point.
 */

import { availableParallelism } from "node:os";
import { MessageChannel, Worker, isMainThread, receiveMessageOnPort, workerData } from "node:worker_threads";
import type { MessagePort } from "node:worker_threads";
import { ENV } from "../../../util/env.ts";
import { InvariantError, invariant } from "../../../util/errors.ts";

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

  constructor(opts: GemmTsOptions = {}) {
    this.threads = Math.max(1, opts.threads ?? availableParallelism());
  }

  /** Chunks of split products that worker threads computed so far (in this instance's shared pool). */
  get workerChunks(): number {
    return pools.get(this.threads - 1)?.workerChunks ?? 0;
  }

  /** Why products are not split over workers (null while they can be, or before the first try). */
  get whyNoWorkers(): string | null {
    if (this.threads <= 1) return "threads is 1";
    return this.pool?.broken ?? null;
  }

  run(g: GemmTsCall): void {
    const { m, n, k } = g;
    invariant(g.c.constructor === g.a.constructor && g.c.constructor === g.b.constructor, () =>
      `gemm-ts: A, B and C must share one dtype, got ${g.a.constructor.name}, ${g.b.constructor.name}, ${g.c.constructor.name}`,
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
      if (this.pool.split(g, (part) => this.blocked(part))) {
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
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0;
  let c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  let c20 = 0, c21 = 0, c22 = 0, c23 = 0;
  let c30 = 0, c31 = 0, c32 = 0, c33 = 0;
  for (let p = 0; p < kc; p++) {
    const a0 = ap[ao], a1 = ap[ao + 1], a2 = ap[ao + 2], a3 = ap[ao + 3];
    const b0 = bp[bo], b1 = bp[bo + 1], b2 = bp[bo + 2], b3 = bp[bo + 3];
    c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
    c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
    c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
    c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
    ao += MR;
    bo += NR;
  }
  t[0] = c00; t[1] = c01; t[2] = c02; t[3] = c03;
  t[4] = c10; t[5] = c11; t[6] = c12; t[7] = c13;
  t[8] = c20; t[9] = c21; t[10] = c22; t[11] = c23;
  t[12] = c30; t[13] = c31; t[14] = c32; t[15] = c33;
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
// Worker threads. The API stays synchronous: C is cut into chunks of rows (or of columns when C
// has too few rows); the caller posts every worker the job, then the caller and the workers take
// chunks off a shared atomic counter until none are left, and the caller blocks in Atomics.wait
// until every worker has flagged the job done. Workers see A and B through SharedArrayBuffers
// (the caller's own when they already are shared, else a copy) and always write C into a shared
// scratch the caller copies back: a worker that is late or dead can then never write into the
// caller's memory after run() returned, and its unfinished chunks are redone by the caller.
//
//   ctl (Int32Array over a SharedArrayBuffer, one per worker):
//     [READY]  0 -> 1 once the worker's module loaded
//     [JOB]    sequence number of the last job posted (caller writes, worker waits on it)
//     [DONE]   sequence number of the last job finished (worker writes, caller waits on it)
//     [STATUS] 0 ok, 1 failed (the error text follows on the port)
// ---------------------------------------------------------------------------------------------

const READY = 0;
const JOB = 1;
const DONE = 2;
const STATUS = 3;
// Chunks of C handed out per thread: several, so a thread that is descheduled (2 cores shared
// with other processes) delays the product by one chunk, not by a whole static share.
const CHUNKS_PER_THREAD = 4;
const MIN_CHUNK = 64;
// A worker that has not loaded in this long is given up (a cold start takes about 50 ms).
const STARTUP_TIMEOUT_MS = 10_000;

/** A shared view the worker rebuilds: elements [byteOffset / bpe, + length) of buf. */
interface SharedSpan {
  buf: SharedArrayBuffer;
  byteOffset: number;
  length: number;
}

/** What a worker receives: the product (ld's as in the caller's call) and its slice. */
interface Job {
  seq: number;
  f64: boolean;
  call: Omit<GemmTsCall, "a" | "b" | "c" | "offA" | "offB" | "offC">;
  a: SharedSpan;
  b: SharedSpan;
  c: SharedSpan;
  /** [next chunk to take, finished flag of each chunk], shared by the caller and all workers. */
  work: Int32Array;
  /** C is cut into nChunks chunks of `chunk` rows (dim "m") or columns (dim "n"), the last shorter. */
  dim: "m" | "n";
  chunk: number;
  nChunks: number;
}

interface PoolWorker {
  worker: Worker;
  ctl: Int32Array;
  port: MessagePort;
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

// NOTE: pools are shared by every GemmTs of this thread with the same worker count, so a test
// suite that builds many CPU backends starts one set of workers, not one per backend. Sharing is
// safe because run() is synchronous: two products on one thread never overlap.
const pools = new Map<number, WorkerPool>();

function sharedPool(size: number): WorkerPool {
  let pool = pools.get(size);
  if (pool === undefined) {
    pool = new WorkerPool(size);
    pools.set(size, pool);
  }
  return pool;
}

class WorkerPool {
  /** Why the pool is not used (null while it is usable). */
  broken: string | null = null;
  /** Chunks computed by workers so far (tests check that workers really took part). */
  workerChunks = 0;
  private workers: PoolWorker[] | null = null;
  private seq = 0;
  // Shared scratch for operands that are not already in shared memory, grown on demand.
  private scratch: Record<"a" | "b" | "c", SharedArrayBuffer | null> = { a: null, b: null, c: null };

  /** Worker threads (the caller computes one more slice itself). */
  private readonly size: number;

  constructor(size: number) {
    this.size = size;
  }

  /**
   * Runs g split over the workers and the caller (`local` computes on the caller's buffers).
   * Returns false, having written nothing, when the shape does not split or the pool cannot be
   * used; the caller then runs the product itself.
   */
  split(g: GemmTsCall, local: (part: GemmTsCall) => void): boolean {
    if (this.broken !== null) return false;
    const parts = this.size + 1;
    const dim = g.m >= 2 * MR * parts ? "m" : g.n >= 2 * NR * parts ? "n" : null;
    if (dim === null) return false;
    const len = dim === "m" ? g.m : g.n;
    // Register-block aligned chunks, several per thread and at least MIN_CHUNK wide (each chunk
    // packs the whole other operand once, so thinner ones would pay for packing twice).
    const chunk = Math.ceil(Math.max(MIN_CHUNK, len / (parts * CHUNKS_PER_THREAD)) / MR) * MR;
    const nChunks = Math.ceil(len / chunk);
    if (nChunks < 2) return false;
    const workers = this.start();
    if (workers === null) return false;
    const f64 = g.c instanceof Float64Array;
    const a = this.share("a", g.a, g.offA, g.transA ? extent(g.k, g.m, g.lda) : extent(g.m, g.k, g.lda), true);
    const b = this.share("b", g.b, g.offB, g.transB ? extent(g.n, g.k, g.ldb) : extent(g.k, g.n, g.ldb), true);
    // C always goes through scratch; its old values are only needed when beta reads them.
    const c = this.share("c", g.c, g.offC, extent(g.m, g.n, g.ldc), g.beta !== 0, true);
    const work = new Int32Array(new SharedArrayBuffer(4 * (1 + nChunks))); // [next chunk, finished[nChunks]]
    const { m, n, k, transA, transB, alpha, beta, lda, ldb, ldc } = g;
    const call: Job["call"] = { m, n, k, transA, transB, alpha, beta, lda, ldb, ldc };
    const posted: { w: PoolWorker; seq: number }[] = [];
    for (const w of workers) {
      const seq = ++this.seq;
      const job: Job = { seq, f64, call, a, b, c, work, dim, chunk, nChunks };
      w.port.postMessage(job);
      Atomics.store(w.ctl, JOB, seq);
      Atomics.notify(w.ctl, JOB);
      posted.push({ w, seq });
    }
    // The caller takes chunks like any worker, straight into its own C.
    const mine = new Uint8Array(nChunks);
    for (let i = Atomics.add(work, 0, 1); i < nChunks; i = Atomics.add(work, 0, 1)) {
      mine[i] = 1;
      local(slice(g, dim, i * chunk, Math.min(len, (i + 1) * chunk)));
    }
    let recover = false;
    for (const p of posted) if (!this.await(p.w, p.seq, (g.m * g.n * g.k * chunk) / len)) recover = true;
    const view = f64 ? new Float64Array(c.buf, c.byteOffset, c.length) : new Float32Array(c.buf, c.byteOffset, c.length);
    const sharedC: GemmTsCall = { ...g, c: view, offC: 0 };
    for (let i = 0; i < nChunks; i++) {
      if (mine[i]) continue;
      const [s0, s1] = [i * chunk, Math.min(len, (i + 1) * chunk)];
      if (Atomics.load(work, 1 + i) === 1) {
        const part = slice(sharedC, dim, s0, s1);
        copyBack(part, g.c, g.offC + part.offC); // shared C element 0 is the caller's offC
        this.workerChunks++;
      } else {
        invariant(recover, () => `gemm-ts: chunk ${i} of ${nChunks} was never finished`);
        local(slice(g, dim, s0, s1)); // a wedged worker's chunk: the caller does it
      }
    }
    return true;
  }

  /** Waits for job seq; false (pool now broken) if the worker timed out. Throws if it failed. */
  private await(w: PoolWorker, seq: number, chunkMacs: number): boolean {
    // Generous: 10 s plus one chunk at 0.5 GFLOP/s. Only a dead or wedged worker gets there.
    const limitMs = 10_000 + (2 * chunkMacs) / 5e5;
    const t0 = performance.now();
    while (Atomics.load(w.ctl, DONE) !== seq) {
      const waited = performance.now() - t0;
      if (waited > limitMs) {
        this.stop(`a worker did not finish a chunk in ${Math.round(waited)} ms`);
        return false;
      }
      Atomics.wait(w.ctl, DONE, Atomics.load(w.ctl, DONE), 1000);
    }
    if (Atomics.load(w.ctl, STATUS) !== 0) {
      const text = receiveMessageOnPort(w.port)?.message;
      this.stop("a worker failed");
      throw new InvariantError(`gemm-ts worker failed: ${String(text)}`);
    }
    return true;
  }

  /** The worker threads, started on first use; null (pool broken) if they did not come up. */
  private start(): PoolWorker[] | null {
    if (this.workers) return this.workers;
    const workers: PoolWorker[] = [];
    this.workers = workers; // stop() terminates whatever started, even on a failure half-way
    try {
      for (let i = 0; i < this.size; i++) {
        const ctl = new Int32Array(new SharedArrayBuffer(4 * 4));
        const { port1, port2 } = new MessageChannel();
        const worker = new Worker(new URL(import.meta.url), {
          workerData: { nprGemmTsWorker: true, ctl, port: port2 },
          transferList: [port2],
        });
        // Neither may keep the process alive; errors are noticed at the next product.
        worker.unref();
        port1.unref();
        worker.on("error", (e) => this.stop(`a worker threw: ${e instanceof Error ? e.message : String(e)}`));
        worker.on("exit", (code) => this.stop(`a worker exited with code ${code}`));
        workers.push({ worker, ctl, port: port1 });
      }
    } catch (e) {
      this.stop(`worker threads could not start: ${e instanceof Error ? e.message : String(e)}`);
      return null;
    }
    for (const w of workers) {
      // Block until the worker's module has loaded; the worker starts on its own thread, so this
      // does not need the caller's event loop.
      const t0 = performance.now();
      while (Atomics.load(w.ctl, READY) !== 1) {
        if (performance.now() - t0 > STARTUP_TIMEOUT_MS) {
          this.stop(`a worker thread did not start within ${STARTUP_TIMEOUT_MS} ms`);
          return null;
        }
        Atomics.wait(w.ctl, READY, 0, 100);
      }
    }
    if (ENV.debug >= 1) console.error(`[npr] gemm-ts: ${workers.length} worker thread(s) started`);
    return workers;
  }

  /** Gives the pool up for the rest of the process (products then run on the caller's thread). */
  private stop(why: string): void {
    if (this.broken !== null) return;
    this.broken = why;
    if (ENV.debug >= 1) console.error(`[npr] gemm-ts: worker threads off: ${why}`);
    for (const w of this.workers ?? []) void w.worker.terminate().catch(() => {});
  }

  /**
   * A shared span holding x[off : off + len]: x's own memory when it is already shared (and not
   * forced to scratch), else a scratch buffer, filled from x when `fill`.
   */
  private share(which: "a" | "b" | "c", x: Floats, off: number, len: number, fill: boolean, forceScratch = false): SharedSpan {
    if (x.buffer instanceof SharedArrayBuffer && !forceScratch) {
      return { buf: x.buffer, byteOffset: x.byteOffset + off * x.BYTES_PER_ELEMENT, length: len };
    }
    const bytes = len * x.BYTES_PER_ELEMENT;
    let buf = this.scratch[which];
    if (buf === null || buf.byteLength < bytes) {
      buf = new SharedArrayBuffer(Math.max(bytes, 2 * (buf?.byteLength ?? 0)));
      this.scratch[which] = buf;
    }
    if (fill) {
      const dst = x instanceof Float64Array ? new Float64Array(buf, 0, len) : new Float32Array(buf, 0, len);
      dst.set(x.subarray(off, off + len));
    }
    return { buf, byteOffset: 0, length: len };
  }
}

/** Copies the slice `part` (a call on shared C) back into the caller's C at offset dstOff. */
function copyBack(part: GemmTsCall, dst: Floats, dstOff: number): void {
  for (let i = 0; i < part.m; i++) {
    const src = part.offC + i * part.ldc;
    dst.set(part.c.subarray(src, src + part.n), dstOff + i * part.ldc);
  }
}

/** The worker side: wait for a job, take and run chunks until none are left, flag it done, forever. */
function workerMain(ctl: Int32Array, port: MessagePort): void {
  const gemm = new GemmTs({ threads: 1 });
  Atomics.store(ctl, READY, 1);
  Atomics.notify(ctl, READY);
  let seen = 0;
  for (;;) {
    Atomics.wait(ctl, JOB, seen);
    const seq = Atomics.load(ctl, JOB);
    if (seq === seen) continue;
    seen = seq;
    let status = 0;
    try {
      const job = receiveMessageOnPort(port)?.message as Job | undefined;
      invariant(job !== undefined && job.seq === seq, () => `gemm-ts worker: job ${seq} announced but ${job?.seq} received`);
      const view = (s: SharedSpan): Floats =>
        job.f64 ? new Float64Array(s.buf, s.byteOffset, s.length) : new Float32Array(s.buf, s.byteOffset, s.length);
      const whole: GemmTsCall = { ...job.call, a: view(job.a), offA: 0, b: view(job.b), offB: 0, c: view(job.c), offC: 0 };
      const len = job.dim === "m" ? job.call.m : job.call.n;
      for (let i = Atomics.add(job.work, 0, 1); i < job.nChunks; i = Atomics.add(job.work, 0, 1)) {
        gemm.run(slice(whole, job.dim, i * job.chunk, Math.min(len, (i + 1) * job.chunk)));
        Atomics.store(job.work, 1 + i, 1);
      }
    } catch (e) {
      status = 1;
      port.postMessage(e instanceof Error ? (e.stack ?? e.message) : String(e));
    }
    Atomics.store(ctl, STATUS, status);
    Atomics.store(ctl, DONE, seq);
    Atomics.notify(ctl, DONE);
  }
}

if (!isMainThread && (workerData as { nprGemmTsWorker?: unknown } | null)?.nprGemmTsWorker === true) {
  const data = workerData as { ctl: Int32Array; port: MessagePort };
  workerMain(data.ctl, data.port);
}
