/**
 * Synthetic tasks and ZebraLogic grading: the countdown verifier (values, multiset use, division,
 * malformed, long input) and that boxing the target is graded wrong; the logic-grid verifier
 * against clues; seeded generators are deterministic and respect their difficulty knobs and
 * presets (APR's distribution); bad knobs are ConfigErrors naming the knob; generateExamples and
 * exampleFromRecord (the rows `npr tasks sample` prints) round-trip; zebra grids graded cell by cell.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { ConfigError } from "../../src/util/errors.ts";
import { CountdownTask, verifyCountdown } from "../../src/tasks/countdown.ts";
import { countdownMoves } from "../../src/tasks/countdown-search.ts";
import { LogicGridTask, verifyLogicGrid } from "../../src/tasks/logic-grid.ts";
import { countSolutions, countSolutionsByPermutation, type Clue, type Item } from "../../src/tasks/logic-search.ts";
import { Rng } from "../../src/util/rng.ts";
import { evaluateSynthetic, exampleFromRecord, generateExamples, syntheticTask, TASK_VOCABULARY } from "../../src/tasks/synthetic.ts";
import { gradeZebraChoice, gradeZebraGrid, zebraAnswerJson } from "../../src/tasks/zebra.ts";
import type { CountdownExample, LogicGridExample } from "../../src/tasks/index.ts";

test("countdown verifier: exact values, each number at most once", () => {
  assert.deepEqual(verifyCountdown([3, 5, 4], 32, "(3+5)*4"), { ok: true });
  assert.deepEqual(verifyCountdown([3, 5, 4], 32, "(3 + 5) \\times 4 = 32"), { ok: true });
  assert.deepEqual(verifyCountdown([6, 4, 3], 8, "6 / 3 * 4"), { ok: true });
  assert.deepEqual(verifyCountdown([7, 2], 3, "7 / 2"), { ok: false, why: "value is 7/2, not 3" });
  assert.deepEqual(verifyCountdown([3, 5], 15, "3*5*1"), { ok: false, why: "1 is not available (or used too often)" });
  assert.deepEqual(verifyCountdown([3, 5], 9, "3+3+3"), { ok: false, why: "3 is not available (or used too often)" });
  assert.deepEqual(verifyCountdown([5, 3, 2, 1], 2, "5/(3-2-1)"), { ok: false, why: 'cannot parse "5/(3-2-1)": division by zero' });
  assert.equal(verifyCountdown([3, 5], 8, "3+").ok, false);
  assert.equal(
    verifyCountdown([3, 5], 8, `${"(".repeat(5000)}3+5${")".repeat(5000)}`).ok,
    false,
    "long input is refused, not a stack overflow",
  );
});

test("countdown reward is the verifier: boxing the target, or reusing a number, earns nothing", () => {
  const t = new CountdownTask(1, 1);
  const ex = t.get(0);
  assert.deepEqual(t.evaluate(ex, "I give up"), { kind: "malformed", why: "no \\boxed{} expression" });
  const boxedTarget = t.evaluate(ex, `\\boxed{${ex.target}}`);
  assert.equal(boxedTarget.kind === "graded" && boxedTarget.correct, false, "the target is not a given number");
  const right = t.evaluate(ex, `so \\boxed{${ex.answer}}`);
  assert.deepEqual(right, { kind: "graded", correct: true, reward: 1, extracted: ex.answer, detail: undefined });
  assert.equal(evaluateSynthetic("countdown", ex, `\\boxed{${ex.answer}}`).kind, "graded");
});

test("countdown generator: seeded, APR's distribution by default, knobs respected", () => {
  const t = new CountdownTask(500, 11);
  const u = new CountdownTask(500, 11);
  for (let i = 0; i < t.size; i++) {
    const ex = t.get(i);
    assert.deepEqual(ex, u.get(i));
    assert.equal(ex.numbers.length, 4);
    assert.ok(
      ex.numbers.every((x) => x >= 1 && x <= 99),
      ex.id,
    );
    assert.ok(ex.target >= 10 && ex.target <= 100 && !ex.numbers.includes(ex.target), ex.id);
    assert.deepEqual(verifyCountdown(ex.numbers, ex.target, ex.answer), { ok: true }, `${ex.id}: the construction is a solution`);
    assert.ok(countdownMoves(ex.numbers, ex.target).length >= 2);
  }
  assert.notDeepEqual(new CountdownTask(1, 12).get(0), new CountdownTask(1, 11).get(0));
  const k = new CountdownTask(200, 3, { count: 6, maxNumber: 12, minTarget: 200, maxTarget: 300 });
  for (let i = 0; i < k.size; i++) {
    const ex = k.get(i);
    assert.ok(ex.numbers.length === 6 && ex.numbers.every((x) => x <= 12) && ex.target >= 200 && ex.target <= 300, ex.id);
  }
  // Moves are ordered by closeness to the target; x*1 and x/1 are never offered.
  const moves = countdownMoves([10, 1, 7], 17);
  assert.equal(`${moves[0]!.a}${moves[0]!.op}${moves[0]!.b}`, "10+7");
  assert.ok(moves.every((m) => !((m.op === "*" || m.op === "/") && m.b === 1)));
});

test("difficulty knobs out of range are ConfigErrors naming the knob", () => {
  const bad: [() => unknown, RegExp][] = [
    [() => new CountdownTask(1, 1, { count: 100 }), /count must be an integer in 3\.\.6, got 100/],
    [() => new CountdownTask(1, 1, { maxNumber: 1000 }), /maxNumber must be an integer in 2\.\.999/],
    [() => new CountdownTask(1, 1, { minTarget: 50, maxTarget: 20 }), /minTarget 50 is above maxTarget 20/],
    [() => new CountdownTask(1, 1, { preset: "huge" }), /unknown preset "huge"/],
    [() => new LogicGridTask(1, 1, { houses: 9 }), /houses must be an integer in 2\.\.5, got 9/],
    [() => syntheticTask("countdown", 1, 1, "train", { houses: 3 }), /unknown difficulty knob "houses" \(it belongs to logic-grid\)/],
    [() => generateExamples({ task: "countdown", n: 20_000, split: "test" }), /n must be an integer in 0\.\.10000/],
  ];
  for (const [f, re] of bad) assert.throws(f, (e: unknown) => e instanceof ConfigError && re.test((e as Error).message));
  // A range no problem fits: a clear error, not a hang.
  assert.throws(() => new CountdownTask(1, 1, { count: 3, maxNumber: 2, minTarget: 900, maxTarget: 999 }).get(0), ConfigError);
});

test("logic grid: unique solutions, the verifier checks a boxed grid against the clues", () => {
  const t = new LogicGridTask(30, 3, { houses: 4, attributes: 3 });
  for (let i = 0; i < t.size; i++) {
    const ex = t.get(i);
    assert.equal(ex.solution.rows.length, 4);
    assert.ok(ex.clues.length > 0);
    assert.deepEqual(verifyLogicGrid(ex, ex.answer), { ok: true }, ex.id);
  }
  assert.equal(countSolutions(3, 2, []), 2); // no clues: many solutions (capped at 2)
  const ex = t.get(0);
  const rows = ex.answer.split("; ");
  assert.deepEqual(verifyLogicGrid(ex, rows.join(";")), { ok: true }, "spacing around ; is free");
  assert.deepEqual(
    verifyLogicGrid(ex, rows.map((r) => r.split(" ").reverse().join(" ")).join("; ")),
    { ok: true },
    "order inside a house is free",
  );
  const swapped = [rows[1], rows[0], ...rows.slice(2)].join("; ");
  assert.equal(verifyLogicGrid(ex, swapped).ok, false);
  assert.equal(verifyLogicGrid(ex, rows.slice(1).join("; ")).ok, false);
  assert.match(
    (verifyLogicGrid(ex, ex.answer.replace(ex.attributes[0]!.values[0]!, "Zed")) as { why: string }).why,
    /"Zed" is not a value/,
  );
  assert.deepEqual(t.evaluate(ex, "no box"), { kind: "malformed", why: "no \\boxed{} grid" });
  const g = t.evaluate(ex, `\\boxed{${ex.answer}}`);
  assert.equal(g.kind === "graded" && g.correct, true);
});

test("logic grid: the propagating solution counter agrees with brute force on random clue sets", () => {
  const rng = new Rng(3);
  const seen = [0, 0, 0, 0];
  for (let k = 0; k < 300; k++) {
    // 5 houses: where countSolutions propagates; fewer: where it is the brute force itself.
    const n = 5;
    const m = 2 + rng.int(3);
    const item = (): Item => [rng.int(m), rng.int(n)];
    const clues: Clue[] = [];
    for (let j = rng.int(14); j > 0; j--) {
      const x = item();
      let y = item();
      while (y[0] === x[0]) y = item();
      const t = (["at", "notAt", "same", "diff", "leftOf", "next", "before"] as const)[rng.int(7)]!;
      clues.push(t === "at" || t === "notAt" ? { t, x, h: rng.int(n) } : { t, x, y });
    }
    const limit = 1 + rng.int(3);
    const want = countSolutionsByPermutation(n, m, clues, limit);
    assert.equal(countSolutions(n, m, clues, limit), want, `${n}x${m} ${JSON.stringify(clues)}`);
    seen[want]!++;
  }
  assert.ok(
    seen.every((c) => c > 10),
    `cases 0..3 solutions all covered: ${seen.join(" ")}`,
  );
});

test("generateExamples: prompts, both forms, rows read back by exampleFromRecord", () => {
  for (const task of ["countdown", "logic-grid"] as const) {
    const xs = generateExamples({ task, n: 20, seed: 4 });
    assert.deepEqual(xs, generateExamples({ task, n: 20, seed: 4 }), "seeded");
    for (const s of xs) {
      assert.equal(s.split, "train");
      assert.ok(s.prompt.startsWith(s.example.problem));
      // A JSONL row as `npr tasks sample` prints it, read back, grades the same.
      const { id, ...fields } = s.example;
      const row = JSON.parse(JSON.stringify({ task, split: s.split, id, ...fields, prompt: s.prompt }));
      const back = exampleFromRecord(task, row);
      assert.ok(back.ok, back.ok ? "" : back.why);
      for (const form of ["sequential", "parallel"] as const) {
        assert.deepEqual(evaluateSynthetic(task, back.example, s[form]!.text), evaluateSynthetic(task, s.example, s[form]!.text));
      }
    }
    const only = generateExamples({ task, n: 2, seed: 4, forms: ["parallel"] });
    assert.equal(only[0]!.sequential, undefined);
    assert.equal(only[0]!.parallel!.text, xs[0]!.parallel!.text);
  }
  assert.deepEqual(exampleFromRecord("countdown", { numbers: [1, "2"], target: 3 }), {
    ok: false,
    why: '"numbers" must be a list of 1-12 non-negative integers',
  });
  assert.deepEqual(exampleFromRecord("logic-grid", { houses: 3, attributes: [], clues: [] }), {
    ok: false,
    why: '"attributes" must be a list of {"name": string, "values": [string]}',
  });
  const lg = exampleFromRecord("logic-grid", {
    houses: 2,
    attributes: [{ name: "Name", values: ["Alice", "Bob"] }],
    clues: ["Alice loves Bob."],
  });
  assert.ok(lg.ok);
  const o = evaluateSynthetic("logic-grid", lg.example as LogicGridExample, "\\boxed{Alice; Bob}");
  assert.deepEqual(o, {
    kind: "graded",
    correct: false,
    reward: 0,
    extracted: "Alice; Bob",
    detail: 'clue 1 cannot be read: "Alice loves Bob."',
  });
  const cd = generateExamples({ task: "countdown", n: 1, seed: 1 })[0]!.example as CountdownExample;
  assert.equal(cd.id, "countdown-1-0");
});

test("TASK_VOCABULARY holds every word of the templates", () => {
  const words = new Set(TASK_VOCABULARY.words);
  for (const w of [
    "Make",
    "back",
    "fail",
    "none",
    "try",
    "only",
    "solved",
    "reaching",
    "Alice",
    "rugby",
    "neighbours",
    "somewhere",
    "user",
    "assistant",
  ]) {
    assert.ok(words.has(w), w);
  }
  assert.equal(TASK_VOCABULARY.maxNumber, 999);
});

test("zebra grid graded cell by cell; multiple choice by letter", () => {
  const sol = {
    header: ["House", "Name", "Pet"],
    rows: [
      ["1", "Eric", "cat"],
      ["2", "Arnold", "dog"],
    ],
  };
  assert.deepEqual(gradeZebraGrid(sol, `Answer: ${zebraAnswerJson(sol)}`), { parsed: true, correctCells: 4, totalCells: 4, solved: true });
  const half =
    '{"reasoning": "x {y}", "solution": {"House 1": {"Name": " eric ", "Pet": "dog"}, "House 2": {"Name": "Arnold", "Pet": "CAT"}}}';
  assert.deepEqual(gradeZebraGrid(sol, half), { parsed: true, correctCells: 2, totalCells: 4, solved: false });
  assert.deepEqual(gradeZebraGrid(sol, "no table \\boxed{3}"), { parsed: false, correctCells: 0, totalCells: 4, solved: false });
  assert.deepEqual(gradeZebraChoice("C", "so \\boxed{\\text{(C)}}"), { correct: true, extracted: "C" });
  assert.deepEqual(gradeZebraChoice("C", "The answer is (B)."), { correct: false, extracted: "B" });
  assert.deepEqual(gradeZebraChoice("A", "hmm"), { correct: false, extracted: null });
});
