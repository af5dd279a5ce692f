/**
 * Host planner of the paged decode attention op (the "decodeAttention" capability, types.ts; on
 * CUDA cuda/decode-attention.ts): turns the decode rows' visible key slots (sorted disjoint slot
 * ranges per row) into work items, each a few slot ranges plus the mask of rows that see all of
 * them, so that every key is read once per step for all the rows that see it (siblings' shared
 * prefix once, each branch's own keys once) and one long row is split over many items; then
 * packs the plan into the i32 layout the op reads. It sits beside the op it feeds, below the
 * engine (which plans each decode step with it). Pure arrays and numbers: no backend, no model.
 */
import { invariant } from "../../util/index.ts";
import type { DecodeAttentionCapacity } from "./types.ts";

/** Rows one plan may hold (a row is one bit of an i32 mask). */
export const MAX_PLAN_ROWS = 32;
/** Largest chunk of keys per item (DA_MAX_CHUNK in cuda/kernels/decode-attention.cu: the item's slot list in shared memory). */
export const MAX_CHUNK = 512;
/** An item holds at most this many slot ranges (fragmented block tables split into more items). */
export const MAX_RANGES_PER_ITEM = 16;
/**
 * Completion counters per row at the end of a packed plan (DA_CNT in cuda/kernels/decode-attention.cu): the
 * kernel's block that finishes a row's last partial for kv group g (counter g % 8) merges that
 * row. packPlan writes them 0 and every launch leaves them 0.
 */
export const PLAN_COUNTERS_PER_ROW = 8;

/** One unit of work: these keys, against every row of `mask` (and, on the device, every kv head). */
export interface WorkItem {
  /** Bit r set = row r sees every key of this item. */
  mask: number;
  /** Sorted disjoint slot ranges [start, end). */
  ranges: Array<[number, number]>;
  /** Keys in all (sum of the ranges' lengths), 1..chunk. */
  keys: number;
  /** First partial slot: row r's partial is pbase + (rows of mask below r). */
  pbase: number;
}

export interface AttentionPlan {
  /** Rows of the batch (the bucket; padding rows have no ranges and no partials). */
  rows: number;
  items: WorkItem[];
  /** Per row: the partial slots it merges (one per item whose mask holds the row). */
  rowSlots: number[][];
  /** Partial slots in all (sum over items of the rows in their mask). */
  numPartials: number;
  /** Ranges over all items. */
  numRanges: number;
  /** Keys per item the plan was cut at. */
  chunk: number;
}

/** Sorted, merged slot ranges [start, end) of a set of slots (duplicates allowed): a row's visible keys in the planner's input form. */
export function slotRanges(slots: Iterable<number>): Array<[number, number]> {
  const s = [...new Set(slots)].sort((a, b) => a - b);
  const out: Array<[number, number]> = [];
  for (const x of s) {
    const last = out[out.length - 1];
    if (last && last[1] === x) last[1]++;
    else out.push([x, x + 1]);
  }
  return out;
}

export interface PlanOptions {
  /** Keys per item (<= MAX_CHUNK); default autoChunk of the step's distinct and seen keys. */
  chunk?: number;
}

/** Distinct keys up to which a step is cut into 32-key items (autoChunk). */
const SMALL_STEP_KEYS = 192;

/**
 * Keys per item for a step that reads `distinctKeys` keys while its rows see `seenKeys` in all:
 * enough items to fill the device (about 48 per kv head, so a 4,096-key row becomes ~43 x Hkv
 * blocks) without making items so small that their fixed cost (query load, partial write, combine)
 * dominates; shared keys carry more queries per key, so the chunk shrinks by the sharing factor
 * seen / distinct. Multiple of 32 (the kernel's key tile), within [64, 256] (32 for a small
 * step). Measured on an H200 (bench/decode-attention.ts): the best of {64, 128, 256} for 1 row x
 * {512, 4096, 16384} keys and 8 / 16 siblings over a 600-key prefix. A step of at most SMALL_STEP_KEYS distinct keys is pure
 * latency: one-tile items of 32 keys (1 row x 100 keys: 10.5 us per layer vs 12.3 at 64, 15.9 at
 * 128; at 512 keys 32 loses: 15.4 vs 14.8).
 */
export function autoChunk(distinctKeys: number, seenKeys = distinctKeys): number {
  if (distinctKeys <= SMALL_STEP_KEYS) return 32;
  const share = Math.max(1, seenKeys / Math.max(1, distinctKeys));
  const c = Math.ceil(distinctKeys / 48 / share / 32) * 32;
  return Math.min(256, Math.max(64, c));
}

/**
 * The plan of one step. rows[r] = row r's key slot ranges, sorted, disjoint, non-empty (an empty
 * list is a padding row). Sweeps the range boundaries of all rows: each elementary interval
 * between consecutive boundaries is seen by a fixed set of rows (its mask); intervals are grouped
 * by mask, in slot order, and each group is cut into items of at most `chunk` keys.
 */
export function planAttention(rows: ReadonlyArray<ReadonlyArray<readonly [number, number]>>, opts: PlanOptions = {}): AttentionPlan {
  const B = rows.length;
  invariant(B <= MAX_PLAN_ROWS, () => `planAttention: ${B} rows, at most ${MAX_PLAN_ROWS}`);
  // Boundary events: rows whose range starts / ends at a slot.
  const starts = new Map<number, number>();
  const ends = new Map<number, number>();
  for (let r = 0; r < B; r++) {
    let prev = -Infinity;
    for (const [s, e] of rows[r]) {
      invariant(Number.isInteger(s) && Number.isInteger(e) && s >= 0 && e > s, () => `planAttention: row ${r} has range [${s}, ${e})`);
      invariant(s >= prev, () => `planAttention: row ${r}'s ranges are not sorted and disjoint at ${s}`);
      prev = e;
      starts.set(s, (starts.get(s) ?? 0) | (1 << r));
      ends.set(e, (ends.get(e) ?? 0) | (1 << r));
    }
  }
  const points = [...new Set([...starts.keys(), ...ends.keys()])].sort((a, b) => a - b);
  // Elementary intervals grouped by mask; a Map keeps the groups in order of their first slot.
  const groups = new Map<number, Array<[number, number]>>();
  let mask = 0;
  let distinct = 0;
  let seen = 0;
  for (let i = 0; i < points.length; i++) {
    const x = points[i];
    // A row that ends one range and starts the next at x stays in (clear, then set).
    mask = (mask & ~(ends.get(x) ?? 0)) | (starts.get(x) ?? 0);
    if (mask === 0 || i + 1 === points.length) continue;
    const next = points[i + 1];
    let g = groups.get(mask);
    if (!g) groups.set(mask, (g = []));
    const last = g[g.length - 1];
    if (last && last[1] === x) last[1] = next;
    else g.push([x, next]);
    distinct += next - x;
    seen += (next - x) * popcount(mask);
  }
  invariant(mask === 0, "planAttention: a range is still open after the last boundary");
  const chunk = opts.chunk ?? autoChunk(distinct, seen);
  invariant(Number.isInteger(chunk) && chunk >= 1 && chunk <= MAX_CHUNK, () => `planAttention: chunk ${chunk} outside [1, ${MAX_CHUNK}]`);

  const items: WorkItem[] = [];
  let numRanges = 0;
  for (const [m, ivs] of groups) {
    let cur: WorkItem | null = null;
    for (const iv of ivs) {
      let s = iv[0];
      const e = iv[1];
      while (s < e) {
        // A full item (keys or ranges) closes; the next key starts a new one.
        const last: [number, number] | undefined = cur?.ranges[cur.ranges.length - 1];
        if (!cur || cur.keys === chunk || (cur.ranges.length === MAX_RANGES_PER_ITEM && last![1] !== s)) {
          cur = { mask: m, ranges: [], keys: 0, pbase: 0 };
          items.push(cur);
        }
        const take = Math.min(e - s, chunk - cur.keys);
        const tail = cur.ranges[cur.ranges.length - 1];
        if (tail && tail[1] === s) tail[1] = s + take;
        else {
          cur.ranges.push([s, s + take]);
          numRanges++;
        }
        cur.keys += take;
        s += take;
      }
    }
  }
  // Partial slots: items in order, rows of each mask in ascending order.
  const rowSlots: number[][] = Array.from({ length: B }, () => []);
  let p = 0;
  for (const it of items) {
    it.pbase = p;
    for (let r = 0; r < B; r++) if (it.mask & (1 << r)) rowSlots[r].push(p++);
  }
  return { rows: B, items, rowSlots, numPartials: p, numRanges, chunk };
}

function popcount(m: number): number {
  let n = 0;
  for (let x = m >>> 0; x !== 0; x >>>= 1) n += x & 1;
  return n;
}

/** What a packed buffer must hold for this plan. */
export function planCapacityNeeded(plan: AttentionPlan): DecodeAttentionCapacity {
  return { items: plan.items.length, ranges: plan.numRanges, partials: plan.numPartials };
}

/** Whether `cap` holds `need` in every field. */
export function capacityFits(cap: DecodeAttentionCapacity, need: DecodeAttentionCapacity): boolean {
  return cap.items >= need.items && cap.ranges >= need.ranges && cap.partials >= need.partials;
}

/**
 * The capacity to (re)allocate for `need`: `cur` when it fits; otherwise every field that is too
 * small grows to max(2 x current, need + 25%), so a context that grows one chunk at a time
 * recaptures its graph a logarithmic number of times. At least 1 per field.
 */
export function growCapacity(cur: DecodeAttentionCapacity | null, need: DecodeAttentionCapacity): DecodeAttentionCapacity {
  if (cur && capacityFits(cur, need)) return cur;
  const grow = (c: number, n: number) => (c >= n ? c : Math.max(1, 2 * c, Math.ceil(n * 1.25)));
  return {
    items: grow(cur?.items ?? 0, need.items),
    ranges: grow(cur?.ranges ?? 0, need.ranges),
    partials: grow(cur?.partials ?? 0, need.partials),
  };
}

/**
 * Offsets (i32 elements) of the packed plan for B rows and capacity cap; the kernels compute the
 * same offsets from (B, items, ranges, partials) (cuda/kernels/decode-attention.cu header):
 *   [0]                 numItems (the kernels read it; blocks past it exit)
 *   mask[items]         row mask per item
 *   pbase[items]        first partial slot per item
 *   rangeOff[items + 1] CSR of each item's ranges into starts/ends
 *   starts[ranges], ends[ranges]
 *   rowOff[B + 1]       CSR of each row's partial slots into rowSlots
 *   rowSlots[partials]
 *   counters[B * PLAN_COUNTERS_PER_ROW]  written 0; the kernel's own (it counts in and resets)
 */
export interface PlanLayout {
  rows: number;
  capacity: DecodeAttentionCapacity;
  numItems: number;
  mask: number;
  pbase: number;
  rangeOff: number;
  starts: number;
  ends: number;
  rowOff: number;
  rowSlots: number;
  counters: number;
  /** Total i32 elements. */
  length: number;
}

export function planLayout(rows: number, cap: DecodeAttentionCapacity): PlanLayout {
  const I = cap.items;
  const R = cap.ranges;
  const mask = 1;
  const pbase = mask + I;
  const rangeOff = pbase + I;
  const starts = rangeOff + I + 1;
  const ends = starts + R;
  const rowOff = ends + R;
  const rowSlots = rowOff + rows + 1;
  const counters = rowSlots + cap.partials;
  return {
    rows,
    capacity: { ...cap },
    numItems: 0,
    mask,
    pbase,
    rangeOff,
    starts,
    ends,
    rowOff,
    rowSlots,
    counters,
    length: counters + rows * PLAN_COUNTERS_PER_ROW,
  };
}

/** Writes `plan` into `out` (length >= lay.length) at layout `lay` (same rows, capacity that fits), counters 0. */
export function packPlan(plan: AttentionPlan, lay: PlanLayout, out: Int32Array): void {
  invariant(plan.rows === lay.rows, () => `packPlan: plan of ${plan.rows} rows, layout of ${lay.rows}`);
  invariant(
    capacityFits(lay.capacity, planCapacityNeeded(plan)),
    () =>
      `packPlan: plan needs ${JSON.stringify(planCapacityNeeded(plan))}, capacity ${JSON.stringify(lay.capacity)} (grow it and recapture)`,
  );
  invariant(out.length >= lay.length, () => `packPlan: buffer of ${out.length}, layout needs ${lay.length}`);
  out[lay.numItems] = plan.items.length;
  let r = 0;
  out[lay.rangeOff] = 0;
  plan.items.forEach((it, i) => {
    out[lay.mask + i] = it.mask | 0;
    out[lay.pbase + i] = it.pbase;
    for (const [s, e] of it.ranges) {
      out[lay.starts + r] = s;
      out[lay.ends + r] = e;
      r++;
    }
    out[lay.rangeOff + i + 1] = r;
  });
  let p = 0;
  out[lay.rowOff] = 0;
  for (let row = 0; row < plan.rows; row++) {
    for (const slot of plan.rowSlots[row]) out[lay.rowSlots + p++] = slot;
    out[lay.rowOff + row + 1] = p;
  }
  out.fill(0, lay.counters, lay.counters + lay.rows * PLAN_COUNTERS_PER_ROW);
}
