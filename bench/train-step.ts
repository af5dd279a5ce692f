/**
 * The trainer's optimizer step against the raw step of bench/common.ts, side by side in one run
 * at the same shape (not a test). Raw: forward over B packed random sequences of S tokens,
 * cross-entropy, backward, clip, AdamW (what bench/cpu-train.ts times). Trainer: the same model
 * and token count through train/: B encoded examples drawn from the data stream, packed into one
 * row (layout offsets, targets with the prompt token ignored), the token-mean loss, backward,
 * gradient norm + clip, AdamW at the scheduled learning rate (trainer.ts optimizerStep), plus the
 * metrics line it writes. The two alternate step by step in one process; prints both medians and
 * the median per-pair ratio (issue 11: within 10%).
 *
 *   node bench/train-step.ts [--preset tiny] [--batch 4] [--seq 256] [--steps 5] [--rounds 3] [--accum 1] [--backend cpu|cuda]
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { CpuBackend } from "../src/tensor/backend/cpu/index.ts";
import type { Backend } from "../src/tensor/index.ts";
import { Qwen3Model, qwen3ParamCount } from "../src/model/index.ts";
import type { Qwen3Config } from "../src/model/index.ts";
import { DataOrder, IGNORE, MetricsLog, learningRate, makeOptimizer, nextStepBatch, optimizerStep } from "../src/train/index.ts";
import type { EncodedExample, OptimizerHyper } from "../src/train/index.ts";
import { causalLayout } from "../src/util/layout.ts";
import { Rng } from "../src/util/rng.ts";
import { loadPreset, makeTrainSetup, median, trainStep } from "./common.ts";

const { values: args } = parseArgs({
  options: {
    preset: { type: "string", default: "tiny" },
    batch: { type: "string", default: "4" },
    seq: { type: "string", default: "256" },
    steps: { type: "string", default: "5" },
    warmup: { type: "string", default: "1" },
    rounds: { type: "string", default: "3" },
    accum: { type: "string", default: "1" },
    backend: { type: "string", default: "cpu" },
  },
});
const B = Number(args.batch);
const S = Number(args.seq);
const STEPS = Number(args.steps);
const WARMUP = Number(args.warmup);
const ROUNDS = Number(args.rounds);
const ACCUM = Number(args.accum);

async function makeBackend(name: string): Promise<Backend> {
  if (name === "cpu") return new CpuBackend();
  const { CudaBackend } = await import("../src/tensor/backend/cuda/index.ts");
  return new CudaBackend();
}

/** B random examples of S tokens: one prompt token, S - 1 trained targets (the raw step trains all S). */
function randomExamples(config: Qwen3Config, n: number): EncodedExample[] {
  const rng = new Rng(1);
  return Array.from({ length: n }, () => {
    const ids = Int32Array.from({ length: S }, () => rng.int(config.vocabSize));
    const targets = new Int32Array(S).fill(IGNORE);
    for (let i = 0; i < S - 1; i++) targets[i] = ids[i + 1]!;
    return { ids, targets, promptLen: 1, layout: causalLayout(S), numLossTokens: S - 1 };
  });
}

const HP: OptimizerHyper = {
  lr: 1e-3,
  schedule: "cosine",
  warmup_steps: 2,
  min_lr_ratio: 0.1,
  weight_decay: 0.1,
  betas: [0.9, 0.95],
  eps: 1e-8,
  grad_clip: 1.0,
};

/** The raw step's state and one step of it (ACCUM times forward + backward + clip + AdamW, as cpu-train.ts times). */
function rawRunner(config: Qwen3Config, backend: Backend): () => number {
  const setup = makeTrainSetup(config, backend, B, S);
  return () => {
    const t0 = performance.now();
    for (let m = 0; m < ACCUM; m++) trainStep(setup).loss.item();
    return (performance.now() - t0) / 1000;
  };
}

/** The trainer's state and one optimizer step of it (data stream, packing, loss, update, metrics line). */
function trainerRunner(config: Qwen3Config, backend: Backend, dir: string): { step: () => number; loss: () => number } {
  const model = Qwen3Model.random(config, { seed: 0, backend });
  const opt = makeOptimizer(model, HP);
  const data = randomExamples(config, 4 * B * ACCUM);
  const order = new DataOrder(data.length, { seed: 0, shuffle: true });
  const lr = learningRate(HP, WARMUP + STEPS * ROUNDS);
  const metrics = new MetricsLog(path.join(dir, "metrics.jsonl"));
  let s = 0;
  let loss = NaN;
  return {
    step() {
      const t0 = performance.now();
      const batch = nextStepBatch(order, data, B * S, ACCUM);
      const r = optimizerStep(model, opt, batch, lr(s), HP.grad_clip);
      const sec = (performance.now() - t0) / 1000;
      s++;
      metrics.append({
        kind: "train",
        step: s,
        stage: "bench",
        loss: r.loss,
        lr: r.lr,
        grad_norm: r.gradNorm,
        tokens: batch.numTokens,
        loss_tokens: batch.numLossTokens,
        tokens_per_s: batch.numTokens / sec,
        epoch: order.epochs,
        elapsed_s: sec,
      });
      loss = r.loss;
      return (performance.now() - t0) / 1000;
    },
    loss: () => loss,
  };
}

const backend = await makeBackend(String(args.backend));
const { config } = loadPreset(String(args.preset));
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "npr-train-step-"));
console.log(
  `machine: ${os.cpus()[0]?.model ?? "?"}, ${os.availableParallelism()} cores, Node ${process.version}, backend ${backend.name}${backend instanceof CpuBackend ? ` (${backend.gemmPath})` : ""}`,
);
console.log(
  `shape: preset ${args.preset} (${qwen3ParamCount(config).toLocaleString("en-US")} params), ${ACCUM} x [B=${B} x S=${S}] tokens per step; ${STEPS * ROUNDS} alternating step pairs after ${WARMUP} warm-up pair(s)`,
);
// Both models live side by side and their steps alternate (raw, trainer, raw, ...), so load from
// other processes lands on both alike; the ratio is the median of the per-pair ratios.
const raw = rawRunner(config, backend);
const trainer = trainerRunner(config, backend, dir);
for (let w = 0; w < WARMUP; w++) {
  raw();
  trainer.step();
}
const rawTimes: number[] = [];
const trainerTimes: number[] = [];
const ratios: number[] = [];
for (let k = 0; k < STEPS * ROUNDS; k++) {
  const a = raw();
  const b = trainer.step();
  rawTimes.push(a);
  trainerTimes.push(b);
  ratios.push(b / a);
}
const tokens = B * S * ACCUM;
const mr = median(rawTimes);
const mt = median(trainerTimes);
console.log(`| step    | median s | tokens/s |`);
console.log(`|---------|----------|----------|`);
console.log(`| raw     | ${mr.toFixed(4)}   | ${(tokens / mr).toFixed(0).padStart(8)} |`);
console.log(`| trainer | ${mt.toFixed(4)}   | ${(tokens / mt).toFixed(0).padStart(8)} |`);
console.log(
  `trainer / raw = ${median(ratios).toFixed(3)} (median of ${ratios.length} paired steps; min ${Math.min(...ratios).toFixed(3)}, max ${Math.max(...ratios).toFixed(3)}); trainer loss ${trainer.loss().toFixed(3)}`,
);
fs.rmSync(dir, { recursive: true, force: true });
