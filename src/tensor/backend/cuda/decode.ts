/**
 * The fused ops of the decode step on CUDA (kernels/decode.cu), for the engine's graph decode of
 * a mixed-precision model: bf16 weights, f32 residual stream and KV pages, at most 16 rows.
 *   decodeRmsnorm     RMSNorm of f32 rows written as the bf16 GEMM input (norm + cast, one kernel)
 *   decodeGemv        weight-streaming GEMV on tensor cores for several matrices in one launch,
 *                     x bf16, f32, or the f32 residual RMSNormed as it is read; epilogue "store"
 *                     (f32, + bias), "add" (into the f32 residual, + bias) or "swiglu" (gate, up
 *                     -> bf16 input of down_proj)
 *   decodeQkNormRope  per-head q/k RMSNorm + RoPE at each row's position + k, v into page slots
 * Each equals the generic ops it replaces up to summation order (fp32 accumulation throughout).
 * Every kernel here is launched with programmatic dependent launch when the backend's `pdl` is on
 * (kernels/decode.cu says what each does before and after its griddepcontrol.wait).
 * Functions of a CudaBackend through its extension surface (launchKernel, countCall, checks); the
 * backend's thin methods call them. Knows nothing of models or the engine.
 */
import { invariant } from "../../../util/errors.ts";
import type { DeviceBuffer } from "../types.ts";
import { ELEM_BYTES } from "./buffers.ts";
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

/** One matrix of a fused GEMV launch: y[b * ldy + j] (epilogue) sum_k x[b, k] w[j, k]. */
export interface GemvTarget {
  /** bf16 [n, k] (torch.nn.Linear layout), 16-byte aligned. */
  w: DeviceBuffer;
  /** Output rows: f32 for "store" and "add", bf16 for "swiglu" (given on the gate, the first). */
  y: DeviceBuffer;
  n: number;
  /** f32 [n] added to the product ("store", "add"). */
  bias?: DeviceBuffer | null;
  /** Elements between consecutive rows of y (default n). */
  ldy?: number;
}

export type GemvEpilogue = "store" | "add" | "swiglu";

export interface GemvParams {
  rows: number;
  k: number;
  epilogue: GemvEpilogue;
  /**
   * x is the f32 residual [rows, k], RMSNormed with w [k] (f32) as it is read: the norm fused
   * into the GEMV (each block first computes every row's rstd, cheap for a few rows). Above
   * NORM_FUSED_ROWS rows, and when `scratch` (bf16 [rows, k]) is given, the norm runs as
   * decodeRmsnorm into scratch instead, and the GEMV reads that.
   */
  norm?: { w: DeviceBuffer; eps: number; scratch?: DeviceBuffer };
  /**
   * The weights the step's next GEMV reads (at most 3 buffers): their first bytes, up to
   * DecodeTuning.prefetchMB in all (default none, see DEFAULT_PREFETCH_MB), are fetched into L2
   * while this launch runs (DRAM idles in its first microseconds and tail).
   */
  prefetch?: readonly DeviceBuffer[];
}

/** Most rows whose RMSNorm each GEMV block recomputes (beyond, a separate norm kernel is cheaper). */
export const NORM_FUSED_ROWS = 4;

/**
 * Launch shape knobs for benchmarks (0 = automatic): `unroll` is the stages of each warp's copy
 * ring (4 or 8: that many steps of 32 k minus one in flight) and `warps` per block (4, 8 or 16).
 */
export interface DecodeTuning {
  unroll: number;
  warps: number;
  /** 0: stage x in shared memory for few rows (STAGE_X_ROWS, STAGE_X_BYTES); 1: never (x read from global). */
  noStage?: number;
  /** MB of GemvParams.prefetch fetched into L2 per launch (undefined: DEFAULT_PREFETCH_MB; 0: none). */
  prefetchMB?: number;
  /**
   * KB of each GEMV block's own weight tile prefetched into L2 before its PDL wait (undefined:
   * DEFAULT_SELF_PREFETCH_KB; 0: none; the whole tile is at most 16 k bf16 per matrix).
   */
  selfPrefetchKB?: number;
  /**
   * k-slices per 16-row output tile (undefined: DEFAULT_SPLIT; 0: automatic, see splitFor; 1: no
   * split; n: n slices, at most one per 32-wide k-step and SPLIT_MAX_UNITS blocks in all). With 8
   * ring stages there is no split.
   */
  split?: number;
  /** Blocks the automatic split may fill (undefined: the estimate of resident blocks, see splitFor). */
  splitUnits?: number;
  /**
   * PDL order of the small kernels (norm, q/k norm + RoPE, decode attention): 1 schedules the next
   * kernel before their wait, 0 after it (undefined: DEFAULT_PDL_EARLY). GEMVs always schedule
   * the next kernel right after their wait.
   */
  pdlEarly?: number;
}

/**
 * Own-tile L2 prefetch before the PDL wait, off: measured on an H200 (4B shape, batch 1, replayed
 * step, bench/gpu.ts decode_graph_pdl) 3.87 ms with 64 KB per tile and 4.04 ms with whole tiles,
 * against 3.53 ms without (the prefetched lines compete with the running GEMV's stream and are
 * partly evicted before use).
 */
export const DEFAULT_SELF_PREFETCH_KB = 0;
/**
 * Small kernels schedule their successor after their own wait, as the GEMVs do. Scheduling it
 * before (so the GEMV after q/k norm + RoPE and attention fills its ring while they run) was
 * slower on an H200: 3.68 ms per replayed 4B step against 3.53 ms (PDL off: 3.55 ms); the attention
 * pair then cost 15.4 instead of 13.9 us per layer (bench/gpu.ts fused_step_mix).
 */
export const DEFAULT_PDL_EARLY = 0;

/** The `early` argument of the small kernels (see DecodeTuning.pdlEarly). */
export function pdlEarlyArg(tune: DecodeTuning): { i32: number } {
  return { i32: (tune.pdlEarly ?? DEFAULT_PDL_EARLY) ? 1 : 0 };
}

/**
 * L2 prefetch per GEMV launch, off: measured on an H200 (4B shape, batch 1), 20 MB per launch
 * made the replayed step slower (6.27 vs 5.93 ms): the prefetch competes with the launch's own
 * stream for DRAM. With PDL it still loses (fused step 4.07 ms with it, 3.53 without; PDL off
 * 3.82 vs 3.55). Kept as a knob.
 */
export const DEFAULT_PREFETCH_MB = 0;

/**
 * Split k when a launch's tiles fill less than one wave: as many k-slices per tile (up to
 * SPLIT_AUTO_MAX) as keep every block resident at once (tiles x slices <= SMs x blocks per SM).
 * Why: with one block per 16-row tile, o_proj and down_proj of the 4B shape are 160 blocks on 132
 * SMs, too few bytes in flight (each block holds nw x (stages - 1) KB of copies). Measured on an
 * H200 with the first version (every instance slowed, see DEFAULT_SPLIT; bench/gpu.ts
 * --gemm-graph, fused_gemv, one row): down_proj 2.28 -> 2.46 TB/s with 3 slices (480 blocks, one
 * wave), 2.04 with 4 (640 blocks: two waves, the second a tail); 8 rows 4.08 -> 3.85 ms per step's
 * GEMVs, 16 rows (2 slices) 4.67 -> 4.46; the step's GEMVs with PDL at one row 3.60 -> 3.21 ms.
 * Splitting q/k/v (384 tiles) or gate/up (608) lost (their per-block norm prologue is repeated;
 * 1.55 vs 2.08 TB/s for q/k/v in 3 slices), as did a second wave; the capacity rule avoids both.
 */
export const SPLIT_SMS = 132;
/**
 * The split is off unless asked for (DecodeTuning.split = 0 or n): the gains above were measured
 * on a first version whose every GEMV instance, split or not, had lost 20-28% (the split
 * arithmetic's registers). The split now has instances of its own and the unsplit ones are the
 * code measured before (2.59 ms for the 4B step's GEMVs at one row); whether the split instances
 * beat them is to be measured (bench/gpu.ts --gemm-graph, fused_gemv split rows) before this
 * becomes 0.
 */
export const DEFAULT_SPLIT: number = 1;
/** Most k-slices per tile the automatic split picks. */
const SPLIT_AUTO_MAX = 4;
/** Fewest 32-wide k-steps per slice the automatic split leaves (shorter slices: fixed costs win). */
const SPLIT_MIN_STEPS = 16;
/** Most (tile, slice) blocks of a split launch: the partial-sum scratch holds this many. */
export const SPLIT_MAX_UNITS = 8192;

/**
 * Registers per thread of the split GEMV instances (_s) by [n-tiles][weight tiles], the most over
 * the x modes (nvcc 13.0 for sm_90), for the resident-block estimate. The driver binding has no
 * cuOccupancyMaxActiveBlocksPerMultiprocessor yet; a wrong figure only costs speed.
 */
const GEMV_REGS = [[56, 70], [66, 96]];

/**
 * Blocks of one GEMV instance resident per SM of an sm_90 part: the least of the register file
 * (64 K, allocated per warp in 256s of regs rounded to 8 per thread), shared memory (228 KB, 1 KB
 * reserved per block) and threads (2,048).
 */
export function gemvBlocksPerSm(nt: number, tiles: number, warps: number, smemBytes: number): number {
  const regs = Math.ceil(GEMV_REGS[nt - 1][tiles - 1] / 8) * 8;
  const byRegs = Math.floor(65536 / (Math.ceil((regs * 32) / 256) * 256 * warps));
  const bySmem = Math.floor((228 * 1024) / (smemBytes + 1024));
  return Math.max(1, Math.min(byRegs, bySmem, Math.floor(2048 / (32 * warps))));
}

/**
 * k-slices per tile for a launch of `tiles` 16-row tiles over `steps` 32-wide k-steps: forced by
 * DecodeTuning.split, else the most slices s (up to SPLIT_AUTO_MAX, each at least SPLIT_MIN_STEPS
 * steps) with tiles x s <= `resident(s)` (the blocks that fit on the device at once with s slices,
 * or DecodeTuning.splitUnits). Never beyond one slice per step or SPLIT_MAX_UNITS blocks.
 */
export function splitFor(tiles: number, steps: number, tune: DecodeTuning, resident: (s: number) => number): number {
  let want = tune.split ?? DEFAULT_SPLIT;
  if (!want) {
    want = 1;
    for (let s = Math.min(SPLIT_AUTO_MAX, Math.floor(steps / SPLIT_MIN_STEPS)); s > 1; s--) {
      if (tiles * s <= (tune.splitUnits ?? resident(s))) {
        want = s;
        break;
      }
    }
  }
  return Math.max(1, Math.min(want, steps, Math.floor(SPLIT_MAX_UNITS / tiles)));
}

/**
 * The split GEMV's scratch, per backend: partial sums f32 [SPLIT_MAX_UNITS][2 tiles][16 rows][16
 * weight rows] and one arrival counter per tile (i32 [SPLIT_MAX_UNITS], zeroed once; each launch
 * leaves them at 0). Shared by every launch: each uses it only after its PDL wait, when the previous
 * kernel of the stream has completed. Allocated by the first split launch, which must not be
 * inside a graph capture (the engine and the benchmarks run a body eagerly before capturing it).
 */
const splitScratch = new WeakMap<CudaBackend, { part: CudaBuffer; counts: CudaBuffer }>();

function splitScratchOf(be: CudaBackend): { part: CudaBuffer; counts: CudaBuffer } {
  let s = splitScratch.get(be);
  if (!s) {
    s = { part: be.alloc("f32", SPLIT_MAX_UNITS * 2 * 256), counts: be.alloc("i32", SPLIT_MAX_UNITS) };
    be.driver.memsetD32Async(s.counts.ptr, 0, SPLIT_MAX_UNITS, be.streamHandle);
    splitScratch.set(be, s);
  }
  return s;
}

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
export function decodeRmsnorm(be: CudaBackend, x: DeviceBuffer, w: DeviceBuffer, out16: DeviceBuffer, p: { rows: number; dim: number; eps: number }): void {
  const op = "decodeRmsnorm";
  be.checks.dims(op, { rows: p.rows, dim: p.dim });
  const X = f32Arg(be, op, "x", x, p.rows * p.dim);
  const W = f32Arg(be, op, "w", w, p.dim);
  const O = bf16Arg(be, op, "out", out16, p.rows * p.dim);
  be.launchKernel("decode.cu", "dec_rmsnorm_bf16", "f32", p.rows, 256, [
    { ptr: X.ptr }, { ptr: W.ptr }, { ptr: O.ptr }, { i64: p.dim }, { f64: p.eps }, pdlEarlyArg(be.decodeTuning),
  ], 0, { pdl: true });
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
 * of equal n and writes bf16(silu(x gate^T) * (x up^T)) into the gate's y.
 */
export function decodeGemv(be: CudaBackend, x: DeviceBuffer, mats: readonly GemvTarget[], p: GemvParams, tune: DecodeTuning = { unroll: 0, warps: 0 }): void {
  const op = "decodeGemv";
  const { rows, k } = p;
  rowsOk(op, rows);
  be.checks.dims(op, { k });
  invariant(k > 0 && k % 8 === 0, () => `${op}: k = ${k} must be a positive multiple of 8 (16-byte loads)`);
  invariant(mats.length >= 1 && mats.length <= 4, () => `${op}: ${mats.length} matrices, expected 1..4`);
  if (p.norm?.scratch && rows > NORM_FUSED_ROWS) {
    decodeRmsnorm(be, x, p.norm.w, p.norm.scratch, { rows, dim: k, eps: p.norm.eps });
    decodeGemv(be, p.norm.scratch, mats, { rows, k, epilogue: p.epilogue, prefetch: p.prefetch }, tune);
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
  invariant(tune.split === undefined || (Number.isInteger(tune.split) && tune.split >= 0), () => `${op}: split ${tune.split}, expected 0 (automatic) or a slice count`);
  const unroll = tune.unroll || 4;
  invariant(unroll === 4 || unroll === 8, () => `${op}: ${unroll} ring stages, expected 4 or 8`);
  // The block shape for `split` k-slices per tile: warps, x staging, dynamic shared memory.
  const shape = (split: number) => {
    const sliceSteps = Math.ceil(steps / split);
    const nw = tune.warps || warpsFor(sliceSteps);
    // x staged in shared memory (read once per block) for a few rows: the loop then waits on no
    // global load. Measured (H200, 4B matrices, all GEMVs of a step): 2.80 vs 3.60 ms at 1 row,
    // 3.82 vs 4.00 at 4; at 8 rows staging lost (3.99 vs 3.62 ms: the larger blocks fit fewer per
    // SM). A split block stages only its slice.
    const xsBytes = rows * (Math.min(sliceSteps * 32, k) + 8) * 2;
    const staged = !tune.noStage && rows <= STAGE_X_ROWS && xsBytes <= STAGE_X_BYTES;
    // Ring stages: 4 unless tuned (see warpsFor).
    return { nw, staged, smem: nw * unroll * tiles * 1024 + (staged ? xsBytes : 0) };
  };
  // k-slices per tile; the blocks are (tile, slice) and the warps interleave over one slice.
  // The split instances have 4 ring stages only; the kernel's slice bounds are 32-bit products.
  const split = unroll !== 4 ? 1 : splitFor(blocks, steps, tune, (s) => {
    const sh = shape(s);
    return SPLIT_SMS * gemvBlocksPerSm(nt, tiles, sh.nw, sh.smem);
  });
  invariant(split === 1 || steps * split < 2 ** 31, () => `${op}: k = ${k} in ${split} slices overflows the kernel's slice arithmetic`);
  const { nw, staged, smem } = shape(split);
  invariant([4, 8, 16].includes(nw), () => `${op}: ${nw} warps per block, expected 4, 8 or 16`);
  invariant(smem <= SMEM_PER_SM, () => `${op}: ${nw} warps x ${unroll} stages need ${smem} bytes of shared memory`);
  const pf = prefetchRegions(be, p.prefetch ?? [], (tune.prefetchMB ?? DEFAULT_PREFETCH_MB) * 2 ** 20);
  const selfPf = Math.floor((tune.selfPrefetchKB ?? DEFAULT_SELF_PREFETCH_KB) * 1024);
  invariant(selfPf >= 0, () => `${op}: selfPrefetchKB ${tune.selfPrefetchKB} is negative`);
  // DgMats (decode.cu), field by field.
  const mat = [mats.length, ...fields.w, ...fields.bias, ...fields.y, ...fields.n, ...fields.ldy, ...fields.start, ...pf.ptrs, ...pf.bytes, selfPf];
  const name = `dec_gemv_${NW ? "xn" : X.dtype === "bf16" ? "x16" : "x32"}_nt${nt}_t${tiles}_u${unroll}${split > 1 ? "_s" : ""}`;
  const scratch = split > 1 ? splitScratchOf(be) : null;
  be.launchKernel("decode.cu", name, "f32", blocks * split, 32 * nw, [
    { ptr: X.ptr }, { i64: k }, { i64s: mat }, { i32: rows }, { i64: k }, { i32: EPILOGUE_CODE[p.epilogue] },
    { ptr: NW?.ptr ?? 0 }, { f64: p.norm?.eps ?? 0 }, { i32: staged ? 1 : 0 }, { i32: split }, { ptr: scratch?.part.ptr ?? 0 },
    { ptr: scratch?.counts.ptr ?? 0 },
  ], smem, { pdl: true });
  if (split > 1) be.countCall("decodeGemv.split");
  be.countCall(op);
}

/**
 * DgMats.pf / pfBytes: each buffer's first bytes, the budget shared in proportion to their sizes
 * (16-byte multiples; the bulk prefetch's unit). Unused regions are 0.
 */
function prefetchRegions(be: CudaBackend, bufs: readonly DeviceBuffer[], budget: number): { ptrs: number[]; bytes: number[] } {
  invariant(bufs.length <= 3, () => `decodeGemv: ${bufs.length} prefetch buffers, at most 3`);
  const ptrs = [0, 0, 0];
  const bytes = [0, 0, 0];
  const live = bufs.map((b) => be.checks.live("decodeGemv", "prefetch", b));
  const sizes = live.map((b) => b.length * ELEM_BYTES[b.dtype]);
  const total = sizes.reduce((a, b) => a + b, 0);
  if (budget <= 0 || total === 0) return { ptrs, bytes };
  const scale = Math.min(1, budget / total);
  live.forEach((b, i) => {
    ptrs[i] = b.ptr;
    bytes[i] = Math.floor((sizes[i] * scale) / 16) * 16;
  });
  return { ptrs, bytes };
}


export interface QkNormRopeParams {
  rows: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  eps: number;
  theta: number;
}

/**
 * q [rows, H, D] f32 normed per head with qNorm [D] and rotated at positions[r] in place; k
 * [rows, Hkv, D] normed with kNorm and rotated into keys[slots[r]], v [rows, Hkv, D] copied into
 * values[slots[r]] (pages [numSlots, Hkv, D] f32; slot -1 writes nothing). positions and slots
 * are i32 [rows] read on the device, so a captured graph replays with new ones. The first call
 * for a (theta, headDim) writes a table from the host: run it once outside a graph capture.
 */
export function decodeQkNormRope(
  be: CudaBackend, q: DeviceBuffer, k: DeviceBuffer, v: DeviceBuffer, qNorm: DeviceBuffer, kNorm: DeviceBuffer,
  positions: DeviceBuffer, slots: DeviceBuffer, keys: DeviceBuffer, values: DeviceBuffer, p: QkNormRopeParams,
): void {
  const op = "decodeQkNormRope";
  const { rows, heads: H, kvHeads: Hkv, headDim: D } = p;
  rowsOk(op, rows);
  be.checks.dims(op, { heads: H, kvHeads: Hkv, headDim: D });
  invariant(D % 2 === 0 && D > 0, () => `${op}: head dim ${D} must be even`);
  const [[Q, K, V, QW, KW, KP, VP]] = be.checks.floats(op, [
    ["q", q, rows * H * D], ["k", k, rows * Hkv * D], ["v", v, rows * Hkv * D], ["qNorm", qNorm, D], ["kNorm", kNorm, D],
    ["keys", keys, Hkv * D], ["values", values, Hkv * D],
  ]);
  invariant(Q.dtype === "f32", () => `${op}: f32 only, got ${Q.dtype}`);
  const P = be.checks.ints(op, "positions", positions, rows);
  const S = be.checks.ints(op, "slots", slots, rows);
  const table = ropeTable(be, p.theta, D);
  const warps = rows * (H + Hkv);
  be.launchKernel("decode.cu", "dec_qk_norm_rope", "f32", Math.ceil(warps / 4), 128, [
    { ptr: Q.ptr }, { ptr: K.ptr }, { ptr: V.ptr }, { ptr: QW.ptr }, { ptr: KW.ptr }, { ptr: P.ptr }, { ptr: S.ptr },
    { ptr: KP.ptr }, { ptr: VP.ptr }, { i32: rows }, { i32: H }, { i32: Hkv }, { i32: D }, { f64: p.eps }, { ptr: table.ptr },
    pdlEarlyArg(be.decodeTuning),
  ], 0, { pdl: true });
  be.countCall(op);
}
