/**
 * The supervised training loop both supervised stages run (pretrain.ts and sft.ts set it up):
 *
 *   start or resume -> for each step: batch -> forward/backward/update -> log -> evaluate -> save
 *   -> final/
 *
 * read top to bottom in runSupervised (STYLE.md habit 21), with the optimizer step it runs
 * (optimizerStep: forward and backward per gradient-accumulation row, each loss the row's share
 * of the step's token mean, then clip and AdamW; one tidy per row, so the same code runs on CPU
 * and CUDA) and the learning-rate schedule. A resumed stage loads the newest valid
 * checkpoint (weights, AdamW moments, data cursor), truncates metrics.jsonl to its step, and runs
 * the remaining steps; on the CPU backend it ends with the same bytes an uninterrupted run ends
 * with (test/train/resume.test.ts kills the CLI with SIGKILL to check).
 * Knows the model, the optimizer, the run folder and its checkpoints; nothing about where
 * the examples came from (tasks, data files) or how evaluations are computed.
 */
import type { Qwen3Model, Qwen3ModelOptions } from "../model/index.ts";
import { AdamW, clipGradNorm, constantLr, cosineLr, gradNorm, tidy } from "../tensor/index.ts";
import type { Backend, LrSchedule, Tensor } from "../tensor/index.ts";
import type { NprTokenizer } from "../tokenizer/index.ts";
import { ConfigError, invariant } from "../util/index.ts";
import { DataOrder, datasetFingerprint, nextStepBatch } from "./batches.ts";
import type { StepBatch } from "./batches.ts";
import type { TrainerState } from "./checkpoint-io.ts";
import { loadTrainingCheckpoint, saveTrainingCheckpoint, writeFolderAtomically, writeModelFiles } from "./checkpoint-io.ts";
import type { EncodedExample } from "./examples.ts";
import type { Progress } from "./progress.ts";
import type { SupervisedStage } from "./recipe.ts";
import type { RunFolder } from "./run-folder.ts";
import { targetsTensor, tokenMeanShare } from "./losses.ts";

/** The optimizer knobs of a stage (recipe keys, snake_case as in the recipe file). */
export interface OptimizerHyper {
  lr: number;
  /** "cosine": linear warm-up then cosine decay to min_lr_ratio * lr; "constant": lr throughout (PAPO). */
  schedule: "cosine" | "constant";
  warmup_steps: number;
  min_lr_ratio: number;
  weight_decay: number;
  betas: readonly [number, number];
  eps: number;
  /** Global-norm clip; 0 turns clipping off (the norm is still measured and logged). */
  grad_clip: number;
}

/**
 * The learning rate of the 0-based optimizer step `step` of `totalSteps`. The schedule is
 * evaluated at step + 1: warm-up reaches the peak at the last warm-up step instead of spending
 * the first step at lr 0 (HF and verl count from 0 and do), and the final step lands on the floor.
 */
export function learningRate(hp: OptimizerHyper, totalSteps: number): LrSchedule {
  if (hp.schedule === "constant") return constantLr(hp.lr);
  const f = cosineLr({ lr: hp.lr, totalSteps, warmupSteps: hp.warmup_steps, minLrRatio: hp.min_lr_ratio });
  return (step) => f(step + 1);
}

/** AdamW over every parameter of `model`, as the stage's knobs say. */
export function makeOptimizer(model: Qwen3Model, hp: OptimizerHyper): AdamW {
  return new AdamW(model.parameters(), { lr: hp.lr, betas: hp.betas, eps: hp.eps, weightDecay: hp.weight_decay });
}

export interface StepResult {
  /** The step's token-mean loss (summed shares of its micro-batches). */
  loss: number;
  /** Global L2 norm of the gradient before clipping. */
  gradNorm: number;
  /** The learning rate the update used. */
  lr: number;
}

/**
 * Runs one optimizer step on `batch` at learning rate `lr`. Gradients are zeroed first and summed
 * by backward over the micro-batches (autograd accumulates into `.grad`).
 */
export function optimizerStep(model: Qwen3Model, opt: AdamW, batch: StepBatch, lr: number, gradClip: number): StepResult {
  invariant(batch.numLossTokens > 0, "optimizerStep: the batch has no response tokens");
  opt.zeroGrad();
  let loss = 0;
  for (const row of batch.micro) {
    loss += tidy(() => {
      const logits = model.forward(row.ids, row.layout); // [T, V]
      const share: Tensor = tokenMeanShare(logits, targetsTensor(model, row), batch.numLossTokens);
      share.backward();
      return share.item();
    });
  }
  const params = opt.params;
  const norm = gradClip > 0 ? clipGradNorm(params, gradClip) : gradNorm(params);
  opt.step(lr);
  return { loss, gradNorm: norm, lr };
}

/** The loop's knobs: the optimizer's plus the recipe's loop keys. */
export interface LoopHyper extends OptimizerHyper {
  steps: number;
  tokens_per_micro_batch: number;
  grad_accum: number;
  save_every: number;
  keep_last: number;
  eval_every: number;
  shuffle: boolean;
}

/** What an evaluation returns: metric name -> value (metrics.jsonl) and generations (samples/). */
export interface Evaluation {
  metrics: Record<string, number>;
  samples: object[];
}

export interface SupervisedRun {
  stage: SupervisedStage;
  hp: LoopHyper;
  run: RunFolder;
  backend: Backend;
  /** Parameter dtype as stored: "f32", or "bf16" matrices (mixed precision). */
  dtype: "f32" | "bf16";
  /** Compute options the model runs with (computeDtype "bf16" over f32 masters). */
  modelOptions: Qwen3ModelOptions;
  tokenizer: NprTokenizer;
  /** The training examples, in dataset order. */
  train: readonly EncodedExample[];
  /** Seed of the data order. */
  seed: number;
  /** The model of step 0 (a fresh init, or the --init model); not called when resuming. */
  initModel: () => Qwen3Model;
  /** Runs at every eval_every steps and after the last one. */
  evaluate?: (model: Qwen3Model, step: number) => Evaluation;
  /** Continue from the newest valid checkpoint (else start at step 0). */
  resume: boolean;
  progress: Progress;
}

export interface SupervisedResult {
  model: Qwen3Model;
  /** Optimizer steps done (the stage's total). */
  steps: number;
  /** Step this process started from (0, or the checkpoint's). */
  resumedFrom: number;
  /** Loss of the last step this process ran (NaN when it ran none). */
  lastLoss: number;
  finalDir: string;
}

/** Trains, checkpoints and writes `final/`. */
export function runSupervised(r: SupervisedRun): SupervisedResult {
  const { hp, run, progress } = r;
  const total = hp.steps;

  // ---- start or resume
  let model: Qwen3Model;
  let opt: AdamW;
  let order: DataOrder;
  let startStep = 0;
  const fingerprint = datasetFingerprint(r.train);
  const checkpoint = r.resume ? run.newestValidCheckpoint((m) => progress.log(`warning: ${m}`)) : null;
  if (checkpoint) {
    const ck = loadTrainingCheckpoint(checkpoint.dir, r.backend, r.dtype, r.modelOptions);
    checkResumable(ck.state, r, run.configHash(), fingerprint, checkpoint.dir);
    model = ck.model;
    opt = makeOptimizer(model, hp);
    opt.loadState(ck.optimizerState);
    order = new DataOrder(r.train.length, { seed: r.seed, shuffle: hp.shuffle }, ck.state.data);
    startStep = ck.state.step;
    progress.log(`resuming ${r.stage} from ${checkpoint.dir} (step ${startStep} of ${total})`);
  } else {
    model = r.initModel();
    opt = makeOptimizer(model, hp);
    order = new DataOrder(r.train.length, { seed: r.seed, shuffle: hp.shuffle });
  }
  // Exactly one line per step: lines a killed process wrote after its last checkpoint go.
  const dropped = run.metrics.truncateAfter(startStep);
  if (dropped > 0) progress.log(`metrics.jsonl: dropped ${dropped} line(s) written after step ${startStep}`);
  const lrAt = learningRate(hp, total);
  progress.start(startStep);
  const t0 = performance.now();
  let lastLoss = NaN;

  for (let step = startStep; step < total; step++) {
    // ---- batch: grad_accum packed rows from the data stream
    const tStep = performance.now();
    const batch = nextStepBatch(order, r.train, hp.tokens_per_micro_batch, hp.grad_accum);

    // ---- update: forward + backward per row, clip, AdamW
    const res = optimizerStep(model, opt, batch, lrAt(step), hp.grad_clip);
    if (!Number.isFinite(res.loss) || !Number.isFinite(res.gradNorm)) {
      throw new ConfigError(`${r.stage} diverged at step ${step + 1}: loss ${res.loss}, gradient norm ${res.gradNorm}`, {
        code: "diverged",
        param: `${r.stage}.lr`,
        hint: `lower ${r.stage}.lr or raise warmup_steps; --resume restarts from the last checkpoint`,
      });
    }
    const done = step + 1;
    lastLoss = res.loss;

    // ---- log
    const seconds = (performance.now() - tStep) / 1000;
    const tokensPerS = batch.numTokens / seconds;
    run.metrics.append({
      kind: "train",
      step: done,
      stage: r.stage,
      loss: res.loss,
      lr: res.lr,
      grad_norm: res.gradNorm,
      tokens: batch.numTokens,
      loss_tokens: batch.numLossTokens,
      tokens_per_s: tokensPerS,
      epoch: order.epochs,
      elapsed_s: (performance.now() - t0) / 1000,
    });
    progress.update({ step: done, loss: res.loss, lr: res.lr, tokensPerS });

    // ---- evaluate
    if (r.evaluate && (done === total || (hp.eval_every > 0 && done % hp.eval_every === 0))) {
      const ev = r.evaluate(model, done);
      run.metrics.append({ kind: "eval", step: done, stage: r.stage, ...ev.metrics });
      if (ev.samples.length > 0) run.writeSamples(done, ev.samples);
      progress.log(
        `${r.stage} eval @ step ${done}: ${Object.entries(ev.metrics)
          .map(([k, v]) => `${k} ${fmt(v)}`)
          .join(", ")}`,
      );
    }

    // ---- save
    if (done % hp.save_every === 0 || done === total) {
      const state: TrainerState = {
        version: 1,
        stage: r.stage,
        step: done,
        total_steps: total,
        data: { ...order.cursor(), seed: r.seed, shuffle: hp.shuffle, size: r.train.length, sha256: fingerprint },
        recipe_sha256: run.configHash(),
      };
      saveTrainingCheckpoint(run.checkpointDir(done), { model, tokenizer: r.tokenizer, opt, state });
      run.prune(hp.keep_last);
    }
  }

  // ---- final/: the model for `npr generate`, `npr eval` and the next stage's --init
  writeFolderAtomically(run.finalDir, (tmp) => writeModelFiles(tmp, model, r.tokenizer));
  progress.stop();
  return { model, steps: total, resumedFrom: startStep, lastLoss, finalDir: run.finalDir };
}

/** A checkpoint belongs to this run and this data, or the resume is refused with the reason. */
function checkResumable(state: TrainerState, r: SupervisedRun, configHash: string, fingerprint: string, dir: string): void {
  const why =
    state.stage !== r.stage
      ? `it is a ${state.stage} checkpoint, this is ${r.stage}`
      : state.recipe_sha256 !== configHash
        ? "recipe.json changed since it was written"
        : state.data.size !== r.train.length
          ? `it was taken over ${state.data.size} training examples, the data now has ${r.train.length}`
          : state.data.sha256 !== fingerprint
            ? "the training examples changed since it was written (their SHA-256 differs)"
            : state.data.seed !== r.seed || state.data.shuffle !== r.hp.shuffle
              ? "the data order (seed, shuffle) changed"
              : state.step > r.hp.steps
                ? `it is at step ${state.step}, past the stage's ${r.hp.steps} steps`
                : null;
  if (why !== null) {
    throw new ConfigError(`cannot resume from ${dir}: ${why}`, {
      code: "not_resumable",
      param: "--resume",
      hint: "resume with the run's own recipe and data, or start a new run in another --out folder",
    });
  }
}

function fmt(v: number): string {
  return Number.isInteger(v) ? String(v) : Math.abs(v) >= 0.01 ? v.toFixed(4) : v.toExponential(3);
}
