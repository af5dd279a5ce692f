/**
 * Host side of kernels/decode-attention.cu, the "decodeAttention" capability of types.ts: paged
 * decode attention over a packed work plan (../decode-attention-plan.ts makes and packs it) in
 * which every key is read once per step for all the rows that see it, and long rows are split
 * over many blocks. A partial kernel over (item, kv head) units, then the row's partials merged:
 * for a single row by the last block of the partial kernel itself (one launch), for several rows
 * by a combine kernel per (row, head) (merging many rows in the last blocks measured slower:
 * dev/LOG.md). Argument checks, launch geometry, the shared-memory size and the scratch size for
 * a capacity live here; the plan's layout and limits are the planner's.
 * The kernels are PDL-safe (they wait before touching anything) and launch with programmatic
 * dependent launch when the backend's `pdl` is on.
 * Knows the plan's packed layout (offsets only) and the kernels; nothing of block tables or models.
 */
import { invariant } from "../../../util/index.ts";
import { MAX_CHUNK, MAX_PLAN_ROWS, planLayout } from "../decode-attention-plan.ts";
import type { DecodeAttentionCapacity, DecodeAttentionParams, DeviceBuffer } from "../types.ts";
import { ELEM_BYTES } from "./buffers.ts";
import type { CudaBackend } from "./index.ts";

/** Threads of the partial kernel (DA_THREADS), its key tile and query pass (.cu); the slot list holds MAX_CHUNK (DA_MAX_CHUNK). */
const DA_THREADS = 128;
const DA_WARPS = 4;
const DA_KT = 32;
const DA_QW_MAX = 8;
const DA_QMAX = DA_WARPS * DA_QW_MAX;
const DA_MAX_D = 256;
/** Threads of the combine kernel (loops over the head dim). */
const COMBINE_THREADS = 128;
/**
 * Most blocks of the partial kernel: it is grid-stride over units, so a large item capacity costs
 * no more than this many (mostly exiting) blocks per launch.
 */
const MAX_GRID = 4096;

/** Float elements of the scratch: partial accumulators [P, H, D] then (max, sum) [P, H, 2]. */
export function decodeAttentionScratchLength(cap: DecodeAttentionCapacity, heads: number, headDim: number): number {
  return Math.max(1, cap.partials * heads * (headDim + 2));
}

/** Dynamic shared memory of the partial kernel (layout in the .cu file): K and V tiles, queries, scores, slot list. */
function smemBytes(D: number, elem: number): number {
  const DP = D + 4;
  return (2 * DA_KT * DP + DA_QMAX * DP + DA_WARPS * DA_QW_MAX * DA_KT) * elem + (MAX_CHUNK + 64) * 4;
}

/**
 * out [B, H * D] and lse [B, H] of decode rows against paged keys: q [B, H, D] (f32 or f64, like
 * k, v [S, Hkv, D], out, lse and scratch); plan i32 [planLayout(B, capacity).length] as packPlan
 * wrote it (its completion counters at 0, as packPlan leaves them; every launch leaves them 0
 * again, so a graph replays with or without a new upload); scratch
 * [decodeAttentionScratchLength(capacity, H, D)]. Queues one kernel (one row) or two and touches
 * no host memory, so it can be captured in a graph and replayed with new plan contents (within
 * the capacity). A row without partials (padding) gets zeros and lse -inf. Deterministic: each
 * row's partials are merged in the plan's order whichever block finishes last.
 */
export function decodeAttention(
  be: CudaBackend,
  q: DeviceBuffer,
  k: DeviceBuffer,
  v: DeviceBuffer,
  plan: DeviceBuffer,
  scratch: DeviceBuffer,
  out: DeviceBuffer,
  lse: DeviceBuffer,
  p: DecodeAttentionParams,
): void {
  const op = "decodeAttention";
  const { rows: B, keys: S, heads: H, kvHeads: Hkv, headDim: D, capacity: cap } = p;
  const chk = be.checks;
  chk.dims(op, {
    rows: B,
    keys: S,
    heads: H,
    kvHeads: Hkv,
    headDim: D,
    "capacity.items": cap.items,
    "capacity.ranges": cap.ranges,
    "capacity.partials": cap.partials,
  });
  invariant(B >= 1 && B <= MAX_PLAN_ROWS, () => `${op}: rows = ${B}, expected 1..${MAX_PLAN_ROWS} (one bit of the plan's row mask each)`);
  invariant(
    Hkv >= 1 && H >= Hkv && H % Hkv === 0,
    () => `${op}: ${H} query heads cannot be grouped over ${Hkv} kv heads (H % Hkv must be 0)`,
  );
  invariant(
    D >= 4 && D % 4 === 0 && D <= DA_MAX_D,
    () => `${op}: head dim ${D} must be a multiple of 4 in [4, ${DA_MAX_D}] (4-wide loads)`,
  );
  invariant(Number.isFinite(p.scale), () => `${op}: scale ${p.scale} is not finite`);
  const P = chk.ints(op, "plan", plan, planLayout(B, cap).length);
  const [[Q, K, V, O, L, SC], dt] = chk.floats(op, [
    ["q", q, B * H * D],
    ["k", k, S * Hkv * D],
    ["v", v, S * Hkv * D],
    ["out", out, B * H * D],
    ["lse", lse, B * H],
    ["scratch", scratch, decodeAttentionScratchLength(cap, H, D)],
  ]);
  invariant(
    K.ptr % 16 === 0 && V.ptr % 16 === 0,
    () => `${op}: k and v must be 16-byte aligned (4-wide loads); got a view at an odd offset`,
  );
  const elem = ELEM_BYTES[dt];
  const pml = SC.ptr + cap.partials * H * D * elem;
  const sizes = [{ i32: B }, { i32: cap.items }, { i32: cap.ranges }, { i32: cap.partials }] as const;
  const hd = D <= 64 ? 64 : D <= 128 ? 128 : 256;
  const grid = Math.min(cap.items * Hkv, MAX_GRID);
  // One row: the last block of the row merges (one launch). Several rows: the combine kernel
  // spreads B x H merges over the device. Measured on an H200 (dev/LOG.md, 4B shape, us per layer,
  // separate vs fused): 1 row x 4,096 keys 45.5 / 38.0, x 16,384 107.8 / 97.1; 8 siblings (600
  // shared + 512 own) 62.6 / 104.8, 16 siblings 90.9 / 180.8.
  const fused = B === 1;
  be.launchKernel(
    "decode-attention.cu",
    `decode_attention_partial_d${hd}`,
    dt,
    grid,
    DA_THREADS,
    [
      { ptr: Q.ptr },
      { ptr: K.ptr },
      { ptr: V.ptr },
      { ptr: P.ptr },
      { ptr: SC.ptr },
      { ptr: pml },
      { ptr: O.ptr },
      { ptr: L.ptr },
      ...sizes,
      { i32: S },
      { i32: H },
      { i32: Hkv },
      { i32: D },
      dt === "f32" ? { f32: p.scale } : { f64: p.scale },
      { i32: fused ? 1 : 0 },
    ],
    smemBytes(D, elem),
    { pdl: true },
  );
  if (!fused) {
    be.launchKernel(
      "decode-attention.cu",
      "decode_attention_combine",
      dt,
      [B, H, 1],
      COMBINE_THREADS,
      [{ ptr: P.ptr }, { ptr: SC.ptr }, { ptr: pml }, { ptr: O.ptr }, { ptr: L.ptr }, ...sizes, { i32: H }, { i32: D }],
      0,
      { pdl: true },
    );
  }
  be.countCall(op);
}
