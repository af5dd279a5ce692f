/**
 * GraderPool: `9^{9^9}` returns `{correct: false, timeout: true}` within 2 s, the pool keeps
 * grading other items meanwhile and afterwards (the stuck worker is replaced), and results match
 * the in-process grader on a seeded random sample of pairs.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Rng } from "../../src/util/rng.ts";
import { GraderPool } from "../../src/tasks/grader-pool.ts";
import { gradeAnswer } from "../../src/tasks/grader.ts";

test("pool: pathological item times out within 2 s and never blocks the pool", async () => {
  const pool = new GraderPool({ size: 2, timeLimitMs: 1000, fastPath: false });
  try {
    await pool.whenReady(); // measure grading, not worker start-up
    const t0 = performance.now();
    const slow = pool.grade("so \\boxed{9^{9^9}}", "5").then((r) => ({ r, ms: performance.now() - t0 }));
    // While one worker is stuck, the other keeps answering.
    const quick = await Promise.all(Array.from({ length: 20 }, (_, k) => pool.grade(`\\boxed{\\frac{${2 * k}}{2}}`, String(k))));
    const quickMs = performance.now() - t0;
    const { r, ms } = await slow;
    console.log(`# 9^{9^9}: ${JSON.stringify(r)} after ${ms.toFixed(0)} ms; 20 other items done after ${quickMs.toFixed(0)} ms`);
    assert.deepEqual(r, { correct: false, extracted: "9^{9^9}", timeout: true });
    assert.ok(ms < 2000, `took ${ms} ms`);
    assert.ok(quick.every((q) => q.correct && !q.timeout));
    // After the respawn the pool still works, and a test-hook spin also times out.
    assert.deepEqual(await pool.grade("\\boxed{x^2-1}", "(x-1)(x+1)"), { correct: true, extracted: "x^2-1" });
    assert.equal((await pool.grade("\\boxed{1}", "1", {}, 5000)).timeout, true);
    assert.equal(pool.stats.timeouts, 2);
    assert.equal(pool.stats.respawns, 2);
  } finally {
    await pool.close();
  }
});

test("pool: same verdicts as the in-process grader on random pairs", async () => {
  const rng = new Rng(7);
  const forms = (k: number) => [`${k}`, `\\frac{${2 * k}}{2}`, `${k}.0`, `\\sqrt{${k * k}}`, `${k}^{1}`, `(${k})`];
  const items = Array.from({ length: 60 }, () => {
    const a = 1 + rng.int(5);
    const b = rng.next() < 0.5 ? a : 1 + rng.int(5);
    return { response: `\\boxed{${forms(a)[rng.int(6)]}}`, answer: forms(b)[rng.int(6)]! };
  });
  const pool = new GraderPool({ size: 2, timeLimitMs: 2000 });
  try {
    const got = await pool.gradeMany(items);
    const want = items.map((it) => gradeAnswer(it.response, it.answer));
    const agree = got.filter((g, i) => g.correct === want[i]!.correct).length;
    console.log(`# pool vs in-process: ${agree}/${items.length} agree, ${want.filter((w) => w.correct).length} correct`);
    assert.equal(agree, items.length);
  } finally {
    await pool.close();
  }
});
