/**
 * CPU buffers and the argument checks every CpuBackend op runs before touching memory: another
 * backend's buffer, a freed buffer, an f32/f64 mix, a float op on i32, a too-small buffer, a
 * negative or fractional size, or malformed attention segments is an InvariantError naming the op
 * and the argument (a bug in the tensor layer, never user input). Knows the Backend's parameter
 * types and typed arrays; no arithmetic, no counters, no threads.
 */
import { invariant } from "../../../util/index.ts";
import type { AttentionParams, AttentionSegments, DeviceBuffer, DType, FloatArray, RowsParams } from "../types.ts";
import { allocShared } from "./pool.ts";

/** What a freed buffer's `data` becomes, so the memory can be collected. */
export const EMPTY_DATA = new Float32Array(0);

/**
 * A CPU buffer: a typed array of its dtype, exactly `length` elements, over a SharedArrayBuffer
 * when `shared` (so worker threads can read and write it in place) and a plain one otherwise.
 */
export class CpuBuffer implements DeviceBuffer {
  readonly dtype: DType;
  readonly length: number;
  /** The elements (bf16: bit patterns); replaced by an empty array on free so the memory can be collected. */
  data: Float32Array | Float64Array | Int32Array | Uint16Array;
  /** Set by free(); any later use is an InvariantError. */
  freed = false;

  constructor(dtype: DType, length: number, shared = false) {
    this.dtype = dtype;
    this.length = length;
    const bpe = dtype === "f64" ? 8 : dtype === "bf16" ? 2 : 4;
    const mem = shared ? allocShared(length * bpe) : new ArrayBuffer(length * bpe);
    this.data =
      dtype === "f32"
        ? new Float32Array(mem)
        : dtype === "f64"
          ? new Float64Array(mem)
          : dtype === "bf16"
            ? new Uint16Array(mem, 0, length)
            : new Int32Array(mem);
  }
}

/** One float argument of an op: [name, buffer, minimum number of elements]. */
export type FloatArg = readonly [name: string, buf: DeviceBuffer, minLength: number];

export function isCount(n: number): boolean {
  return Number.isInteger(n) && n >= 0;
}

/** The live CpuBuffer behind buf, or an InvariantError naming op and argument. */
export function live(op: string, arg: string, buf: DeviceBuffer): CpuBuffer {
  invariant(buf instanceof CpuBuffer, () => `${op}: ${arg} is not a buffer of the cpu backend`);
  invariant(!buf.freed, () => `${op}: ${arg} was used after free (${buf.dtype}[${buf.length}])`);
  return buf;
}

export function sized(op: string, arg: string, buf: DeviceBuffer, minLength: number): CpuBuffer {
  const b = live(op, arg, buf);
  invariant(b.length >= minLength, () => `${op}: ${arg} has ${b.length} elements, the sizes given need at least ${minLength}`);
  return b;
}

/**
 * Checks float arguments that must share one dtype (f32 or f64) and hold enough elements;
 * returns their arrays in order.
 */
export function floats(op: string, args: readonly FloatArg[]): FloatArray[] {
  // The first argument fixes the dtype, so messages read "b is f64 but a is f32".
  const first = args[0];
  const dtype = live(op, first[0], first[1]).dtype;
  invariant(dtype === "f32" || dtype === "f64", () => `${op}: ${first[0]} is ${dtype}, expected f32 or f64`);
  return args.map(([arg, buf, min]) => {
    const b = sized(op, arg, buf, min);
    invariant(b.dtype === dtype, () => `${op}: ${arg} is ${b.dtype} but ${first[0]} is ${dtype} (float args must share one dtype)`);
    return b.data as FloatArray;
  });
}

export function ints(op: string, arg: string, buf: DeviceBuffer, minLength: number): Int32Array {
  const b = sized(op, arg, buf, minLength);
  invariant(b.dtype === "i32", () => `${op}: ${arg} is ${b.dtype}, expected i32`);
  return b.data as Int32Array;
}

export function dims(op: string, p: Record<string, number>): void {
  for (const [key, n] of Object.entries(p)) {
    invariant(isCount(n), () => `${op}: ${key} = ${n} is not a non-negative integer`);
  }
}

/** Checks [rows, cols] float arguments given as buffer, name pairs. */
export function rows(op: string, p: RowsParams, ...pairs: Array<DeviceBuffer | string>): FloatArray[] {
  dims(op, { rows: p.rows, cols: p.cols });
  const args: FloatArg[] = [];
  for (let i = 0; i < pairs.length; i += 2) {
    args.push([pairs[i + 1] as string, pairs[i] as DeviceBuffer, p.rows * p.cols]);
  }
  return floats(op, args);
}

/**
 * Checks the segment arrays of an attention call: offsets [T+1] non-decreasing from 0, every
 * segment inside [0, S), and each token's segments sorted and disjoint (the GEMM tiles map
 * segments to score columns in one forward walk). Linear in the segments: negligible.
 */
export function segments(op: string, seg: AttentionSegments, T: number, S: number): [Int32Array, Int32Array, Int32Array] {
  const off = ints(op, "seg.offsets", seg.offsets, T + 1);
  invariant(off[0] === 0, () => `${op}: seg.offsets[0] = ${off[0]}, expected 0`);
  for (let t = 0; t < T; t++) {
    invariant(off[t + 1] >= off[t], () => `${op}: seg.offsets decreases at token ${t}`);
  }
  const numSeg = off[T];
  const st = ints(op, "seg.starts", seg.starts, numSeg);
  const en = ints(op, "seg.ends", seg.ends, numSeg);
  for (let s = 0; s < numSeg; s++) {
    invariant(st[s] >= 0 && st[s] <= en[s] && en[s] <= S, () => `${op}: segment ${s} = [${st[s]}, ${en[s]}) is not inside [0, ${S}) keys`);
  }
  for (let t = 0; t < T; t++) {
    for (let s = off[t] + 1; s < off[t + 1]; s++) {
      invariant(st[s] >= en[s - 1], () => `${op}: token ${t}'s segments ${s - 1} and ${s} are not sorted and disjoint`);
    }
  }
  return [off, st, en];
}

export function attentionDims(op: string, p: AttentionParams): void {
  const { tokens, keys, heads, kvHeads, headDim } = p;
  dims(op, { tokens, keys, heads, kvHeads, headDim });
  invariant(kvHeads >= 1 && heads >= kvHeads, () => `${op}: ${heads} query heads cannot share ${kvHeads} kv heads`);
}
