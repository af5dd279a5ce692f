/**
 * The fuzzer as a test: scheduler and pool under the adversarial scripted model (stray and
 * nested tags, 0 or 7 plans, stop ids inside steps, budget exhaustion, aborts during forks,
 * preemption on small pools) at a few seeds: no leak, no double free, no invariant violation,
 * every request finished with a defined reason.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { engineVocab, runFuzz } from "../../src/engine/index.ts";
import { byteTokenizer } from "../../src/tokenizer/index.ts";

test("engine fuzz: no leaks, no double frees, every request finishes", () => {
  const tok = byteTokenizer();
  for (const seed of [3, 1234]) {
    const r = runFuzz(engineVocab(tok, 320), (s) => tok.encode(s), seed, 60);
    console.log(JSON.stringify(r));
    assert.equal(r.leaked_blocks, 0);
    assert.equal(r.double_frees, 0);
    assert.equal(r.invariant_violations, 0);
    assert.equal(r.unfinished, 0);
    const reasons = r.finish_reasons;
    assert.equal(Object.values(reasons).reduce((a, b) => a + b!, 0), r.requests);
    for (const k of ["stop", "length", "malformed", "abort"] as const) assert.ok((reasons[k] ?? 0) > 0, `some request ended with ${k}`);
    assert.ok(r.forks > 0 && r.preemptions > 0);
  }
});
