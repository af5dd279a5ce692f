/**
 * Stage 0's corpus, generated from the recipe's task mix: solver-written search traces of
 * training-split problems, mostly in the sequential form, with a small documented share
 * (`corpus.parallel_share`, at most 10%) in the NPR parallel form standing in for the format prior
 * an instruct model has from its instructions. Every prompt carries the task's NPR instruction
 * (style "npr"), so the base model meets the format request on every example and answers in the
 * format at the rate the parallel share teaches it (the evaluation's `sampled_format_rate`
 * measures it; greedy decoding rarely picks the minority form).
 * Held-out traces and evaluation problems come from the tasks' fixed test splits, graded by each
 * task's verifier. Knows the tasks' API; nothing about tokens or models.
 */
import { streamExamples, syntheticTask } from "../tasks/index.ts";
import type { SyntheticDifficulty, SyntheticExample, SyntheticTaskName } from "../tasks/index.ts";
import { invariant } from "../util/index.ts";
import type { EvalProblem } from "./evaluate.ts";
import type { TextExample } from "./examples.ts";
import type { PretrainHyper, Recipe } from "./recipe.ts";

/** The seed of the validation stream: a fixed function of the run's seed, apart from the corpus's. */
export function validationSeed(seed: number): number {
  return (seed ^ 0x5eed1234) >>> 0;
}

/** `total` split over the mix by weight (largest remainders), so the counts add up exactly. */
export function splitByWeight(total: number, weights: readonly number[]): number[] {
  const sum = weights.reduce((a, b) => a + b, 0);
  const exact = weights.map((w) => (total * w) / sum);
  const out = exact.map(Math.floor);
  let left = total - out.reduce((a, b) => a + b, 0);
  const order = exact.map((x, i) => [x - Math.floor(x), i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  for (let k = 0; left > 0; k++, left--) out[order[k % order.length]![1]]!++;
  return out;
}

/**
 * Whether example i of n is written in the parallel form: exactly floor(n * share) of them,
 * spread evenly (example i is parallel when floor((i + 1) * share) passes an integer), so the
 * corpus holds the stated share and not a random count around it; the data order shuffles anyway.
 */
export function isParallelSlot(i: number, share: number): boolean {
  return Math.floor((i + 1) * share + 1e-9) > Math.floor(i * share + 1e-9);
}

/** The trace of the form drawn for an example (both forms are generated; generation is cheap next to training). */
function traceOf(ex: SyntheticExample, parallel: boolean): string {
  const t = parallel ? ex.parallel : ex.sequential;
  invariant(t, () => `the ${parallel ? "parallel" : "sequential"} trace of ${ex.example.id} was not generated`);
  return t.text;
}

export interface Corpus {
  train: TextExample[];
  /**
   * Validation traces and problems: training-split problems drawn from a seed stream of their own
   * and deduplicated against the corpus, for the curve during training (loss and greedy
   * accuracy at every evaluation) so the test split is read only by the final evaluation.
   */
  validation: TextExample[];
  validationProblems: EvalProblem[];
  /** Held-out traces (test split), in the same sequential/parallel mix. */
  heldOut: TextExample[];
  /** Test-split problems with their verifiers, for greedy accuracy. */
  problems: EvalProblem[];
  /** Training traces in the parallel form (the format prior), and the share they make. */
  parallelCount: number;
  parallelShare: number;
  /** Training examples per task. */
  perTask: Record<string, number>;
}

/** Test-split examples as evaluation problems, each graded by its task's verifier (the RL reward's function). */
function gradedProblems(
  task: SyntheticTaskName,
  difficulty: SyntheticDifficulty,
  examples: readonly SyntheticExample[],
  split: "train" | "test" = "test",
): EvalProblem[] {
  const grader = syntheticTask(task, Math.max(1, examples.length), 0, split, difficulty);
  return examples.map((ex) => ({
    id: ex.example.id,
    prompt: ex.prompt,
    answer: ex.example.answer,
    grade: (text: string) => {
      const o = grader.evaluate(ex.example as never, text);
      return o.kind === "graded" && o.correct;
    },
  }));
}

/**
 * The first `n` problems of the recipe's test splits, split over the task mix by weight: what
 * every stage's greedy evaluation answers (the same problems at every evaluation and stage).
 */
export function evalProblems(recipe: Recipe, n: number): EvalProblem[] {
  const counts = splitByWeight(
    n,
    recipe.tasks.map((t) => t.weight),
  );
  return recipe.tasks.flatMap((entry, t) => {
    if (counts[t] === 0) return [];
    const difficulty = entry.difficulty as SyntheticDifficulty;
    return gradedProblems(entry.name, difficulty, [
      ...streamExamples({ task: entry.name, n: counts[t]!, split: "test", difficulty, forms: [] }),
    ]);
  });
}

/**
 * The corpus of `recipe` at `seed`. Deterministic: example i of task t is a pure function of
 * (seed, t, i) and its form of i (isParallelSlot), so the same recipe and seed give the same
 * corpus on every machine.
 */
export function buildCorpus(recipe: Recipe, hp: PretrainHyper, seed: number): Corpus {
  const weights = recipe.tasks.map((t) => t.weight);
  const nTrain = splitByWeight(hp.corpus.examples, weights);
  const nHeld = splitByWeight(hp.corpus.held_out, weights);
  const nProblems = splitByWeight(hp.eval.problems, weights);
  const corpus: Corpus = {
    train: [],
    validation: [],
    validationProblems: [],
    heldOut: [],
    problems: [],
    parallelCount: 0,
    parallelShare: 0,
    perTask: {},
  };
  recipe.tasks.forEach((entry, t) => {
    const difficulty = entry.difficulty as SyntheticDifficulty;
    let i = 0;
    const seen = new Set<string>();
    for (const ex of streamExamples({ task: entry.name, n: nTrain[t]!, seed, split: "train", difficulty })) {
      const parallel = isParallelSlot(i++, hp.corpus.parallel_share);
      if (parallel) corpus.parallelCount++;
      seen.add(ex.example.problem);
      corpus.train.push({ prompt: ex.prompt, response: traceOf(ex, parallel) });
    }
    // Validation: as many problems as the held-out set and the evaluation each take, from the
    // training split under a seed of its own, none of them a corpus problem.
    const nVal = Math.max(nHeld[t]!, nProblems[t]!);
    if (nVal > 0) {
      const val: SyntheticExample[] = [];
      for (const ex of streamExamples({ task: entry.name, n: 4 * nVal + 64, seed: validationSeed(seed), split: "train", difficulty })) {
        if (seen.has(ex.example.problem)) continue;
        seen.add(ex.example.problem);
        val.push(ex);
        if (val.length === nVal) break;
      }
      val
        .slice(0, nHeld[t]!)
        .forEach((ex, k) =>
          corpus.validation.push({ prompt: ex.prompt, response: traceOf(ex, isParallelSlot(k, hp.corpus.parallel_share)) }),
        );
      corpus.validationProblems.push(...gradedProblems(entry.name, difficulty, val.slice(0, nProblems[t]!), "train"));
    }
    corpus.perTask[entry.name] = (corpus.perTask[entry.name] ?? 0) + nTrain[t]!;
    // The test split is one fixed list per difficulty: its first n are the held-out traces and
    // the evaluation problems (graded by the task's verifier, the RL reward's own function).
    const nTest = Math.max(nHeld[t]!, nProblems[t]!);
    if (nTest === 0) return;
    const test = [...streamExamples({ task: entry.name, n: nTest, seed, split: "test", difficulty })];
    test
      .slice(0, nHeld[t]!)
      .forEach((ex, k) => corpus.heldOut.push({ prompt: ex.prompt, response: traceOf(ex, isParallelSlot(k, hp.corpus.parallel_share)) }));
    corpus.problems.push(...gradedProblems(entry.name, difficulty, test.slice(0, nProblems[t]!)));
  });
  corpus.parallelShare = corpus.train.length === 0 ? 0 : corpus.parallelCount / corpus.train.length;
  return corpus;
}
