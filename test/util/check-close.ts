/**
 * checkClose: elementwise comparison of a computed array against a reference, in the style of
 * llm.c's check_tensor. An element passes when |actual - expected| <= atol + rtol * |expected|
 * (equal infinities pass, NaN never does). A failure throws an AssertionError that names the
 * comparison and gives the max and mean absolute difference and the first failing element.
 * diffStats: the max and mean |a - b| alone, for tests that print them beside their own bound.
 * Test helper only; it knows nothing about backends or tensors.
 */
import { AssertionError } from "node:assert";

export interface Tolerance {
  atol: number;
  rtol: number;
}

export interface CloseStats {
  /** Largest |actual - expected| over the finite pairs. */
  maxAbs: number;
  /** Mean |actual - expected| over the finite pairs. */
  meanAbs: number;
  /** Number of elements compared. */
  n: number;
}

/** One-line summary of the stats, for t.diagnostic() or a log line. */
export function formatStats(name: string, s: CloseStats): string {
  return `${name}: n=${s.n} max abs diff ${s.maxAbs.toExponential(2)}, mean ${s.meanAbs.toExponential(2)}`;
}

export function checkClose(name: string, actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance): CloseStats {
  if (actual.length !== expected.length) {
    throw new AssertionError({
      message: `${name}: length ${actual.length}, expected ${expected.length}`,
      actual: actual.length,
      expected: expected.length,
      operator: "checkClose",
    });
  }
  let maxAbs = 0;
  let sumAbs = 0;
  let numFinite = 0;
  let firstBad = -1;
  let numBad = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i];
    const e = expected[i];
    let ok: boolean;
    if (Number.isFinite(a) && Number.isFinite(e)) {
      const d = Math.abs(a - e);
      maxAbs = Math.max(maxAbs, d);
      sumAbs += d;
      numFinite++;
      ok = d <= tol.atol + tol.rtol * Math.abs(e);
    } else {
      // Infinities must match exactly (e.g. lse of a row that sees no key); NaN always fails.
      ok = a === e;
    }
    if (!ok) {
      numBad++;
      if (firstBad < 0) firstBad = i;
    }
  }
  const stats: CloseStats = { maxAbs, meanAbs: numFinite ? sumAbs / numFinite : 0, n: expected.length };
  if (numBad > 0) {
    const i = firstBad;
    throw new AssertionError({
      message:
        `${name}: ${numBad} of ${expected.length} elements differ beyond atol ${tol.atol} + rtol ${tol.rtol}; ` +
        `max abs diff ${maxAbs.toExponential(3)}, mean ${stats.meanAbs.toExponential(3)}; ` +
        `first at [${i}]: got ${actual[i]}, expected ${expected[i]}`,
      actual: actual[i],
      expected: expected[i],
      operator: "checkClose",
    });
  }
  return stats;
}

/** Max and mean |a - b| over paired arrays (mean 0 for empty ones). */
export function diffStats(a: ArrayLike<number>, b: ArrayLike<number>): { max: number; mean: number } {
  let max = 0;
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    max = Math.max(max, d);
    sum += d;
  }
  return { max, mean: sum / Math.max(1, a.length) };
}
