/**
 * Host side of kernels/decode-attention.cu: paged decode attention over a packed work plan
 * (src/engine/attention-plan.ts makes and packs it) in which every key is read once per step for
 * all the rows that see it, and long rows are split over many blocks. A partial kernel over
 * (item, kv head) units, then the row's partials merged: for a single row by the last block of
 * the partial kernel itself (one launch), for several rows by a combine kernel per (row, head)
 * (merging many rows in the last blocks measured slower). Argument checks, launch geometry,
 * the shared-memory size and the scratch / plan sizes for a capacity live here.
 * The kernels are PDL-safe (they wait before touching anything) and launch with programmatic
 * dependent launch when the backend's `pdl` is on; DecodeTuning.pdlEarly sets their order.
 * Knows the plan's packed layout (offsets only) and the kernels; nothing of block tables or models.
 */
import { invariant } from "../../../util/errors.ts";
import type { DeviceBuffer } from "../types.ts";
import { ELEM_BYTES } from "./buffers.ts";
import type { CudaBackend } from "./index.ts";
import { pdlEarlyArg } from "./decode.ts";

/** Threads of the partial kernel (DA_THREADS), its key tile, query pass and slot-list size (.cu). */
const DA_THREADS = 128;
const DA_WARPS = 4;
const DA_KT = 32;
const DA_QW_MAX = 8;
const DA_QMAX = DA_WARPS * DA_QW_MAX;
export const DA_MAX_CHUNK = 512;
/** Rows a plan may hold (one bit each of an i32 mask). */
export const DA_MAX_ROWS = 32;
const DA_MAX_D = 256;
/** Completion counters per row at the plan's end (DA_CNT; attention-plan.ts PLAN_COUNTERS_PER_ROW). */
const DA_CNT = 8;
/**
 * Largest shared memory for which tuning.stages 2 (double-buffered key tiles) is allowed: two
 * blocks still fit an H100/H200 SM (228 KiB); f32 with D <= 128 qualifies (89 KiB at D 128). Not
 * the default: measured on an H200 (bench/decode-attention.ts, 4B shape, auto chunk, one kernel,
 * us per layer, 1 vs 2 buffers): 1 row x 100 keys 12.5 / 12.3, x 512 14.8 / 14.4, x 4,096 38.0 /
 * 44.9 (2 blocks per SM instead of 3: 344 blocks become two waves), x 16,384 97.1 / 90.0.
 */
const TWO_STAGE_SMEM = 112 * 1024;
/** Threads of the combine kernel (loops over the head dim). */
const COMBINE_THREADS = 128;
/**
 * Most blocks of the partial kernel: it is grid-stride over units, so a large item capacity costs
 * no more than this many (mostly exiting) blocks per launch.
 */
const MAX_GRID = 4096;

/** Capacities of a packed plan (engine/attention-plan.ts PlanCapacity, same fields). */
export interface DecodeAttentionCapacity {
  items: number;
  ranges: number;
  partials: number;
}

export interface DecodeAttentionParams {
  /** B: rows of q / out (the batch bucket); the plan was packed for this many rows. */
  rows: number;
  /** S: slots in the page arrays k and v ([S, Hkv, D]); slots outside [0, S) are skipped. */
  keys: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Multiplies q.k before the softmax (usually 1/sqrt(D)). */
  scale: number;
  /** What the plan buffer was laid out for (fixed while a graph that uses it is captured). */
  capacity: DecodeAttentionCapacity;
  /**
   * Benchmarks and tests only. `fused`: the partial kernel's last block per (row, kv group) merges
   * the row; false queues the separate combine kernel instead. Default: fused for one row only.
   * Measured on an H200 (bench/decode-attention.ts, 4B shape, auto chunk, us per layer, separate
   * vs fused): 1 row x 100 keys 12.3 / 12.5, x 512 15.6 / 14.8, x 4,096 45.5 / 38.0, x 16,384
   * 107.8 / 97.1; but 8 siblings (600 shared + 512 own) 62.6 / 104.8 and 16 siblings 90.9 / 180.8:
   * a block that completes many rows at once merges them one after another at the launch's tail,
   * where the separate kernel spreads B x H merges over the device. `stages`: key-tile buffers
   * (1, the default, or 2: TWO_STAGE_SMEM).
   */
  tuning?: { fused?: boolean; stages?: 1 | 2 };
}

/**
 * i32 elements of a packed plan for `rows` rows at `cap` (attention-plan.ts planLayout().length):
 * the plan, then DA_CNT completion counters per row that the kernel counts in and leaves at 0.
 */
export function decodePlanLength(rows: number, cap: DecodeAttentionCapacity): number {
  return 2 + 3 * cap.items + 2 * cap.ranges + rows + 1 + cap.partials + rows * DA_CNT;
}

/** Float elements of the scratch: partial accumulators [P, H, D] then (max, sum) [P, H, 2]. */
export function decodeAttentionScratchLength(cap: DecodeAttentionCapacity, heads: number, headDim: number): number {
  return Math.max(1, cap.partials * heads * (headDim + 2));
}

/** Dynamic shared memory of the partial kernel with `stages` key-tile buffers (layout in the .cu file). */
function smemBytes(D: number, elem: number, stages: number): number {
  const DP = D + 4;
  return (2 * stages * DA_KT * DP + DA_QMAX * DP + DA_WARPS * DA_QW_MAX * DA_KT) * elem + (DA_MAX_CHUNK + 64) * 4;
}

/**
 * out [B, H * D] and lse [B, H] of decode rows against paged keys: q [B, H, D] (f32 or f64, like
 * k, v [S, Hkv, D], out, lse and scratch); plan i32 [decodePlanLength(B, capacity)] as packPlan
 * wrote it (its counters at 0, as packPlan leaves them; every launch leaves them 0 again, so a
 * graph replays with or without a new upload); scratch [decodeAttentionScratchLength(capacity,
 * H, D)]. Queues one kernel (fused) or two and touches no host memory, so it can be
 * captured in a graph and replayed with new plan contents (within the capacity). A row without
 * partials (padding) gets zeros and lse -inf. Deterministic: each row's partials are merged in
 * the plan's order whichever block finishes last.
 */
export function decodeAttention(
  be: CudaBackend,
  q: DeviceBuffer, k: DeviceBuffer, v: DeviceBuffer, plan: DeviceBuffer, scratch: DeviceBuffer,
  out: DeviceBuffer, lse: DeviceBuffer, p: DecodeAttentionParams,
): void {
  const op = "decodeAttention";
  const { rows: B, keys: S, heads: H, kvHeads: Hkv, headDim: D, capacity: cap } = p;
  const chk = be.checks;
  chk.dims(op, { rows: B, keys: S, heads: H, kvHeads: Hkv, headDim: D, "capacity.items": cap.items, "capacity.ranges": cap.ranges, "capacity.partials": cap.partials });
  invariant(B >= 1 && B <= DA_MAX_ROWS, () => `${op}: rows = ${B}, expected 1..${DA_MAX_ROWS} (one bit of the plan's row mask each)`);
  invariant(Hkv >= 1 && H >= Hkv && H % Hkv === 0, () => `${op}: ${H} query heads cannot be grouped over ${Hkv} kv heads (H % Hkv must be 0)`);
  invariant(D >= 4 && D % 4 === 0 && D <= DA_MAX_D, () => `${op}: head dim ${D} must be a multiple of 4 in [4, ${DA_MAX_D}] (4-wide loads)`);
  invariant(Number.isFinite(p.scale), () => `${op}: scale ${p.scale} is not finite`);
  const P = chk.ints(op, "plan", plan, decodePlanLength(B, cap));
  const [[Q, K, V, O, L, SC], dt] = chk.floats(op, [
    ["q", q, B * H * D], ["k", k, S * Hkv * D], ["v", v, S * Hkv * D], ["out", out, B * H * D], ["lse", lse, B * H],
    ["scratch", scratch, decodeAttentionScratchLength(cap, H, D)],
  ]);
  invariant(K.ptr % 16 === 0 && V.ptr % 16 === 0, () => `${op}: k and v must be 16-byte aligned (4-wide loads); got a view at an odd offset`);
  const elem = ELEM_BYTES[dt];
  const pml = SC.ptr + cap.partials * H * D * elem;
  const sizes = [{ i32: B }, { i32: cap.items }, { i32: cap.ranges }, { i32: cap.partials }] as const;
  const hd = D <= 64 ? 64 : D <= 128 ? 128 : 256;
  const grid = Math.min(cap.items * Hkv, MAX_GRID);
  const fused = p.tuning?.fused ?? B === 1;
  const stages = p.tuning?.stages ?? 1;
  invariant(stages === 1 || (stages === 2 && smemBytes(D, elem, 2) <= TWO_STAGE_SMEM), () =>
    `${op}: tuning.stages = ${stages}: 1, or 2 where two tile buffers fit ${TWO_STAGE_SMEM} bytes of shared memory (f32, head dim <= 128)`);
  be.launchKernel("decode-attention.cu", `decode_attention_partial_d${hd}`, dt, grid, DA_THREADS, [
    { ptr: Q.ptr }, { ptr: K.ptr }, { ptr: V.ptr }, { ptr: P.ptr }, { ptr: SC.ptr }, { ptr: pml }, { ptr: O.ptr }, { ptr: L.ptr }, ...sizes,
    { i32: S }, { i32: H }, { i32: Hkv }, { i32: D }, dt === "f32" ? { f32: p.scale } : { f64: p.scale }, { i32: stages }, { i32: fused ? 1 : 0 },
    pdlEarlyArg(be.decodeTuning),
  ], smemBytes(D, elem, stages), { pdl: true });
  if (!fused) {
    be.launchKernel("decode-attention.cu", "decode_attention_combine", dt, [B, H, 1], COMBINE_THREADS, [
      { ptr: P.ptr }, { ptr: SC.ptr }, { ptr: pml }, { ptr: O.ptr }, { ptr: L.ptr }, ...sizes, { i32: H }, { i32: D }, pdlEarlyArg(be.decodeTuning),
    ], 0, { pdl: true });
  }
  be.countCall(op);
}
