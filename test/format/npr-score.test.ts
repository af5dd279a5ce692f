/**
 * NPR's format score (src/format/npr-score.ts), the penalty table of reference/npr.md §3.4 case
 * by case in both variants (each case starts from a perfect response and breaks one thing), the
 * synthetic tasks' reference solutions scoring 0, and checkResponse's valid/errors.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { checkResponse, formatScore, type FormatVariant } from "../../src/format/npr-score.ts";
import { CountdownTask, LogicGridTask } from "../../src/tasks/index.ts";

const PLAN1 = "<plan>1: try small cases</plan>";
const PLAN2 = "<plan>2: use algebra</plan>";
const STEP1 = "<step>1: n=1 gives 2</step>";
const STEP2 = "<step>2: factor it out</step>";
const TAKE = "<takeaway>both agree on 2</takeaway>";
const block = (g = PLAN1 + PLAN2, steps = STEP1 + STEP2, take = TAKE) => `<guideline>${g}</guideline>${steps}${take}`;
const PERFECT = `${block()}\nThe answer is \\boxed{2}.`;

// [case, response, stage1 score, eval score]
const TABLE: Array<[string, string, number, number]> = [
  ["perfect", PERFECT, 0, 0],
  ["perfect with NPR's whitespace between tags", PERFECT.replaceAll("><", ">\n<"), 0, 0],
  ["no block found", "The answer is \\boxed{2}.", -1.5, -1.5],
  ["tags in the gap before a block", `<plan>stray</plan>${PERFECT}`, -1.5, -1.5],
  [
    "block with 0 plans (steps then mismatch too)",
    `${block("", "")}\\boxed{2}`.replace("<guideline></guideline>", "<guideline></guideline><step>1: some work</step>"),
    -2,
    -2,
  ],
  ["step count != plan count", `${block(PLAN1 + PLAN2, STEP1)}\\boxed{2}`, -1, -1],
  ["non-plan text inside the guideline", `${block(`intro${PLAN1}${PLAN2}`)}\\boxed{2}`, -0.4, -0.4],
  ["text between plans", `${block(`${PLAN1}and${PLAN2}`)}\\boxed{2}`, -0.2, -0.2],
  ["plan shorter than 3 characters", `${block(`<plan>1:</plan>${PLAN2}`)}\\boxed{2}`, -0.4, -0.4],
  ["two short plans", `${block("<plan>1:</plan><plan>2</plan>")}\\boxed{2}`, -0.8, -0.8],
  ["plan containing a tag", `${block(`<plan>1: a<step>b</plan>${PLAN2}`)}\\boxed{2}`, -0.4, -0.4],
  ["step shorter than 6 characters", `${block(PLAN1 + PLAN2, `<step>1: a</step>${STEP2}`)}\\boxed{2}`, -0.4, -0.4],
  ["takeaway shorter than 6 characters", `${block(undefined, undefined, "<takeaway>ok</takeaway>")}\\boxed{2}`, -0.4, -0.4],
  ["tags after the last block", `${PERFECT}</step>`, -1, -1],
  ["no boxed conclusion (stage1 only)", `${block()}The answer is 2.`, -1, 0],
  ["empty boxed (eval only; stage1 finds another)", `${block()}\\boxed{} then \\boxed{2}`, 0, -1],
  ["empty boxed only (both)", `${block()}\\boxed{ }`, -1, -1],
  // Stage 1 scores text between steps; the eval pattern needs contiguous steps, so that block
  // is not a block at all there.
  ["text between steps", `${block(PLAN1 + PLAN2, `${STEP1}and${STEP2}`)}\\boxed{2}`, -0.2, -1.5],
  ["several penalties add up", `${block(`<plan>1:</plan>x${PLAN2}`, `<step>1:</step>`, "<takeaway>t</takeaway>")}\\boxed{2}`, -2.4, -2.4],
  ["two blocks, second broken", `${block()}${block(PLAN1, STEP1 + STEP2)}\\boxed{2}`, -1, -1],
];

test("penalty table, case by case, both variants", () => {
  for (const [name, response, stage1, evalScore] of TABLE) {
    const expect: Record<FormatVariant, number> = { stage1, eval: evalScore };
    for (const variant of ["stage1", "eval"] as const) {
      const s = formatScore(response, variant);
      assert.equal(s.score, expect[variant], `${name} [${variant}]: ${JSON.stringify(s.penalties)}`);
      const sum = Math.round(s.penalties.reduce((a, p) => a + p.penalty, 0) * 1000) / 1000;
      assert.equal(sum || 0, s.score, `${name} [${variant}]: penalties sum to the score`);
    }
  }
});

test("reasons name the broken part", () => {
  const s = formatScore(`${block(`<plan>1:</plan>${PLAN2}`, STEP1)}\\boxed{2}`, "eval");
  assert.deepEqual(s.penalties.map((p) => p.reason).sort(), [
    "block 1 has 1 step(s) for 2 plan(s)",
    "plan 1 of block 1 is shorter than 3 characters",
  ]);
});

test("synthetic tasks' parallel reference solutions score 0 and are valid in both variants", () => {
  const cd = new CountdownTask(30, 1);
  const lg = new LogicGridTask(10, 2);
  const sols = [
    ...Array.from({ length: 30 }, (_, i) => cd.parallelSolution(cd.get(i), i)),
    ...Array.from({ length: 10 }, (_, i) => lg.parallelSolution(lg.get(i), i)),
  ];
  for (const s of sols) {
    for (const v of ["stage1", "eval"] as const) assert.deepEqual(checkResponse(s, v), { valid: true, score: 0, errors: [] });
  }
});

test("checkResponse: structure errors the score does not see make a response invalid", () => {
  const six = Array.from({ length: 6 }, (_, k) => `<plan>${k + 1}: option ${k}</plan>`).join("");
  const steps = Array.from({ length: 6 }, (_, k) => `<step>${k + 1}: work ${k}</step>`).join("");
  const r = checkResponse(`<guideline>${six}</guideline>${steps}${TAKE}\\boxed{1}`, "eval");
  assert.equal(r.score, 0);
  assert.equal(r.valid, false);
  assert.deepEqual(r.errors, ["structure: the guideline of block 1 has 6 plans; at most 5"]);
  const nested = checkResponse(`<guideline>${PLAN1}</guideline><step>1: a <guideline> b</step>${TAKE}\\boxed{1}`, "stage1");
  assert.equal(nested.valid, false);
  assert.ok(
    nested.errors.some((e) => /nested <guideline> inside step 1/.test(e)),
    JSON.stringify(nested.errors),
  );
  const bad = checkResponse("no structure", "stage1");
  assert.equal(bad.score, -1.5);
  assert.equal(bad.valid, false);
});
