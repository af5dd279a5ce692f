/**
 * Run folders and checkpoints: a checkpoint round-trips weights and AdamW moments bit for bit
 * and is a Hugging Face folder loadQwen3 opens; a flipped byte, a truncated file or a missing
 * manifest makes it invalid and the resume falls back to the one before (reported); only the
 * last k are kept; temporaries of an interrupted write are cleared; metrics.jsonl drops a torn
 * last line and the lines after the checkpoint's step; a run folder is never overwritten.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadQwen3 } from "../../src/model/index.ts";
import { Tensor } from "../../src/tensor/index.ts";
import { byteTokenizer } from "../../src/tokenizer/index.ts";
import { loadTrainingCheckpoint, saveTrainingCheckpoint, verifyFolder } from "../../src/train/checkpoint-io.ts";
import type { TrainerState } from "../../src/train/checkpoint-io.ts";
import { MetricsLog } from "../../src/train/metrics.ts";
import { RunFolder, firstDifference } from "../../src/train/run-folder.ts";
import { makeOptimizer } from "../../src/train/trainer.ts";
import { UsageError } from "../../src/util/errors.ts";
import { cpu, tinyModel } from "./helpers.ts";

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), "npr-train-ck-"));
}

const HP = {
  lr: 1e-3,
  schedule: "constant" as const,
  warmup_steps: 0,
  min_lr_ratio: 0,
  weight_decay: 0.1,
  betas: [0.9, 0.95] as const,
  eps: 1e-8,
  grad_clip: 1,
};

function state(step: number): TrainerState {
  return {
    version: 1,
    stage: "sft",
    step,
    total_steps: 10,
    data: { epoch: 0, index: step, seed: 0, shuffle: false, size: 20, sha256: "d" },
    recipe_sha256: "x",
  };
}

/** A model with non-trivial AdamW moments (one step on a random gradient). */
function trainedParts(seed: number) {
  const model = tinyModel("f32", seed);
  const opt = makeOptimizer(model, HP);
  for (const p of model.parameters()) {
    const g = Float32Array.from(p.toArray(), (x, i) => Math.sin(i + seed) * 0.01 + x * 1e-3);
    p.grad = Tensor.fromArray(g, p.shape, { backend: cpu, dtype: "f32" });
  }
  opt.step();
  return { model, opt, tokenizer: byteTokenizer() };
}

test("a checkpoint round-trips weights and AdamW moments exactly and opens as a HF folder", () => {
  const dir = path.join(tmpDir(), "step-3");
  const parts = trainedParts(1);
  saveTrainingCheckpoint(dir, { ...parts, state: state(3) });
  assert.equal(verifyFolder(dir), null);
  for (const f of [
    "config.json",
    "model.safetensors",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "optimizer.safetensors",
    "trainer_state.json",
    "manifest.json",
  ]) {
    assert.ok(fs.existsSync(path.join(dir, f)), f);
  }
  const back = loadTrainingCheckpoint(dir, cpu, "f32");
  assert.deepEqual(back.state, state(3));
  const want = parts.opt.state();
  assert.equal(back.optimizerState.step, want.step);
  parts.model.parameters().forEach((p, i) => {
    assert.deepEqual(back.model.parameters()[i]!.toArray(), p.toArray(), `weights ${i}`);
    assert.deepEqual(back.optimizerState.m[i], want.m[i], `m ${i}`);
    assert.deepEqual(back.optimizerState.v[i], want.v[i], `v ${i}`);
  });
  // The weights alone load through the ordinary HF loader.
  assert.deepEqual(loadQwen3(dir, { backend: cpu }).parameters()[0]!.toArray(), parts.model.parameters()[0]!.toArray());
});

test("resume picks the newest valid checkpoint; corrupt ones are reported and skipped; keep the last k", () => {
  const root = tmpDir();
  const run = RunFolder.create(path.join(root, "run"), { stage: "sft" });
  const parts = trainedParts(2);
  for (const step of [2, 4, 6]) saveTrainingCheckpoint(run.checkpointDir(step), { ...parts, state: state(step) });
  assert.deepEqual(
    run.checkpoints().map((c) => c.step),
    [6, 4, 2],
  );
  // step-6: one flipped byte in the optimizer state; step-4: no manifest (a write cut short).
  const f6 = path.join(run.checkpointDir(6), "optimizer.safetensors");
  const bytes = fs.readFileSync(f6);
  bytes[bytes.length - 3] ^= 0x01;
  fs.writeFileSync(f6, bytes);
  fs.rmSync(path.join(run.checkpointDir(4), "manifest.json"));
  const warnings: string[] = [];
  const found = run.newestValidCheckpoint((m) => warnings.push(m));
  assert.equal(found?.step, 2);
  assert.equal(warnings.length, 2);
  assert.match(warnings[0]!, /checkpoints\/step-6 is not usable \(optimizer\.safetensors does not match its SHA-256.*moved aside/);
  assert.match(warnings[1]!, /checkpoints\/step-4 is not usable \(no readable manifest\.json/);
  // The bad ones are moved aside (kept for inspection, no longer checkpoints).
  assert.deepEqual(
    run.checkpoints().map((c) => c.step),
    [2],
  );
  assert.equal(fs.readdirSync(run.checkpointsDir).filter((n) => /^step-[46]\.corrupt-/.test(n)).length, 2);
  // A truncated file is caught by its size.
  const f2 = path.join(run.checkpointDir(2), "model.safetensors");
  const size = fs.statSync(f2).size;
  fs.truncateSync(f2, size - 8);
  assert.match(verifyFolder(run.checkpointDir(2))!, /model\.safetensors has \d+ bytes, the manifest says/);
  // Keep the last k: after writing steps 8, 10, 12 with k = 2, only 10 and 12 remain.
  for (const step of [8, 10, 12]) {
    saveTrainingCheckpoint(run.checkpointDir(step), { ...parts, state: state(step) });
    run.prune(2);
  }
  assert.deepEqual(
    run.checkpoints().map((c) => c.step),
    [12, 10],
  );
  // Leftovers of interrupted writes are cleared; real checkpoints stay.
  fs.mkdirSync(path.join(run.checkpointsDir, ".step-14.tmp-123-abc"));
  fs.writeFileSync(path.join(run.dir, ".metrics.jsonl.tmp-77"), "x");
  assert.equal(run.clearTemporaries().length, 2);
  assert.deepEqual(
    run.checkpoints().map((c) => c.step),
    [12, 10],
  );
});

test("metrics.jsonl: a torn last line and the lines after the checkpoint's step are dropped", () => {
  const root = tmpDir();
  const log = new MetricsLog(path.join(root, "metrics.jsonl"));
  for (let s = 1; s <= 5; s++)
    log.append({
      kind: "train",
      step: s,
      stage: "sft",
      loss: 1 / s,
      lr: 1e-3,
      grad_norm: 1,
      tokens: 10,
      loss_tokens: 5,
      tokens_per_s: 100,
      epoch: 0,
      elapsed_s: s,
    });
  log.append({ kind: "eval", step: 4, stage: "sft", heldout_loss: 0.5 });
  fs.appendFileSync(log.file, '{"kind":"train","step":6,"sta'); // killed mid-write
  assert.equal(log.read().length, 6);
  assert.equal(log.truncateAfter(3), 3);
  const left = log.read();
  assert.deepEqual(
    left.map((l) => [l.kind, l.step]),
    [
      ["train", 1],
      ["train", 2],
      ["train", 3],
    ],
  );
  assert.ok(fs.readFileSync(log.file, "utf8").endsWith("}\n"));
  // A malformed line in the middle is not a torn write: refuse to guess.
  fs.writeFileSync(log.file, '{"step":1}\nnot json\n{"step":2}\n');
  assert.throws(() => log.read(), /metrics\.jsonl:2: not a JSON line/);
});

test("a run folder is never overwritten; config differences are reported by key", () => {
  const root = tmpDir();
  const dir = path.join(root, "run");
  RunFolder.create(dir, { a: 1 });
  assert.throws(
    () => RunFolder.create(dir, { a: 1 }),
    (e: unknown) => e instanceof UsageError && e.code === "run_exists" && /it holds a run/.test(e.message),
  );
  assert.equal(firstDifference({ a: 1, b: { c: [1, 2] } }, { a: 1, b: { c: [1, 3] } }), "b.c.1");
  assert.equal(firstDifference({ a: 1, b: { c: [1, 2] } }, { b: { c: [1, 2] }, a: 1 }), null);
  assert.equal(firstDifference({ recipe: { sft: { lr: 1 } } }, { recipe: { sft: { lr: 2 } } }), "recipe.sft.lr");
});
