/**
 * The CPU backend's nn and attention primitives (embedding, rmsnorm, rope, the softmax family,
 * logprobGather, attention, each with its backward): the entry points CpuBackend delegates to.
 * Each checks its arguments (checks.ts), runs its kernel (nn.ts, attention.ts) on the caller's
 * thread or split over the worker pool (runtime.ts), and counts the call. Knows the Backend
 * contract's buffers and parameter types; nothing about Tensors or autograd.
 */
import { invariant } from "../../../util/index.ts";
import type { AttentionParams, AttentionSegments, DeviceBuffer, LogprobParams, RmsNormParams, RopeParams, RowsParams } from "../types.ts";
import * as att from "./attention.ts";
import { attentionDims, dims, floats, ints, rows, segments } from "./checks.ts";
import * as nn from "./nn.ts";
import type { CpuRuntime } from "./runtime.ts";

/** rmsnormBackward's dw sums per chunk of rows: a fixed partition, the same for any thread count. */
const RMSNORM_DW_CHUNK_ELEMENTS = 1 << 14;

// ---------------------------------------------------------------- nn
// Ids, targets and positions are i32; their values (not just sizes) are checked in the kernels,
// where a bad id would otherwise silently read a neighbouring row.

export function embedding(rt: CpuRuntime, table: DeviceBuffer, ids: DeviceBuffer, out: DeviceBuffer, p: { n: number; dim: number }): void {
  dims("embedding", p);
  const I = ints("embedding", "ids", ids, p.n);
  const [T, O] = floats("embedding", [
    ["table", table, 0],
    ["out", out, p.n * p.dim],
  ]);
  nn.embedding(T, I, O, p.n, p.dim);
  rt.count("embedding");
}

export function embeddingBackward(
  rt: CpuRuntime,
  dOut: DeviceBuffer,
  ids: DeviceBuffer,
  dTable: DeviceBuffer,
  p: { n: number; dim: number },
): void {
  dims("embeddingBackward", p);
  const I = ints("embeddingBackward", "ids", ids, p.n);
  const [DO, DT] = floats("embeddingBackward", [
    ["dOut", dOut, p.n * p.dim],
    ["dTable", dTable, 0],
  ]);
  nn.embeddingBackward(DO, I, DT, p.n, p.dim);
  rt.count("embeddingBackward");
}

export function rmsnorm(rt: CpuRuntime, x: DeviceBuffer, w: DeviceBuffer, out: DeviceBuffer, rstd: DeviceBuffer, p: RmsNormParams): void {
  const { rows, dim } = p;
  dims("rmsnorm", { rows, dim });
  const [X, W, O, R] = floats("rmsnorm", [
    ["x", x, rows * dim],
    ["w", w, dim],
    ["out", out, rows * dim],
    ["rstd", rstd, rows],
  ]);
  const chunk = rt.chunkOf(rows, 2 * dim);
  rt.split("rmsnorm", [X, W, O, R], { n: rows, chunk, dim, eps: p.eps }, Math.ceil(rows / chunk));
  rt.count("rmsnorm");
}

export function rmsnormBackward(
  rt: CpuRuntime,
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
  const parts = rt.scratch64(nChunks * dim); // [nChunks, dim]
  rt.split("rmsnormBackward", [X, W, R, DY, DX, parts], { n: rows, chunk, dim, eps: 0 }, nChunks);
  for (let j = 0; j < dim; j++) {
    let s = 0;
    for (let c = 0; c < nChunks; c++) s += parts[c * dim + j];
    DW[j] = s;
  }
  rt.count("rmsnormBackward");
}

export function rope(rt: CpuRuntime, x: DeviceBuffer, positions: DeviceBuffer, out: DeviceBuffer, p: RopeParams): void {
  const { tokens, heads, dim } = p;
  dims("rope", { tokens, heads, dim });
  invariant(dim % 2 === 0, () => `rope: dim ${dim} is odd; rotate-half needs an even head dim`);
  const P = ints("rope", "positions", positions, tokens);
  const [X, O] = floats("rope", [
    ["x", x, tokens * heads * dim],
    ["out", out, tokens * heads * dim],
  ]);
  const chunk = rt.chunkOf(tokens, 2 * heads * dim);
  const params = { n: tokens, chunk, heads, dim, theta: p.theta, inverse: p.inverse };
  rt.split("rope", [X, P, O], params, Math.ceil(tokens / chunk));
  rt.count("rope");
}

export function softmax(rt: CpuRuntime, x: DeviceBuffer, out: DeviceBuffer, p: RowsParams): void {
  const [X, O] = rows("softmax", p, x, "x", out, "out");
  nn.softmax(X, O, p.rows, p.cols);
  rt.count("softmax");
}

export function softmaxBackward(rt: CpuRuntime, y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer, p: RowsParams): void {
  const [Y, DY, DX] = rows("softmaxBackward", p, y, "y", dy, "dy", dx, "dx");
  nn.softmaxBackward(Y, DY, DX, p.rows, p.cols);
  rt.count("softmaxBackward");
}

export function logSoftmax(rt: CpuRuntime, x: DeviceBuffer, out: DeviceBuffer, p: RowsParams): void {
  const [X, O] = rows("logSoftmax", p, x, "x", out, "out");
  nn.logSoftmax(X, O, p.rows, p.cols);
  rt.count("logSoftmax");
}

export function logSoftmaxBackward(rt: CpuRuntime, y: DeviceBuffer, dy: DeviceBuffer, dx: DeviceBuffer, p: RowsParams): void {
  const [Y, DY, DX] = rows("logSoftmaxBackward", p, y, "y", dy, "dy", dx, "dx");
  nn.logSoftmaxBackward(Y, DY, DX, p.rows, p.cols);
  rt.count("logSoftmaxBackward");
}

export function logprobGather(
  rt: CpuRuntime,
  logits: DeviceBuffer,
  targets: DeviceBuffer,
  logp: DeviceBuffer,
  lse: DeviceBuffer,
  p: LogprobParams,
): void {
  const { rows, cols } = p;
  dims("logprobGather", { rows, cols });
  const TG = ints("logprobGather", "targets", targets, rows);
  const [L, LP, LSE] = floats("logprobGather", [
    ["logits", logits, rows * cols],
    ["logp", logp, rows],
    ["lse", lse, rows],
  ]);
  nn.checkTargets("logprobGather", TG, rows, cols, p.ignoreIndex);
  const chunk = rt.chunkOf(rows, cols);
  rt.split("logprobGather", [L, TG, LP, LSE], { n: rows, chunk, cols, ignoreIndex: p.ignoreIndex }, Math.ceil(rows / chunk));
  rt.count("logprobGather");
}

export function logprobGatherBackward(
  rt: CpuRuntime,
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
  const chunk = rt.chunkOf(rows, 2 * cols);
  const params = { n: rows, chunk, cols, ignoreIndex: p.ignoreIndex };
  rt.split("logprobGatherBackward", [L, TG, LSE, DLP, DL], params, Math.ceil(rows / chunk));
  rt.count("logprobGatherBackward");
}

export function attention(
  rt: CpuRuntime,
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
  const tiles = att.plan(io, p, rt.attn);
  rt.runAttention("attention", [Q, K, V, off, st, en, O, L], p, tiles, [], tiles.length * Hkv, T * H * D);
  rt.countTiles(att.tileStats(tiles));
  rt.count(op);
}

export function attentionBackward(
  rt: CpuRuntime,
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
  const tiles = att.plan(io, p, rt.attn);
  const bands = att.planBands(tiles);
  att.zeroUnseenKeys({ dOut: DO, dq: DQ, dk: DK, dv: DV }, p, bands);
  const arrays = [Q, K, V, off, st, en, O, L, DO, DQ, DK, DV];
  rt.runAttention("attentionBackward", arrays, p, tiles, bands, bands.length * Hkv, 3 * T * H * D);
  rt.countTiles(att.tileStats(tiles));
  rt.count(op);
}
