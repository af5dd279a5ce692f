/**
 * Sampling from one row of logits, built from small processors applied in order (transformers.js
 * `LogitsProcessorList` style): repetition penalty over a scope the caller passes in (a branch's
 * own tokens, 1.02 in NPR), structure constraints (a forced id, or banned ids), temperature,
 * top-k, top-p, min-p, then a draw from the caller's seeded Rng. Temperature 0 is greedy.
 * The reported log-prob is the model's: log_softmax of the raw logits at the chosen id, before any
 * processor, so the trainer's masked forward must reproduce it exactly.
 * Knows arrays of numbers and an Rng; nothing about models, sequences or tags.
 */
import type { Rng } from "../../util/index.ts";
import { UsageError } from "../../util/index.ts";

export interface SamplingParams {
  /** 0 = greedy (argmax, lowest id on ties). */
  temperature: number;
  /** Keep the k most likely ids; 0 = off. */
  topK: number;
  /** Keep the smallest set of ids whose probability reaches p; 1 = off. */
  topP: number;
  /** Drop ids whose probability is below minP x the largest; 0 = off. */
  minP: number;
  /** Penalty on already generated ids outside branches (1 = off). */
  repetitionPenalty: number;
  /** Penalty on the ids a branch generated itself, scoped to that branch (NPR: 1.02). */
  branchRepetitionPenalty: number;
  /** Request seed: the root, each branch and each join draw from Rngs derived from it. */
  seed: number;
}

export const DEFAULT_SAMPLING: SamplingParams = {
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  branchRepetitionPenalty: 1.02,
  seed: 0,
};

/** What the structure policy allows at this token: anything, one forced id, or all but some ids. */
export type Constraint = { kind: "free" } | { kind: "force"; id: number } | { kind: "ban"; ids: ReadonlySet<number> };

/** Rejects sampling parameters a user cannot mean (a boundary: CLI flags, requests). */
export function checkSamplingParams(p: SamplingParams): void {
  const bad = (param: string, why: string) => {
    throw new UsageError(`sampling parameter ${param} ${why}`, { code: "bad_sampling", param });
  };
  if (!(p.temperature >= 0)) bad("temperature", `must be >= 0, got ${p.temperature}`);
  if (!(Number.isInteger(p.topK) && p.topK >= 0)) bad("top_k", `must be an integer >= 0, got ${p.topK}`);
  if (!(p.topP > 0 && p.topP <= 1)) bad("top_p", `must be in (0, 1], got ${p.topP}`);
  if (!(p.minP >= 0 && p.minP < 1)) bad("min_p", `must be in [0, 1), got ${p.minP}`);
  if (!(p.repetitionPenalty > 0)) bad("repetition_penalty", `must be > 0, got ${p.repetitionPenalty}`);
  if (!(p.branchRepetitionPenalty > 0)) bad("branch_repetition_penalty", `must be > 0, got ${p.branchRepetitionPenalty}`);
  if (!Number.isSafeInteger(p.seed) || p.seed < 0) bad("seed", `must be a non-negative integer, got ${p.seed}`);
}

/**
 * A seed for one stream of a request: (block, branch) = (-1, 0) for the root, (b, i) for branch i
 * of block b, (b, -1) for block b's join. Independent of batching and of other requests.
 */
export function streamSeed(seed: number, block: number, branch: number): number {
  let h = (seed >>> 0) ^ Math.imul(block + 7, 0x9e3779b1) ^ Math.imul(branch + 13, 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
  return h + Math.floor(seed / 4294967296) * 4294967296;
}

/** log_softmax(logits)[id], computed in float64. */
export function logProbOf(logits: ArrayLike<number>, id: number): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return logits[id]! - max - Math.log(sum);
}

// ---- processors: each rewrites `x` (float64 scores) in place

/** HF's RepetitionPenaltyLogitsProcessor: divide positive scores, multiply negative ones. */
export function applyRepetitionPenalty(x: Float64Array, scope: Iterable<number>, penalty: number): void {
  if (penalty === 1) return;
  for (const id of new Set(scope)) {
    const v = x[id]!;
    x[id] = v > 0 ? v / penalty : v * penalty;
  }
}

export function applyConstraint(x: Float64Array, c: Constraint): void {
  if (c.kind === "force") {
    for (let i = 0; i < x.length; i++) if (i !== c.id) x[i] = -Infinity;
  } else if (c.kind === "ban") {
    for (const id of c.ids) x[id] = -Infinity;
  }
}

/** Keeps the k largest scores (ties at the boundary kept). */
export function applyTopK(x: Float64Array, k: number): void {
  if (k <= 0 || k >= x.length) return;
  const sorted = Float64Array.from(x).sort();
  const kth = sorted[x.length - k]!;
  for (let i = 0; i < x.length; i++) if (x[i]! < kth) x[i] = -Infinity;
}

/** Nucleus and min-p filtering over the softmax of x. */
export function applyTopPMinP(x: Float64Array, topP: number, minP: number): void {
  if (topP >= 1 && minP <= 0) return;
  const p = softmax(x);
  if (minP > 0) {
    let maxP = 0;
    for (const v of p) maxP = Math.max(maxP, v);
    for (let i = 0; i < x.length; i++) if (p[i]! < minP * maxP) x[i] = -Infinity;
  }
  if (topP < 1) {
    // Keep the k most probable ids, k the fewest whose mass reaches topP, ties broken by lower id
    // (the set a sort by (p desc, id asc) keeps). A numeric typed-array sort of the values finds
    // the k-th value; a comparator sort of ids cost ~0.1 ms per token, once per branch per step.
    const sorted = Float64Array.from(p).sort().reverse(); // descending
    let cum = 0;
    let k = 0;
    while (k < sorted.length && cum < topP) cum += sorted[k++]!;
    const t = k > 0 ? sorted[k - 1]! : Infinity;
    let ties = k;
    for (let i = 0; i < p.length; i++) if (p[i]! > t) ties--;
    for (let i = 0; i < p.length; i++) {
      if (p[i]! > t) continue;
      if (p[i]! === t && ties > 0) ties--;
      else x[i] = -Infinity;
    }
  }
}

/** softmax of float64 scores (the processors' and the draw's distribution; -Infinity gives 0). */
export function softmax(x: Float64Array): Float64Array {
  let max = -Infinity;
  for (const v of x) if (v > max) max = v;
  const out = new Float64Array(x.length);
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += out[i] = Math.exp(x[i]! - max);
  for (let i = 0; i < x.length; i++) out[i]! /= sum;
  return out;
}

export interface SampleInput {
  params: SamplingParams;
  rng: Rng;
  /** Ids the repetition penalty applies to, and the penalty for this stream. */
  penaltyScope: readonly number[];
  penalty: number;
  constraint: Constraint;
}

/** The chosen id and the model's log-prob of it (raw logits, see the header). */
export function sampleToken(logits: ArrayLike<number>, s: SampleInput): { id: number; logprob: number } {
  const x = Float64Array.from(logits as ArrayLike<number>);
  applyRepetitionPenalty(x, s.penaltyScope, s.penalty);
  applyConstraint(x, s.constraint);
  let id: number;
  if (s.params.temperature === 0 || s.constraint.kind === "force") {
    id = 0;
    for (let i = 1; i < x.length; i++) if (x[i]! > x[id]!) id = i;
  } else {
    for (let i = 0; i < x.length; i++) x[i]! /= s.params.temperature;
    applyTopK(x, s.params.topK);
    applyTopPMinP(x, s.params.topP, s.params.minP);
    const p = softmax(x);
    // One uniform draw per token, always, so a stream's draws do not depend on the logits.
    const u = s.rng.next();
    let cum = 0;
    id = -1;
    for (let i = 0; i < p.length; i++) {
      if (p[i]! === 0) continue;
      cum += p[i]!;
      id = i;
      if (u < cum) break;
    }
  }
  return { id, logprob: logProbOf(logits, id) };
}
