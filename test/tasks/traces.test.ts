/**
 * The reference traces check out line by line: thousands of seeded samples of each task and form
 * go through the independent checker (trace-checker.ts), which recomputes every operation and
 * deduction, follows backtracking, and verifies every final answer; parallel traces are also
 * valid NPR format (our parser, NPR's score in both variants, canonical form) with 2-5 branches.
 * The task's own verifier must agree with the checker on every trace. Success rates and lengths
 * are printed, and a corrupted trace must be caught (the checker can fail).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { canonicalizeResponse, parseResponse } from "../../src/format/npr-response.ts";
import { checkResponse } from "../../src/format/npr-score.ts";
import {
  generateExamples,
  SYNTHETIC_NPR_INSTRUCTION,
  type CountdownExample,
  type LogicGridExample,
  type SyntheticExample,
} from "../../src/tasks/index.ts";
import { evaluateSynthetic } from "../../src/tasks/synthetic.ts";
import { Rng } from "../../src/util/rng.ts";
import { checkCountdownParallel, checkCountdownSequential, checkLogicParallel, checkLogicSequential } from "./trace-checker.ts";

/** Asserts the parallel text is a valid, canonical NPR response with 2-5 branches. */
function assertNprFormat(text: string, id: string): void {
  assert.equal(canonicalizeResponse(text), text, `${id}: not canonical`);
  const tree = parseResponse(text);
  assert.equal(tree.error, null, `${id}: ${tree.error}`);
  assert.equal(tree.blocks.length, 1, id);
  const n = tree.blocks[0]!.plans.length;
  assert.ok(n >= 2 && n <= 5, `${id}: ${n} plans`);
  for (const v of ["stage1", "eval"] as const)
    assert.deepEqual(checkResponse(text, v), { valid: true, score: 0, errors: [] }, `${id} (${v})`);
}

/** The task's verifier must grade a trace correct exactly when the checker says it solved. */
function assertVerifierAgrees(s: SyntheticExample, text: string, solved: boolean): void {
  const o = evaluateSynthetic(s.task, s.example, text);
  assert.equal(o.kind, "graded", s.example.id);
  assert.equal(o.kind === "graded" && o.correct, solved, `${s.example.id}: verifier and checker disagree on\n${text}`);
}

function runCountdown(seed: number, n: number, preset: string): void {
  const xs = generateExamples({ task: "countdown", n, seed, difficulty: { preset } });
  let seqSolved = 0;
  let parSolved = 0;
  let seqChars = 0;
  let parChars = 0;
  const plans = [0, 0, 0, 0, 0, 0];
  for (const s of xs) {
    const ex = s.example as CountdownExample;
    assert.ok(s.prompt.endsWith(SYNTHETIC_NPR_INSTRUCTION), ex.id);
    const seq = checkCountdownSequential(ex.numbers, ex.target, s.sequential!.text);
    assert.deepEqual(seq.errors, [], `${ex.id} sequential:\n${s.sequential!.text}`);
    assert.equal(seq.solved, s.sequential!.solved, ex.id);
    assertVerifierAgrees(s, s.sequential!.text, seq.solved);
    const par = checkCountdownParallel(ex.numbers, ex.target, s.parallel!.text);
    assert.deepEqual(par.errors, [], `${ex.id} parallel:\n${s.parallel!.text}`);
    assert.equal(par.solved, s.parallel!.solved, ex.id);
    assertVerifierAgrees(s, s.parallel!.text, par.solved);
    assertNprFormat(s.parallel!.text, ex.id);
    seqSolved += Number(seq.solved);
    parSolved += Number(par.solved);
    seqChars += s.sequential!.text.length;
    parChars += s.parallel!.text.length;
    plans[par.plans]!++;
  }
  console.log(
    `countdown ${preset} seed ${seed}: ${n} examples, solved sequential ${((100 * seqSolved) / n).toFixed(1)}% parallel ${((100 * parSolved) / n).toFixed(1)}%, ` +
      `mean chars ${Math.round(seqChars / n)} / ${Math.round(parChars / n)}, plans 2..5: ${plans.slice(2).join(" ")}`,
  );
  // A search that never fails or always fails would be no search at all.
  assert.ok(seqSolved > 0.5 * n && seqSolved <= n, "sequential success rate");
  assert.ok(parSolved > 0.5 * n, "parallel success rate");
}

test("countdown (APR preset): 2,000 sequential and 2,000 parallel traces check out line by line", () => {
  runCountdown(101, 2000, "apr");
});

test("countdown (small and large presets): traces check out", () => {
  runCountdown(7, 300, "small");
  runCountdown(8, 300, "large");
});

function runLogic(seed: number, n: number, preset: string): void {
  const xs = generateExamples({ task: "logic-grid", n, seed, difficulty: { preset } });
  let seqSolved = 0;
  let parSolved = 0;
  let splits = 0;
  for (const s of xs) {
    const ex = s.example as LogicGridExample;
    const pz = { houses: ex.houses, attrs: ex.attributes, clues: ex.clues };
    const seq = checkLogicSequential(pz, s.sequential!.text);
    assert.deepEqual(seq.errors, [], `${ex.id} sequential:\n${ex.problem}\n${s.sequential!.text}`);
    assert.equal(seq.solved, s.sequential!.solved, ex.id);
    assertVerifierAgrees(s, s.sequential!.text, seq.solved);
    const par = checkLogicParallel(pz, s.parallel!.text);
    assert.deepEqual(par.errors, [], `${ex.id} parallel:\n${ex.problem}\n${s.parallel!.text}`);
    assert.equal(par.solved, s.parallel!.solved, ex.id);
    assertVerifierAgrees(s, s.parallel!.text, par.solved);
    assertNprFormat(s.parallel!.text, ex.id);
    seqSolved += Number(seq.solved);
    parSolved += Number(par.solved);
    splits += Number(s.sequential!.text.includes("\ntry ") || s.sequential!.text.startsWith("try "));
  }
  console.log(
    `logic-grid ${preset} seed ${seed}: ${n} examples, solved sequential ${((100 * seqSolved) / n).toFixed(1)}% parallel ${((100 * parSolved) / n).toFixed(1)}%, sequential traces with a case split ${splits}`,
  );
  assert.ok(seqSolved > 0.9 * n && parSolved > 0.9 * n);
}

test("logic grid (small preset): 2,000 traces of each form check out deduction by deduction", () => {
  runLogic(202, 2000, "small");
});

test("logic grid (medium preset): traces check out", () => {
  runLogic(9, 150, "medium");
});

test("the checker catches corrupted traces", () => {
  const [s] = generateExamples({ task: "countdown", n: 1, seed: 3 });
  const ex = s!.example as CountdownExample;
  const seq = s!.sequential!.text;
  // A wrong result, a wrong state, a sibling reference, a boxed target: each must be reported.
  const first = seq.split("\n")[0]!;
  const m = /^(\d+[-+*/]\d+=)(\d+)/.exec(first)!;
  const wrongSum = seq.replace(first, first.replace(`${m[1]}${m[2]}`, `${m[1]}${Number(m[2]) + 1}`));
  assert.notDeepEqual(checkCountdownSequential(ex.numbers, ex.target, wrongSum).errors, []);
  const boxedTarget = seq.replace(/\\boxed\{.*\}$/, `\\boxed{${ex.target}}`);
  if (s!.sequential!.solved) assert.notDeepEqual(checkCountdownSequential(ex.numbers, ex.target, boxedTarget).errors, []);
  const par = s!.parallel!.text;
  assert.notDeepEqual(checkCountdownParallel(ex.numbers, ex.target, par.replace("<step>2: ", "<step>2: as in step 1, ")).errors, []);
  assert.notDeepEqual(checkCountdownParallel(ex.numbers, ex.target, par.replace("</guideline><step>", "</guideline>\n<step>")).errors, []);
  const [g] = generateExamples({ task: "logic-grid", n: 1, seed: 3 });
  const gx = g!.example as LogicGridExample;
  const pz = { houses: gx.houses, attrs: gx.attributes, clues: gx.clues };
  const lines = g!.sequential!.text.split("\n");
  const k = lines.findIndex((l) => / c\d+$/.test(l));
  const flipped = [...lines];
  flipped[k] = lines[k]!.replace(/=(\d+) c/, (_, h) => `=${(Number(h) % gx.houses) + 1} c`).replace(
    / not (\d+)/,
    (_, h) => ` not ${(Number(h) % gx.houses) + 1}`,
  );
  assert.notDeepEqual(checkLogicSequential(pz, flipped.join("\n")).errors, [], flipped[k]);
});

test("negative control: every trace with one number changed at random is flagged", () => {
  const rng = new Rng(12);
  // Changes one number of the text by +-1 (0 becomes 1): an operand, a result, a state, a clue
  // or house number, a plan or step number, the target in a takeaway or an expression.
  const mutate = (text: string) => {
    const nums = [...text.matchAll(/\d+/g)];
    const m = nums[rng.int(nums.length)]!;
    const v = Number(m[0]);
    const w = v === 0 || rng.int(2) === 0 ? v + 1 : v - 1;
    return text.slice(0, m.index) + String(w) + text.slice(m.index + m[0].length);
  };
  let flagged = 0;
  for (const s of generateExamples({ task: "countdown", n: 100, seed: 31 })) {
    const ex = s.example as CountdownExample;
    for (const t of [mutate(s.sequential!.text), mutate(s.parallel!.text)]) {
      const seq = !t.startsWith("<guideline>");
      const errors = seq
        ? checkCountdownSequential(ex.numbers, ex.target, t).errors
        : checkCountdownParallel(ex.numbers, ex.target, t).errors;
      assert.notDeepEqual(errors, [], `not flagged:\n${t}`);
      flagged++;
    }
  }
  for (const s of generateExamples({ task: "logic-grid", n: 100, seed: 31 })) {
    const ex = s.example as LogicGridExample;
    const pz = { houses: ex.houses, attrs: ex.attributes, clues: ex.clues };
    for (const t of [mutate(s.sequential!.text), mutate(s.parallel!.text)]) {
      const errors = t.startsWith("<guideline>") ? checkLogicParallel(pz, t).errors : checkLogicSequential(pz, t).errors;
      assert.notDeepEqual(errors, [], `not flagged:\n${ex.clues.join("\n")}\n${t}`);
      flagged++;
    }
  }
  assert.equal(flagged, 400);
});
