/**
 * Setup shared by the CPU training benchmarks (cpu-train.ts, profile-step.ts): a model preset
 * read from presets/models/, a random Qwen3 with AdamW, B packed random sequences of S tokens, and
 * the one training step both time (forward, cross-entropy, backward, clip, AdamW). Benchmarks are
 * not tests: nothing here asserts, and it knows no backend beyond the one it is handed.
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Backend } from "../src/tensor/index.ts";
import { AdamW, clipGradNorm, crossEntropy, Tensor } from "../src/tensor/index.ts";
import { Qwen3Model, parseQwen3Config } from "../src/model/index.ts";
import type { Qwen3Config } from "../src/model/index.ts";
import { packedCausalLayout } from "../src/util/layout.ts";
import type { Layout } from "../src/util/layout.ts";
import { Rng } from "../src/util/rng.ts";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** The config file of a built-in preset and its parsed config. */
export function loadPreset(name: string): { file: string; config: Qwen3Config } {
  const file = path.join(ROOT, "presets/models", `${name}.json`);
  const { config } = parseQwen3Config(JSON.parse(fs.readFileSync(file, "utf8")), file);
  return { file, config };
}

/** Everything one training step needs; the data is fixed, so every step does the same work. */
export interface TrainSetup {
  model: Qwen3Model;
  params: Tensor[];
  opt: AdamW;
  /** [B * S] packed token ids and next-token targets (uniform random: the loss stays near ln V). */
  ids: Int32Array;
  targets: Tensor;
  layout: Layout;
}

/** A random Qwen3 (seed 0) with AdamW, and B x S random ids and targets (seed 1). */
export function makeTrainSetup(config: Qwen3Config, backend: Backend, B: number, S: number): TrainSetup {
  const model = Qwen3Model.random(config, { seed: 0, backend });
  const params = model.parameters();
  const opt = new AdamW(params, { lr: 1e-3, betas: [0.9, 0.95], weightDecay: 0.1 });
  const rng = new Rng(1);
  const V = config.vocabSize;
  const ids = new Int32Array(B * S); // [B * S]
  const targets = new Int32Array(B * S); // [B * S]
  for (let i = 0; i < B * S; i++) {
    ids[i] = rng.int(V);
    targets[i] = rng.int(V);
  }
  const layout = packedCausalLayout(Array(B).fill(S));
  return { model, params, opt, ids, targets: Tensor.fromArray(targets, [B * S], { dtype: "i32", backend }), layout };
}

/** One step: forward + cross-entropy, backward, clip + AdamW; the loss and each phase's wall time. */
export function trainStep(s: TrainSetup): { loss: Tensor; ms: { forward: number; backward: number; optimizer: number } } {
  const t0 = performance.now();
  const logits = s.model.forward(s.ids, s.layout);
  const loss = crossEntropy(logits, s.targets);
  const t1 = performance.now();
  s.opt.zeroGrad();
  loss.backward();
  const t2 = performance.now();
  clipGradNorm(s.params, 1.0);
  s.opt.step();
  const t3 = performance.now();
  return { loss, ms: { forward: t1 - t0, backward: t2 - t1, optimizer: t3 - t2 } };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
