/**
 * Held-out-style equivalence corpus: every (pred, gold, equal) pair in
 * fixtures/equivalence-pairs.jsonl is graded and must get its expected verdict. A pred that is a
 * whole response (it boxes its answer or says "the answer is") goes through gradeAnswer only; a
 * bare answer is checked three ways: answersEqual in both argument orders, and gradeAnswer with the
 * bare answer as the whole response (extraction must take it whole, not its last number).
 * The pairs cover the forms real graders' test suites exercise (see the `why` field).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { answersEqual } from "../../src/tasks/equivalence.ts";
import { gradeAnswer } from "../../src/tasks/grader.ts";

interface Pair {
  pred: string;
  gold: string;
  equal: boolean;
  why: string;
}

const FIXTURE = new URL("./fixtures/equivalence-pairs.jsonl", import.meta.url);
const pairs: Pair[] = readFileSync(FIXTURE, "utf8")
  .split("\n")
  .filter((l) => l.trim() !== "")
  .map((l, i) => {
    const p = JSON.parse(l) as Pair;
    assert.equal(typeof p.pred, "string", `fixture line ${i + 1}: pred`);
    assert.equal(typeof p.gold, "string", `fixture line ${i + 1}: gold`);
    assert.equal(typeof p.equal, "boolean", `fixture line ${i + 1}: equal`);
    return p;
  });

/** A whole model response rather than a bare answer. */
function isResponse(s: string): boolean {
  return /\\boxed|\\fbox|answer is|answer\s*:|\bwe get\b/i.test(s);
}

test("equivalence corpus: every pair gets its expected verdict", () => {
  const failures: string[] = [];
  const byCategory = new Map<string, { n: number; bad: number }>();
  const t0 = performance.now();
  for (const p of pairs) {
    const checks: [string, boolean][] = isResponse(p.pred)
      ? [["grade", gradeAnswer(p.pred, p.gold).correct]]
      : [
          ["eq(pred,gold)", answersEqual(p.pred, p.gold)],
          ["eq(gold,pred)", answersEqual(p.gold, p.pred)],
          ["grade(bare)", gradeAnswer(p.pred, p.gold).correct],
        ];
    const wrong = checks.filter(([, v]) => v !== p.equal).map(([name]) => name);
    const cat = p.why.split(":")[0]!;
    const c = byCategory.get(cat) ?? { n: 0, bad: 0 };
    c.n++;
    if (wrong.length > 0) {
      c.bad++;
      failures.push(`${JSON.stringify(p.pred)} vs ${JSON.stringify(p.gold)}: want ${p.equal} [${p.why}], wrong in ${wrong.join(", ")}`);
    }
    byCategory.set(cat, c);
  }
  const ms = performance.now() - t0;
  const summary = [...byCategory].map(([k, c]) => `${k} ${c.n - c.bad}/${c.n}`).join(", ");
  console.log(`# corpus: ${pairs.length - failures.length}/${pairs.length} pairs agree in ${ms.toFixed(0)} ms (${summary})`);
  for (const f of failures) console.log(`#   ${f}`);
  assert.deepEqual(failures, []);
});

test("equivalence corpus: balanced and large enough to mean something", () => {
  const neg = pairs.filter((p) => !p.equal).length;
  assert.ok(pairs.length >= 300, `${pairs.length} pairs`);
  assert.ok(neg >= 0.2 * pairs.length, `${neg} not-equal pairs of ${pairs.length}`);
});
