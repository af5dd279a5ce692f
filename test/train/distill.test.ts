/**
 * Rejection-sampled self-distillation (train/distill.ts, `npr distill`) on tiny random models:
 * - a random byte model never solves a problem: empty output, every yield 0, every problem
 *   sampled on every try;
 * - with forced structures (task tokenizer: about half the forced responses score 0 on the eval
 *   format score) and a stub verifier that accepts only from a given try on, the kept response of
 *   each problem is the first accepted one, and solved problems are not sampled again;
 * - seeds are per (problem, try): a problem's responses do not depend on the others;
 * - problems come from the training split only (no test-split id or problem text);
 * - the CLI's output loads with `npr train sft`'s reader and one SFT step runs on it; bad flags
 *   get one-line errors.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseForceStructure } from "../../src/engine/index.ts";
import { canonicalizeResponse, formatScore } from "../../src/format/index.ts";
import { Qwen3Model, paddedVocabSize, saveQwen3 } from "../../src/model/index.ts";
import { TASK_VOCABULARY, streamExamples } from "../../src/tasks/index.ts";
import { byteTokenizer, taskTokenizer } from "../../src/tokenizer/index.ts";
import { distill, distillJsonl, distillProblems, statsPathOf } from "../../src/train/distill.ts";
import type { DistillProblem } from "../../src/train/distill.ts";
import { ExampleEncoder } from "../../src/train/examples.ts";
import { makeProgress } from "../../src/train/progress.ts";
import { parseRecipe } from "../../src/train/recipe.ts";
import { RunFolder } from "../../src/train/run-folder.ts";
import { readTrajectories, runSft } from "../../src/train/sft.ts";
import { assertOneLineError, runInProcess } from "../cli/helpers.ts";
import { cpu, tinyConfig, tinyModel } from "./helpers.ts";

const RECIPE_JSON = {
  name: "distill-test",
  tokenizer: "byte",
  model: { hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8 },
  tasks: [
    { name: "countdown", weight: 2, difficulty: { preset: "small" } },
    { name: "logic-grid", weight: 1, difficulty: { preset: "small" } },
  ],
  rejection: { max_new_tokens: 12, problems: 3, tries: 2 },
  sft: { lr: 0.003, steps: 1, tokens_per_micro_batch: 4000, save_every: 1, held_out: 0, eval: { problems: 0, samples: 0 } },
};
const RECIPE = parseRecipe(RECIPE_JSON, "distill-test");

const task = taskTokenizer(TASK_VOCABULARY);
const taskModel = Qwen3Model.random(tinyConfig({ vocabSize: paddedVocabSize(task.size, 64) }), {
  seed: 3,
  backend: cpu,
  dtype: "f32",
  std: 0.2,
});
const FORCED = parseForceStructure("2x4");

test("a random model solves nothing: empty output, yield 0, every problem sampled on every try", () => {
  const problems = distillProblems(RECIPE, 3, 11);
  assert.deepEqual(
    problems.map((p) => p.task),
    ["countdown", "countdown", "logic-grid"],
  );
  const rounds: number[] = [];
  const res = distill({
    model: tinyModel("f32", 5),
    encoder: new ExampleEncoder(byteTokenizer(), { mode: "sequential" }),
    problems,
    tries: 2,
    maxNewTokens: 12,
    temperature: 1,
    topP: 1,
    seed: 11,
    onRound: (r) => rounds.push(r.sampled),
  });
  assert.deepEqual(res.lines, []);
  assert.equal(distillJsonl(res.lines), "");
  assert.deepEqual(rounds, [3, 3]);
  assert.equal(res.stats.sampled, 6);
  assert.equal(res.stats.kept, 0);
  assert.deepEqual(res.stats.yield_per_try, [0, 0]);
  assert.deepEqual(res.stats.cumulative_yield, [0, 0]);
  assert.deepEqual(res.stats.per_task["logic-grid"], { problems: 1, kept: 0, yield_per_try: [0, 0], cumulative_yield: [0, 0] });
  const r = res.stats.rejected;
  assert.equal(r.truncated + r.incorrect + r.format, 6);
  console.log(`random model: rejected ${JSON.stringify(r)}, ${res.stats.tokens} tokens at ${res.stats.tokens_per_s.toFixed(0)} tok/s`);
});

/** Problems whose stub verifier accepts only from try `from[i]` on, recording every text it saw. */
function stubProblems(from: readonly number[]): { problems: DistillProblem[]; seen: string[][] } {
  const seen: string[][] = from.map(() => []);
  const problems = from.map((f, i) => ({
    id: `stub-${i}`,
    task: i % 2 === 0 ? "countdown" : "logic-grid",
    prompt: `Make ${10 + i} from 2 5.`,
    grade: (text: string) => {
      seen[i]!.push(text);
      return seen[i]!.length >= f;
    },
  }));
  return { problems, seen };
}

function runForced(from: readonly number[], tries: number, seed = 4) {
  const stub = stubProblems(from);
  const res = distill({
    model: taskModel,
    encoder: new ExampleEncoder(task, { mode: "sequential" }),
    problems: stub.problems,
    tries,
    maxNewTokens: 60,
    temperature: 1,
    topP: 1,
    seed,
    forceStructure: () => FORCED,
  });
  return { res, seen: stub.seen };
}

test("the first accepted try is kept; solved problems are not sampled again", () => {
  const from = [1, 2, 3, 1, 99];
  const tries = 5;
  const { res, seen } = runForced(from, tries);
  // Expected from what the verifier saw: the first try k >= from[i] whose text scores 0 (eval variant).
  let expectKept = 0;
  from.forEach((f, i) => {
    const firstOk = seen[i]!.findIndex((t, k) => k + 1 >= f && formatScore(t, "eval").score === 0);
    const line = res.lines.find((l) => l.id === `stub-${i}`);
    if (firstOk < 0) {
      assert.equal(line, undefined, `problem ${i} was never accepted`);
      assert.equal(seen[i]!.length, tries, `problem ${i}: unsolved, sampled on every try`);
    } else {
      expectKept++;
      assert.ok(line, `problem ${i} kept`);
      assert.equal(line.try, firstOk + 1);
      assert.equal(seen[i]!.length, firstOk + 1, `problem ${i}: no sample after the kept try`);
      assert.equal(line.response, canonicalizeResponse(seen[i]![firstOk]!));
      assert.equal(formatScore(line.response, "eval").score, 0);
      assert.equal(line.prompt, `Make ${10 + i} from 2 5.`);
    }
  });
  assert.equal(res.lines.length, expectKept);
  assert.ok(expectKept >= 3, `forced structures give format-0 responses (kept ${expectKept})`);
  assert.equal(
    res.lines.find((l) => l.id === "stub-4"),
    undefined,
    "a problem the verifier never accepts is dropped",
  );
  assert.ok(
    res.lines.some((l) => l.try > 1),
    "some problem needed more than one try",
  );
  assert.equal(
    res.stats.sampled,
    seen.reduce((s, x) => s + x.length, 0),
  );
  const perTry = Array.from({ length: tries }, (_, k) => res.lines.filter((l) => l.try === k + 1).length / from.length);
  assert.deepEqual(res.stats.yield_per_try, perTry);
  assert.equal(res.stats.cumulative_yield.at(-1), expectKept / from.length);
  assert.equal(res.stats.per_task["countdown"]!.problems, 3);
  console.log(
    `forced: kept ${res.lines.map((l) => `${l.id}@${l.try}`).join(" ")}; yield/try ${res.stats.yield_per_try.join(" ")}; rejected ${JSON.stringify(res.stats.rejected)}`,
  );
  // Seeds are per (problem, try): with the other problems solved at other tries (other batches
  // from try 2 on), problem 2 sees exactly the responses it saw before.
  const other = runForced([99, 99, from[2]!, 99, 99], tries);
  assert.notDeepEqual(
    other.seen.map((s) => s.length),
    seen.map((s) => s.length),
  );
  assert.deepEqual(other.seen[2], seen[2]);
});

test("problems come from the training split only", () => {
  const problems = distillProblems(RECIPE, 60, 1);
  assert.equal(problems.length, 60);
  assert.ok(problems.every((p) => !p.id.includes("-test-")));
  const testPrompts = new Set<string>();
  for (const t of RECIPE.tasks) {
    for (const ex of streamExamples({ task: t.name, n: 300, split: "test", difficulty: t.difficulty as never, forms: [] }))
      testPrompts.add(ex.prompt);
  }
  assert.ok(testPrompts.size > 300);
  assert.equal(problems.filter((p) => testPrompts.has(p.prompt)).length, 0);
  // Another seed, other problems; the same seed, the same.
  assert.notDeepEqual(
    distillProblems(RECIPE, 4, 2).map((p) => p.id),
    problems.slice(0, 4).map((p) => p.id),
  );
  assert.deepEqual(
    distillProblems(RECIPE, 60, 1).map((p) => p.prompt),
    problems.map((p) => p.prompt),
  );
});

test("npr distill: the file loads with npr train sft's reader and one SFT step runs on it; bad flags get one line", async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "npr-distill-"));
  // A byte-tokenizer model through the CLI: nothing solved, an empty file and its stats.
  const byteDir = path.join(root, "byte");
  saveQwen3(tinyModel("f32", 5), byteDir, { dtype: "f32" });
  byteTokenizer().save(byteDir);
  const recipeFile = path.join(root, "recipe.json");
  fs.writeFileSync(recipeFile, JSON.stringify({ ...RECIPE_JSON, backend: "cpu" }));
  const out = path.join(root, "traj.jsonl");
  const ok = await runInProcess(["distill", "--model", byteDir, "--recipe", recipeFile, "--tries", "2", "--problems", "2", "--out", out]);
  assert.equal(ok.status, 0, ok.stderr);
  assert.equal(fs.readFileSync(out, "utf8"), "");
  const stats = JSON.parse(fs.readFileSync(statsPathOf(out), "utf8"));
  assert.equal(statsPathOf(out), path.join(root, "traj.stats.json"));
  assert.equal(stats.problems, 2);
  assert.equal(stats.sampled, 4);
  assert.deepEqual(stats.yield_per_try, [0, 0]);
  assert.equal(stats.format_variant, "eval");
  assert.match(ok.stderr, /distill: try 2\/2: sampled 2, kept 0, solved 0\/2/);
  assert.match(ok.stdout, /^try {2}kept/m);
  assert.deepEqual(
    fs.readdirSync(root).filter((f) => f.endsWith(".tmp")),
    [],
    "no temporary file left",
  );

  // Kept trajectories (forced, task tokenizer) written as the CLI writes them, then SFT on them.
  const { res } = runForced([1, 1, 1, 1], 3);
  assert.ok(res.lines.length >= 2);
  const data = path.join(root, "kept.jsonl");
  fs.writeFileSync(data, distillJsonl(res.lines));
  const read = readTrajectories(data);
  assert.deepEqual(
    read,
    res.lines.map((l) => ({ prompt: l.prompt, response: l.response })),
  );
  const taskDir = path.join(root, "task");
  saveQwen3(taskModel, taskDir, { dtype: "f32" });
  task.save(taskDir);
  const recipe = parseRecipe({ ...RECIPE_JSON, tokenizer: "task" }, "distill-test");
  for (const layout of ["parallel", "sequential"] as const) {
    const folder = RunFolder.create(path.join(root, `sft-${layout}`), { stage: "sft", recipe, inputs: { init: taskDir, data, layout } });
    const progress = makeProgress({
      stage: "sft",
      totalSteps: 1,
      plain: true,
      stream: { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream,
    });
    const sft = runSft({
      recipe,
      initDir: taskDir,
      dataFile: data,
      layout,
      backend: cpu,
      run: folder,
      resume: false,
      progress,
      problems: [],
    });
    assert.equal(sft.steps, 1);
    assert.equal(sft.dropped.length, 0, `${layout}: ${JSON.stringify(sft.dropped)}`);
    assert.equal(sft.trainExamples, res.lines.length);
    assert.ok(Number.isFinite(sft.lastLoss));
    console.log(`sft ${layout} on ${sft.trainExamples} distilled trajectories: step-1 loss ${sft.lastLoss.toFixed(4)}`);
  }

  const base = ["distill", "--model", byteDir, "--recipe", recipeFile];
  const cases: Array<[string[], string, RegExp]> = [
    [[...base, "--out", out, "--tries", "0"], "UsageError", /--tries/],
    [[...base, "--out", out, "--tries", "65"], "UsageError", /--tries/],
    [[...base, "--out", out, "--problems", "x"], "UsageError", /--problems/],
    [[...base, "--out", out, "--seed", "-1"], "UsageError", /--seed/],
    [[...base, "--out", root], "UsageError", /--out .*folder/],
    [["distill", "--model", path.join(root, "nope"), "--recipe", recipeFile, "--out", out], "UsageError", /--model/],
    [["distill", "--model", byteDir, "--recipe", "no-such-preset", "--out", out], "UsageError", /no-such-preset/],
  ];
  for (const [args, kind, re] of cases) assertOneLineError(await runInProcess(args), kind, re, args.join(" "));
  const noSection = path.join(root, "norej.json");
  const { rejection: _r, ...rest } = RECIPE_JSON;
  fs.writeFileSync(noSection, JSON.stringify(rest));
  assertOneLineError(
    await runInProcess([...base.slice(0, 3), "--recipe", noSection, "--out", out]),
    "ConfigError",
    /rejection/,
    "no rejection section",
  );
});
