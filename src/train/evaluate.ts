/**
 * Evaluation during training: the held-out loss (token mean over held-out examples, packed as
 * training packs them) and task accuracy from generations through the engine, greedy (what a
 * user gets) and sampled at temperature 1.0 (what Stage 1's rollouts get), each with the share of
 * responses in the NPR format and the share that actually forked. Problems come with their own
 * grader (the task's verifier), so this file never compares against a stored string.
 * Knows the model, the engine and the format checker; nothing about runs, files or task kinds.
 */
import { Engine, engineVocab } from "../engine/index.ts";
import type { EngineVocab, GenerateParams, GenerationResult } from "../engine/index.ts";
import { checkResponse } from "../format/index.ts";
import type { Qwen3Model } from "../model/index.ts";
import type { EncodedExample, ExampleEncoder } from "./examples.ts";
import { rowNll } from "./losses.ts";
import { packExamples } from "./packing.ts";
import type { Evaluation } from "./trainer.ts";

/** A held-out problem: the prompt the model sees and the task's verdict on a response. */
export interface EvalProblem {
  id: string;
  prompt: string;
  /** The ground truth, for the samples file only (grading is `grade`'s). */
  answer: string;
  /** True when the response solves the problem (the task's verifier). */
  grade: (response: string) => boolean;
}

/**
 * Token-mean NLL over `examples` (each example's response tokens), rows packed greedily in
 * order up to `budget` tokens, the same rows training would build. NaN for no examples.
 */
export function heldOutLoss(model: Qwen3Model, examples: readonly EncodedExample[], budget: number): number {
  let nll = 0;
  let tokens = 0;
  let row: EncodedExample[] = [];
  let used = 0;
  const flush = () => {
    if (row.length === 0) return;
    const r = rowNll(model, packExamples(row));
    nll += r.nll;
    tokens += r.tokens;
    row = [];
    used = 0;
  };
  for (const ex of examples) {
    if (used + ex.ids.length > budget) flush();
    row.push(ex);
    used += ex.ids.length;
  }
  flush();
  return tokens === 0 ? NaN : nll / tokens;
}

export interface GreedyEvalOptions {
  maxNewTokens: number;
  /** Generations kept for samples/ (the first ones, so every evaluation shows the same problems). */
  samples: number;
  /** "parallel": the engine forks where the model writes the NPR format; "sequential": never. */
  mode: "parallel" | "sequential";
}

export interface SampledEvalOptions extends GreedyEvalOptions {
  /** Generations per problem (each with its own seed). */
  perProblem: number;
  /** Sampling temperature (Stage 1's rollouts: 1.0, top-p 1.0). */
  temperature: number;
  /** Base seed; generation j of problem i draws from seed + i * perProblem + j. */
  seed: number;
}

export interface GreedyEval {
  /** Share of responses that solve their problem (per problem for greedy, per sample when sampled). */
  accuracy: number;
  /** Share of responses that are complete, well-formed NPR responses (format score 0, strict grammar). */
  format_rate: number;
  /** Share of responses in which the engine forked at least once (the parallel trigger). */
  parallel_rate: number;
  /** Mean response tokens (every branch counted) and mean critical path (what a user waits for). */
  mean_tokens: number;
  mean_critical_path: number;
  /** Share of problems with at least one correct response (equals accuracy for greedy). */
  pass_rate: number;
  /** Responses the rates are measured on. */
  responses: number;
  samples: object[];
}

/** The same counts for no problems: NaN rates, nothing measured. */
const NO_EVAL: GreedyEval = {
  accuracy: NaN,
  format_rate: NaN,
  parallel_rate: NaN,
  mean_tokens: NaN,
  mean_critical_path: NaN,
  pass_rate: NaN,
  responses: 0,
  samples: [],
};

/**
 * Generations for `problems` (request r answers problem `problemOf[r]` with `params[r]`), batched
 * through one engine, graded by each problem's verifier and checked against the NPR grammar.
 */
function generateAndScore(
  model: Qwen3Model,
  encoder: ExampleEncoder,
  problems: readonly EvalProblem[],
  problemOf: readonly number[],
  params: ReadonlyArray<Partial<GenerateParams>>,
  opts: GreedyEvalOptions,
): GreedyEval {
  if (problemOf.length === 0) return NO_EVAL;
  const vocab = engineVocab(encoder.tokenizer, model.config.vocabSize);
  const problemIds = problems.map((p) => encoder.promptIds(p.prompt));
  const prompts = problemOf.map((i) => problemIds[i]!);
  const engine = engineFor(model, vocab, prompts, opts.maxNewTokens);
  const results: GenerationResult[] = engine.generateSync(prompts, params);
  let correct = 0;
  let formatted = 0;
  let forked = 0;
  let tokens = 0;
  let critical = 0;
  const solved = new Set<number>();
  const samples: object[] = [];
  results.forEach((res, r) => {
    const p = problems[problemOf[r]!]!;
    const text = encoder.tokenizer.decode(res.ids.filter((id) => !vocab.stopIds.has(id) && id < encoder.tokenizer.size));
    const ok = p.grade(text);
    const format = checkResponse(text, "eval").valid;
    if (ok) {
      correct++;
      solved.add(problemOf[r]!);
    }
    if (format) formatted++;
    if (res.stats.blocks > 0) forked++;
    tokens += res.stats.serializedTokens;
    critical += res.stats.criticalPathTokens;
    if (samples.length < opts.samples) {
      samples.push({
        id: p.id,
        prompt: p.prompt,
        answer: p.answer,
        response: text,
        correct: ok,
        format_ok: format,
        finish: res.finishReason,
        tokens: res.stats.serializedTokens,
      });
    }
  });
  const n = results.length;
  return {
    accuracy: correct / n,
    format_rate: formatted / n,
    parallel_rate: forked / n,
    mean_tokens: tokens / n,
    mean_critical_path: critical / n,
    pass_rate: solved.size / new Set(problemOf).size,
    responses: n,
    samples,
  };
}

/** Decoding knobs both evaluations share: no repetition penalties, and forks allowed at any budget. */
const PLAIN = { repetitionPenalty: 1, branchRepetitionPenalty: 1, minForkBudget: 0 } as const;

/**
 * Greedy generations (temperature 0, no repetition penalties: the plain argmax) for every
 * problem, batched through one engine, graded by each problem's verifier.
 */
export function greedyEval(
  model: Qwen3Model,
  encoder: ExampleEncoder,
  problems: readonly EvalProblem[],
  opts: GreedyEvalOptions,
): GreedyEval {
  // NPR's minForkBudget 1024 would forbid every fork at these budgets; the budget rule itself still applies.
  const params = { ...PLAIN, mode: opts.mode, temperature: 0, maxNewTokens: opts.maxNewTokens };
  return generateAndScore(
    model,
    encoder,
    problems,
    problems.map((_, i) => i),
    problems.map(() => params),
    opts,
  );
}

/**
 * `perProblem` sampled generations per problem at `temperature` (top-p 1, no penalties): what
 * Stage 1's rollouts see. A base model trained on a small parallel share rarely writes
 * `<guideline>` greedily, yet samples it at about the share it was taught; this is the rate that
 * decides whether DAPO ever meets a parallel rollout. Seeded per generation, so reproducible.
 */
export function sampledEval(
  model: Qwen3Model,
  encoder: ExampleEncoder,
  problems: readonly EvalProblem[],
  opts: SampledEvalOptions,
): GreedyEval {
  const problemOf: number[] = [];
  const params: Array<Partial<GenerateParams>> = [];
  problems.forEach((_, i) => {
    for (let j = 0; j < opts.perProblem; j++) {
      problemOf.push(i);
      params.push({
        ...PLAIN,
        mode: opts.mode,
        temperature: opts.temperature,
        topP: 1,
        maxNewTokens: opts.maxNewTokens,
        seed: opts.seed + i * opts.perProblem + j,
      });
    }
  });
  return generateAndScore(model, encoder, problems, problemOf, params, opts);
}

export interface StageEvalOptions extends GreedyEvalOptions {
  /** Row budget of the held-out loss (the stage's tokens_per_micro_batch). */
  budget: number;
  /** Sampled generations per problem at temperature 1.0 (0 or absent: greedy only). */
  sampledPerProblem?: number;
}

/**
 * An engine with room for every request of `prompts` at once (each prompt plus `maxNewTokens` and
 * two blocks of slack), so no request is preempted and recomputed; evaluation and rollouts share it.
 */
export function engineFor(model: Qwen3Model, vocab: EngineVocab, prompts: ReadonlyArray<readonly number[]>, maxNewTokens: number): Engine {
  const blockSize = 16;
  const perRequest = Math.max(...prompts.map((p) => p.length)) + maxNewTokens + 2 * blockSize;
  const numBlocks = prompts.length * Math.ceil(perRequest / blockSize) + 8;
  return new Engine(model, vocab, { numBlocks, blockSize, maxRunningRequests: prompts.length, maxBatchTokens: 4096 });
}

/**
 * The standard evaluation of a supervised stage: held-out loss, and when problems are given,
 * greedy accuracy / format rate / parallel rate (`greedy_*`) and, when sampledPerProblem > 0,
 * the same at temperature 1.0 (`sampled_*`, per sample, plus `sampled_pass_rate` per problem).
 */
export function evaluateStage(
  model: Qwen3Model,
  encoder: ExampleEncoder,
  heldOut: readonly EncodedExample[],
  problems: readonly EvalProblem[],
  opts: StageEvalOptions,
): Evaluation {
  const metrics: Record<string, number> = {};
  if (heldOut.length > 0) metrics["heldout_loss"] = heldOutLoss(model, heldOut, opts.budget);
  if (problems.length === 0) return { metrics, samples: [] };
  const g = greedyEval(model, encoder, problems, opts);
  metrics["greedy_accuracy"] = g.accuracy;
  metrics["greedy_format_rate"] = g.format_rate;
  metrics["greedy_parallel_rate"] = g.parallel_rate;
  metrics["greedy_mean_tokens"] = g.mean_tokens;
  metrics["greedy_mean_critical_path"] = g.mean_critical_path;
  metrics["problems"] = problems.length;
  const samples = g.samples.map((x) => ({ ...x, decoding: "greedy" }));
  if ((opts.sampledPerProblem ?? 0) > 0) {
    const s = sampledEval(model, encoder, problems, { ...opts, perProblem: opts.sampledPerProblem!, temperature: 1, seed: 0 });
    metrics["sampled_accuracy"] = s.accuracy;
    metrics["sampled_format_rate"] = s.format_rate;
    metrics["sampled_parallel_rate"] = s.parallel_rate;
    metrics["sampled_pass_rate"] = s.pass_rate;
    metrics["sampled_mean_tokens"] = s.mean_tokens;
    metrics["sampled_responses"] = s.responses;
    samples.push(...s.samples.map((x) => ({ ...x, decoding: "temperature 1.0" })));
  }
  return { metrics, samples };
}
