/**
 * Synthetic tasks and ZebraLogic grading: the countdown verifier (values, multiset use, division,
 * malformed), seeded generators are deterministic and their reference solutions (sequential and
 * parallel) grade correct, the parallel form has the canonical NPR shape, logic grids have a
 * unique solution, and zebra grids grade cell by cell; multiple choice by letter.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { CountdownTask, solveCountdown, verifyCountdown } from "../../src/tasks/countdown.ts";
import { countSolutions, LogicGridTask } from "../../src/tasks/logic-grid.ts";
import { gradeZebraChoice, gradeZebraGrid, zebraAnswerJson } from "../../src/tasks/zebra.ts";

// Canonical NPR block: no text between </guideline> and <step>, between steps, or before <takeaway>.
const CANONICAL = /^<guideline>(<plan>\d+: [^<]+<\/plan>)+<\/guideline>(<step>\d+: [^<]+<\/step>)+<takeaway>[^<]+<\/takeaway>\n[^<]*\\boxed\{.+\}/s;

test("countdown verifier", () => {
  assert.deepEqual(verifyCountdown([3, 5, 4], 32, "(3+5)*4"), { ok: true });
  assert.deepEqual(verifyCountdown([3, 5, 4], 32, "(3 + 5) \\times 4 = 32"), { ok: true });
  assert.deepEqual(verifyCountdown([6, 4, 3], 8, "6 / 3 * 4"), { ok: true });
  assert.deepEqual(verifyCountdown([7, 2], 3, "7 / 2"), { ok: false, why: "value is 7/2, not 3" });
  assert.deepEqual(verifyCountdown([3, 5], 15, "3*5*1"), { ok: false, why: "1 is not available (or used too often)" });
  assert.deepEqual(verifyCountdown([3, 5], 9, "3+3+3"), { ok: false, why: "3 is not available (or used too often)" });
  assert.equal(verifyCountdown([3, 5], 8, "3+").ok, false);
  const t = new CountdownTask(3, 1);
  assert.deepEqual(t.evaluate(t.get(0), "I give up"), { kind: "malformed", why: "no \\boxed{} expression" });
});

test("countdown: seeded, solvable, references grade correct in both forms", () => {
  const t = new CountdownTask(40, 11, { count: 5, maxNumber: 30 });
  const u = new CountdownTask(40, 11, { count: 5, maxNumber: 30 });
  for (let i = 0; i < t.size; i++) {
    const ex = t.get(i);
    assert.deepEqual(ex, u.get(i));
    assert.equal(ex.numbers.length, 5);
    assert.ok(solveCountdown(ex.numbers, ex.target) !== null);
    for (const text of [t.sequentialSolution(ex), t.parallelSolution(ex, i)]) {
      const o = t.evaluate(ex, text);
      assert.equal(o.kind === "graded" && o.correct, true, `${ex.id}: ${text}`);
    }
    assert.match(t.parallelSolution(ex, i), CANONICAL);
  }
  assert.notDeepEqual(new CountdownTask(1, 12).get(0), new CountdownTask(1, 11).get(0));
});

test("logic grid: unique solution, references grade correct, parallel form canonical", () => {
  const t = new LogicGridTask(6, 3, { houses: 4, attributes: 3 });
  for (let i = 0; i < t.size; i++) {
    const ex = t.get(i);
    assert.equal(ex.solution.rows.length, 4);
    for (const text of [t.sequentialSolution(ex, i), t.parallelSolution(ex, i)]) {
      const o = t.evaluate(ex, text);
      assert.equal(o.kind === "graded" && o.correct, true, ex.id);
    }
    assert.match(t.parallelSolution(ex, i), CANONICAL);
  }
  assert.equal(countSolutions(3, 2, []), 2); // no clues: many solutions (capped at 2)
});

test("zebra grid graded cell by cell; multiple choice by letter", () => {
  const sol = { header: ["House", "Name", "Pet"], rows: [["1", "Eric", "cat"], ["2", "Arnold", "dog"]] };
  assert.deepEqual(gradeZebraGrid(sol, `Answer: ${zebraAnswerJson(sol)}`), { parsed: true, correctCells: 4, totalCells: 4, solved: true });
  const half = '{"reasoning": "x {y}", "solution": {"House 1": {"Name": " eric ", "Pet": "dog"}, "House 2": {"Name": "Arnold", "Pet": "CAT"}}}';
  assert.deepEqual(gradeZebraGrid(sol, half), { parsed: true, correctCells: 2, totalCells: 4, solved: false });
  assert.deepEqual(gradeZebraGrid(sol, "no table \\boxed{3}"), { parsed: false, correctCells: 0, totalCells: 4, solved: false });
  assert.deepEqual(gradeZebraChoice("C", "so \\boxed{\\text{(C)}}"), { correct: true, extracted: "C" });
  assert.deepEqual(gradeZebraChoice("C", "The answer is (B)."), { correct: false, extracted: "B" });
  assert.deepEqual(gradeZebraChoice("A", "hmm"), { correct: false, extracted: null });
});
