/**
 * The CPU backend: the reference implementation of the Backend contract (types.ts) over typed
 * arrays. This file owns the class and the entry points of the buffer, memory, elementwise,
 * reduce, GEMM and optimizer primitives; the nn and attention entry points are in nn-ops.ts, the
 * thread pool, GEMM choice and counters in runtime.ts, and the arithmetic in elementwise.ts,
 * nn.ts, attention.ts and gemm.ts (OpenBLAS or TypeScript). Every op checks its arguments before
 * touching memory (checks.ts: another backend's buffer, a freed buffer, an f32/f64 mix, a float
 * op on i32 or a too-small buffer is an InvariantError naming the op and the argument, a bug in
 * the tensor layer, never user input). bf16 buffers hold bit patterns (Uint16Array); every op on
 * them goes through the generic f32 wrapper of ../bf16.ts (upcast, run the f32 kernel, round the
 * outputs to nearest even), so no kernel here knows bf16. It knows nothing about Tensors or
 * autograd.
 */
import { bf16BitsToF32Array, toBf16Bits } from "../../dtype.ts";
import { installBf16 } from "../bf16.ts";
import { invariant } from "../../../util/index.ts";
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
  ReduceParams,
  RmsNormParams,
  RopeParams,
  RowsParams,
  ScalarOp,
  UnaryOp,
  WhereParams,
} from "../types.ts";
import { BINARY_OPS, SCALAR_OPS, UNARY_OPS } from "../types.ts";
import * as ew from "./elementwise.ts";
import * as nnOps from "./nn-ops.ts";
import { CpuRuntime } from "./runtime.ts";
import type { CpuBackendOptions } from "./runtime.ts";
import { CpuBuffer, EMPTY_DATA, dims, floats, isCount, live, sized } from "./checks.ts";
import { matmulExtents, numel, stridedExtent } from "../extents.ts";

export { CpuBuffer };
export type { CpuBackendOptions };

export class CpuBackend implements Backend {
  readonly name = "cpu";
  /** Which GEMM path matmul takes; "typescript" when OpenBLAS is off or did not load. */
  readonly gemmPath: "openblas" | "typescript";
  /** Why matmul does not use OpenBLAS (null when it does). */
  readonly whyNoBlas: string | null;
  /** Threads for split kernels, the caller's included. */
  readonly threads: number;
  /** Threads, worker pool, GEMM, attention tiling and counters (runtime.ts). */
  private readonly rt: CpuRuntime;

  constructor(opts: CpuBackendOptions = {}) {
    this.rt = new CpuRuntime(opts);
    this.threads = this.rt.threads;
    this.gemmPath = this.rt.gemm.path;
    this.whyNoBlas = this.rt.gemm.whyNoBlas;
    installBf16(this);
  }

  /** Why split kernels run on the caller's thread only (null while the pool is usable). */
  get whyNoThreads(): string | null {
    return this.rt.whyNoThreads;
  }

  // ---------------------------------------------------------------- buffers

  alloc(dtype: DType, length: number): CpuBuffer {
    invariant(dtype === "f32" || dtype === "f64" || dtype === "i32" || dtype === "bf16", () => `alloc: unknown dtype ${String(dtype)}`);
    invariant(isCount(length), () => `alloc: length ${length} is not a non-negative integer`);
    return new CpuBuffer(dtype, length, this.rt.pool !== null);
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

  /** Number of calls of each primitive, plus the GEMM path, attention tile and thread counters. */
  counters(): Readonly<Record<string, number>> {
    return this.rt.counters();
  }

  // ---------------------------------------------------------------- memory

  /** Any dtype, i32 included (ids, masks). */
  fill(out: DeviceBuffer, value: number): void {
    ew.fill(live("fill", "out", out).data, value);
    this.rt.count("fill");
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
    const s = sized(op, "src", src, stridedExtent(p.shape, p.srcStrides, p.srcOffset));
    const o = sized(op, "out", out, p.dstOffset + numel(p.shape));
    invariant(s.dtype === o.dtype, () => `copy: src is ${s.dtype} but out is ${o.dtype}`);
    ew.copy(s.data, o.data, p);
    this.rt.count(op);
  }

  /**
   * Float conversion (types.ts): bf16 narrowing through tensor/dtype.ts (one correct rounding,
   * also from f64); f64 -> f32 by the typed-array store, which rounds to nearest even.
   */
  cast(x: DeviceBuffer, out: DeviceBuffer): void {
    const n = out.length;
    const o = live("cast", "out", out);
    const s = sized("cast", "x", x, n);
    for (const [arg, b] of [
      ["x", s],
      ["out", o],
    ] as const) {
      invariant(b.dtype !== "i32", () => `cast: ${arg} is i32, expected f32, f64 or bf16`);
    }
    const src = s.data.subarray(0, n);
    if (o.dtype === "bf16" && s.dtype !== "bf16") o.data.set(toBf16Bits(src as FloatArray));
    else if (s.dtype === "bf16" && o.dtype !== "bf16") o.data.set(bf16BitsToF32Array(src as Uint16Array));
    else o.data.set(src as never);
    this.rt.count("cast");
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
    this.rt.count("unary");
  }

  unaryBackward(op: UnaryOp, x: DeviceBuffer, y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer): void {
    invariant(UNARY_OPS.includes(op), () => `unaryBackward: unknown op ${op}`);
    const n = dx.length;
    const usesY = ew.UNARY_USES_Y.has(op);
    // Only the operand the derivative reads is checked; the other may be any placeholder.
    const [DX, DY, IN] = floats(`unaryBackward(${op})`, [["dx", dx, n], ["dy", dy, n], usesY ? ["y", y, n] : ["x", x, n]]);
    // The kernel reads only the operand checked above, so it is passed as both x and y.
    ew.unaryBackward(op, IN, IN, DY, DX, n);
    this.rt.count("unaryBackward");
  }

  binary(op: BinaryOp, a: DeviceBuffer, b: DeviceBuffer, out: DeviceBuffer, p: BinaryParams): void {
    const name = `binary(${op})`;
    invariant(BINARY_OPS.includes(op), () => `binary: unknown op ${op}`);
    const rank = p.shape.length;
    invariant(
      p.aStrides.length === rank && p.bStrides.length === rank,
      () => `${name}: aStrides/bStrides have ${p.aStrides.length}/${p.bStrides.length} entries for rank ${rank}`,
    );
    p.shape.forEach((d, i) => dims(name, { [`shape[${i}]`]: d, [`aStrides[${i}]`]: p.aStrides[i], [`bStrides[${i}]`]: p.bStrides[i] }));
    const [A, B, O] = floats(name, [
      ["a", a, stridedExtent(p.shape, p.aStrides)],
      ["b", b, stridedExtent(p.shape, p.bStrides)],
      ["out", out, numel(p.shape)],
    ]);
    ew.binary(op, A, B, O, p);
    this.rt.count("binary");
  }

  /** The mask is i32 or the float dtype of a, b and out (checked here; types.ts has the rule). */
  where(mask: DeviceBuffer, a: DeviceBuffer, b: DeviceBuffer, out: DeviceBuffer, p: WhereParams): void {
    const name = "where";
    const rank = p.shape.length;
    invariant(
      p.maskStrides.length === rank && p.aStrides.length === rank && p.bStrides.length === rank,
      () =>
        `${name}: maskStrides/aStrides/bStrides have ${p.maskStrides.length}/${p.aStrides.length}/${p.bStrides.length} entries for rank ${rank}`,
    );
    p.shape.forEach((d, i) =>
      dims(name, {
        [`shape[${i}]`]: d,
        [`maskStrides[${i}]`]: p.maskStrides[i],
        [`aStrides[${i}]`]: p.aStrides[i],
        [`bStrides[${i}]`]: p.bStrides[i],
      }),
    );
    const [A, B, O] = floats(name, [
      ["a", a, stridedExtent(p.shape, p.aStrides)],
      ["b", b, stridedExtent(p.shape, p.bStrides)],
      ["out", out, numel(p.shape)],
    ]);
    const m = sized(name, "mask", mask, stridedExtent(p.shape, p.maskStrides));
    invariant(
      m.dtype === "i32" || m.dtype === a.dtype,
      () => `${name}: mask is ${m.dtype} but a is ${a.dtype} (a mask is i32 or the values' float dtype)`,
    );
    ew.where(m.data as FloatArray | Int32Array, A, B, O, p);
    this.rt.count("where");
  }

  scalar(op: ScalarOp, x: DeviceBuffer, value: number, out: DeviceBuffer): void {
    invariant(SCALAR_OPS.includes(op), () => `scalar: unknown op ${op}`);
    const n = out.length;
    const [O, X] = floats(`scalar(${op})`, [
      ["out", out, n],
      ["x", x, n],
    ]);
    ew.scalar(op, X, value, O, n);
    this.rt.count("scalar");
  }

  swiglu(gate: DeviceBuffer, up: DeviceBuffer, out: DeviceBuffer): void {
    const n = out.length;
    const [O, G, U] = floats("swiglu", [
      ["out", out, n],
      ["gate", gate, n],
      ["up", up, n],
    ]);
    const chunk = this.rt.chunkOf(n, 3);
    this.rt.split("swiglu", [G, U, O], { n, chunk }, Math.ceil(n / chunk));
    this.rt.count("swiglu");
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
    const chunk = this.rt.chunkOf(n, 5);
    this.rt.split("swigluBackward", [G, U, DY, DG, DU], { n, chunk }, Math.ceil(n / chunk));
    this.rt.count("swigluBackward");
  }

  // ---------------------------------------------------------------- reduce

  reduceSum(x: DeviceBuffer, out: DeviceBuffer, p: ReduceParams): void {
    dims("reduceSum", { outer: p.outer, reduce: p.reduce, inner: p.inner });
    const [X, O] = floats("reduceSum", [
      ["x", x, p.outer * p.reduce * p.inner],
      ["out", out, p.outer * p.inner],
    ]);
    ew.reduceSum(X, O, p.outer, p.reduce, p.inner);
    this.rt.count("reduceSum");
  }

  // ---------------------------------------------------------------- gemm
  // Sizes are checked here too (CpuGemm checks them again) so the error names the backend op and
  // argument the way every other op does; the GEMM path taken is counted beside the call.

  matmul(a: DeviceBuffer, b: DeviceBuffer, c: DeviceBuffer, p: MatmulParams): void {
    const { batch, m, n, k } = p;
    const e = matmulExtents(p);
    dims("matmul", {
      batch,
      m,
      n,
      k,
      strideA: p.strideA,
      strideB: p.strideB,
      strideC: p.strideC,
      offsetA: e.offA,
      offsetB: e.offB,
      offsetC: e.offC,
    });
    const [A, B, C] = floats("matmul", [
      ["a", a, e.needA],
      ["b", b, e.needB],
      ["c", c, e.needC],
    ]);
    this.rt.gemm.run(A, B, C, p);
    this.rt.count("matmul");
    this.rt.count(`gemm.${this.rt.gemm.path}`);
  }

  // ---------------------------------------------------------------- nn (nn-ops.ts)

  embedding(table: DeviceBuffer, ids: DeviceBuffer, out: DeviceBuffer, p: { n: number; dim: number }): void {
    nnOps.embedding(this.rt, table, ids, out, p);
  }

  embeddingBackward(dOut: DeviceBuffer, ids: DeviceBuffer, dTable: DeviceBuffer, p: { n: number; dim: number }): void {
    nnOps.embeddingBackward(this.rt, dOut, ids, dTable, p);
  }

  rmsnorm(x: DeviceBuffer, w: DeviceBuffer, out: DeviceBuffer, rstd: DeviceBuffer, p: RmsNormParams): void {
    nnOps.rmsnorm(this.rt, x, w, out, rstd, p);
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
    nnOps.rmsnormBackward(this.rt, x, w, rstd, dy, dx, dw, p);
  }

  rope(x: DeviceBuffer, positions: DeviceBuffer, out: DeviceBuffer, p: RopeParams): void {
    nnOps.rope(this.rt, x, positions, out, p);
  }

  softmax(x: DeviceBuffer, out: DeviceBuffer, p: RowsParams): void {
    nnOps.softmax(this.rt, x, out, p);
  }

  softmaxBackward(y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer, p: RowsParams): void {
    nnOps.softmaxBackward(this.rt, y, dy, dx, p);
  }

  logSoftmax(x: DeviceBuffer, out: DeviceBuffer, p: RowsParams): void {
    nnOps.logSoftmax(this.rt, x, out, p);
  }

  logSoftmaxBackward(y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer, p: RowsParams): void {
    nnOps.logSoftmaxBackward(this.rt, y, dy, dx, p);
  }

  logprobGather(logits: DeviceBuffer, targets: DeviceBuffer, logp: DeviceBuffer, lse: DeviceBuffer, p: LogprobParams): void {
    nnOps.logprobGather(this.rt, logits, targets, logp, lse, p);
  }

  logprobGatherBackward(
    logits: DeviceBuffer,
    targets: DeviceBuffer,
    lse: DeviceBuffer,
    dLogp: DeviceBuffer,
    dLogits: DeviceBuffer,
    p: LogprobParams,
  ): void {
    nnOps.logprobGatherBackward(this.rt, logits, targets, lse, dLogp, dLogits, p);
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
    nnOps.attention(this.rt, q, k, v, seg, out, lse, p);
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
    nnOps.attentionBackward(this.rt, q, k, v, seg, out, lse, dOut, dq, dk, dv, p);
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
    const chunk = this.rt.chunkOf(p.n, 4);
    const params = { n: p.n, chunk, lr: p.lr, beta1: p.beta1, beta2: p.beta2, eps: p.eps, weightDecay: p.weightDecay, step: p.step };
    this.rt.split("adamw", [P, G, M, V], params, Math.ceil(p.n / chunk));
    this.rt.count("adamw");
  }
}
