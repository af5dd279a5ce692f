/**
 * Rollouts for the RL stages on a tiny random Qwen3 (byte tokenizer), countdown problems graded by
 * the task's verifier:
 * - engine vs trainer log-probs (one masked forward per rollout over its layout) at f32 noise in
 *   sequential and parallel mode (forced structures make the random model fork); forced tokens
 *   carry null engine log-probs and are left out of the comparison;
 * - correctness and reward come from the verifier (boxing the target itself is wrong);
 * - identical (seed, step) give identical rollouts, another step other ones;
 * - an engine made once sees weights changed in place (as AdamW writes them).
 * Max and mean abs log-prob differences are printed.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Engine, engineVocab, parseForceStructure } from "../../src/engine/index.ts";
import { streamExamples, syntheticTask } from "../../src/tasks/index.ts";
import type { CountdownExample } from "../../src/tasks/index.ts";
import { byteTokenizer } from "../../src/tokenizer/index.ts";
import { ExampleEncoder } from "../../src/train/examples.ts";
import { collectRollouts, logprobDiff, rolloutSeed, trainerLogprobs } from "../../src/train/rollouts.ts";
import type { CollectOptions, RolloutProblem } from "../../src/train/rollouts.ts";
import { tinyModel } from "./helpers.ts";

const tok = byteTokenizer();
const model = tinyModel("f32", 5);
const encoder = new ExampleEncoder(tok, { mode: "parallel" });
const examples = [...streamExamples({ task: "countdown", n: 2, split: "test", difficulty: { preset: "small" }, forms: ["sequential"] })];
const grader = syntheticTask("countdown", 2, 0, "test", { preset: "small" });
/** Every text the verifier was asked about, per problem (to show the rewards come from it). */
const graded: string[][] = examples.map(() => []);
const problems: RolloutProblem[] = examples.map((ex, i) => ({
  prompt: ex.prompt,
  grade: (text: string) => {
    graded[i]!.push(text);
    const o = grader.evaluate(ex.example as never, text);
    return o.kind === "graded" && o.correct;
  },
}));

function base(patch: Partial<CollectOptions> = {}): CollectOptions {
  return { model, encoder, problems, groupSize: 3, mode: "sequential", maxNewTokens: 24, seed: 7, step: 0, ...patch };
}

function checkAgainstTrainer(label: string, opts: CollectOptions): ReturnType<typeof collectRollouts> {
  const batch = collectRollouts(opts);
  assert.equal(batch.rollouts.length, problems.length * opts.groupSize);
  const trainer = trainerLogprobs(model, batch.rollouts);
  let forced = 0;
  let sampled = 0;
  batch.rollouts.forEach((r, k) => {
    assert.ok(r.layout.ok, r.layout.ok ? "" : r.layout.why);
    assert.equal(r.engineLogprobs.length, r.responseIds.length);
    assert.equal(trainer[k]!.length, r.responseIds.length);
    r.origins.forEach((o, i) => {
      assert.equal(r.engineLogprobs[i] === null, o !== "sampled", `${label}: token ${i} (${o}) log-prob presence`);
      if (o === "sampled") sampled++;
      else forced++;
    });
  });
  const d = logprobDiff(batch.rollouts, trainer);
  console.log(
    `${label}: ${batch.rollouts.length} rollouts, ${sampled} sampled + ${forced} forced tokens; engine vs trainer max abs ${d.max_abs.toExponential(3)}, mean abs ${d.mean_abs.toExponential(3)}; ` +
      `trigger ${batch.stats.trigger_rate}, branches/fork ${batch.stats.branches_per_fork.toFixed(2)}, truncated ${batch.stats.truncated_rate.toFixed(2)}, ${batch.stats.tokens_per_s.toFixed(0)} tok/s`,
  );
  assert.equal(d.tokens, sampled, "only sampled tokens are compared");
  assert.ok(d.max_abs < 1e-4, `${label}: max abs diff ${d.max_abs}`);
  return batch;
}

test("sequential rollouts: engine log-probs equal the trainer's (free and forced)", () => {
  const free = checkAgainstTrainer("sequential free", base());
  assert.equal(free.stats.trigger_rate, 0, "sequential mode never forks");
  assert.ok(free.rollouts.every((r) => r.truncated === (r.finishReason === "length")));
  const fs = parseForceStructure("2x3");
  const forced = checkAgainstTrainer("sequential forced", base({ forceStructure: () => fs, maxNewTokens: 200 }));
  assert.ok(
    forced.rollouts.every((r) => r.origins.some((o) => o !== "sampled")),
    "forced structure puts forced tokens in",
  );
  assert.equal(forced.stats.trigger_rate, 0);
});

test("parallel rollouts: forked trajectories, engine log-probs equal the trainer's over the NPR layout", () => {
  const structures = ["2x5,3x4", "1x4", "3x3"].map((s) => parseForceStructure(s));
  const batch = checkAgainstTrainer(
    "parallel forced",
    base({ mode: "parallel", maxNewTokens: 200, forceStructure: (_i, j) => structures[j]! }),
  );
  for (const r of batch.rollouts) {
    assert.equal(r.finishReason, "stop");
    assert.deepEqual(
      r.stats.branchesPerFork,
      structures[r.sample]!.map((b) => b.branches),
    );
    assert.ok(r.origins.includes("engine"), "the engine forces <step> N: and <takeaway>");
  }
  // Samples 0 and 2 fork into >= 2 branches, sample 1 has one branch only.
  assert.equal(batch.stats.trigger_rate, 2 / 3);
  assert.equal(batch.stats.branches_per_fork, (2 + 3 + 1 + 3) / 4);
  assert.ok(batch.rollouts.some((r) => r.stats.criticalPathTokens < r.stats.serializedTokens));
});

test("free parallel rollouts of a random model: broken structures get a typed outcome and no trainer log-probs", () => {
  const batch = collectRollouts(base({ mode: "parallel", groupSize: 6, maxNewTokens: 40 }));
  const trainer = trainerLogprobs(model, batch.rollouts);
  const bad = batch.rollouts.filter((r) => !r.layout.ok);
  assert.ok(bad.length > 0, "a random model writes stray tags");
  batch.rollouts.forEach((r, k) => {
    assert.equal(trainer[k] === null, !r.layout.ok);
    if (!r.layout.ok) assert.ok(r.layout.why.length > 0);
  });
  assert.equal(batch.stats.malformed_rate, bad.length / batch.rollouts.length);
  const d = logprobDiff(batch.rollouts, trainer);
  console.log(
    `parallel free: ${bad.length}/${batch.rollouts.length} without a layout (e.g. "${(bad[0]!.layout as { why: string }).why}"), ` +
      `${batch.rollouts.filter((r) => r.truncated && r.layout.ok).length} truncated laid out incomplete; engine vs trainer over ${d.tokens} tokens max ${d.max_abs.toExponential(3)} mean ${d.mean_abs.toExponential(3)}`,
  );
  assert.ok(d.tokens > 0 && d.max_abs < 1e-4);
});

test("rewards come from the task's verifier", () => {
  for (const g of graded) g.length = 0;
  const batch = collectRollouts(base({ groupSize: 2 }));
  batch.rollouts.forEach((r) => {
    assert.equal(r.correct, problems[r.problemIndex]!.grade(r.text));
    assert.equal(r.reward, r.correct ? 1 : -1);
  });
  assert.ok(graded.every((g, i) => g.length >= 2 && batch.rollouts.filter((r) => r.problemIndex === i).every((r) => g.includes(r.text))));
  // The verifier's own rules: the target boxed alone is wrong, the reference construction right.
  const ex = examples[0]!;
  const target = (ex.example as CountdownExample).target;
  assert.equal(problems[0]!.grade(`\\boxed{${target}}`), false);
  assert.equal(problems[0]!.grade(ex.sequential!.text), ex.sequential!.solved);
  assert.ok(ex.sequential!.solved, "the small preset's reference search solves problem 0");
});

test("identical seeds replay identical rollouts; another step or seed gives other ones", () => {
  const opts = base({ mode: "parallel", maxNewTokens: 40 });
  const a = collectRollouts(opts);
  const b = collectRollouts(opts);
  assert.deepEqual(
    a.rollouts.map((r) => [r.seed, r.responseIds, r.engineLogprobs, r.origins, r.finishReason]),
    b.rollouts.map((r) => [r.seed, r.responseIds, r.engineLogprobs, r.origins, r.finishReason]),
  );
  const c = collectRollouts({ ...opts, step: 1 });
  assert.notDeepEqual(
    a.rollouts.map((r) => r.responseIds),
    c.rollouts.map((r) => r.responseIds),
  );
  // Seeds are distinct over (seed, step, problem, sample).
  const seen = new Set<number>();
  for (const s of [0, 1, 2 ** 40])
    for (let step = 0; step < 4; step++) for (let p = 0; p < 8; p++) for (let j = 0; j < 8; j++) seen.add(rolloutSeed(s, step, p, j));
  assert.equal(seen.size, 3 * 4 * 8 * 8);
});

test("an engine made once sees weights updated in place (nothing weight-derived is cached)", () => {
  const vocab = engineVocab(tok, model.config.vocabSize);
  const engine = new Engine(model, vocab, { numBlocks: 128, blockSize: 8, maxRunningRequests: 8 });
  const opts = base({ engine, sampling: { temperature: 0 }, maxNewTokens: 16 });
  const before = collectRollouts(opts);
  const w = model.params.get("model.layers.1.mlp.down_proj.weight")!;
  const saved = w.toArray().slice();
  try {
    // What AdamW does: write into the parameter's own buffer.
    w.backend.scalar("mul", w.buffer, 3, w.buffer);
    const after = collectRollouts(opts);
    const fresh = collectRollouts({ ...opts, engine: undefined });
    // The reused engine equals a fresh one on the new weights, and its log-probs moved.
    assert.deepEqual(
      after.rollouts.map((r) => r.responseIds),
      fresh.rollouts.map((r) => r.responseIds),
    );
    let moved = 0;
    let same = 0;
    after.rollouts.forEach((r, k) => {
      const f = fresh.rollouts[k]!;
      r.engineLogprobs.forEach((lp, i) => (same = Math.max(same, Math.abs(lp! - f.engineLogprobs[i]!))));
      const lp0 = before.rollouts[k]!.engineLogprobs[0]!;
      moved = Math.max(moved, Math.abs(r.engineLogprobs[0]! - lp0));
    });
    const d = logprobDiff(after.rollouts, trainerLogprobs(model, after.rollouts));
    console.log(
      `weights update: first-token log-prob moved by up to ${moved.toExponential(3)}; reused vs fresh engine max ${same.toExponential(3)}; engine vs trainer max ${d.max_abs.toExponential(3)} mean ${d.mean_abs.toExponential(3)}`,
    );
    assert.ok(moved > 1e-3, "the reused engine sees the new weights");
    assert.ok(same < 1e-5);
    assert.ok(d.max_abs < 1e-4);
  } finally {
    w.backend.write(w.buffer, saved);
  }
  engine.dispose();
});
