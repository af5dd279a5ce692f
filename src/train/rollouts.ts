/**
 * Rollouts for the RL stages (issue 12, item 1): G samples per problem through the engine
 * (sequential mode for Stage 1 and the sequential baseline, parallel for Stage 3), each kept with
 * its ids, the engine's log-probs and token origins, its layout from format/, finish reason,
 * statistics and the verifier's verdict; the trainer's re-score of the same tokens (one masked
 * forward per rollout over its layout) and the engine-vs-trainer log-prob difference to log
 * every step. Knows the engine, the model, the format module and the example encoder; nothing
 * about advantages, policy losses, optimizers or run folders.
 *
 * Weights: trainer and engine share one Qwen3Model. The engine caches nothing derived from the
 * weights across requests (no prefix cache: a request's KV blocks are freed when it finishes; the
 * runner's decode step and its captured graphs read each parameter's buffer by reference, and
 * AdamW writes those buffers in place), so an engine made once sees every optimizer step without a
 * version bump (test/train/rollouts.test.ts checks it). Replacing a parameter Tensor object in
 * model.params (rather than writing into it) would leave a captured CUDA graph on the old buffer:
 * make a new Engine after doing that.
 */
import { Engine, engineVocab, forcedMaxPlans } from "../engine/index.ts";
import type { FinishReason, ForcedBlock, GenerateParams, SamplingParams, TokenOrigin } from "../engine/index.ts";
import { formatScore, trajectoryLayout } from "../format/index.ts";
import type { FormatVariant } from "../format/index.ts";
import type { Qwen3Model } from "../model/index.ts";
import { UsageError, invariant } from "../util/index.ts";
import type { Layout } from "../util/index.ts";
import type { EncodedExample, ExampleEncoder } from "./examples.ts";
import { IGNORE } from "./examples.ts";
import { engineFor } from "./evaluate.ts";
import { rowLogprobs } from "./losses.ts";
import { packExamples } from "./packing.ts";

/** A prompt and the task's verdict on a response (evaluate.ts's EvalProblem fits). */
export interface RolloutProblem {
  prompt: string;
  /** True when the response text solves the problem (the task's verifier). */
  grade: (response: string) => boolean;
}

/** NPR's rollout sampling (both RL stages): temperature 1.0, top-p 1.0, top-k off, no penalties. */
export const ROLLOUT_SAMPLING: Omit<SamplingParams, "seed"> = {
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  branchRepetitionPenalty: 1,
};

export interface CollectOptions {
  model: Qwen3Model;
  encoder: ExampleEncoder;
  problems: readonly RolloutProblem[];
  /** G: samples per problem. */
  groupSize: number;
  mode: "parallel" | "sequential";
  maxNewTokens: number;
  /** Base seed of the run; each rollout's seed is rolloutSeed(seed, step, problem, sample). */
  seed: number;
  /** Optimizer step the rollouts are for (part of every rollout's seed). */
  step: number;
  /** Overrides of ROLLOUT_SAMPLING (seed excluded: it is derived). */
  sampling?: Partial<Omit<SamplingParams, "seed">>;
  /** An engine over `model` to reuse (default: one made for this call, sized so nothing is preempted). */
  engine?: Engine;
  /** No fork when fewer tokens remain of the budget (default 0: small budgets; NPR's 1024 is for 30k). */
  minForkBudget?: number;
  /** Forced structure of rollout (problem, sample), for random-weight tests; null: the model decides. */
  forceStructure?: (problem: number, sample: number) => ForcedBlock[] | null;
  /** Variant of NPR's format score recorded per rollout (default "stage1"). */
  formatVariant?: FormatVariant;
  /** Engine seed of rollout (problem, sample) instead of rolloutSeed(seed, step, ...) (distill.ts: per problem and try). */
  seedOf?: (problem: number, sample: number) => number;
}

export type RolloutLayout = { ok: true; layout: Layout } | { ok: false; why: string };

export interface RolloutStats {
  /** Response tokens, every branch counted (what the trainer sees). */
  serializedTokens: number;
  /** Decode steps a user waits for. */
  criticalPathTokens: number;
  /** Blocks the engine forked, and the branches of each. */
  forks: number;
  branchesPerFork: number[];
}

export interface Rollout {
  problemIndex: number;
  /** The rollout's group (one per problem of the batch: problemIndex) and its index in the group. */
  group: number;
  sample: number;
  seed: number;
  promptIds: number[];
  /** Serialized response (stop id last when the request stopped). */
  responseIds: number[];
  /** [responseIds.length] engine log-prob of each sampled token; null for forced ones (engine or script). */
  engineLogprobs: Array<number | null>;
  origins: TokenOrigin[];
  /** trajectoryLayout over prompt + response in the rollout's mode, or why it has none. */
  layout: RolloutLayout;
  finishReason: FinishReason;
  /** The engine's reason the structure is not a complete NPR response (null when it is). */
  malformed: string | null;
  /** The budget ran out (finish reason "length"). */
  truncated: boolean;
  /** Decoded response text (stop ids dropped), what the verifier and the format score read. */
  text: string;
  /** The verifier's verdict; the accuracy reward is +1 / -1 (malformed, overlong: per stage). */
  correct: boolean;
  reward: 1 | -1;
  /** NPR's format score of the response text (0 = no penalty). */
  formatScore: number;
  stats: RolloutStats;
}

export interface RolloutBatchStats {
  rollouts: number;
  /** Response tokens (every branch) per second of engine wall time. */
  tokens_per_s: number;
  wall_s: number;
  /** Share of rollouts with at least one engine-executed fork of >= 2 branches. */
  trigger_rate: number;
  /** Mean branches over every fork of the batch (NaN when none forked). */
  branches_per_fork: number;
  truncated_rate: number;
  /** Share with format score 0. */
  format_rate: number;
  accuracy: number;
  /** Share whose layout could not be built (malformed structure). */
  malformed_rate: number;
  mean_tokens: number;
  mean_critical_path: number;
}

export interface RolloutBatch {
  rollouts: Rollout[];
  stats: RolloutBatchStats;
}

/** Mixes a 32-bit value (murmur3's finalizer). */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The engine seed of rollout `sample` of `problem` at `step` of a run seeded `seed`: a pure
 * function of the four, so a resumed run replays identical rollouts. In [0, 2^32).
 */
export function rolloutSeed(seed: number, step: number, problem: number, sample: number): number {
  let h = fmix32((seed >>> 0) ^ 0x6a09e667);
  for (const v of [Math.floor(seed / 4294967296), step, problem, sample]) h = fmix32(h ^ Math.imul((v >>> 0) + 0x9e3779b9, 0x27d4eb2f));
  return h;
}

function checkOptions(o: CollectOptions): void {
  const bad = (param: string, what: string) => {
    throw new UsageError(`rollouts: ${param} ${what}`, { code: "bad_rollout_option", param });
  };
  if (!(Number.isInteger(o.groupSize) && o.groupSize >= 1)) bad("group_size", `must be a positive integer, got ${o.groupSize}`);
  if (!(Number.isInteger(o.maxNewTokens) && o.maxNewTokens >= 1))
    bad("max_new_tokens", `must be a positive integer, got ${o.maxNewTokens}`);
  if (!(Number.isSafeInteger(o.seed) && o.seed >= 0)) bad("seed", `must be a non-negative integer, got ${o.seed}`);
  if (!(Number.isSafeInteger(o.step) && o.step >= 0)) bad("step", `must be a non-negative integer, got ${o.step}`);
}

/**
 * G rollouts per problem through the engine at the rollout sampling settings, graded by each
 * problem's verifier, laid out by format/ in the rollout's mode. Rollout (i, j) is
 * rollouts[i * G + j]. A parallel rollout cut by the budget is laid out as the incomplete
 * trajectory the engine decoded (its positions are the engine's); a broken structure gets
 * `layout.ok = false` with the parser's reason.
 */
export function collectRollouts(opts: CollectOptions): RolloutBatch {
  checkOptions(opts);
  const { model, encoder, problems, groupSize: G, mode } = opts;
  const vocab = engineVocab(encoder.tokenizer, model.config.vocabSize);
  const promptOf = problems.map((p) => encoder.promptIds(p.prompt));
  const prompts: number[][] = [];
  const params: Array<Partial<GenerateParams>> = [];
  const seeds: number[] = [];
  problems.forEach((_, i) => {
    for (let j = 0; j < G; j++) {
      const seed = opts.seedOf ? opts.seedOf(i, j) : rolloutSeed(opts.seed, opts.step, i, j);
      const forceStructure = opts.forceStructure?.(i, j) ?? null;
      prompts.push(promptOf[i]!);
      seeds.push(seed);
      params.push({
        ...ROLLOUT_SAMPLING,
        ...opts.sampling,
        seed,
        mode,
        maxNewTokens: opts.maxNewTokens,
        minForkBudget: opts.minForkBudget ?? 0,
        forceStructure,
        ...(forceStructure ? { maxPlans: forcedMaxPlans(forceStructure) } : {}),
      });
    }
  });
  if (prompts.length === 0) return { rollouts: [], stats: batchStats([], 0) };
  const engine = opts.engine ?? engineFor(model, vocab, prompts, opts.maxNewTokens);
  const t0 = performance.now();
  const results = engine.generateSync(prompts, params);
  const wallS = (performance.now() - t0) / 1000;
  if (!opts.engine) engine.dispose();
  const variant = opts.formatVariant ?? "stage1";
  const rollouts = results.map((res, r): Rollout => {
    const i = Math.floor(r / G);
    const text = encoder.tokenizer.decode(res.ids.filter((id) => !vocab.stopIds.has(id) && id < encoder.tokenizer.size));
    const correct = problems[i]!.grade(text);
    const truncated = res.finishReason === "length";
    const all = [...res.promptIds, ...res.ids];
    const laid = trajectoryLayout({
      mode,
      promptLen: res.promptIds.length,
      ids: all,
      tokenOf: (id) => vocab.parserToken(id),
      allowIncomplete: truncated,
    });
    const layout: RolloutLayout = laid.ok ? { ok: true, layout: laid.layout } : { ok: false, why: laid.why };
    if (laid.ok) {
      // The engine decoded each token at the position the trainer will score it at; a difference is an engine bug.
      const P = res.promptIds.length;
      for (let k = 0; k < res.ids.length; k++) {
        invariant(
          laid.layout.positions[P + k] === res.positions[k],
          () => `rollout ${r}: token ${k} at engine position ${res.positions[k]}, layout ${laid.layout.positions[P + k]}`,
        );
      }
    }
    return {
      problemIndex: i,
      group: i,
      sample: r % G,
      seed: seeds[r]!,
      promptIds: res.promptIds,
      responseIds: res.ids,
      // The engine keeps the model's log-prob of a script-forced id (forced-structure mode); neither it
      // nor an engine-inserted tag was the policy's choice, so both are null here, out of every loss.
      engineLogprobs: res.logprobs.map((lp, k) => (res.origins[k] === "sampled" ? lp : null)),
      origins: res.origins,
      layout,
      finishReason: res.finishReason,
      malformed: res.malformed,
      truncated,
      text,
      correct,
      reward: correct ? 1 : -1,
      formatScore: formatScore(text, variant).score,
      stats: {
        serializedTokens: res.stats.serializedTokens,
        criticalPathTokens: res.stats.criticalPathTokens,
        forks: res.stats.blocks,
        branchesPerFork: res.stats.branchesPerBlock,
      },
    };
  });
  return { rollouts, stats: batchStats(rollouts, wallS) };
}

function batchStats(rs: readonly Rollout[], wallS: number): RolloutBatchStats {
  const n = rs.length;
  const share = (f: (r: Rollout) => boolean) => (n === 0 ? NaN : rs.filter(f).length / n);
  const mean = (f: (r: Rollout) => number) => (n === 0 ? NaN : rs.reduce((s, r) => s + f(r), 0) / n);
  const branches = rs.flatMap((r) => r.stats.branchesPerFork);
  const tokens = rs.reduce((s, r) => s + r.stats.serializedTokens, 0);
  return {
    rollouts: n,
    tokens_per_s: wallS > 0 ? tokens / wallS : NaN,
    wall_s: wallS,
    trigger_rate: share((r) => r.stats.branchesPerFork.some((b) => b >= 2)),
    branches_per_fork: branches.length === 0 ? NaN : branches.reduce((a, b) => a + b, 0) / branches.length,
    truncated_rate: share((r) => r.truncated),
    format_rate: share((r) => r.formatScore === 0),
    accuracy: share((r) => r.correct),
    malformed_rate: share((r) => !r.layout.ok),
    mean_tokens: mean((r) => r.stats.serializedTokens),
    mean_critical_path: mean((r) => r.stats.criticalPathTokens),
  };
}

/**
 * A rollout as a training example: prompt + response ids, next-token targets on the response only
 * (examples.ts's convention), its own layout. Null when the rollout has no layout.
 */
export function rolloutExample(r: Rollout): EncodedExample | null {
  if (!r.layout.ok) return null;
  const P = r.promptIds.length;
  const L = P + r.responseIds.length;
  const ids = new Int32Array(L); // [L]
  ids.set(r.promptIds, 0);
  ids.set(r.responseIds, P);
  const targets = new Int32Array(L).fill(IGNORE); // [L]
  for (let t = P - 1; t < L - 1; t++) targets[t] = ids[t + 1]!;
  invariant(r.layout.layout.numTokens === L, "rolloutExample: layout and ids disagree in length");
  return { ids, targets, promptLen: P, layout: r.layout.layout, numLossTokens: L - P };
}

/**
 * The trainer's log-prob of every response token of each rollout (float64 host values, no
 * gradient): one masked forward per rollout over its layout (losses.ts rowLogprobs on a
 * one-example packed row). [responseIds.length] per rollout, forced tokens included (the
 * policy loss masks them by origin); null for a rollout without a layout.
 */
export function trainerLogprobs(model: Qwen3Model, rollouts: readonly Rollout[]): Array<Float64Array | null> {
  return rollouts.map((r) => {
    const ex = rolloutExample(r);
    if (!ex) return null;
    const lp = rowLogprobs(model, packExamples([ex])); // [L], row t scores token t + 1
    return lp.slice(ex.promptLen - 1, ex.ids.length - 1);
  });
}

export interface LogprobDiff {
  /** Sampled tokens compared (forced tokens and rollouts without a layout are excluded). */
  tokens: number;
  max_abs: number;
  mean_abs: number;
}

/** Engine vs trainer log-probs over the sampled tokens of `rollouts` (log it every step). */
export function logprobDiff(rollouts: readonly Rollout[], trainer: ReadonlyArray<ArrayLike<number> | null>): LogprobDiff {
  invariant(trainer.length === rollouts.length, "logprobDiff: one trainer entry per rollout");
  let n = 0;
  let max = 0;
  let total = 0;
  rollouts.forEach((r, k) => {
    const t = trainer[k];
    if (!t) return;
    invariant(
      t.length === r.engineLogprobs.length,
      () => `logprobDiff: rollout ${k} has ${r.engineLogprobs.length} engine and ${t.length} trainer log-probs`,
    );
    r.engineLogprobs.forEach((e, i) => {
      if (e === null) return;
      const d = Math.abs(e - t[i]!);
      max = Math.max(max, d);
      total += d;
      n++;
    });
  });
  return { tokens: n, max_abs: n === 0 ? NaN : max, mean_abs: n === 0 ? NaN : total / n };
}
