/**
 * The CPU backend: the reference implementation of the Backend contract (types.ts) over typed
 * arrays. This file owns the op entry points and call counters; the arithmetic lives in
 * elementwise.ts, nn.ts, attention.ts and gemm.ts (OpenBLAS or TypeScript). Every op checks its
 * arguments before touching memory (checks.ts: another backend's buffer, a freed buffer, an
 * f32/f64 mix, a float op on i32 or a too-small buffer is an InvariantError naming the op and the
 * argument, a bug in the tensor layer, never user input). bf16 buffers hold bit patterns
 * (Uint16Array); every op on them goes through the generic f32 wrapper of ../bf16.ts (upcast, run
 * the f32 kernel, round the outputs to nearest even), so no kernel here knows bf16. Large kernels
 * are cut into fixed chunks that a worker pool (pool.ts, tasks.ts) shares out when buffers live in
 * shared memory, which every buffer does while the backend has more than one thread. It knows
 * nothing about Tensors or autograd.
 */
import { availableParallelism } from "node:os";
import { ENV } from "../../../util/env.ts";
import { bf16BitsToF32Array, toBf16Bits } from "../../dtype.ts";
import { installBf16 } from "../bf16.ts";
import { invariant } from "../../../util/errors.ts";
import type {
  AdamWParams,
  AttentionParams,
  AttentionSegments,
  Backend,
  BinaryOp,
  BinaryParams,
  CopyParams,
  DeviceBuffer,
  DType,
  FloatArray,
  HostArray,
  LogprobParams,
  MatmulParams,
  PrimitiveName,
  ReduceParams,
  RmsNormParams,
  RopeParams,
  RowsParams,
  ScalarOp,
  UnaryOp,
} from "../types.ts";
import { BINARY_OPS, SCALAR_OPS, UNARY_OPS } from "../types.ts";
import * as att from "./attention.ts";
import * as ew from "./elementwise.ts";
import { CpuGemm } from "./gemm.ts";
import * as nn from "./nn.ts";
import { allocShared, sharedPool } from "./pool.ts";
import type { Shareable, WorkerPool } from "./pool.ts";
import { runChunks } from "./tasks.ts";
import type { TaskName } from "./tasks.ts";
import { CpuBuffer, EMPTY_DATA, attentionDims, dims, floats, ints, isCount, live, rows, segments, sized } from "./checks.ts";
import { matmulExtents } from "../extents.ts";

export { CpuBuffer };

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
/** rmsnormBackward's dw sums per chunk of rows: a fixed partition, the same for any thread count. */
const RMSNORM_DW_CHUNK_ELEMENTS = 1 << 14;

/** Query tokens per attention tile: GEMMs of 64 x G rows keep OpenBLAS efficient. */
const ATTENTION_TILE = 64;
/**
 * Density above which a tile goes through GEMM. Measured on this machine (D=32..128): OpenBLAS
 * tiles run at 50-100 GFLOP/s against ~1.5 for the row-wise loop, so even sparse tiles win;
 * the TypeScript GEMM (~5 GFLOP/s) only wins on tiles at least about half visible.
 */
const ATTENTION_MIN_DENSITY = { openblas: 0.1, typescript: 0.4 } as const;

/** A counter name: a primitive, a backend-specific event, or a task that ran over worker threads. */
type CounterName = PrimitiveName | "gemm.openblas" | "gemm.typescript" | "attention.dense" | "attention.rowwise" | `threads.${TaskName}`;

export class CpuBackend implements Backend {
  readonly name = "cpu";
  /** Which GEMM path matmul takes; "typescript" when OpenBLAS is off or did not load. */
  readonly gemmPath: "openblas" | "typescript";
  /** Why matmul does not use OpenBLAS (null when it does). */
  readonly whyNoBlas: string | null;
  private readonly gemm: CpuGemm;
  private readonly attn: att.AttentionOptions;
  private readonly calls: Record<string, number> = {};
  /** Threads for split kernels, the caller's included. */
  readonly threads: number;
  /** The worker pool (threads - 1 workers, shared per size), or null with one thread. */
  private readonly pool: WorkerPool | null;

  constructor(opts: CpuBackendOptions = {}) {
    this.threads = Math.max(1, Math.floor(opts.threads ?? ENV.threads ?? availableParallelism()));
    this.pool = this.threads > 1 ? sharedPool(this.threads - 1) : null;
    this.gemm = new CpuGemm({
      useBlas: opts.useBlas ?? ENV.useBlas,
      openblasPath: ENV.openblasPath,
      threads: ENV.threads,
    });
    this.gemmPath = this.gemm.path;
    this.whyNoBlas = this.gemm.whyNoBlas;
    this.attn = {
      dense: true,
      tile: opts.attention?.tile ?? ATTENTION_TILE,
      minDensity: opts.attention?.minDensity ?? ATTENTION_MIN_DENSITY[this.gemm.path],
    };
    installBf16(this);
  }

  // ---------------------------------------------------------------- checking helpers

  /**
   * Counts a primitive call, or a backend-specific event: the GEMM path, attention tiles by path,
   * a kernel that ran split over worker threads (tests assert the threaded path really ran).
   */
  private count(name: CounterName, n = 1): void {
    this.calls[name] = (this.calls[name] ?? 0) + n;
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
  private chunkOf(n: number, cost: number): number {
    const least = Math.ceil(MIN_CHUNK_ELEMENTS / Math.max(1, cost));
    if (this.pool === null || n < 2 * least) return Math.max(1, n);
    return Math.max(least, Math.ceil(n / (this.threads * CHUNKS_PER_THREAD)));
  }

  /** Zeroed f64 scratch of n elements, shared when there is a pool (a job may write it). */
  private scratch64(n: number): Float64Array {
    return new Float64Array(this.pool !== null ? allocShared(8 * n) : new ArrayBuffer(8 * n));
  }

  /** Runs chunks [0, nChunks) of a task of tasks.ts, over the pool when there is one. */
  private split(task: TaskName, arrays: Shareable[], params: unknown, nChunks: number): void {
    if (runChunks(this.pool, task, arrays, params, nChunks)) this.count(`threads.${task}`);
  }

  private countTiles(stats: att.AttentionStats): void {
    if (stats.denseTiles) this.count("attention.dense", stats.denseTiles);
    if (stats.rowTiles) this.count("attention.rowwise", stats.rowTiles);
  }

  // ---------------------------------------------------------------- buffers

  alloc(dtype: DType, length: number): CpuBuffer {
    invariant(dtype === "f32" || dtype === "f64" || dtype === "i32" || dtype === "bf16", () => `alloc: unknown dtype ${String(dtype)}`);
    invariant(isCount(length), () => `alloc: length ${length} is not a non-negative integer`);
    return new CpuBuffer(dtype, length, this.pool !== null);
  }

  /** Marks buf freed (a later use or a second free throws) and drops the array for the GC. */
  free(buf: DeviceBuffer): void {
    const b = live("free", "buf", buf);
    b.freed = true;
    b.data = EMPTY_DATA;
  }

  /** The host array's type must match the dtype: no silent f64 -> f32 rounding on upload. */
  write(buf: DeviceBuffer, src: HostArray, dstOffset = 0): void {
    const b = live("write", "buf", buf);
    const ok =
      (b.dtype === "f32" && src instanceof Float32Array) ||
      (b.dtype === "f64" && src instanceof Float64Array) ||
      (b.dtype === "i32" && src instanceof Int32Array) ||
      (b.dtype === "bf16" && src instanceof Uint16Array);
    invariant(ok, () => `write: a ${src.constructor.name} cannot be written into a ${b.dtype} buffer`);
    invariant(
      isCount(dstOffset) && dstOffset + src.length <= b.length,
      () => `write: ${src.length} elements at offset ${dstOffset} overflow a buffer of ${b.length}`,
    );
    b.data.set(src as never, dstOffset);
  }

  read(buf: DeviceBuffer, offset = 0, length?: number): HostArray {
    const b = live("read", "buf", buf);
    const n = length ?? b.length - offset;
    invariant(
      isCount(offset) && isCount(n) && offset + n <= b.length,
      () => `read: [${offset}, ${offset + n}) is outside a buffer of ${b.length}`,
    );
    return b.data.slice(offset, offset + n);
  }

  counters(): Readonly<Record<string, number>> {
    return { ...this.calls };
  }

  // ---------------------------------------------------------------- memory

  /** Any dtype, i32 included (ids, masks). */
  fill(out: DeviceBuffer, value: number): void {
    ew.fill(live("fill", "out", out).data, value);
    this.count("fill");
  }

  /** Any dtype, same on both sides. Strides must be >= 0 (the contract's views are negative-free). */
  copy(src: DeviceBuffer, out: DeviceBuffer, p: CopyParams): void {
    const op = "copy";
    invariant(
      p.srcStrides.length === p.shape.length,
      () => `copy: srcStrides has ${p.srcStrides.length} entries for a rank-${p.shape.length} shape`,
    );
    dims(op, { srcOffset: p.srcOffset, dstOffset: p.dstOffset });
    p.shape.forEach((d, i) => dims(op, { [`shape[${i}]`]: d, [`srcStrides[${i}]`]: p.srcStrides[i] }));
    const s = sized(op, "src", src, ew.stridedExtent(p.shape, p.srcStrides, p.srcOffset));
    const o = sized(op, "out", out, p.dstOffset + ew.numel(p.shape));
    invariant(s.dtype === o.dtype, () => `copy: src is ${s.dtype} but out is ${o.dtype}`);
    ew.copy(s.data, o.data, p);
    this.count(op);
  }

  /**
   * Float conversion (types.ts): bf16 narrowing through tensor/dtype.ts (one correct rounding,
   * also from f64); f64 -> f32 by the typed-array store, which rounds to nearest even.
   */
  cast(x: DeviceBuffer, out: DeviceBuffer): void {
    const n = out.length;
    const o = live("cast", "out", out);
    const s = sized("cast", "x", x, n);
    for (const [arg, b] of [["x", s], ["out", o]] as const) {
      invariant(b.dtype !== "i32", () => `cast: ${arg} is i32, expected f32, f64 or bf16`);
    }
    const src = s.data.subarray(0, n);
    if (o.dtype === "bf16" && s.dtype !== "bf16") o.data.set(toBf16Bits(src as FloatArray));
    else if (s.dtype === "bf16" && o.dtype !== "bf16") o.data.set(bf16BitsToF32Array(src as Uint16Array));
    else o.data.set(src as never);
    this.count("cast");
  }

  // ---------------------------------------------------------------- elementwise
  // The contract sizes these ops by their output (n = out.length, or dx/dGate); inputs may be
  // longer (a view's backing buffer), never shorter. Outputs may alias inputs: every kernel reads
  // an element before writing the same index.

  unary(op: UnaryOp, x: DeviceBuffer, out: DeviceBuffer): void {
    invariant(UNARY_OPS.includes(op), () => `unary: unknown op ${op}`);
    const n = out.length;
    const [O, X] = floats(`unary(${op})`, [
      ["out", out, n],
      ["x", x, n],
    ]);
    ew.unary(op, X, O, n);
    this.count("unary");
  }

  unaryBackward(op: UnaryOp, x: DeviceBuffer, y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer): void {
    invariant(UNARY_OPS.includes(op), () => `unaryBackward: unknown op ${op}`);
    const n = dx.length;
    const usesY = ew.UNARY_USES_Y.has(op);
    // Only the operand the derivative reads is checked; the other may be any placeholder.
    const [DX, DY, IN] = floats(`unaryBackward(${op})`, [
      ["dx", dx, n],
      ["dy", dy, n],
      usesY ? ["y", y, n] : ["x", x, n],
    ]);
    // The kernel reads only the operand checked above, so it is passed as both x and y.
    ew.unaryBackward(op, IN, IN, DY, DX, n);
    this.count("unaryBackward");
  }

  binary(op: BinaryOp, a: DeviceBuffer, b: DeviceBuffer, out: DeviceBuffer, p: BinaryParams): void {
    const name = `binary(${op})`;
    invariant(BINARY_OPS.includes(op), () => `binary: unknown op ${op}`);
    const rank = p.shape.length;
    invariant(
      p.aStrides.length === rank && p.bStrides.length === rank,
      () => `${name}: aStrides/bStrides have ${p.aStrides.length}/${p.bStrides.length} entries for rank ${rank}`,
    );
    p.shape.forEach((d, i) =>
      dims(name, { [`shape[${i}]`]: d, [`aStrides[${i}]`]: p.aStrides[i], [`bStrides[${i}]`]: p.bStrides[i] }),
    );
    const [A, B, O] = floats(name, [
      ["a", a, ew.stridedExtent(p.shape, p.aStrides)],
      ["b", b, ew.stridedExtent(p.shape, p.bStrides)],
      ["out", out, ew.numel(p.shape)],
    ]);
    ew.binary(op, A, B, O, p);
    this.count("binary");
  }

  scalar(op: ScalarOp, x: DeviceBuffer, value: number, out: DeviceBuffer): void {
    invariant(SCALAR_OPS.includes(op), () => `scalar: unknown op ${op}`);
    const n = out.length;
    const [O, X] = floats(`scalar(${op})`, [
      ["out", out, n],
      ["x", x, n],
    ]);
    ew.scalar(op, X, value, O, n);
    this.count("scalar");
  }

  swiglu(gate: DeviceBuffer, up: DeviceBuffer, out: DeviceBuffer): void {
    const n = out.length;
    const [O, G, U] = floats("swiglu", [
      ["out", out, n],
      ["gate", gate, n],
      ["up", up, n],
    ]);
    const chunk = this.chunkOf(n, 3);
    this.split("swiglu", [G, U, O], { n, chunk }, Math.ceil(n / chunk));
    this.count("swiglu");
  }

  swigluBackward(gate: DeviceBuffer, up: DeviceBuffer, dy: DeviceBuffer, dGate: DeviceBuffer, dUp: DeviceBuffer): void {
    const n = dGate.length;
    const [DG, DU, G, U, DY] = floats("swigluBackward", [
      ["dGate", dGate, n],
      ["dUp", dUp, n],
      ["gate", gate, n],
      ["up", up, n],
      ["dy", dy, n],
    ]);
    const chunk = this.chunkOf(n, 5);
    this.split("swigluBackward", [G, U, DY, DG, DU], { n, chunk }, Math.ceil(n / chunk));
    this.count("swigluBackward");
  }

  // ---------------------------------------------------------------- reduce

  reduceSum(x: DeviceBuffer, out: DeviceBuffer, p: ReduceParams): void {
    dims("reduceSum", { outer: p.outer, reduce: p.reduce, inner: p.inner });
    const [X, O] = floats("reduceSum", [
      ["x", x, p.outer * p.reduce * p.inner],
      ["out", out, p.outer * p.inner],
    ]);
    ew.reduceSum(X, O, p.outer, p.reduce, p.inner);
    this.count("reduceSum");
  }

  // ---------------------------------------------------------------- gemm
  // Sizes are checked here too (CpuGemm checks them again) so the error names the backend op and
  // argument the way every other op does; the GEMM path taken is counted beside the call.

  matmul(a: DeviceBuffer, b: DeviceBuffer, c: DeviceBuffer, p: MatmulParams): void {
    const { batch, m, n, k } = p;
    const e = matmulExtents(p);
    dims("matmul", {
      batch, m, n, k, strideA: p.strideA, strideB: p.strideB, strideC: p.strideC,
      offsetA: e.offA, offsetB: e.offB, offsetC: e.offC,
    });
    const [A, B, C] = floats("matmul", [
      ["a", a, e.needA],
      ["b", b, e.needB],
      ["c", c, e.needC],
    ]);
    this.gemm.run(A, B, C, p);
    this.count("matmul");
    this.count(`gemm.${this.gemm.path}`);
  }

  // ---------------------------------------------------------------- nn
  // Ids, targets and positions are i32; their values (not just sizes) are checked in the kernels,
  // where a bad id would otherwise silently read a neighbouring row.

  embedding(table: DeviceBuffer, ids: DeviceBuffer, out: DeviceBuffer, p: { n: number; dim: number }): void {
    dims("embedding", p);
    const I = ints("embedding", "ids", ids, p.n);
    const [T, O] = floats("embedding", [
      ["table", table, 0],
      ["out", out, p.n * p.dim],
    ]);
    nn.embedding(T, I, O, p.n, p.dim);
    this.count("embedding");
  }

  embeddingBackward(dOut: DeviceBuffer, ids: DeviceBuffer, dTable: DeviceBuffer, p: { n: number; dim: number }): void {
    dims("embeddingBackward", p);
    const I = ints("embeddingBackward", "ids", ids, p.n);
    const [DO, DT] = floats("embeddingBackward", [
      ["dOut", dOut, p.n * p.dim],
      ["dTable", dTable, 0],
    ]);
    nn.embeddingBackward(DO, I, DT, p.n, p.dim);
    this.count("embeddingBackward");
  }

  rmsnorm(x: DeviceBuffer, w: DeviceBuffer, out: DeviceBuffer, rstd: DeviceBuffer, p: RmsNormParams): void {
    const { rows, dim } = p;
    dims("rmsnorm", { rows, dim });
    const [X, W, O, R] = floats("rmsnorm", [
      ["x", x, rows * dim],
      ["w", w, dim],
      ["out", out, rows * dim],
      ["rstd", rstd, rows],
    ]);
    const chunk = this.chunkOf(rows, 2 * dim);
    this.split("rmsnorm", [X, W, O, R], { n: rows, chunk, dim, eps: p.eps }, Math.ceil(rows / chunk));
    this.count("rmsnorm");
  }

  rmsnormBackward(
    x: DeviceBuffer,
    w: DeviceBuffer,
    rstd: DeviceBuffer,
    dy: DeviceBuffer,
    dx: DeviceBuffer,
    dw: DeviceBuffer,
    p: RmsNormParams,
  ): void {
    const { rows, dim } = p;
    dims("rmsnormBackward", { rows, dim });
    const [X, W, R, DY, DX, DW] = floats("rmsnormBackward", [
      ["x", x, rows * dim],
      ["w", w, dim],
      ["rstd", rstd, rows],
      ["dy", dy, rows * dim],
      ["dx", dx, rows * dim],
      ["dw", dw, dim],
    ]);
    // dw sums over rows: each fixed chunk of rows sums into its own f64 row of `parts`, and the
    // parts are added in chunk order, so dw is the same whichever threads ran the chunks.
    const chunk = Math.max(1, Math.ceil(RMSNORM_DW_CHUNK_ELEMENTS / Math.max(1, dim)));
    const nChunks = Math.ceil(rows / chunk);
    const parts = this.scratch64(nChunks * dim); // [nChunks, dim]
    this.split("rmsnormBackward", [X, W, R, DY, DX, parts], { n: rows, chunk, dim, eps: 0 }, nChunks);
    for (let j = 0; j < dim; j++) {
      let s = 0;
      for (let c = 0; c < nChunks; c++) s += parts[c * dim + j];
      DW[j] = s;
    }
    this.count("rmsnormBackward");
  }

  rope(x: DeviceBuffer, positions: DeviceBuffer, out: DeviceBuffer, p: RopeParams): void {
    const { tokens, heads, dim } = p;
    dims("rope", { tokens, heads, dim });
    invariant(dim % 2 === 0, () => `rope: dim ${dim} is odd; rotate-half needs an even head dim`);
    const P = ints("rope", "positions", positions, tokens);
    const [X, O] = floats("rope", [
      ["x", x, tokens * heads * dim],
      ["out", out, tokens * heads * dim],
    ]);
    const chunk = this.chunkOf(tokens, 2 * heads * dim);
    const params = { n: tokens, chunk, heads, dim, theta: p.theta, inverse: p.inverse };
    this.split("rope", [X, P, O], params, Math.ceil(tokens / chunk));
    this.count("rope");
  }

  softmax(x: DeviceBuffer, out: DeviceBuffer, p: RowsParams): void {
    const [X, O] = rows("softmax", p, x, "x", out, "out");
    nn.softmax(X, O, p.rows, p.cols);
    this.count("softmax");
  }

  softmaxBackward(y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer, p: RowsParams): void {
    const [Y, DY, DX] = rows("softmaxBackward", p, y, "y", dy, "dy", dx, "dx");
    nn.softmaxBackward(Y, DY, DX, p.rows, p.cols);
    this.count("softmaxBackward");
  }

  logSoftmax(x: DeviceBuffer, out: DeviceBuffer, p: RowsParams): void {
    const [X, O] = rows("logSoftmax", p, x, "x", out, "out");
    nn.logSoftmax(X, O, p.rows, p.cols);
    this.count("logSoftmax");
  }

  logSoftmaxBackward(y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer, p: RowsParams): void {
    const [Y, DY, DX] = rows("logSoftmaxBackward", p, y, "y", dy, "dy", dx, "dx");
    nn.logSoftmaxBackward(Y, DY, DX, p.rows, p.cols);
    this.count("logSoftmaxBackward");
  }

  logprobGather(logits: DeviceBuffer, targets: DeviceBuffer, logp: DeviceBuffer, lse: DeviceBuffer, p: LogprobParams): void {
    const { rows, cols } = p;
    dims("logprobGather", { rows, cols });
    const TG = ints("logprobGather", "targets", targets, rows);
    const [L, LP, LSE] = floats("logprobGather", [
      ["logits", logits, rows * cols],
      ["logp", logp, rows],
      ["lse", lse, rows],
    ]);
    nn.checkTargets("logprobGather", TG, rows, cols, p.ignoreIndex);
    const chunk = this.chunkOf(rows, cols);
    this.split("logprobGather", [L, TG, LP, LSE], { n: rows, chunk, cols, ignoreIndex: p.ignoreIndex }, Math.ceil(rows / chunk));
    this.count("logprobGather");
  }

  logprobGatherBackward(
    logits: DeviceBuffer,
    targets: DeviceBuffer,
    lse: DeviceBuffer,
    dLogp: DeviceBuffer,
    dLogits: DeviceBuffer,
    p: LogprobParams,
  ): void {
    const { rows, cols } = p;
    dims("logprobGatherBackward", { rows, cols });
    const TG = ints("logprobGatherBackward", "targets", targets, rows);
    const [L, LSE, DLP, DL] = floats("logprobGatherBackward", [
      ["logits", logits, rows * cols],
      ["lse", lse, rows],
      ["dLogp", dLogp, rows],
      ["dLogits", dLogits, rows * cols],
    ]);
    nn.checkTargets("logprobGatherBackward", TG, rows, cols, p.ignoreIndex);
    const chunk = this.chunkOf(rows, 2 * cols);
    const params = { n: rows, chunk, cols, ignoreIndex: p.ignoreIndex };
    this.split("logprobGatherBackward", [L, TG, LSE, DLP, DL], params, Math.ceil(rows / chunk));
    this.count("logprobGatherBackward");
  }

  attention(
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    seg: AttentionSegments,
    out: DeviceBuffer,
    lse: DeviceBuffer,
    p: AttentionParams,
  ): void {
    const op = "attention";
    attentionDims(op, p);
    const { tokens: T, keys: S, heads: H, kvHeads: Hkv, headDim: D } = p;
    const [off, st, en] = segments(op, seg, T, S);
    const [Q, K, V, O, L] = floats(op, [
      ["q", q, T * H * D],
      ["k", k, S * Hkv * D],
      ["v", v, S * Hkv * D],
      ["out", out, T * H * D],
      ["lse", lse, T * H],
    ]);
    const io: att.AttentionIO = { q: Q, k: K, v: V, offsets: off, starts: st, ends: en, out: O, lse: L };
    const tiles = att.plan(io, p, this.attn);
    this.runAttention("attention", [Q, K, V, off, st, en, O, L], p, tiles, [], tiles.length * Hkv, T * H * D);
    this.countTiles(att.tileStats(tiles));
    this.count(op);
  }

  attentionBackward(
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    seg: AttentionSegments,
    out: DeviceBuffer,
    lse: DeviceBuffer,
    dOut: DeviceBuffer,
    dq: DeviceBuffer,
    dk: DeviceBuffer,
    dv: DeviceBuffer,
    p: AttentionParams,
  ): void {
    const op = "attentionBackward";
    attentionDims(op, p);
    const { tokens: T, keys: S, heads: H, kvHeads: Hkv, headDim: D } = p;
    const [off, st, en] = segments(op, seg, T, S);
    const [Q, K, V, O, L, DO, DQ, DK, DV] = floats(op, [
      ["q", q, T * H * D],
      ["k", k, S * Hkv * D],
      ["v", v, S * Hkv * D],
      ["out", out, T * H * D],
      ["lse", lse, T * H],
      ["dOut", dOut, T * H * D],
      ["dq", dq, T * H * D],
      ["dk", dk, S * Hkv * D],
      ["dv", dv, S * Hkv * D],
    ]);
    const io: att.AttentionIO = { q: Q, k: K, v: V, offsets: off, starts: st, ends: en, out: O, lse: L };
    const tiles = att.plan(io, p, this.attn);
    const bands = att.planBands(tiles);
    att.zeroUnseenKeys({ dOut: DO, dq: DQ, dk: DK, dv: DV }, p, bands);
    const arrays = [Q, K, V, off, st, en, O, L, DO, DQ, DK, DV];
    this.runAttention("attentionBackward", arrays, p, tiles, bands, bands.length * Hkv, 3 * T * H * D);
    this.countTiles(att.tileStats(tiles));
    this.count(op);
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
  private runAttention(
    task: "attention" | "attentionBackward",
    arrays: Shareable[],
    p: AttentionParams,
    tiles: att.Tile[],
    bands: att.Band[],
    nItems: number,
    elements: number,
  ): void {
    const params = { p, tiles, bands, gemm: this.gemm.path };
    const pool = nItems > 1 && elements >= MIN_CHUNK_ELEMENTS ? this.pool : null;
    if (this.gemm.withBlasThreads(1, () => runChunks(pool, task, arrays, params, nItems))) this.count(`threads.${task}`);
  }

  // ---------------------------------------------------------------- optim
  // param, grad, m and v share one dtype: the optimizer state of an f32 model is f32, as in the
  // CUDA backend, so checkpoints carry the same numbers whichever backend trained.

  adamw(param: DeviceBuffer, grad: DeviceBuffer, m: DeviceBuffer, v: DeviceBuffer, p: AdamWParams): void {
    dims("adamw", { n: p.n });
    invariant(Number.isInteger(p.step) && p.step >= 1, () => `adamw: step ${p.step} must be a 1-based integer`);
    const [P, G, M, V] = floats("adamw", [
      ["param", param, p.n],
      ["grad", grad, p.n],
      ["m", m, p.n],
      ["v", v, p.n],
    ]);
    const chunk = this.chunkOf(p.n, 4);
    const params = { n: p.n, chunk, lr: p.lr, beta1: p.beta1, beta2: p.beta2, eps: p.eps, weightDecay: p.weightDecay, step: p.step };
    this.split("adamw", [P, G, M, V], params, Math.ceil(p.n / chunk));
    this.count("adamw");
  }
}
