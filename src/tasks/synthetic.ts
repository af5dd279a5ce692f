/**
 * The synthetic tasks as one API for the trainer and the CLI: `generateExamples` /
 * `streamExamples` give seeded examples of a split with their prompt and both reference traces;
 * `syntheticTask` builds the Task object (evaluate = the task's verifier, the RL reward);
 * `exampleFromRecord` reads an example back from a JSONL row of `npr tasks sample` (for
 * `npr grade --task`); TASK_VOCABULARY lists every word the generators write, for the task
 * tokenizer. Knows the two task modules; nothing about tokenizers or models.
 */
import { ConfigError, invariant } from "../util/index.ts";
import { VALUE_CAP } from "./countdown-search.ts";
import {
  COUNTDOWN_PRESETS,
  CountdownTask,
  countdownProblemText,
  evaluateCountdown,
  type CountdownDifficulty,
  type CountdownExample,
} from "./countdown.ts";
import {
  clueText,
  evaluateLogicGrid,
  LOGIC_ATTRIBUTES,
  LOGIC_GRID_PRESETS,
  LogicGridTask,
  logicGridProblemText,
  type LogicGridDifficulty,
  type LogicGridExample,
} from "./logic-grid.ts";
import type { Clue } from "./logic-search.ts";
import { exampleSeed, MAX_TEST_EXAMPLES, MAX_TRAIN_EXAMPLES, type Split } from "./splits.ts";
import { SYNTHETIC_NPR_INSTRUCTION, type Outcome } from "./task.ts";

export const SYNTHETIC_TASKS = ["countdown", "logic-grid"] as const;
export type SyntheticTaskName = (typeof SYNTHETIC_TASKS)[number];
export type TraceForm = "sequential" | "parallel";
export const TRACE_FORMS: readonly TraceForm[] = ["sequential", "parallel"];

/** A preset name plus knob overrides; knobs of the other task are an error. */
export type SyntheticDifficulty = { preset?: string } & Partial<CountdownDifficulty> & Partial<LogicGridDifficulty>;

export const SYNTHETIC_PRESETS: Readonly<Record<SyntheticTaskName, readonly string[]>> = {
  countdown: Object.keys(COUNTDOWN_PRESETS),
  "logic-grid": Object.keys(LOGIC_GRID_PRESETS),
};

export type SyntheticTask = CountdownTask | LogicGridTask;

const KNOBS: Record<SyntheticTaskName, readonly string[]> = {
  countdown: ["count", "maxNumber", "minTarget", "maxTarget"],
  "logic-grid": ["houses", "attributes"],
};

/**
 * The Task object of `name`: `size` examples of stream `seed` (train) or the first `size` of the
 * fixed test list (test; the seed is not used). A ConfigError names a bad preset or knob.
 */
export function syntheticTask(
  name: SyntheticTaskName,
  size: number,
  seed: number,
  split: Split = "train",
  difficulty: SyntheticDifficulty = {},
): SyntheticTask {
  const other = SYNTHETIC_TASKS.find((t) => t !== name)!;
  for (const k of Object.keys(difficulty)) {
    if (k !== "preset" && !KNOBS[name].includes(k)) {
      throw new ConfigError(`${name}: unknown difficulty knob "${k}"${KNOBS[other].includes(k) ? ` (it belongs to ${other})` : ""}`, {
        code: "bad_difficulty",
        param: k,
        hint: `knobs of ${name}: preset, ${KNOBS[name].join(", ")}`,
      });
    }
  }
  return name === "countdown"
    ? new CountdownTask(size, seed, { ...difficulty, split })
    : new LogicGridTask(size, seed, { ...difficulty, split });
}

export interface ReferenceTrace {
  /** The response text (canonical NPR form for the parallel trace). */
  text: string;
  /** Did the search reach the answer? A failed trace ends in \boxed{none} (it is still a valid trace). */
  solved: boolean;
}

export interface SyntheticExample {
  task: SyntheticTaskName;
  split: Split;
  /** The task's example (id, problem, answer and the task's own fields); `evaluate` takes it. */
  example: CountdownExample | LogicGridExample;
  /** The user message: problem + SYNTHETIC_NPR_INSTRUCTION. */
  prompt: string;
  /** Reference traces of the forms asked for (both by default). */
  sequential?: ReferenceTrace;
  parallel?: ReferenceTrace;
}

export interface GenerateOptions {
  task: SyntheticTaskName;
  n: number;
  /** Stream seed of the train split; ignored by the test split, which is one fixed list. */
  seed?: number;
  split?: Split;
  difficulty?: SyntheticDifficulty;
  forms?: readonly TraceForm[];
}

/** Examples one at a time (a generator), so a large `n` never sits in memory. */
export function* streamExamples(opts: GenerateOptions): Generator<SyntheticExample> {
  const split = opts.split ?? "train";
  const cap = split === "test" ? MAX_TEST_EXAMPLES : MAX_TRAIN_EXAMPLES;
  if (!Number.isSafeInteger(opts.n) || opts.n < 0 || opts.n > cap) {
    throw new ConfigError(`${opts.task}: n must be an integer in 0..${cap} for the ${split} split, got ${opts.n}`, {
      code: "too_many",
      param: "n",
    });
  }
  const seed = opts.seed ?? 1;
  const task = syntheticTask(opts.task, opts.n, seed, split, opts.difficulty);
  const forms = opts.forms ?? TRACE_FORMS;
  for (let i = 0; i < opts.n; i++) {
    let out: SyntheticExample;
    if (task instanceof CountdownTask) {
      const ex = task.get(i);
      out = { task: opts.task, split, example: ex, prompt: task.renderPrompt(ex) };
      // The number of plans is drawn per example; the test list's draws are fixed like its problems.
      const planSeed = exampleSeed(split === "test" ? -1 : seed, i);
      for (const form of forms) out[form] = reference(form === "sequential" ? task.sequentialTrace(ex) : task.parallelTrace(ex, planSeed));
    } else {
      const ex = task.get(i);
      out = { task: opts.task, split, example: ex, prompt: task.renderPrompt(ex) };
      for (const form of forms) out[form] = reference(form === "sequential" ? task.sequentialTrace(ex) : task.parallelTrace(ex));
    }
    yield out;
  }
}

const reference = (t: { text: string; solved: boolean }): ReferenceTrace => ({ text: t.text, solved: t.solved });

/** `n` examples of a split with prompts and reference traces (see streamExamples). */
export function generateExamples(opts: GenerateOptions): SyntheticExample[] {
  return [...streamExamples(opts)];
}

/** What grading needs of an example: Countdown's numbers and target, a grid's size, words and clues. */
export type GradableExample =
  | ({ id: string } & Pick<CountdownExample, "numbers" | "target">)
  | ({ id: string } & Pick<LogicGridExample, "houses" | "attributes" | "clues">);

/**
 * What grading needs, read from a JSONL row of `npr tasks sample` (the row may hold more fields),
 * or the reason it cannot be read. Countdown needs `numbers` and `target`; logic-grid `houses`,
 * `attributes` and `clues`; `id` is kept when present.
 */
export function exampleFromRecord(
  task: SyntheticTaskName,
  rec: Record<string, unknown>,
): { ok: true; example: GradableExample } | { ok: false; why: string } {
  const id = typeof rec.id === "string" ? rec.id : "";
  const isInt = (v: unknown, lo: number, hi: number) => Number.isSafeInteger(v) && (v as number) >= lo && (v as number) <= hi;
  if (task === "countdown") {
    const { numbers, target } = rec;
    if (!Array.isArray(numbers) || numbers.length < 1 || numbers.length > 12 || !numbers.every((x) => isInt(x, 0, 1e9))) {
      return { ok: false, why: `"numbers" must be a list of 1-12 non-negative integers` };
    }
    if (!isInt(target, 0, 1e9)) return { ok: false, why: `"target" must be a non-negative integer` };
    return { ok: true, example: { id, numbers: numbers as number[], target: target as number } };
  }
  const { houses, attributes, clues } = rec;
  if (!isInt(houses, 1, 50)) return { ok: false, why: `"houses" must be an integer in 1..50` };
  const attrOk = (a: unknown) =>
    typeof a === "object" &&
    a !== null &&
    typeof (a as { name?: unknown }).name === "string" &&
    Array.isArray((a as { values?: unknown }).values) &&
    (a as { values: unknown[] }).values.every((v) => typeof v === "string");
  if (!Array.isArray(attributes) || attributes.length < 1 || attributes.length > 50 || !attributes.every(attrOk)) {
    return { ok: false, why: `"attributes" must be a list of {"name": string, "values": [string]}` };
  }
  if (!Array.isArray(clues) || clues.length > 1000 || !clues.every((c) => typeof c === "string"))
    return { ok: false, why: `"clues" must be a list of strings` };
  return {
    ok: true,
    example: { id, houses: houses as number, attributes: attributes as LogicGridExample["attributes"], clues: clues as string[] },
  };
}

/** Grades a response to an example of `task` with the task's verifier (the RL reward). */
export function evaluateSynthetic(task: SyntheticTaskName, example: GradableExample, text: string): Outcome {
  if (task === "countdown" && "numbers" in example) return evaluateCountdown(example, text);
  invariant(task === "logic-grid" && "clues" in example, () => `evaluateSynthetic: the example is not a ${task} example`);
  return evaluateLogicGrid(example, text);
}

/**
 * Every word (run of ASCII letters) the generators write: problem texts, clue sentences, trace
 * keywords, the instruction, the attribute names and values, and the chat roles. Numbers run from
 * 0 to `maxNumber`. Derived from the generators' own templates so a new word cannot be missed;
 * test/tokenizer/task-tokenizer.test.ts checks thousands of samples for words outside it.
 */
export const TASK_VOCABULARY: Readonly<{ words: readonly string[]; maxNumber: number }> = Object.freeze({
  words: Object.freeze(collectWords()),
  maxNumber: VALUE_CAP,
});

function collectWords(): string[] {
  const words = LOGIC_ATTRIBUTES.map((a) => a.values as string[]);
  const kinds: Clue[] = [
    { t: "at", x: [0, 0], h: 0 },
    { t: "notAt", x: [0, 0], h: 0 },
    ...(["same", "diff", "leftOf", "next", "before"] as const).map((t): Clue => ({ t, x: [0, 0], y: [1, 0] })),
  ];
  const texts = [
    SYNTHETIC_NPR_INSTRUCTION,
    countdownProblemText([1, 2], 3),
    logicGridProblemText(
      2,
      LOGIC_ATTRIBUTES,
      kinds.map((c) => clueText(c, words)),
    ),
    // Trace keywords (countdown-search.ts, logic-search.ts) and the chat template's roles.
    "back fail none steps reaching solving it try not only has no house solved boxed c",
    "user assistant system",
  ];
  const out = new Set<string>();
  for (const t of texts) for (const w of t.match(/[A-Za-z]+/g) ?? []) out.add(w);
  return [...out].sort();
}
