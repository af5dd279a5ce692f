/**
 * Host side of kernels/sample.cu: samples B rows of a logits buffer in at most two launches
 * (sample_part over a (G chunks x B rows) grid; sample_finish, one block per row, only when some
 * row samples) and reads back each row's id, log-prob and path in one copy. The packed input
 * (records of SAMPLE_REC f64 parameters, then i32 row indices and CSR id lists; the layout is the
 * "deviceSampling" capability's, types.ts) is made by the engine's DeviceSampler
 * (engine/sampling/device-sampler.ts); this file checks its sizes and the row
 * indices, uploads it and owns the per-backend scratch (partials, candidates, row counters, the
 * fallback's [B, V] f64 rows, the packed words, the output words), allocated once and grown.
 * Knows the packed layout's offsets, the kernels' grid and constants; nothing of sequences, Rngs
 * or processors.
 */
import { invariant } from "../../../util/index.ts";
import { SAMPLE_MODE, SAMPLE_REC } from "../types.ts";
import type { DeviceBuffer } from "../types.ts";
import type { CudaBuffer } from "./buffers.ts";
import type { CudaBackend } from "./index.ts";

/** Threads per block of sample_finish (SB in sample.cu) and of sample_part (PT). */
const SB = 1024;
const PT = 256;
/** Ids per sample_part block (CH), candidates a row can hold (CAPF), doubles per partial (PREC). */
const CH = 2048;
const CAPF = 4096;
const PREC = 8;
/**
 * Dynamic shared memory of sample_finish (FINISH_SMEM in sample.cu, which static_asserts that its
 * union of the fast paths' lists, 160 KiB, and the fallback's histograms, ~97 KiB, fits).
 */
const SAMPLE_FINISH_SMEM = 164 * 1024;

/** How each row was finished (PATH_* in sample.cu), counted as "sampleRows.path.<name>". */
export const SAMPLE_PATHS = ["part", "full", "cand", "slow", "noscore"] as const;

/** Scratch kept per backend, grown to the largest call seen (freed with the backend's memory). */
interface Scratch {
  part: CudaBuffer | null; // f64 [B, G, PREC]
  ckey: CudaBuffer | null; // u64 keys as f64 words [B, CAPF]
  cid: CudaBuffer | null; // i32 [B, CAPF]
  counter: CudaBuffer | null; // i32 [B], zero between calls (the last block of a row resets it)
  scores: CudaBuffer | null; // f64 [B, V]: the fallback's rows
  packed: CudaBuffer | null; // i32 words
  out: CudaBuffer | null; // i32 words: f64 logprob [B], then i32 id [B], then i32 path [B]
}
const scratchOf = new WeakMap<CudaBackend, Scratch>();

/** GPU time of the two kernels summed over profiled calls (sampleProfile), with CUDA events. */
interface Profile {
  events: [number, number, number];
  partMs: number;
  finishMs: number;
  calls: number;
}
const profileOf = new WeakMap<CudaBackend, Profile>();

/**
 * Starts (on) or stops timing sampleRows' kernels on this backend; returns the microseconds per
 * call so far of sample_part and of sample_finish (0 when no row sampled). For benchmarks: each
 * profiled call records three events and reads their times after its read-back.
 */
export function sampleProfile(be: CudaBackend, on: boolean): { partUs: number; finishUs: number; calls: number } {
  let p = profileOf.get(be);
  const out = p
    ? { partUs: (p.partMs * 1000) / Math.max(1, p.calls), finishUs: (p.finishMs * 1000) / Math.max(1, p.calls), calls: p.calls }
    : { partUs: 0, finishUs: 0, calls: 0 };
  if (on && !p) {
    const d = be.driver;
    p = { events: [d.eventCreate(), d.eventCreate(), d.eventCreate()], partMs: 0, finishMs: 0, calls: 0 };
    profileOf.set(be, p);
  } else if (!on && p) {
    for (const e of p.events) be.driver.eventDestroy(e);
    profileOf.delete(be);
  }
  return out;
}

function grow(be: CudaBackend, cur: CudaBuffer | null, dtype: "f64" | "i32", n: number): CudaBuffer {
  if (cur && cur.length >= n) return cur;
  if (cur) be.free(cur);
  // Grow by half again, so a batch that creeps up one row at a time reallocates rarely.
  return be.alloc(dtype, Math.max(n, Math.ceil((cur?.length ?? 0) * 1.5))) as CudaBuffer;
}

/** Words of the packed input for B rows with `ids` penalty + ban ids in all (its exact size). */
export function packedWords(batch: number, ids: number): number {
  return 2 * SAMPLE_REC * batch + batch + 2 * (batch + 1) + ids;
}

/**
 * The split of a row: G blocks of CH ids, and C candidates per block (CAPF / G: the finishing
 * block's lists hold every block's; 0 when too few to be worth it, which sends filtered rows to
 * the fallback).
 */
export function sampleGrid(vocab: number): { blocks: number; candidates: number } {
  const blocks = Math.ceil(vocab / CH);
  const c = Math.min(CH, Math.floor(CAPF / blocks));
  return { blocks, candidates: c >= 8 ? c : 0 };
}

/**
 * Samples `batch` rows of logits ([rowsTotal, vocab], f32 or f64) as packed describes; returns
 * ids [B] and log-probs [B] (float64, log_softmax of the raw row at the id). Synchronizes (the
 * read-back). Counted as "sampleRows", and each row's path as "sampleRows.path.<path>".
 */
export function sampleRows(
  be: CudaBackend,
  logits: DeviceBuffer,
  packed: Int32Array,
  p: { batch: number; vocab: number },
): { ids: Int32Array; logprobs: Float64Array } {
  const op = "sampleRows";
  const { batch: B, vocab: V } = p;
  be.checks.dims(op, { batch: B, vocab: V });
  invariant(V >= 1, () => `${op}: vocab must be >= 1`);
  const { blocks: G, candidates: C } = sampleGrid(V);
  // sample_finish combines one partial per thread: 1024 blocks of 2048 ids.
  invariant(G <= SB, () => `${op}: vocab ${V} exceeds the ${SB * CH} ids one row can have`);
  const [[L], dt] = be.checks.floats(op, [["logits", logits, V]]);
  const rowsTotal = Math.floor(L.length / V);
  if (B === 0) return { ids: new Int32Array(0), logprobs: new Float64Array(0) };
  // Layout checks: the kernel trusts offsets, so a bad pack must fail here, not read stray memory.
  const base = 2 * SAMPLE_REC * B;
  invariant(
    packed.length >= packedWords(B, 0),
    () => `${op}: packed has ${packed.length} words, ${B} rows need at least ${packedWords(B, 0)}`,
  );
  invariant(packed.byteOffset % 8 === 0, () => `${op}: packed must start on an 8-byte boundary (its records are float64)`);
  const penOff = base + B;
  const banOff = penOff + B + 1;
  const idsAt = banOff + B + 1;
  const nIds = packed.length - idsAt;
  for (let b = 0; b < B; b++) {
    const row = packed[base + b]!;
    invariant(row >= 0 && row < rowsTotal, () => `${op}: row ${b} reads logits row ${row}, the buffer holds ${rowsTotal} rows of ${V}`);
  }
  for (const off of [penOff, banOff]) {
    for (let b = 0; b < B; b++) {
      invariant(packed[off + b]! <= packed[off + b + 1]!, () => `${op}: id offsets decrease at row ${b}`);
    }
    invariant(
      packed[off]! >= 0 && packed[off + B]! <= nIds,
      () => `${op}: id offsets [${packed[off]}, ${packed[off + B]}] exceed the ${nIds} ids packed`,
    );
  }
  const recs = new Float64Array(packed.buffer, packed.byteOffset, SAMPLE_REC * B);
  let sampled = false;
  for (let b = 0; b < B; b++) sampled ||= recs[b * SAMPLE_REC + 6] === SAMPLE_MODE.sampled;

  let s = scratchOf.get(be);
  if (!s) scratchOf.set(be, (s = { part: null, ckey: null, cid: null, counter: null, scores: null, packed: null, out: null }));
  s.part = grow(be, s.part, "f64", B * G * PREC);
  s.ckey = grow(be, s.ckey, "f64", B * CAPF);
  s.cid = grow(be, s.cid, "i32", B * CAPF);
  const counter = grow(be, s.counter, "i32", B);
  if (counter !== s.counter) be.fill(counter, 0);
  s.counter = counter;
  if (sampled) s.scores = grow(be, s.scores, "f64", B * V);
  s.packed = grow(be, s.packed, "i32", packed.length);
  s.out = grow(be, s.out, "i32", 4 * B);
  be.write(s.packed, packed);
  const prof = profileOf.get(be);
  if (prof) be.driver.eventRecord(prof.events[0], be.streamHandle);
  be.launchKernel("sample.cu", "sample_part", dt, [G, B, 1], PT, [
    { ptr: L.ptr },
    { ptr: s.packed.ptr },
    { ptr: s.part.ptr },
    { ptr: s.ckey.ptr },
    { ptr: s.cid.ptr },
    { ptr: s.counter.ptr },
    { ptr: s.out.ptr },
    { i64: V },
    { i32: B },
    { i32: C },
  ]);
  if (prof) be.driver.eventRecord(prof.events[1], be.streamHandle);
  if (sampled) {
    be.launchKernel(
      "sample.cu",
      "sample_finish",
      dt,
      B,
      SB,
      [
        { ptr: L.ptr },
        { ptr: s.packed.ptr },
        { ptr: s.part.ptr },
        { ptr: s.ckey.ptr },
        { ptr: s.cid.ptr },
        { ptr: s.scores!.ptr },
        { ptr: s.out.ptr },
        { i64: V },
        { i32: B },
        { i32: C },
      ],
      SAMPLE_FINISH_SMEM,
    );
  }
  if (prof) be.driver.eventRecord(prof.events[2], be.streamHandle);
  be.countCall(op);
  const words = be.read(s.out, 0, 4 * B) as Int32Array;
  if (prof) {
    prof.partMs += be.driver.eventElapsedMs(prof.events[0], prof.events[1]);
    prof.finishMs += sampled ? be.driver.eventElapsedMs(prof.events[1], prof.events[2]) : 0;
    prof.calls++;
  }
  for (let b = 0; b < B; b++) be.countCall(`${op}.path.${SAMPLE_PATHS[words[3 * B + b]!] ?? "unknown"}`);
  return { ids: words.slice(2 * B, 3 * B), logprobs: new Float64Array(words.buffer, words.byteOffset, B).slice() };
}
