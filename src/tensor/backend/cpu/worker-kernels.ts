/**
 * The kernels the CPU backend spreads over worker threads, as chunked tasks: each task takes the
 * job's arrays, its parameters and a chunk number, and computes exactly the part of the result
 * that chunk owns (a fixed partition, so results never depend on which thread ran which chunk).
 * Worker threads import this table (pool.ts); the caller's thread runs the same functions for
 * its own chunks through runChunks, which also runs every chunk itself when there is no pool.
 *
 * It knows typed arrays, the kernel modules and the pool; no DeviceBuffer, no counters, no Tensor.
 */

import type { FloatArray, MatmulParams } from "../types.ts";
import * as att from "./attention.ts";
import * as ew from "./elementwise.ts";
import { GemmTs, gemmChunk } from "./gemm-ts.ts";
import type { GemmChunkParams } from "./gemm-ts.ts";
import * as nn from "./nn.ts";
import { loadOpenBlas } from "./openblas.ts";
import { allShared } from "./pool.ts";
import type { Shareable, Task, WorkerPool } from "./pool.ts";

/** [start, end) of chunk c when n items are cut into chunks of `size`. */
function range(c: number, size: number, n: number): [number, number] {
  return [c * size, Math.min(n, (c + 1) * size)];
}

/** Elementwise jobs: n elements in chunks of `chunk`. */
export interface FlatParams {
  n: number;
  chunk: number;
}

/** Row jobs: rows of a [rows, cols] matrix in chunks of `chunk` rows. */
export interface RowParams extends FlatParams {
  cols: number;
  ignoreIndex: number;
}

export interface AttentionTaskParams {
  p: att.AttentionDims;
  tiles: att.Tile[];
  /** Which GEMM the dense tiles use on every thread (one-threaded OpenBLAS, or the TS kernel). */
  gemm: "openblas" | "typescript";
  /** The backward's bands (attention.ts planBands); empty for the forward. */
  bands: att.Band[];
}

export interface RmsNormTaskParams extends FlatParams {
  dim: number;
  eps: number;
}

export interface RopeTaskParams extends FlatParams {
  heads: number;
  dim: number;
  theta: number;
  inverse: boolean;
}

export interface AdamWTaskParams extends FlatParams {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  step: number;
}

// ---------------------------------------------------------------- per-thread GEMM

// NOTE: module state is per thread (each worker loads its own copy of this module).
let threadTs: GemmTs | null = null;
let threadBlas: att.Gemm | null = null;

/**
 * The GEMM dense attention tiles use inside a job, the same on every thread so that which thread
 * ran a tile cannot change its result: OpenBLAS (the caller keeps it at one thread for the job,
 * so concurrent calls do not fight over its own pool) or a one-thread TypeScript kernel.
 */
function threadGemm(path: "openblas" | "typescript"): att.Gemm {
  if (path === "openblas") {
    if (threadBlas === null) {
      const blas = loadOpenBlas({ threads: null }).blas;
      if (blas === null) throw new Error("worker-kernels: OpenBLAS did not load in a worker thread");
      threadBlas = (a, b, c, p) => {
        const { m, n, k, transA, transB } = p;
        const [lda, ldb, alpha, beta] = [transA ? m : k, transB ? k : n, p.alpha ?? 1, p.beta ?? 0];
        if (c instanceof Float64Array)
          blas.dgemm(transA, transB, m, n, k, alpha, a as Float64Array, lda, b as Float64Array, ldb, beta, c, n);
        else blas.sgemm(transA, transB, m, n, k, alpha, a as Float32Array, lda, b as Float32Array, ldb, beta, c, n);
      };
    }
    return threadBlas;
  }
  const ts = threadGemmTs();
  return (a, b, c, p) => {
    const { m, n, k, transA, transB } = p;
    ts.run({
      m,
      n,
      k,
      transA,
      transB,
      alpha: p.alpha ?? 1,
      beta: p.beta ?? 0,
      a,
      offA: 0,
      lda: transA ? m : k,
      b,
      offB: 0,
      ldb: transB ? k : n,
      c,
      offC: 0,
      ldc: n,
    });
  };
}

function threadGemmTs(): GemmTs {
  return (threadTs ??= new GemmTs({ threads: 1 }));
}

function attentionIO(x: Shareable[]): att.AttentionIO {
  const [q, k, v, offsets, starts, ends, out, lse] = x;
  return {
    q: q as FloatArray,
    k: k as FloatArray,
    v: v as FloatArray,
    offsets: offsets as Int32Array,
    starts: starts as Int32Array,
    ends: ends as Int32Array,
    out: out as FloatArray,
    lse: lse as FloatArray,
  };
}

// ---------------------------------------------------------------- the table

type F = FloatArray;

/** Task name -> chunk function. Array order is part of each task's contract (see the callers). */
export const TASKS: Record<TaskName, Task> = {
  /** [a, b, c]: one chunk of rows or columns of a GEMM (gemm-ts.ts). */
  gemm: (x: Shareable[], p: GemmChunkParams, c: number) => gemmChunk(x[0] as F, x[1] as F, x[2] as F, p, c, threadGemmTs()),

  /** [gate, up, out]. */
  swiglu: (x: Shareable[], p: FlatParams, c: number) => {
    const [s, e] = range(c, p.chunk, p.n);
    ew.swiglu(x[0] as F, x[1] as F, x[2] as F, s, e);
  },

  /** [gate, up, dy, dGate, dUp]. */
  swigluBackward: (x: Shareable[], p: FlatParams, c: number) => {
    const [s, e] = range(c, p.chunk, p.n);
    ew.swigluBackward(x[0] as F, x[1] as F, x[2] as F, x[3] as F, x[4] as F, s, e);
  },

  /** [logits, targets, logp, lse]; n = rows. */
  logprobGather: (x: Shareable[], p: RowParams, c: number) => {
    const [s, e] = range(c, p.chunk, p.n);
    nn.logprobGather(x[0] as F, x[1] as Int32Array, x[2] as F, x[3] as F, s, e, p.cols, p.ignoreIndex);
  },

  /** [logits, targets, lse, dLogp, dLogits]; n = rows. */
  logprobGatherBackward: (x: Shareable[], p: RowParams, c: number) => {
    const [s, e] = range(c, p.chunk, p.n);
    nn.logprobGatherBackward(x[0] as F, x[1] as Int32Array, x[2] as F, x[3] as F, x[4] as F, s, e, p.cols, p.ignoreIndex);
  },

  /** [x, w, out, rstd]; n = rows. */
  rmsnorm: (x: Shareable[], p: RmsNormTaskParams, c: number) => {
    const [s, e] = range(c, p.chunk, p.n);
    nn.rmsnorm(x[0] as F, x[1] as F, x[2] as F, x[3] as F, s, e, p.dim, p.eps);
  },

  /** [x, w, rstd, dy, dx, dwParts]; n = rows; chunk c's dw partial goes to dwParts row c (f64). */
  rmsnormBackward: (x: Shareable[], p: RmsNormTaskParams, c: number) => {
    const [s, e] = range(c, p.chunk, p.n);
    const parts = x[5] as Float64Array;
    nn.rmsnormBackwardRows(x[0] as F, x[1] as F, x[2] as F, x[3] as F, x[4] as F, parts.subarray(c * p.dim, (c + 1) * p.dim), s, e, p.dim);
  },

  /** [x, positions, out]; n = tokens. */
  rope: (x: Shareable[], p: RopeTaskParams, c: number) => {
    const [s, e] = range(c, p.chunk, p.n);
    nn.rope(x[0] as F, x[1] as Int32Array, x[2] as F, s, e, p.heads, p.dim, p.theta, p.inverse);
  },

  /** [param, grad, m, v]. */
  adamw: (x: Shareable[], p: AdamWTaskParams, c: number) => {
    const [s, e] = range(c, p.chunk, p.n);
    nn.adamw(x[0] as F, x[1] as F, x[2] as F, x[3] as F, s, e, p.lr, p.beta1, p.beta2, p.eps, p.weightDecay, p.step);
  },

  /** [q, k, v, offsets, starts, ends, out, lse]; chunk = forward item (tile, kv head). */
  attention: (x: Shareable[], p: AttentionTaskParams, c: number) => {
    att.forwardItem(attentionIO(x), p.p, p.tiles, c, threadGemm(p.gemm));
  },

  /** [q, k, v, offsets, starts, ends, out, lse, dOut, dq, dk, dv]; chunk = backward item (band, kv head). */
  attentionBackward: (x: Shareable[], p: AttentionTaskParams, c: number) => {
    const gr: att.AttentionGrads = { dOut: x[8] as F, dq: x[9] as F, dk: x[10] as F, dv: x[11] as F };
    att.backwardItem(attentionIO(x), gr, p.p, p.tiles, p.bands, c, threadGemm(p.gemm));
  },
};

export type TaskName =
  | "gemm"
  | "swiglu"
  | "swigluBackward"
  | "logprobGather"
  | "logprobGatherBackward"
  | "rmsnorm"
  | "rmsnormBackward"
  | "rope"
  | "adamw"
  | "attention"
  | "attentionBackward";

/**
 * Runs chunks [0, nChunks) of a task: over the pool when one is given and every array is in
 * shared memory, else (or when the pool refuses) on this thread in chunk order. Returns whether
 * the pool ran it. Either way each chunk is computed by the same function on the same memory, so
 * the result is the same.
 */
export function runChunks(pool: WorkerPool | null, task: TaskName, arrays: Shareable[], params: unknown, nChunks: number): boolean {
  const fn = TASKS[task];
  const local = (c: number) => fn(arrays, params as never, c);
  if (pool !== null && nChunks > 1 && allShared(arrays) && pool.run(task, arrays, params, nChunks, local)) return true;
  for (let c = 0; c < nChunks; c++) local(c);
  return false;
}
