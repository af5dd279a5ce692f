/**
 * The CUDA backend's neural-network primitives (nn.cu, and convert.cu's bf16-table embedding):
 * embedding, RMSNorm (the dw reduction split over row chunks), RoPE from a per-(theta, dim) table
 * of denominators kept on the device, softmax / log-softmax and the log-prob gather, forward and
 * backward, with the CPU backend's argument checks. CudaBackend's methods delegate here.
 * Kernels that meet a bad id or target record it in the backend's error word (read at the next
 * synchronization). Knows the Backend contract and the kernels' launch shapes; nothing of models.
 */
import { invariant } from "../../../util/index.ts";
import type { DeviceBuffer, LogprobParams, PrimitiveName, RmsNormParams, RopeParams, RowsParams } from "../types.ts";
import type { CudaBuffer } from "./buffers.ts";
import type { KernelDType } from "./compile.ts";
import { grid1d } from "./elementwise-ops.ts";
import type { CudaBackend } from "./index.ts";

/** Threads per block of the row kernels (nn.cu). */
const BLOCK = 256;
/** Blocks the RMSNorm dw reduction aims for (a few per SM of an H100/H200). */
const DW_TARGET_BLOCKS = 1024;
/** RoPE denominators by backend and "theta/dim" (see ropeTable). */
const ropeTables = new WeakMap<CudaBackend, Map<string, CudaBuffer>>();

export function embedding(be: CudaBackend, table: DeviceBuffer, ids: DeviceBuffer, out: DeviceBuffer, p: { n: number; dim: number }): void {
  be.checks.dims("embedding", p);
  const I = be.checks.ints("embedding", "ids", ids, p.n);
  // A bf16 table (into an f32 out, the only bf16 call that reaches here) has its own kernel.
  const bf16 = table.dtype === "bf16";
  const [T, O] = bf16
    ? [be.checks.live("embedding", "table", table), be.checks.sized("embedding", "out", out, p.n * p.dim)]
    : be.checks.floats("embedding", [
        ["table", table, 0],
        ["out", out, p.n * p.dim],
      ])[0];
  const dt = O.dtype as KernelDType;
  // The table's row count comes from its length (the contract passes none); the kernel
  // range-checks ids against it.
  const V = p.dim === 0 ? 0 : Math.floor(T.length / p.dim);
  const args = [{ ptr: T.ptr }, { ptr: I.ptr }, { ptr: O.ptr }, { i64: p.dim }, { i64: V }, { ptr: be.errorWord }];
  if (bf16) be.launchKernel("convert.cu", "embedding_bf16", dt, p.n, BLOCK, args);
  else be.launchKernel("nn.cu", "embedding", dt, p.n, BLOCK, args);
  be.countCall("embedding");
}

export function embeddingBackward(
  be: CudaBackend,
  dOut: DeviceBuffer,
  ids: DeviceBuffer,
  dTable: DeviceBuffer,
  p: { n: number; dim: number },
): void {
  be.checks.dims("embeddingBackward", p);
  const I = be.checks.ints("embeddingBackward", "ids", ids, p.n);
  const [[DO, DT], dt] = be.checks.floats("embeddingBackward", [
    ["dOut", dOut, p.n * p.dim],
    ["dTable", dTable, 0],
  ]);
  const V = p.dim === 0 ? 0 : Math.floor(DT.length / p.dim);
  be.launchKernel("nn.cu", "embedding_backward", dt, p.n, BLOCK, [
    { ptr: DO.ptr },
    { ptr: I.ptr },
    { ptr: DT.ptr },
    { i64: p.dim },
    { i64: V },
    { ptr: be.errorWord },
  ]);
  be.countCall("embeddingBackward");
}

export function rmsnorm(be: CudaBackend, x: DeviceBuffer, w: DeviceBuffer, out: DeviceBuffer, rstd: DeviceBuffer, p: RmsNormParams): void {
  const { rows, dim } = p;
  be.checks.dims("rmsnorm", { rows, dim });
  const [[X, W, O, R], dt] = be.checks.floats("rmsnorm", [
    ["x", x, rows * dim],
    ["w", w, dim],
    ["out", out, rows * dim],
    ["rstd", rstd, rows],
  ]);
  be.launchKernel("nn.cu", "rmsnorm", dt, rows, BLOCK, [
    { ptr: X.ptr },
    { ptr: W.ptr },
    { ptr: O.ptr },
    { ptr: R.ptr },
    { i64: dim },
    { f64: p.eps },
  ]);
  be.countCall("rmsnorm");
}

export function rmsnormBackward(
  be: CudaBackend,
  x: DeviceBuffer,
  w: DeviceBuffer,
  rstd: DeviceBuffer,
  dy: DeviceBuffer,
  dx: DeviceBuffer,
  dw: DeviceBuffer,
  p: RmsNormParams,
): void {
  const { rows, dim } = p;
  be.checks.dims("rmsnormBackward", { rows, dim });
  const [[X, W, R, DY, DX, DW], dt] = be.checks.floats("rmsnormBackward", [
    ["x", x, rows * dim],
    ["w", w, dim],
    ["rstd", rstd, rows],
    ["dy", dy, rows * dim],
    ["dx", dx, rows * dim],
    ["dw", dw, dim],
  ]);
  be.launchKernel("nn.cu", "rmsnorm_backward_dx", dt, rows, BLOCK, [
    { ptr: X.ptr },
    { ptr: W.ptr },
    { ptr: R.ptr },
    { ptr: DY.ptr },
    { ptr: DX.ptr },
    { i64: dim },
  ]);
  rmsnormDw(be, X, R, DY, DW, rows, dim, dt);
  be.countCall("rmsnormBackward");
}

/**
 * dw of RMSNorm: a sum over all rows per column, split over (32-column tile, chunk of rows)
 * blocks into double partials, then summed per column in chunk order (nn.cu). About
 * DW_TARGET_BLOCKS blocks whatever the shape: the q/k norms have 128 columns and 71,680 rows,
 * the layer norms 1024 columns and 4,480 rows (the Qwen3-0.6B training bench).
 */
function rmsnormDw(
  be: CudaBackend,
  X: CudaBuffer,
  R: CudaBuffer,
  DY: CudaBuffer,
  DW: CudaBuffer,
  rows: number,
  dim: number,
  dt: KernelDType,
): void {
  if (dim === 0) return;
  const tiles = Math.ceil(dim / 32);
  // At least 32 rows per chunk (4 per warp), at most 65535 chunks (grid y limit).
  const chunksWanted = Math.min(Math.max(1, Math.ceil(DW_TARGET_BLOCKS / tiles)), Math.max(1, Math.ceil(rows / 32)));
  const rowsPerChunk = Math.max(1, Math.ceil(rows / chunksWanted), Math.ceil(rows / 65535));
  const chunks = Math.max(1, Math.ceil(rows / rowsPerChunk));
  const part = be.alloc("f64", chunks * dim);
  be.launchKernel("nn.cu", "rmsnorm_backward_dw_partial", dt, [tiles, chunks, 1], BLOCK, [
    { ptr: X.ptr },
    { ptr: R.ptr },
    { ptr: DY.ptr },
    { ptr: part.ptr },
    { i64: rows },
    { i64: dim },
    { i64: rowsPerChunk },
  ]);
  be.launchKernel("nn.cu", "rmsnorm_backward_dw_sum", dt, Math.ceil(dim / BLOCK), BLOCK, [
    { ptr: part.ptr },
    { ptr: DW.ptr },
    { i64: chunks },
    { i64: dim },
  ]);
  be.free(part);
}

/**
 * The f64 table theta^(2j/dim), j < dim/2, of one (theta, dim), made on the host once and kept on
 * the device: the kernel divides positions by it, so angles match the references exactly.
 */
export function ropeTable(be: CudaBackend, theta: number, dim: number): CudaBuffer {
  let m = ropeTables.get(be);
  if (!m) ropeTables.set(be, (m = new Map()));
  const key = `${theta}/${dim}`;
  let t = m.get(key);
  if (!t) {
    const half = dim / 2;
    const denom = Float64Array.from({ length: half }, (_, j) => theta ** ((2 * j) / dim));
    t = be.alloc("f64", Math.max(1, half));
    be.write(t, denom);
    m.set(key, t);
  }
  return t;
}

export function rope(be: CudaBackend, x: DeviceBuffer, positions: DeviceBuffer, out: DeviceBuffer, p: RopeParams): void {
  const { tokens, heads, dim } = p;
  be.checks.dims("rope", { tokens, heads, dim });
  invariant(dim % 2 === 0, () => `rope: dim ${dim} is odd; rotate-half needs an even head dim`);
  const P = be.checks.ints("rope", "positions", positions, tokens);
  const [[X, O], dt] = be.checks.floats("rope", [
    ["x", x, tokens * heads * dim],
    ["out", out, tokens * heads * dim],
  ]);
  const pairs = (tokens * heads * dim) / 2;
  be.launchKernel("nn.cu", "rope", dt, Math.ceil(pairs / BLOCK), BLOCK, [
    { ptr: X.ptr },
    { ptr: P.ptr },
    { ptr: O.ptr },
    { i64: tokens },
    { i64: heads },
    { i64: dim },
    { ptr: ropeTable(be, p.theta, dim).ptr },
    { f64: p.inverse ? -1 : 1 },
  ]);
  be.countCall("rope");
}

/** A row kernel: one block per row over [rows, cols] float arguments given as name, buffer pairs. */
function rowKernel(be: CudaBackend, prim: PrimitiveName, kernel: string, p: RowsParams, args: Array<[string, DeviceBuffer]>): void {
  be.checks.dims(prim, { rows: p.rows, cols: p.cols });
  const [bufs, dt] = be.checks.floats(
    prim,
    args.map(([name, b]) => [name, b, p.rows * p.cols] as const),
  );
  be.launchKernel("nn.cu", kernel, dt, p.rows, BLOCK, [...bufs.map((b) => ({ ptr: b.ptr })), { i64: p.cols }]);
  be.countCall(prim);
}

export function softmax(be: CudaBackend, x: DeviceBuffer, out: DeviceBuffer, p: RowsParams): void {
  rowKernel(be, "softmax", "softmax", p, [
    ["x", x],
    ["out", out],
  ]);
}

export function softmaxBackward(be: CudaBackend, y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer, p: RowsParams): void {
  rowKernel(be, "softmaxBackward", "softmax_backward", p, [
    ["y", y],
    ["dy", dy],
    ["dx", dx],
  ]);
}

export function logSoftmax(be: CudaBackend, x: DeviceBuffer, out: DeviceBuffer, p: RowsParams): void {
  rowKernel(be, "logSoftmax", "log_softmax", p, [
    ["x", x],
    ["out", out],
  ]);
}

export function logSoftmaxBackward(be: CudaBackend, y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer, p: RowsParams): void {
  rowKernel(be, "logSoftmaxBackward", "log_softmax_backward", p, [
    ["y", y],
    ["dy", dy],
    ["dx", dx],
  ]);
}

export function logprobGather(
  be: CudaBackend,
  logits: DeviceBuffer,
  targets: DeviceBuffer,
  logp: DeviceBuffer,
  lse: DeviceBuffer,
  p: LogprobParams,
): void {
  const { rows, cols } = p;
  be.checks.dims("logprobGather", { rows, cols });
  const TG = be.checks.ints("logprobGather", "targets", targets, rows);
  const [[L, LP, LSE], dt] = be.checks.floats("logprobGather", [
    ["logits", logits, rows * cols],
    ["logp", logp, rows],
    ["lse", lse, rows],
  ]);
  be.launchKernel("nn.cu", "logprob_gather", dt, rows, BLOCK, [
    { ptr: L.ptr },
    { ptr: TG.ptr },
    { ptr: LP.ptr },
    { ptr: LSE.ptr },
    { i64: cols },
    { i32: p.ignoreIndex },
    { ptr: be.errorWord },
  ]);
  be.countCall("logprobGather");
}

export function logprobGatherBackward(
  be: CudaBackend,
  logits: DeviceBuffer,
  targets: DeviceBuffer,
  lse: DeviceBuffer,
  dLogp: DeviceBuffer,
  dLogits: DeviceBuffer,
  p: LogprobParams,
): void {
  const { rows, cols } = p;
  be.checks.dims("logprobGatherBackward", { rows, cols });
  const TG = be.checks.ints("logprobGatherBackward", "targets", targets, rows);
  const [[L, LSE, DLP, DL], dt] = be.checks.floats("logprobGatherBackward", [
    ["logits", logits, rows * cols],
    ["lse", lse, rows],
    ["dLogp", dLogp, rows],
    ["dLogits", dLogits, rows * cols],
  ]);
  be.launchKernel("nn.cu", "logprob_gather_backward", dt, rows, BLOCK, [
    { ptr: L.ptr },
    { ptr: TG.ptr },
    { ptr: LSE.ptr },
    { ptr: DLP.ptr },
    { ptr: DL.ptr },
    { i64: cols },
    { i32: p.ignoreIndex },
    { ptr: be.errorWord },
  ]);
  be.countCall("logprobGatherBackward");
}

/** The decode graphs' paged KV write (CudaBackend.scatterRows says what it does). */
export function scatterRows(
  be: CudaBackend,
  src: DeviceBuffer,
  slots: DeviceBuffer,
  pages: DeviceBuffer,
  p: { rows: number; rowSize: number },
): void {
  be.checks.dims("scatterRows", p);
  const S = be.checks.ints("scatterRows", "slots", slots, p.rows);
  const [[X, P], dt] = be.checks.floats("scatterRows", [
    ["src", src, p.rows * p.rowSize],
    ["pages", pages, 0],
  ]);
  be.launchKernel("nn.cu", "scatter_rows", dt, grid1d(p.rows * p.rowSize), BLOCK, [
    { ptr: X.ptr },
    { ptr: S.ptr },
    { ptr: P.ptr },
    { i64: p.rows },
    { i64: p.rowSize },
  ]);
  be.countCall("scatterRows");
}
