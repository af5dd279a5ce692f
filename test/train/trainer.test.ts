/**
 * The optimizer step's arithmetic: the token mean spans every micro-batch of a step (the gradient
 * of two accumulated rows equals the gradient of one row holding the same examples, to ~1e-12 in
 * f64, and differs from a mean of per-row means), the learning-rate schedule, and the data
 * stream's cursor (a stream restored from a cursor continues exactly, across epoch boundaries),
 * and the progress lines (ETA from this session's steps only).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { byteTokenizer } from "../../src/tokenizer/index.ts";
import { mulScalar, sum, logprobs } from "../../src/tensor/index.ts";
import { DataOrder, nextStepBatch } from "../../src/train/batches.ts";
import { ExampleEncoder, IGNORE } from "../../src/train/examples.ts";
import type { EncodedExample } from "../../src/train/examples.ts";
import { rowLogprobs, targetsTensor, tokenMeanShare } from "../../src/train/losses.ts";
import { packExamples } from "../../src/train/packing.ts";
import type { PackedBatch } from "../../src/train/packing.ts";
import { learningRate, makeOptimizer, optimizerStep } from "../../src/train/trainer.ts";
import type { OptimizerHyper } from "../../src/train/trainer.ts";
import type { Qwen3Model } from "../../src/model/index.ts";
import { etaSeconds, formatDuration, makeProgress } from "../../src/train/progress.ts";
import { diffStats } from "../util/check-close.ts";
import { PARALLEL, SEQUENTIAL, tinyModel } from "./helpers.ts";

const tok = byteTokenizer();
const examples: EncodedExample[] = [...SEQUENTIAL, ...PARALLEL].map((ex) => {
  const r = new ExampleEncoder(tok, { mode: ex.response.includes("<guideline>") ? "parallel" : "sequential" }).encode(ex);
  assert.ok(r.ok);
  return r.example;
});

/** Concatenated gradients of every parameter after backward of the given losses. */
function gradients(model: Qwen3Model, rows: readonly PackedBatch[], share: (row: PackedBatch) => number): Float64Array {
  const params = model.parameters();
  for (const p of params) p.grad = null;
  for (const row of rows) {
    const logits = model.forward(row.ids, row.layout);
    const lp = sum(logprobs(logits, targetsTensor(model, row), IGNORE));
    mulScalar(lp, -1 / share(row)).backward();
  }
  const parts = params.map((p) => Float64Array.from(p.grad!.toArray()));
  const out = new Float64Array(parts.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of parts) {
    out.set(a, at);
    at += a.length;
  }
  return out;
}

test("token mean over the whole step: accumulated rows give the one-row gradient (f64)", () => {
  const model = tinyModel("f64", 3);
  const whole = packExamples(examples);
  const rowA = packExamples(examples.slice(0, 2));
  const rowB = packExamples(examples.slice(2));
  const N = whole.numLossTokens;
  assert.equal(rowA.numLossTokens + rowB.numLossTokens, N);
  assert.notEqual(rowA.numLossTokens, rowB.numLossTokens, "unequal rows, or the naive mean would agree by accident");
  const one = gradients(model, [whole], () => N);
  const accumulated = gradients(model, [rowA, rowB], () => N);
  const naive = gradients(model, [rowA, rowB], (row) => 2 * row.numLossTokens); // mean of per-row means
  const good = diffStats(accumulated, one);
  const bad = diffStats(naive, one);
  console.log(
    `gradient, 2 accumulated rows vs 1 row: max |d| ${good.max.toExponential(2)} mean ${good.mean.toExponential(2)}; mean-of-means: max |d| ${bad.max.toExponential(2)}`,
  );
  assert.ok(good.max < 1e-12, `accumulated gradient differs by ${good.max}`);
  assert.ok(bad.max > 1e-6, "the per-row mean must differ (else this test could not fail)");
  // tokenMeanShare is that quantity as a scalar tensor: -(sum of the row's log-probs) / N.
  const share = tokenMeanShare(model.forward(rowA.ids, rowA.layout), targetsTensor(model, rowA), N).item();
  const lp = rowLogprobs(model, rowA);
  const want = -lp.reduce((a, b) => a + b, 0) / N;
  assert.ok(Math.abs(share - want) < 1e-12, `share ${share} vs ${want}`);
});

test("optimizerStep: loss is the step's token mean, one AdamW update, clipping measured before", () => {
  const model = tinyModel("f32", 4);
  const hp: OptimizerHyper = {
    lr: 1e-3,
    schedule: "constant",
    warmup_steps: 0,
    min_lr_ratio: 0,
    weight_decay: 0.1,
    betas: [0.9, 0.95],
    eps: 1e-8,
    grad_clip: 1.0,
  };
  const opt = makeOptimizer(model, hp);
  const order = new DataOrder(examples.length, { seed: 0, shuffle: false });
  const batch = nextStepBatch(order, examples, 400, 3);
  assert.equal(batch.micro.length, 3);
  const before = Float64Array.from(model.parameters()[0]!.toArray());
  const r = optimizerStep(model, opt, batch, 1e-3, 1.0);
  assert.equal(opt.numSteps, 1);
  assert.ok(r.loss > 4 && r.loss < 8, `loss ${r.loss} near ln(320) = 5.77 for a random model`);
  assert.ok(r.gradNorm > 0 && Number.isFinite(r.gradNorm));
  assert.notDeepEqual(Float64Array.from(model.parameters()[0]!.toArray()), before);
});

test("learning rate: warm-up reaches the peak on its last step, cosine lands on the floor at the end", () => {
  const hp: OptimizerHyper = {
    lr: 1,
    schedule: "cosine",
    warmup_steps: 4,
    min_lr_ratio: 0.1,
    weight_decay: 0,
    betas: [0.9, 0.95],
    eps: 1e-8,
    grad_clip: 0,
  };
  const lr = learningRate(hp, 20);
  assert.deepEqual([0, 1, 2, 3].map(lr), [0.25, 0.5, 0.75, 1]);
  assert.ok(Math.abs(lr(19) - 0.1) < 1e-12, `last step ${lr(19)}`);
  assert.ok(lr(10) < 1 && lr(10) > 0.1);
  const c = learningRate({ ...hp, schedule: "constant" }, 20);
  assert.deepEqual([0, 7, 19].map(c), [1, 1, 1]);
});

test("data order: shuffled per epoch from (seed, epoch), restored from a cursor exactly", () => {
  const a = new DataOrder(7, { seed: 5, shuffle: true });
  const stream = Array.from({ length: 30 }, () => a.next());
  // Each epoch visits every example once.
  for (let e = 0; e < 4; e++) assert.deepEqual([...stream.slice(7 * e, 7 * e + 7)].sort(), [0, 1, 2, 3, 4, 5, 6]);
  assert.notDeepEqual(stream.slice(0, 7), stream.slice(7, 14), "epochs are reshuffled");
  const b = new DataOrder(7, { seed: 5, shuffle: true });
  for (let i = 0; i < 11; i++) b.next();
  const c = new DataOrder(7, { seed: 5, shuffle: true }, b.cursor());
  assert.deepEqual(b.cursor(), { epoch: 1, index: 4 });
  assert.deepEqual(
    Array.from({ length: 19 }, () => c.next()),
    stream.slice(11),
  );
  const plain = new DataOrder(4, { seed: 5, shuffle: false });
  assert.deepEqual(
    Array.from({ length: 6 }, () => plain.next()),
    [0, 1, 2, 3, 0, 1],
  );
});

test("progress: plain lines every n steps with an ETA over this session's steps only", () => {
  assert.equal(formatDuration(3723), "1:02:03");
  assert.equal(formatDuration(65), "1:05");
  assert.equal(formatDuration(NaN), "?");
  // Resumed at step 6 of 12, 2 steps done in 10 s: 6 steps left at 5 s each, never (12 - 8) * 10 / 8.
  assert.equal(etaSeconds(8, 6, 12, 10), 20);
  const lines: string[] = [];
  const stream = { isTTY: false, write: (s: string) => lines.push(s) > 0 } as unknown as NodeJS.WriteStream;
  const p = makeProgress({ stage: "sft", totalSteps: 5, stream, everySteps: 2 });
  p.start(0);
  for (let s = 1; s <= 5; s++) p.update({ step: s, loss: 1 / s, lr: 1e-3, tokensPerS: 100 });
  p.log("note");
  assert.deepEqual(
    lines.map((l) => l.split(" | ")[0]),
    ["sft step 2/5", "sft step 4/5", "sft step 5/5", "note\n"],
  );
  assert.match(lines[0]!, /^sft step 2\/5 \| loss 0\.5000 \| lr 1\.00e-3 \| 100 tok\/s \| ETA \d+:\d\d\n$/);
});
