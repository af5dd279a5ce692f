/**
 * Nucleus filtering against a naive reference (sort ids by probability, ties by lower id, keep
 * the shortest prefix whose mass reaches top-p), on seeded random logits with deliberate ties and
 * banned (-Infinity) ids; the kept sets must be identical.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { applyTopPMinP } from "../../src/engine/sampling/sampler.ts";
import { Rng } from "../../src/util/rng.ts";

function referenceKept(x: Float64Array, topP: number): boolean[] {
  let max = -Infinity;
  for (const v of x) max = Math.max(max, v);
  const e = Array.from(x, (v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  const p = e.map((v) => v / sum);
  const order = p.map((_, i) => i).sort((a, b) => p[b]! - p[a]! || a - b);
  const kept = Array<boolean>(x.length).fill(false);
  let cum = 0;
  for (let k = 0; k < order.length && cum < topP; k++) {
    cum += p[order[k]!]!;
    kept[order[k]!] = true;
  }
  return kept;
}

test("top-p keeps exactly the reference's ids (ties by lower id, banned ids stay out)", () => {
  const rng = new Rng(77);
  let checked = 0;
  let keptTotal = 0;
  for (let trial = 0; trial < 300; trial++) {
    const V = 5 + rng.int(300);
    const x = new Float64Array(V);
    // Few distinct values make ties common, including at the cut.
    const levels = 1 + rng.int(6);
    for (let i = 0; i < V; i++)
      x[i] = rng.int(levels) * (0.5 + rng.next()) * (trial % 3 === 0 ? 1 : 0) + (trial % 3 === 0 ? 0 : rng.int(levels));
    for (let i = 0; i < V; i++) if (rng.next() < 0.1) x[i] = -Infinity;
    if (x.every((v) => v === -Infinity)) x[0] = 0;
    const topP = [0.1, 0.5, 0.9, 0.95, 0.999][rng.int(5)]!;
    const want = referenceKept(x, topP);
    const got = Float64Array.from(x);
    applyTopPMinP(got, topP, 0);
    for (let i = 0; i < V; i++) assert.equal(got[i] !== -Infinity, want[i], `trial ${trial} id ${i} (V ${V}, top-p ${topP})`);
    checked += V;
    keptTotal += want.filter(Boolean).length;
  }
  console.log(`top-p: ${checked} ids over 300 trials, ${keptTotal} kept, 0 differences`);
});
