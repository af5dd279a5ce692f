/**
 * The fused ops of the decode step on CUDA (kernels/decode.cu), the "fusedDecode" capability of
 * types.ts, for the graph decode of a mixed-precision model: bf16 weights, f32 residual stream and
 * KV pages, at most 16 rows.
 *   decodeRmsnorm     RMSNorm of f32 rows written as the bf16 GEMM input (norm + cast, one kernel)
 *   decodeGemv        weight-streaming GEMV on tensor cores for several matrices in one launch,
 *                     x bf16, f32, or the f32 residual RMSNormed as it is read; epilogue "store"
 *                     (f32, + bias), "add" (into the f32 residual, + bias) or "swiglu" (gate, up
 *                     -> bf16 input of down_proj)
 *   decodeQkNormRope  per-head q/k RMSNorm + RoPE at each row's position + k, v into page slots
 * Each equals the generic ops it replaces up to summation order (fp32 accumulation throughout).
 * Every kernel here is launched with programmatic dependent launch when the backend's `pdl` is on
 * (kernels/decode.cu says what each does before and after its griddepcontrol.wait). The launch
 * shape is fixed by the rules below, each measured; the variants that lost (a k-split GEMV, 8
 * ring stages, 4 or 16 warps everywhere, x never staged, L2 prefetch, early PDL scheduling) live
 * in dev/cuda/decode_gemv.cu with their numbers in dev/LOG.md.
 * Functions of a CudaBackend through its extension surface (launchKernel, countCall, checks); the
 * backend's thin methods call them. Knows nothing of models or the engine.
 */
import { invariant } from "../../../util/index.ts";
import type { DecodeNormParams, DeviceBuffer, GemvEpilogue, GemvParams, GemvTarget, QkNormRopeParams } from "../types.ts";
import type { CudaBuffer } from "./buffers.ts";
import type { CudaBackend } from "./index.ts";
import { ropeTable } from "./nn-ops.ts";

/** Rows the fused ops take (two n-tiles of 8 batch rows in the GEMV). */
export const DECODE_MAX_ROWS = 16;
/** Shared memory the GEMV's rings may take on one SM, all its resident blocks together. */
const SMEM_PER_SM = 200 * 1024;
/** Largest x (bf16 [rows, k + 8]) a GEMV block copies into shared memory before its loop. */
const STAGE_X_BYTES = 48 * 1024;
/** Most rows of x a GEMV block stages in shared memory. */
const STAGE_X_ROWS = 4;
/** Ring stages of each warp's cp.async copies (DG_STAGES in decode.cu: 3 steps of 32 k in flight). */
const RING_STAGES = 4;

/** Most rows whose RMSNorm each GEMV block recomputes (beyond, a separate norm kernel is cheaper). */
export const NORM_FUSED_ROWS = 4;

const EPILOGUE_CODE: Record<GemvEpilogue, number> = { store: 0, add: 1, swiglu: 2 };

function bf16Arg(be: CudaBackend, op: string, arg: string, buf: DeviceBuffer, min: number): CudaBuffer {
  const b = be.checks.sized(op, arg, buf, min);
  invariant(b.dtype === "bf16", () => `${op}: ${arg} is ${b.dtype}, expected bf16`);
  return b;
}

function f32Arg(be: CudaBackend, op: string, arg: string, buf: DeviceBuffer, min: number): CudaBuffer {
  const b = be.checks.sized(op, arg, buf, min);
  invariant(b.dtype === "f32", () => `${op}: ${arg} is ${b.dtype}, expected f32`);
  return b;
}

function rowsOk(op: string, rows: number): void {
  invariant(Number.isInteger(rows) && rows >= 1 && rows <= DECODE_MAX_ROWS, () => `${op}: rows = ${rows}, expected 1..${DECODE_MAX_ROWS}`);
}

/** out16 [rows, dim] bf16 = bf16(rmsnorm(x [rows, dim] f32, w [dim] f32)). */
export function decodeRmsnorm(be: CudaBackend, x: DeviceBuffer, w: DeviceBuffer, out16: DeviceBuffer, p: DecodeNormParams): void {
  const op = "decodeRmsnorm";
  be.checks.dims(op, { rows: p.rows, dim: p.dim });
  const X = f32Arg(be, op, "x", x, p.rows * p.dim);
  const W = f32Arg(be, op, "w", w, p.dim);
  const O = bf16Arg(be, op, "out", out16, p.rows * p.dim);
  be.launchKernel(
    "decode.cu",
    "dec_rmsnorm_bf16",
    "f32",
    p.rows,
    256,
    [{ ptr: X.ptr }, { ptr: W.ptr }, { ptr: O.ptr }, { i64: p.dim }, { f64: p.eps }],
    0,
    {
      pdl: true,
    },
  );
  be.countCall(op);
}

/**
 * Warps per block: 8, or 4 for short rows (each warp keeps at least 4 k-steps). Measured on an
 * H200 over the Qwen3-4B matrices at one row (bench/gpu.ts --gemm-graph, fused_gemv): 8 warps
 * with 4 ring stages was the best or within 3% of it for every launch (q/k/v, o_proj, gate/up,
 * down_proj, lm_head); 16 warps or 8 stages lost up to 27% (fewer blocks resident per SM).
 */
function warpsFor(steps: number): number {
  return steps >= 32 ? 8 : 4;
}

/**
 * One launch over every matrix of `mats`: x [rows, k] bf16 (or f32, rounded to bf16 as it is
 * read, which equals casting first), rows <= 16, k % 8 == 0. "swiglu" takes exactly [gate, up]
 * of equal n and writes bf16(silu(x gate^T) * (x up^T)) into the gate's y. With `norm`, x is the
 * f32 residual RMSNormed as it is read (each block first computes every row's rstd, cheap for a
 * few rows); above NORM_FUSED_ROWS rows, and when `norm.scratch` is given, the norm runs as
 * decodeRmsnorm into scratch instead, and the GEMV reads that.
 */
export function decodeGemv(be: CudaBackend, x: DeviceBuffer, mats: readonly GemvTarget[], p: GemvParams): void {
  const op = "decodeGemv";
  const { rows, k } = p;
  rowsOk(op, rows);
  be.checks.dims(op, { k });
  invariant(k > 0 && k % 8 === 0, () => `${op}: k = ${k} must be a positive multiple of 8 (16-byte loads)`);
  invariant(mats.length >= 1 && mats.length <= 4, () => `${op}: ${mats.length} matrices, expected 1..4`);
  if (p.norm?.scratch && rows > NORM_FUSED_ROWS) {
    decodeRmsnorm(be, x, p.norm.w, p.norm.scratch, { rows, dim: k, eps: p.norm.eps });
    decodeGemv(be, p.norm.scratch, mats, { rows, k, epilogue: p.epilogue });
    return;
  }
  const swiglu = p.epilogue === "swiglu";
  invariant(!swiglu || (mats.length === 2 && mats[0].n === mats[1].n), () => `${op}: swiglu takes [gate, up] of equal rows`);
  const X = be.checks.sized(op, "x", x, rows * k);
  invariant(X.dtype === "bf16" || X.dtype === "f32", () => `${op}: x is ${X.dtype}, expected bf16 or f32`);
  invariant(!p.norm || X.dtype === "f32", () => `${op}: a normed x must be the f32 residual, got ${X.dtype}`);
  const NW = p.norm ? f32Arg(be, op, "norm.w", p.norm.w, k) : null;
  invariant(!NW || NW.ptr % 16 === 0, () => `${op}: norm.w is not 16-byte aligned`);
  invariant(X.ptr % 16 === 0, () => `${op}: x is not 16-byte aligned`);
  const fields = { w: [0, 0, 0, 0], bias: [0, 0, 0, 0], y: [0, 0, 0, 0], n: [0, 0, 0, 0], ldy: [0, 0, 0, 0], start: [0, 0, 0, 0, 0] };
  let blocks = 0;
  mats.forEach((m, i) => {
    const name = `mats[${i}]`;
    be.checks.dims(op, { [`${name}.n`]: m.n });
    invariant(m.n > 0, () => `${op}: ${name} has no rows`);
    const ldy = m.ldy ?? m.n;
    const W = bf16Arg(be, op, `${name}.w`, m.w, m.n * k);
    invariant(W.ptr % 16 === 0, () => `${op}: ${name}.w is not 16-byte aligned`);
    const yNeed = (rows - 1) * ldy + m.n;
    const Y = swiglu ? (i === 0 ? bf16Arg(be, op, `${name}.y`, m.y, yNeed) : null) : f32Arg(be, op, `${name}.y`, m.y, yNeed);
    invariant(!(swiglu && m.bias), () => `${op}: swiglu takes no bias`);
    const Bi = m.bias ? f32Arg(be, op, `${name}.bias`, m.bias, m.n) : null;
    fields.w[i] = W.ptr;
    fields.bias[i] = Bi?.ptr ?? 0;
    fields.y[i] = Y?.ptr ?? 0;
    fields.n[i] = m.n;
    fields.ldy[i] = ldy;
    fields.start[i] = blocks;
    // SwiGLU's blocks each cover the same 16 rows of gate and up: count the gate's tiles only.
    if (!swiglu || i === 0) blocks += Math.ceil(m.n / 16);
  });
  for (let i = mats.length; i <= 4; i++) fields.start[i] = blocks;
  if (swiglu) fields.start[1] = blocks;
  const tiles = swiglu ? 2 : 1;
  const nt = rows <= 8 ? 1 : 2;
  const steps = Math.ceil(k / 32);
  const nw = warpsFor(steps);
  // x staged in shared memory (read once per block) for a few rows: the loop then waits on no
  // global load. Measured (H200, 4B matrices, all GEMVs of a step): 2.80 vs 3.60 ms at 1 row,
  // 3.82 vs 4.00 at 4; at 8 rows staging lost (3.99 vs 3.62 ms: the larger blocks fit fewer per SM).
  const xsBytes = rows * (k + 8) * 2;
  const staged = rows <= STAGE_X_ROWS && xsBytes <= STAGE_X_BYTES;
  const smem = nw * RING_STAGES * tiles * 1024 + (staged ? xsBytes : 0);
  invariant(smem <= SMEM_PER_SM, () => `${op}: ${nw} warps x ${RING_STAGES} stages need ${smem} bytes of shared memory`);
  // DgMats (decode.cu), field by field.
  const mat = [mats.length, ...fields.w, ...fields.bias, ...fields.y, ...fields.n, ...fields.ldy, ...fields.start];
  const name = `dec_gemv_${NW ? "xn" : X.dtype === "bf16" ? "x16" : "x32"}_nt${nt}_t${tiles}`;
  be.launchKernel(
    "decode.cu",
    name,
    "f32",
    blocks,
    32 * nw,
    [
      { ptr: X.ptr },
      { i64: k },
      { i64s: mat },
      { i32: rows },
      { i64: k },
      { i32: EPILOGUE_CODE[p.epilogue] },
      { ptr: NW?.ptr ?? 0 },
      { f64: p.norm?.eps ?? 0 },
      { i32: staged ? 1 : 0 },
    ],
    smem,
    { pdl: true },
  );
  be.countCall(op);
}

/**
 * q [rows, H, D] f32 normed per head with qNorm [D] and rotated at positions[r] in place; k
 * [rows, Hkv, D] normed with kNorm and rotated into keys[slots[r]], v [rows, Hkv, D] copied into
 * values[slots[r]] (pages [numSlots, Hkv, D] f32; slot -1 writes nothing). positions and slots
 * are i32 [rows] read on the device, so a captured graph replays with new ones. The first call
 * for a (theta, headDim) writes a table from the host: run it once outside a graph capture.
 */
export function decodeQkNormRope(
  be: CudaBackend,
  q: DeviceBuffer,
  k: DeviceBuffer,
  v: DeviceBuffer,
  qNorm: DeviceBuffer,
  kNorm: DeviceBuffer,
  positions: DeviceBuffer,
  slots: DeviceBuffer,
  keys: DeviceBuffer,
  values: DeviceBuffer,
  p: QkNormRopeParams,
): void {
  const op = "decodeQkNormRope";
  const { rows, heads: H, kvHeads: Hkv, headDim: D } = p;
  rowsOk(op, rows);
  be.checks.dims(op, { heads: H, kvHeads: Hkv, headDim: D });
  invariant(D % 2 === 0 && D > 0, () => `${op}: head dim ${D} must be even`);
  const [[Q, K, V, QW, KW, KP, VP]] = be.checks.floats(op, [
    ["q", q, rows * H * D],
    ["k", k, rows * Hkv * D],
    ["v", v, rows * Hkv * D],
    ["qNorm", qNorm, D],
    ["kNorm", kNorm, D],
    ["keys", keys, Hkv * D],
    ["values", values, Hkv * D],
  ]);
  invariant(Q.dtype === "f32", () => `${op}: f32 only, got ${Q.dtype}`);
  const P = be.checks.ints(op, "positions", positions, rows);
  const S = be.checks.ints(op, "slots", slots, rows);
  const table = ropeTable(be, p.theta, D);
  const warps = rows * (H + Hkv);
  be.launchKernel(
    "decode.cu",
    "dec_qk_norm_rope",
    "f32",
    Math.ceil(warps / 4),
    128,
    [
      { ptr: Q.ptr },
      { ptr: K.ptr },
      { ptr: V.ptr },
      { ptr: QW.ptr },
      { ptr: KW.ptr },
      { ptr: P.ptr },
      { ptr: S.ptr },
      { ptr: KP.ptr },
      { ptr: VP.ptr },
      { i32: rows },
      { i32: H },
      { i32: Hkv },
      { i32: D },
      { f64: p.eps },
      { ptr: table.ptr },
    ],
    0,
    { pdl: true },
  );
  be.countCall(op);
}
