/**
 * Oracle checks over every benchmark item under ../shared/data: the ground truth, boxed in a
 * response, grades correct (must be 100%), and the answer of a different item grades wrong. Runs
 * through GraderPool so a slow comparison cannot stall the suite. Skips (with the reason printed)
 * when the data directory is absent.
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { BENCHMARK_NAMES, loadBenchmark } from "../../src/tasks/benchmarks.ts";
import { GraderPool } from "../../src/tasks/grader-pool.ts";
import { normalizeAnswer } from "../../src/tasks/normalize.ts";
import { gradeZebraGrid, zebraAnswerJson } from "../../src/tasks/zebra.ts";

const DATA = fileURLToPath(new URL("../../../shared/data", import.meta.url));
const present = existsSync(DATA);
if (!present) console.log(`# skipping oracle tests: ${DATA} is absent`);

// Different items whose answers are genuinely the same value written differently; checked by hand.
const TRULY_EQUAL = new Set<string>([
  "test/algebra/1837.json|test/algebra/2193.json", // "5" and "x=5"
]);

let pool: GraderPool;
before(() => {
  if (present) pool = new GraderPool({ size: 2, timeLimitMs: 3000 });
});
after(async () => {
  await pool?.close();
});

for (const name of BENCHMARK_NAMES.filter((n) => n !== "zebralogic")) {
  test(`oracle ${name}: boxed ground truth is correct, another item's answer is wrong`, { skip: !present && "no data" }, async () => {
    const task = loadBenchmark(name, DATA);
    const items = Array.from({ length: task.size }, (_, i) => task.get(i));
    const right = await Promise.all(items.map((ex) => pool.grade(`Thus the answer is \\boxed{${ex.answer}}.`, ex.answer, ex.grade)));
    const failedRight = items.filter((_, i) => !right[i]!.correct).map((ex) => `${ex.id}: ${ex.answer}`);
    // For item i, the next item (cyclically) whose normalised answer differs.
    const keys = items.map((ex) => normalizeAnswer(ex.answer).key);
    const pairs = items.map((ex, i) => {
      for (let d = 1; d < items.length; d++) {
        const j = (i + d) % items.length;
        if (keys[j] !== keys[i]) return [ex, items[j]!] as const;
      }
      throw new Error(`${name}: all answers equal`);
    });
    const wrong = await Promise.all(pairs.map(([ex, other]) => pool.grade(`\\boxed{${other.answer}}`, ex.answer, ex.grade)));
    const failedWrong = pairs
      .filter(([ex, other], i) => wrong[i]!.correct && !TRULY_EQUAL.has(`${ex.id}|${other.id}`))
      .map(([ex, other]) => `${ex.id} gold=${ex.answer} other(${other.id})=${other.answer}`);
    const timeouts = [...right, ...wrong].filter((r) => r.timeout).length;
    console.log(
      `# ${name}: ${items.length} items, oracle ${items.length - failedRight.length}/${items.length}, wrong-rejected ${items.length - failedWrong.length}/${items.length}, timeouts ${timeouts}`,
    );
    assert.deepEqual(failedRight, [], "ground truth must grade correct");
    assert.deepEqual(failedWrong, [], "another item's answer must grade wrong");
  });
}

test("oracle zebralogic: gold grid scores every cell, a shuffled grid does not", { skip: !present && "no data" }, () => {
  const task = loadBenchmark("zebralogic", DATA);
  let solved = 0;
  let rejected = 0;
  for (let i = 0; i < task.size; i++) {
    const ex = task.get(i);
    const sol = ex.solution!;
    if (gradeZebraGrid(sol, `Here it is: ${zebraAnswerJson(sol)}`).solved) solved++;
    // Rotate the rows' attribute values by one house: every house is now wrong somewhere.
    const rows = sol.rows.map((r, k) => [r[0]!, ...sol.rows[(k + 1) % sol.rows.length]!.slice(1)]);
    if (!gradeZebraGrid(sol, zebraAnswerJson({ header: sol.header, rows })).solved) rejected++;
    const o = task.evaluate(ex, zebraAnswerJson(sol));
    assert.equal(o.kind === "graded" && o.correct, true, ex.id);
  }
  console.log(`# zebralogic: ${task.size} items, oracle ${solved}/${task.size}, wrong-rejected ${rejected}/${task.size}`);
  assert.equal(solved, task.size);
  assert.equal(rejected, task.size);
});
