/**
 * Stage 2's data: rejection-sampled self-distillation (`npr distill`, reference/npr.md §6.2).
 * Training-split problems of the recipe's tasks (never a test split: DESIGN.md) are sampled in
 * rounds through collectRollouts (G = 1, sequential mode as NPR's stock-SGLang sampling is);
 * round k samples every problem still unsolved once, and the first response that is correct,
 * complete and scores 0 on NPR's evaluation format score (`compute_format_score`, the acceptance
 * of `rejection_sampling.py --structured_trace_distil`) is kept in the canonical form.
 * Knows the tasks' API, rollouts and the format score; nothing about the CLI or training.
 */
import { canonicalizeResponse } from "../format/index.ts";
import type { ForcedBlock } from "../engine/index.ts";
import type { Qwen3Model } from "../model/index.ts";
import { streamExamples, syntheticTask } from "../tasks/index.ts";
import type { SyntheticDifficulty } from "../tasks/index.ts";
import { UsageError, invariant } from "../util/index.ts";
import { splitByWeight } from "./corpus.ts";
import type { ExampleEncoder } from "./examples.ts";
import type { Recipe } from "./recipe.ts";
import { collectRollouts, rolloutSeed } from "./rollouts.ts";
export { writeFileAtomic } from "./checkpoint-io.ts";
import type { RolloutProblem } from "./rollouts.ts";

/** Most tries per problem (NPR's is 8; past 64 a problem the model cannot solve only burns compute). */
export const MAX_TRIES = 64;

/** A training-split problem with its verifier and where it came from. */
export interface DistillProblem extends RolloutProblem {
  /** The task example's id (train split: `<task>-<seed>-<i>`; test ids read `<task>-test-<i>`). */
  id: string;
  task: string;
}

/** The seed stream distillation draws problems from: a fixed function of the run's seed, apart from the corpus's and validation's. */
export function distillSeed(seed: number): number {
  return (seed ^ 0x0d157111) >>> 0;
}

/**
 * `n` training-split problems of the recipe's tasks, split over the mix by weight, drawn from
 * distillSeed(seed), each graded by its task's verifier. Every problem is asserted to come from
 * the training split (the task generators hash each problem to one split once and for all).
 */
export function distillProblems(recipe: Recipe, n: number, seed: number): DistillProblem[] {
  const counts = splitByWeight(
    n,
    recipe.tasks.map((t) => t.weight),
  );
  return recipe.tasks.flatMap((entry, t) => {
    if (counts[t] === 0) return [];
    const difficulty = entry.difficulty as SyntheticDifficulty;
    const grader = syntheticTask(entry.name, Math.max(1, counts[t]!), 0, "train", difficulty);
    return [...streamExamples({ task: entry.name, n: counts[t]!, seed: distillSeed(seed), split: "train", difficulty, forms: [] })].map(
      (ex): DistillProblem => {
        invariant(ex.split === "train", () => `distill drew ${ex.example.id} from the ${ex.split} split`);
        return {
          id: ex.example.id,
          task: entry.name,
          prompt: ex.prompt,
          grade: (text: string) => {
            const o = grader.evaluate(ex.example as never, text);
            return o.kind === "graded" && o.correct;
          },
        };
      },
    );
  });
}

/** One kept trajectory: what `npr train sft` reads (prompt, response) plus where it came from. */
export interface DistillLine {
  prompt: string;
  /** The accepted response in the engine's canonical form. */
  response: string;
  task: string;
  id: string;
  /** 1-based try that produced it. */
  try: number;
}

export interface DistillOptions {
  model: Qwen3Model;
  /** Sequential-mode encoder over the model's tokenizer (prompts through its chat template). */
  encoder: ExampleEncoder;
  problems: readonly DistillProblem[];
  /** Most samples per problem (1..MAX_TRIES). */
  tries: number;
  maxNewTokens: number;
  temperature: number;
  topP: number;
  seed: number;
  /** Engine mode (default "sequential": a Stage 1 model writes the tags as text). */
  mode?: "sequential" | "parallel";
  /** Forced structure of (problem, try), for random-weight tests; null: the model decides. */
  forceStructure?: (problem: number, attempt: number) => ForcedBlock[] | null;
  /** Called after every round. */
  onRound?: (r: RoundReport) => void;
}

export interface RoundReport {
  /** 1-based try. */
  try: number;
  sampled: number;
  kept: number;
  /** Problems solved so far. */
  solved: number;
  problems: number;
  tokens: number;
  tokens_per_s: number;
}

/** Yields of one problem set: kept at try k / problems, and the running sum. */
export interface YieldStats {
  problems: number;
  kept: number;
  yield_per_try: number[];
  cumulative_yield: number[];
}

export interface DistillStats extends YieldStats {
  tries: number;
  /** Rollouts sampled over every round. */
  sampled: number;
  /** Why sampled responses were turned down (a response counts once, first reason in this order). */
  rejected: { truncated: number; incorrect: number; format: number };
  per_task: Record<string, YieldStats>;
  /** Response tokens sampled, engine wall time, their ratio. */
  tokens: number;
  wall_s: number;
  tokens_per_s: number;
  format_variant: "eval";
  mode: "sequential" | "parallel";
}

export interface DistillResult {
  lines: DistillLine[];
  stats: DistillStats;
}

function yields(problems: number, keptAt: readonly number[], tries: number): YieldStats {
  const perTry = Array.from({ length: tries }, (_, k) => keptAt.filter((t) => t === k + 1).length);
  const share = (c: number) => (problems === 0 ? 0 : c / problems);
  const cumulative: number[] = [];
  let run = 0;
  for (const c of perTry) {
    run += c;
    cumulative.push(share(run));
  }
  return { problems, kept: keptAt.length, yield_per_try: perTry.map(share), cumulative_yield: cumulative };
}

/**
 * Rejection sampling: up to `tries` rounds, each sampling every still-unsolved problem once
 * (seed rolloutSeed(seed, try, problem, 0): a pure function of the problem's index and the try,
 * whatever else was solved), keeping the first response that is correct (the task's verifier),
 * not cut by the budget (an SFT example ends in end-of-turn, which a cut response never wrote)
 * and of eval-variant format score 0. Unsolved problems are dropped. Lines come in problem order.
 */
export function distill(opts: DistillOptions): DistillResult {
  if (!(Number.isInteger(opts.tries) && opts.tries >= 1 && opts.tries <= MAX_TRIES)) {
    throw new UsageError(`distill: tries must be an integer in 1..${MAX_TRIES}, got ${opts.tries}`, { code: "bad_tries", param: "tries" });
  }
  const mode = opts.mode ?? "sequential";
  const P = opts.problems.length;
  const kept: Array<DistillLine | null> = Array(P).fill(null);
  const rejected = { truncated: 0, incorrect: 0, format: 0 };
  let sampled = 0;
  let tokens = 0;
  let wallS = 0;
  for (let k = 1; k <= opts.tries; k++) {
    const open = opts.problems.map((_, i) => i).filter((i) => kept[i] === null);
    if (open.length === 0) break;
    const batch = collectRollouts({
      model: opts.model,
      encoder: opts.encoder,
      problems: open.map((i) => opts.problems[i]!),
      groupSize: 1,
      mode,
      maxNewTokens: opts.maxNewTokens,
      seed: opts.seed,
      step: k,
      seedOf: (b) => rolloutSeed(opts.seed, k, open[b]!, 0),
      sampling: { temperature: opts.temperature, topP: opts.topP },
      formatVariant: "eval",
      forceStructure: opts.forceStructure ? (b) => opts.forceStructure!(open[b]!, k) : undefined,
    });
    let keptNow = 0;
    let roundTokens = 0;
    for (const r of batch.rollouts) {
      const i = open[r.problemIndex]!;
      const p = opts.problems[i]!;
      roundTokens += r.stats.serializedTokens;
      if (r.truncated) rejected.truncated++;
      else if (!r.correct) rejected.incorrect++;
      else if (r.formatScore !== 0) rejected.format++;
      else {
        kept[i] = { prompt: p.prompt, response: canonicalizeResponse(r.text), task: p.task, id: p.id, try: k };
        keptNow++;
      }
    }
    sampled += batch.rollouts.length;
    tokens += roundTokens;
    wallS += batch.stats.wall_s;
    opts.onRound?.({
      try: k,
      sampled: batch.rollouts.length,
      kept: keptNow,
      solved: kept.filter((x) => x !== null).length,
      problems: P,
      tokens: roundTokens,
      tokens_per_s: batch.stats.tokens_per_s,
    });
  }
  const lines = kept.filter((x): x is DistillLine => x !== null);
  const perTask: Record<string, YieldStats> = {};
  for (const task of new Set(opts.problems.map((p) => p.task))) {
    const idx = opts.problems.map((p, i) => (p.task === task ? i : -1)).filter((i) => i >= 0);
    perTask[task] = yields(
      idx.length,
      idx.flatMap((i) => (kept[i] ? [kept[i]!.try] : [])),
      opts.tries,
    );
  }
  return {
    lines,
    stats: {
      ...yields(
        P,
        lines.map((l) => l.try),
        opts.tries,
      ),
      tries: opts.tries,
      sampled,
      rejected,
      per_task: perTask,
      tokens,
      wall_s: wallS,
      tokens_per_s: wallS > 0 ? tokens / wallS : NaN,
      format_variant: "eval",
      mode,
    },
  };
}

/** The JSONL text of the kept lines (one object per line, a final newline when any). */
export function distillJsonl(lines: readonly DistillLine[]): string {
  return (
    lines.map((l) => JSON.stringify({ prompt: l.prompt, response: l.response, task: l.task, id: l.id, try: l.try })).join("\n") +
    (lines.length ? "\n" : "")
  );
}

/** FILE.jsonl -> FILE.stats.json (FILE.stats.json for any other name too). */
export function statsPathOf(out: string): string {
  return out.endsWith(".jsonl") ? `${out.slice(0, -".jsonl".length)}.stats.json` : `${out}.stats.json`;
}
