/**
 * Sampling on the device: the host sampler's processors (sampler.ts) run by a backend op over rows
 * of a logits buffer that stays on the device, so a step reads back B ids and log-probs instead of
 * B x V floats. This file draws each stream's uniform exactly when sampleToken would (temperature
 * > 0 and not forced: one draw per token), packs every row's parameters, u, penalty scope and
 * banned ids into one Int32Array (the layout of the "deviceSampling" capability, documented at
 * SAMPLE_REC in tensor/backend/types.ts and read by the CUDA kernel sample.cu) and calls the
 * backend's `sampleRows`, found through the capability's guard; it never imports a backend.
 * No module state: the id dedupe's scratch belongs to each DeviceSampler (or the caller).
 */
import { SAMPLE_MODE, SAMPLE_REC, hasDeviceSampling } from "../../tensor/index.ts";
import type { Backend, DeviceBuffer, DeviceSampling } from "../../tensor/index.ts";
import { invariant } from "../../util/index.ts";
import type { SampleInput } from "./sampler.ts";

export type Sampled = { id: number; logprob: number };

/**
 * The distinct ids of a row, packed in first-occurrence order: seen[id] === stamp marks the ids
 * of the current row. A Set per row (the host sampler's dedupe) cost ~20 us for 1000 ids; this is
 * one typed-array pass over a table grown to the largest id seen, kept between calls by its owner.
 */
export class IdDedupe {
  private seen = new Int32Array(0);
  private stamp = 0;

  /** Writes the distinct ids of scope at words[at, ...) (first occurrence order); returns the end. */
  pack(words: Int32Array, at: number, scope: readonly number[]): number {
    if (++this.stamp === 0x7fffffff) {
      this.seen.fill(0);
      this.stamp = 1;
    }
    const stamp = this.stamp;
    let seen = this.seen;
    for (let j = 0; j < scope.length; j++) {
      const id = scope[j]!;
      // Not an id of any vocabulary (< 2^24 > the kernel's 2^21 limit): the host's typed-array write
      // to it is a no-op, so nothing is packed (an Int32Array would truncate 1.5 to id 1).
      if (id >>> 0 !== id || id >= 0x1000000) continue;
      if (id >= seen.length) {
        const grown = new Int32Array(Math.max(id + 1, 2 * seen.length, 1024));
        grown.set(seen);
        seen = this.seen = grown;
      }
      if (seen[id] === stamp) continue;
      seen[id] = stamp;
      words[at++] = id;
    }
    return at;
  }
}

/**
 * Packs the rows that sample: `rows[i]` is the logits row of `inputs[i]`. Draws u from each
 * sampled row's Rng (and only those), so the streams advance exactly as under sampleToken.
 * `dedupe`: the penalty scopes' dedupe table (a DeviceSampler passes its own; a fresh one by default).
 */
export function packSampleRows(rows: readonly number[], inputs: readonly SampleInput[], dedupe: IdDedupe = new IdDedupe()): Int32Array {
  const B = inputs.length;
  invariant(rows.length === B, () => `packSampleRows: ${rows.length} rows for ${B} inputs`);
  // The host skips the penalty at 1 and dedupes the scope; a forced row's choice and log-prob
  // ignore it, so it is not packed either. Room for every id first; the words end where they do.
  const modes: number[] = [];
  let room = 0;
  for (const s of inputs) {
    const c = s.constraint;
    const mode = c.kind === "force" ? SAMPLE_MODE.forced : s.params.temperature === 0 ? SAMPLE_MODE.greedy : SAMPLE_MODE.sampled;
    modes.push(mode);
    if (mode !== SAMPLE_MODE.forced && s.penalty !== 1) room += s.penaltyScope.length;
    if (c.kind === "ban") room += c.ids.size;
  }
  const words = new Int32Array(2 * SAMPLE_REC * B + B + 2 * (B + 1) + room);
  const recs = new Float64Array(words.buffer, 0, SAMPLE_REC * B);
  let at = 2 * SAMPLE_REC * B;
  for (let b = 0; b < B; b++) {
    const s = inputs[b]!;
    const c = s.constraint;
    const mode = modes[b]!;
    const r = b * SAMPLE_REC;
    recs[r] = s.params.temperature;
    recs[r + 1] = s.params.topK;
    recs[r + 2] = s.params.topP;
    recs[r + 3] = s.params.minP;
    recs[r + 4] = s.penalty;
    recs[r + 5] = mode === SAMPLE_MODE.sampled ? s.rng.next() : 0;
    recs[r + 6] = mode;
    recs[r + 7] = c.kind === "force" ? c.id : -1;
    words[at++] = rows[b]!;
  }
  const penOff = at;
  const banOff = penOff + B + 1;
  const idsAt = banOff + B + 1;
  let id = idsAt;
  for (let b = 0; b < B; b++) {
    const s = inputs[b]!;
    words[penOff + b] = id - idsAt;
    if (modes[b] !== SAMPLE_MODE.forced && s.penalty !== 1) id = dedupe.pack(words, id, s.penaltyScope);
  }
  words[penOff + B] = id - idsAt;
  for (let b = 0; b < B; b++) {
    const c = inputs[b]!.constraint;
    words[banOff + b] = id - idsAt;
    if (c.kind === "ban") for (const x of c.ids) words[id++] = x;
  }
  words[banOff + B] = id - idsAt;
  return id === words.length ? words : words.subarray(0, id);
}

export class DeviceSampler {
  private readonly op: DeviceSampling;
  /** The penalty scopes' dedupe table, kept between calls. */
  private readonly dedupe = new IdDedupe();
  /** Calls and rows sampled (statistics). */
  calls = 0;
  rows = 0;

  constructor(op: DeviceSampling) {
    this.op = op;
  }

  /**
   * Samples every item that asks for a token from row `rowOf[i]` of `logits` ([rows, vocab]);
   * returns one entry per item, null where the item does not sample (like runner.sampleItems).
   */
  sample(logits: DeviceBuffer, vocab: number, rowOf: readonly number[], items: ReadonlyArray<SampleInput | null>): Array<Sampled | null> {
    invariant(rowOf.length === items.length, () => `DeviceSampler: ${rowOf.length} row indices for ${items.length} items`);
    const rows: number[] = [];
    const inputs: SampleInput[] = [];
    items.forEach((s, i) => {
      if (s) rows.push(rowOf[i]!), inputs.push(s);
    });
    const out: Array<Sampled | null> = items.map(() => null);
    if (inputs.length === 0) return out;
    const { ids, logprobs } = this.op.sampleRows(logits, packSampleRows(rows, inputs, this.dedupe), { batch: inputs.length, vocab });
    this.calls++;
    this.rows += inputs.length;
    let j = 0;
    items.forEach((s, i) => {
      if (s) {
        out[i] = { id: ids[j]!, logprob: logprobs[j]! };
        j++;
      }
    });
    return out;
  }
}

/** A DeviceSampler over the backend's sampleRows, or null when the backend has no "deviceSampling" capability. */
export function deviceSamplerFor(backend: Backend): DeviceSampler | null {
  return hasDeviceSampling(backend) ? new DeviceSampler(backend) : null;
}
