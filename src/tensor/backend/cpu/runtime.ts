/**
 * How the CPU backend runs its kernels: the thread count and the worker pool, the GEMM path
 * (OpenBLAS or TypeScript), the attention tiling options, and the call counters. The op entry
 * points (index.ts, nn-ops.ts) count their calls here and cut large kernels into fixed chunks
 * that the pool shares out (worker-kernels.ts) when buffers live in shared memory, which every
 * buffer does while the backend has more than one thread. Knows typed arrays, the pool and the
 * GEMM; no DeviceBuffer, no argument checks, no op semantics.
 */
import { availableParallelism } from "node:os";
import { ENV } from "../../../util/index.ts";
import type { PrimitiveName } from "../types.ts";
import type { AttentionDims, AttentionOptions, AttentionStats, Band, Tile } from "./attention.ts";
import { CpuGemm } from "./gemm.ts";
import { allocShared, sharedPool } from "./pool.ts";
import type { Shareable, WorkerPool } from "./pool.ts";
import { runChunks } from "./worker-kernels.ts";
import type { TaskName } from "./worker-kernels.ts";

export interface CpuBackendOptions {
  /** Use OpenBLAS for matmul when it loads (default ENV.useBlas, i.e. NPR_BLAS). */
  useBlas?: boolean;
  /**
   * Attention tiling (attention.ts): query tokens per tile, and the fraction of a tile's dense
   * [tokens x key span] block that must be visible for it to go through GEMM. Defaults are for
   * speed; tests set them to force one path or the other.
   */
  attention?: { tile?: number; minDensity?: number };
  /**
   * Threads for the kernels, the caller's included (default NPR_THREADS, else the available
   * cores). 1 runs everything on the caller's thread and allocates plain (unshared) buffers.
   * OpenBLAS's own thread count stays with NPR_THREADS.
   */
  threads?: number;
}

// Chunks per thread of a split kernel: several, so a thread that the OS (2 cores shared with
// other processes) deschedules delays a kernel by one chunk, not by its whole share; the caller
// takes chunks too and never waits for a worker that has not started.
const CHUNKS_PER_THREAD = 4;
/**
 * Least work per chunk, in elements touched: a job costs ~6 us back to back and a few tens of us
 * when the worker has to be woken, and these kernels run at 1-3 ns an element, so chunks below
 * ~32k elements would not pay for it.
 */
const MIN_CHUNK_ELEMENTS = 1 << 15;

/** Query tokens per attention tile: GEMMs of 64 x G rows keep OpenBLAS efficient. */
const ATTENTION_TILE = 64;
/**
 * Density above which a tile goes through GEMM. Measured on this machine (D=32..128): OpenBLAS
 * tiles run at 50-100 GFLOP/s against ~1.5 for the row-wise loop, so even sparse tiles win;
 * the TypeScript GEMM (~5 GFLOP/s) only wins on tiles at least about half visible.
 */
const ATTENTION_MIN_DENSITY = { openblas: 0.1, typescript: 0.4 } as const;

/** A counter name: a primitive, a backend-specific event, or a task that ran over worker threads. */
export type CounterName =
  | PrimitiveName
  | "gemm.openblas"
  | "gemm.typescript"
  | "attention.dense"
  | "attention.rowwise"
  | `threads.${TaskName}`;

export class CpuRuntime {
  /** Threads for split kernels, the caller's included. */
  readonly threads: number;
  /** The worker pool (threads - 1 workers, shared per size), or null with one thread. */
  readonly pool: WorkerPool | null;
  /** The GEMM matmul runs (OpenBLAS when it loaded and is wanted, else TypeScript). */
  readonly gemm: CpuGemm;
  /** Attention tiling, with the density threshold of the GEMM path taken. */
  readonly attn: AttentionOptions;
  private readonly calls: Record<string, number> = {};

  constructor(opts: CpuBackendOptions) {
    this.threads = Math.max(1, Math.floor(opts.threads ?? ENV.threads ?? availableParallelism()));
    this.pool = this.threads > 1 ? sharedPool(this.threads - 1) : null;
    this.gemm = new CpuGemm({
      useBlas: opts.useBlas ?? ENV.useBlas,
      openblasPath: ENV.openblasPath,
      threads: ENV.threads,
    });
    this.attn = {
      dense: true,
      tile: opts.attention?.tile ?? ATTENTION_TILE,
      minDensity: opts.attention?.minDensity ?? ATTENTION_MIN_DENSITY[this.gemm.path],
    };
  }

  /**
   * Counts a primitive call, or a backend-specific event: the GEMM path, attention tiles by path,
   * a kernel that ran split over worker threads (tests assert the threaded path really ran).
   */
  count(name: CounterName, n = 1): void {
    this.calls[name] = (this.calls[name] ?? 0) + n;
  }

  counters(): Readonly<Record<string, number>> {
    return { ...this.calls };
  }

  /** Why split kernels run on the caller's thread only (null while the pool is usable). */
  get whyNoThreads(): string | null {
    if (this.pool === null) return "threads is 1";
    return this.pool.broken;
  }

  /**
   * The chunk size for n independent items of `cost` elements each: all n in one chunk (the
   * caller's thread, no job) below two chunks' worth of MIN_CHUNK_ELEMENTS, else about
   * CHUNKS_PER_THREAD chunks per thread. Never 0, so n / chunk is defined.
   */
  chunkOf(n: number, cost: number): number {
    const least = Math.ceil(MIN_CHUNK_ELEMENTS / Math.max(1, cost));
    if (this.pool === null || n < 2 * least) return Math.max(1, n);
    return Math.max(least, Math.ceil(n / (this.threads * CHUNKS_PER_THREAD)));
  }

  /** Zeroed f64 scratch of n elements, shared when there is a pool (a job may write it). */
  scratch64(n: number): Float64Array {
    return new Float64Array(this.pool !== null ? allocShared(8 * n) : new ArrayBuffer(8 * n));
  }

  /** Runs chunks [0, nChunks) of a task of worker-kernels.ts, over the pool when there is one. */
  split(task: TaskName, arrays: Shareable[], params: unknown, nChunks: number): void {
    if (runChunks(this.pool, task, arrays, params, nChunks)) this.count(`threads.${task}`);
  }

  countTiles(stats: AttentionStats): void {
    if (stats.denseTiles) this.count("attention.dense", stats.denseTiles);
    if (stats.rowTiles) this.count("attention.rowwise", stats.rowTiles);
  }

  /**
   * Runs the attention items (forward: tile x kv head; backward: band x kv head) through runChunks, over
   * the pool when the call is big enough. OpenBLAS is held at one thread meanwhile, threads or
   * not: its tile GEMMs (64-256 rows) run faster on one core than split over two (measured: the
   * tiny preset's attention backward took 34 ms a step with OpenBLAS at 2 threads, 14 at 1), and
   * concurrent calls from the pool's threads then each keep to their own core. Every item uses
   * the same one-thread GEMM whichever thread runs it, so results do not depend on the thread
   * count.
   */
  runAttention(
    task: "attention" | "attentionBackward",
    arrays: Shareable[],
    p: AttentionDims,
    tiles: Tile[],
    bands: Band[],
    nItems: number,
    elements: number,
  ): void {
    const params = { p, tiles, bands, gemm: this.gemm.path };
    const pool = nItems > 1 && elements >= MIN_CHUNK_ELEMENTS ? this.pool : null;
    if (this.gemm.withBlasThreads(1, () => runChunks(pool, task, arrays, params, nItems))) this.count(`threads.${task}`);
  }
}
