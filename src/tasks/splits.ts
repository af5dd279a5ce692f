/**
 * Train/test splits of the synthetic tasks, kept apart by construction: a deterministic hash of a
 * problem's canonical key (Countdown: sorted numbers + target; logic grid: the solution grid)
 * assigns every possible problem to "train" or "test" once and for all, so no seed can ever draw
 * a test problem for training. The test split is one fixed, seeded list per task and difficulty
 * (TEST_SPLIT_SEED), deduplicated, of which `--n N` takes the first N.
 * Also the seed mixing shared by the generators and the caps on how many examples one call makes.
 * Knows strings and numbers only; nothing about any particular task.
 */
import { Rng } from "../util/index.ts";
import { BoundaryError } from "../util/index.ts";

export type Split = "train" | "test";
export const SPLITS: readonly Split[] = ["train", "test"];

/** Share of all problems that belong to the test split, in 1/1000ths (5%). */
export const TEST_PER_MILLE = 50;

/** The seed of the one fixed test list per task and difficulty; never a training seed's business. */
export const TEST_SPLIT_SEED = 20250611;

/** Most examples one call may generate for the train split (`npr tasks sample --n`). */
export const MAX_TRAIN_EXAMPLES = 1_000_000;
/** Most problems in the fixed test list (its first N are what `--split test --n N` returns). */
export const MAX_TEST_EXAMPLES = 10_000;

/**
 * The task-specific part of the split. A problem is drawn in two stages so the split can be decided
 * before the expensive part: `drawKey` draws what decides the split (Countdown: the whole problem;
 * logic grid: the solution grid, before any clue is searched for), `complete` draws the rest.
 */
export interface SplitSource<P, K = P> {
  drawKey(rng: Rng): K;
  /** The canonical form of a key: keys with equal strings always fall in the same split. */
  canonical(key: K): string;
  complete(key: K, rng: Rng): P;
  /** What makes two problems the same problem (duplicates are dropped from the test list). */
  identity(p: P): string;
}

/** FNV-1a over the UTF-16 code units of `s`, as an unsigned 32-bit integer. */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** The split a problem belongs to, from its canonical form alone. */
export function splitOf(canonical: string): Split {
  // A second mixing round so that near-identical strings ("3 4 5:12", "3 4 5:13") spread evenly.
  const h = fnv1a(`npr-split:${canonical}:${fnv1a(canonical)}`);
  return h % 1000 < TEST_PER_MILLE ? "test" : "train";
}

/**
 * A seed for example `i` of stream `seed`: different (seed, i) pairs give unrelated generators,
 * seeds of any size included (the Rng mixes bits above 2^32).
 */
export function exampleSeed(seed: number, i: number): number {
  const a = fnv1a(`${seed}`);
  const b = Math.imul(i + 1, 0x9e3779b1) >>> 0;
  return ((a ^ b) >>> 0) * 2048 + (i % 2048);
}

/** Redraws allowed per kept example before the difficulty is declared too small for the split. */
const MAX_REDRAWS = 400;

/**
 * Training problem `i` of stream `seed`: drawn from its own Rng, its key redrawn while it hashes
 * to test. A pure function of (seed, i, source), so example i can be made without 0..i-1.
 */
export function trainProblem<P, K>(source: SplitSource<P, K>, seed: number, i: number, what: string): P {
  const rng = new Rng(exampleSeed(seed, i));
  for (let k = 0; k < MAX_REDRAWS; k++) {
    const key = source.drawKey(rng);
    if (splitOf(source.canonical(key)) === "train") return source.complete(key, rng);
  }
  throw new BoundaryError(`${what}: no training problem found in ${MAX_REDRAWS} draws`, {
    code: "split_too_small",
    hint: "the difficulty allows too few distinct problems; widen its ranges",
  });
}

/**
 * The first `n` problems of the fixed test list: drawn from TEST_SPLIT_SEED in order, kept when
 * their key hashes to test and the problem was not kept before. The list for n is a prefix of the
 * list for n + 1, whatever n.
 */
export function testProblems<P, K>(source: SplitSource<P, K>, n: number, what: string): P[] {
  const out: P[] = [];
  const seen = new Set<string>();
  let misses = 0;
  for (let i = 0; out.length < n; i++) {
    const rng = new Rng(exampleSeed(TEST_SPLIT_SEED, i));
    const key = source.drawKey(rng);
    const p = splitOf(source.canonical(key)) === "test" ? source.complete(key, rng) : null;
    if (p !== null && !seen.has(source.identity(p))) {
      seen.add(source.identity(p));
      out.push(p);
      misses = 0;
    } else if (++misses > MAX_REDRAWS * 20) {
      // 5% of keys are test keys; 8,000 misses in a row mean the space is (nearly) used up.
      throw new BoundaryError(`${what}: only ${out.length} distinct test problems found, ${n} asked`, {
        code: "split_too_small",
        hint: "ask for fewer test problems or widen the difficulty's ranges",
      });
    }
  }
  return out;
}
