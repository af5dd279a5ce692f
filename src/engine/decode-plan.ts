/**
 * Host-side shape logic of the graph decode path: which step plans it takes (decode-only: one new
 * token per item, at most the largest captured batch), the batch bucket a plan is padded to, and
 * the packing of a step's per-item inputs into the fixed i32 input block a captured graph reads
 * (ids, positions, write slots, and each row's visible keys as CSR ranges of global slot ids).
 * Pure arrays and numbers: no backend, no model, so CI tests it without a GPU.
 *
 * Input block layout for bucket B with range capacity R (all i32, one device buffer):
 *   [0, B)            ids          (padding rows: 0)
 *   [B, 2B)           positions    (padding rows: 0)
 *   [2B, 3B)          writeSlots   (padding rows: -1 = write nothing)
 *   [3B, 4B + 1)      offsets      CSR into starts/ends, per row (padding rows: empty)
 *   [4B + 1, +R)      starts       first slot of each range (inclusive)
 *   [4B + 1 + R, +R)  ends         last slot + 1
 */
import { invariant } from "../util/index.ts";
import type { PlanItem } from "./types.ts";

/** Batch sizes with a captured graph; a plan of n items runs in the smallest bucket >= n. */
export const DECODE_BUCKETS = [1, 2, 4, 8, 16] as const;

/** The bucket for n rows, or null when n is larger than every bucket. */
export function bucketFor(n: number, buckets: readonly number[] = DECODE_BUCKETS): number | null {
  for (const b of buckets) if (b >= n) return b;
  return null;
}

/** A decode-only plan: every item computes exactly one new token (what the graphs are shaped for). */
export function isDecodeOnly(items: readonly Pick<PlanItem, "ids">[]): boolean {
  return items.length > 0 && items.every((it) => it.ids.length === 1);
}

/** Offsets of the fields inside the input block of bucket B with range capacity R. */
export interface InputLayout {
  batch: number;
  capacity: number;
  ids: number;
  positions: number;
  writeSlots: number;
  offsets: number;
  starts: number;
  ends: number;
  /** Total i32 elements. */
  length: number;
}

export function inputLayout(batch: number, capacity: number): InputLayout {
  const B = batch;
  return {
    batch,
    capacity,
    ids: 0,
    positions: B,
    writeSlots: 2 * B,
    offsets: 3 * B,
    starts: 4 * B + 1,
    ends: 4 * B + 1 + capacity,
    length: 4 * B + 1 + 2 * capacity,
  };
}

/**
 * The key slot ranges one decode row attends over: its visible table entries as global slot
 * ranges [block * blockSize + start, block * blockSize + end) plus its own new slot, sorted by
 * slot (the layout contract wants sorted, disjoint segments) and with ranges that touch merged
 * (fewer ranges = fewer segment walks in the kernel). Attention is a set operation over keys,
 * so only the summation order depends on this order.
 */
export function rowRanges(item: Pick<PlanItem, "visible" | "writeSlots">, blockSize: number): Array<[number, number]> {
  const v = item.visible;
  invariant(item.writeSlots.length === 1, () => `rowRanges: a decode row writes 1 slot, got ${item.writeSlots.length}`);
  const raw: Array<[number, number]> = [];
  for (let e = 0; e < v.blocks.length; e++) {
    if (v.ends[e]! > v.starts[e]!) raw.push([v.blocks[e]! * blockSize + v.starts[e]!, v.blocks[e]! * blockSize + v.ends[e]!]);
  }
  const w = item.writeSlots[0]!;
  raw.push([w, w + 1]);
  raw.sort((x, y) => x[0] - y[0]);
  const out: Array<[number, number]> = [];
  for (const [s, e] of raw) {
    const last = out[out.length - 1];
    invariant(!last || last[1] <= s, () => `rowRanges: slot ranges overlap at ${s} (a slot seen twice)`);
    if (last && last[1] === s) last[1] = e;
    else out.push([s, e]);
  }
  return out;
}

/** Ranges a plan needs in all (to grow a bucket's capacity before packing). */
export function rangesNeeded(items: readonly Pick<PlanItem, "visible" | "writeSlots">[], blockSize: number): number {
  let n = 0;
  for (const it of items) n += rowRanges(it, blockSize).length;
  return n;
}

/**
 * Packs a decode-only plan into `out` (length >= layout.length) for bucket layout.batch >=
 * items.length; rows past the items are padding that writes no slot and sees no key. `ranges`:
 * the items' rowRanges when the caller has them already (the graph decoder computes them once per
 * step for the capacity check, the inputs and the attention plan).
 */
export function packInputs(
  items: readonly Pick<PlanItem, "ids" | "positions" | "visible" | "writeSlots">[],
  blockSize: number,
  lay: InputLayout,
  out: Int32Array,
  ranges?: ReadonlyArray<ReadonlyArray<readonly [number, number]>>,
): void {
  const B = lay.batch;
  invariant(items.length <= B, () => `packInputs: ${items.length} items for a bucket of ${B}`);
  invariant(out.length >= lay.length, () => `packInputs: block of ${out.length}, layout needs ${lay.length}`);
  let r = 0;
  out[lay.offsets] = 0;
  for (let i = 0; i < B; i++) {
    const it = items[i];
    if (it) {
      invariant(it.ids.length === 1, () => `packInputs: item ${i} has ${it.ids.length} new tokens (decode-only plans have 1)`);
      out[lay.ids + i] = it.ids[0]!;
      out[lay.positions + i] = it.positions[0]!;
      out[lay.writeSlots + i] = it.writeSlots[0]!;
      for (const [s, e] of ranges?.[i] ?? rowRanges(it, blockSize)) {
        invariant(r < lay.capacity, () => `packInputs: more than ${lay.capacity} ranges (grow the capacity first)`);
        out[lay.starts + r] = s;
        out[lay.ends + r] = e;
        r++;
      }
    } else {
      out[lay.ids + i] = 0;
      out[lay.positions + i] = 0;
      out[lay.writeSlots + i] = -1;
    }
    out[lay.offsets + i + 1] = r;
  }
}
