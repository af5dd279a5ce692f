/**
 * Held-out splits: about 5% of problems hash to test; training streams of many seeds never hold a
 * problem of the test split (checked on a difficulty small enough that the streams cover most of
 * its space); the test list is one fixed, deduplicated list, the same for every seed, whose first
 * N are a prefix of its first N+k; and its first problems are pinned, since a changed generator or
 * hash would silently change what "test accuracy" means.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { CountdownTask, type CountdownExample } from "../../src/tasks/countdown.ts";
import { LogicGridTask } from "../../src/tasks/logic-grid.ts";
import { exampleSeed, fnv1a, splitOf, TEST_PER_MILLE } from "../../src/tasks/splits.ts";

const cdKey = (ex: CountdownExample) => `${[...ex.numbers].sort((a, b) => a - b).join(" ")}:${ex.target}`;

test("about 5% of problems belong to the test split", () => {
  let test = 0;
  const N = 100_000;
  for (let i = 0; i < N; i++) if (splitOf(`countdown:${i % 97} ${i % 89} ${i}:${i % 101}`) === "test") test++;
  console.log(`test share ${((100 * test) / N).toFixed(2)}% of ${N} keys (target ${TEST_PER_MILLE / 10}%)`);
  assert.ok(Math.abs(test / N - TEST_PER_MILLE / 1000) < 0.005);
  assert.equal(fnv1a(""), 0x811c9dc5);
  assert.equal(fnv1a("a"), 0xe40c292c); // the published FNV-1a 32-bit test vector
  assert.notEqual(exampleSeed(1, 0), exampleSeed(0, 1));
});

test("countdown: no training seed draws a test problem, even where streams cover the space", () => {
  // 3 numbers in 1..12, targets 5..30: a few thousand distinct problems in all.
  const d = { count: 3, maxNumber: 12, minTarget: 5, maxTarget: 30 };
  const testSet = new Set<string>();
  const tl = new CountdownTask(60, 0, { ...d, split: "test" });
  for (let i = 0; i < tl.size; i++) testSet.add(cdKey(tl.get(i)));
  assert.equal(testSet.size, 60, "the test list has no duplicates");
  const trainSet = new Set<string>();
  for (let seed = 0; seed < 20; seed++) {
    const t = new CountdownTask(1000, seed, d);
    for (let i = 0; i < t.size; i++) trainSet.add(cdKey(t.get(i)));
  }
  const overlap = [...trainSet].filter((k) => testSet.has(k));
  console.log(
    `countdown small space: ${trainSet.size} distinct training problems from 20 seeds x 1000, ${testSet.size} test problems, overlap ${overlap.length}`,
  );
  assert.deepEqual(overlap, []);
  assert.ok(trainSet.size > 1500, "the streams cover a good part of the space, so disjointness means something");
});

test("logic grid: training puzzles never have a test puzzle's solution grid", () => {
  const d = { houses: 3, attributes: 3 }; // 216 solution grids in all
  const testGrids = new Set<string>();
  const tl = new LogicGridTask(40, 0, { ...d, split: "test" });
  for (let i = 0; i < tl.size; i++) testGrids.add(tl.get(i).answer);
  const trainGrids = new Set<string>();
  for (let seed = 0; seed < 2; seed++) {
    const t = new LogicGridTask(500, seed, d);
    for (let i = 0; i < t.size; i++) trainGrids.add(t.get(i).answer);
  }
  console.log(`logic-grid 3x3: ${trainGrids.size} training grids from 2 seeds x 500, ${testGrids.size} test grids in 40 test puzzles`);
  assert.deepEqual(
    [...trainGrids].filter((g) => testGrids.has(g)),
    [],
  );
  assert.ok(testGrids.size >= 3 && trainGrids.size > 180, "the streams cover most grids, so disjointness means something");
  // A difficulty with very few grids may hold no test grid at all: a clear error, not a hang.
  assert.throws(() => new LogicGridTask(1, 0, { houses: 2, attributes: 2, split: "test" }).get(0), /only 0 distinct test problems found/);
});

test("the test split is one fixed list: same for every seed, prefixes agree, first problems pinned", () => {
  const a = new CountdownTask(40, 1, { split: "test" });
  const b = new CountdownTask(10, 999, { split: "test" });
  for (let i = 0; i < b.size; i++) assert.deepEqual(b.get(i), a.get(i));
  // Pinned: changing these changes every reported test accuracy. Update only on purpose.
  const first = a.get(0);
  assert.deepEqual({ numbers: first.numbers, target: first.target }, PINNED_COUNTDOWN);
  const lg = new LogicGridTask(3, 5, { split: "test" });
  assert.equal(lg.get(0).answer, PINNED_LOGIC);
  assert.equal(lg.get(0).id, "logic-grid-test-0");
  for (let i = 0; i < a.size; i++) assert.equal(splitOf(`countdown:${cdKey(a.get(i))}`), "test");
});

const PINNED_COUNTDOWN = { numbers: [50, 22, 68, 58], target: 82 };
const PINNED_LOGIC = "Alice green bird; Carol blue cat; Bob red dog";
