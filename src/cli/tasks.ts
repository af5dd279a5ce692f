/**
 * `npr tasks ...`: `list` (synthetic tasks with their presets, and benchmarks), `sample` (seeded
 * examples of a synthetic task as JSONL, from the train split or the fixed test split, optionally
 * with a reference trace in sequential or NPR parallel form) and `check` (load every benchmark
 * under a data directory and report counts or the first bad line). Every flag is range-checked
 * before any work; output is streamed line by line and a closed pipe ends the command quietly.
 * Composition only: generators, traces and splits live in src/tasks.
 */
import type { Command } from "commander";
import { UsageError } from "../util/index.ts";
import { parseChoice, parseIntArg } from "./args.ts";
import { writeOut } from "./io.ts";
import {
  BENCHMARK_NAMES,
  COUNTDOWN_LIMITS,
  LOGIC_GRID_LIMITS,
  loadBenchmark,
  MAX_TEST_EXAMPLES,
  MAX_TRAIN_EXAMPLES,
  SPLITS,
  streamExamples,
  SYNTHETIC_PRESETS,
  SYNTHETIC_TASKS,
  TRACE_FORMS,
  type Split,
  type SyntheticDifficulty,
  type SyntheticTaskName,
} from "../tasks/index.ts";

interface SampleFlags {
  task: string;
  n: string;
  seed?: string;
  split: string;
  form?: string;
  preset?: string;
  numbers?: string;
  maxNumber?: string;
  minTarget?: string;
  maxTarget?: string;
  houses?: string;
  attributes?: string;
}

/** Difficulty flags: the task they belong to, the knob they set and its range. */
type Knob = "count" | "maxNumber" | "minTarget" | "maxTarget" | "houses" | "attributes";
const KNOB_FLAGS: {
  flag: string;
  key: keyof SampleFlags & string;
  knob: Knob;
  task: SyntheticTaskName;
  range: readonly [number, number];
}[] = [
  { flag: "--numbers", key: "numbers", knob: "count", task: "countdown", range: COUNTDOWN_LIMITS.count },
  { flag: "--max-number", key: "maxNumber", knob: "maxNumber", task: "countdown", range: COUNTDOWN_LIMITS.maxNumber },
  { flag: "--min-target", key: "minTarget", knob: "minTarget", task: "countdown", range: COUNTDOWN_LIMITS.minTarget },
  { flag: "--max-target", key: "maxTarget", knob: "maxTarget", task: "countdown", range: COUNTDOWN_LIMITS.maxTarget },
  { flag: "--houses", key: "houses", knob: "houses", task: "logic-grid", range: LOGIC_GRID_LIMITS.houses },
  { flag: "--attributes", key: "attributes", knob: "attributes", task: "logic-grid", range: LOGIC_GRID_LIMITS.attributes },
];

/** Rows between yields to the event loop, so a closed pipe is noticed within a few rows. */
const YIELD_EVERY = 64;

/** Validates every flag of `tasks sample` before any example is made. */
function sampleRequest(o: SampleFlags): {
  task: SyntheticTaskName;
  n: number;
  seed: number;
  split: Split;
  form: (typeof TRACE_FORMS)[number] | null;
  difficulty: SyntheticDifficulty;
} {
  const task = parseChoice(o.task, "--task", SYNTHETIC_TASKS);
  const split = parseChoice(o.split, "--split", SPLITS);
  const cap = split === "test" ? MAX_TEST_EXAMPLES : MAX_TRAIN_EXAMPLES;
  const n = parseIntArg(o.n, "--n", 0, cap, `at most ${cap} examples per call for the ${split} split`);
  if (split === "test" && o.seed !== undefined) {
    throw new UsageError("--seed: the test split is one fixed list; it takes no seed", {
      code: "bad_flag",
      param: "--seed",
      hint: "drop --seed (--n N gives its first N problems)",
    });
  }
  const seed = o.seed === undefined ? 1 : parseIntArg(o.seed, "--seed", 0, 2 ** 32 - 1);
  const form = o.form === undefined ? null : parseChoice(o.form, "--form", TRACE_FORMS);
  const difficulty: SyntheticDifficulty = {};
  if (o.preset !== undefined) difficulty.preset = parseChoice(o.preset, "--preset", SYNTHETIC_PRESETS[task]);
  for (const k of KNOB_FLAGS) {
    const v = o[k.key];
    if (v === undefined) continue;
    if (k.task !== task) throw new UsageError(`${k.flag} applies to ${k.task} only, not ${task}`, { code: "bad_flag", param: k.flag });
    difficulty[k.knob] = parseIntArg(v, k.flag, k.range[0], k.range[1]);
  }
  if (difficulty.minTarget !== undefined && difficulty.maxTarget !== undefined && difficulty.minTarget > difficulty.maxTarget) {
    throw new UsageError(`--min-target ${difficulty.minTarget} is above --max-target ${difficulty.maxTarget}`, {
      code: "bad_flag",
      param: "--min-target",
    });
  }
  return { task, n, seed, split, form, difficulty };
}

export function registerTasksCommands(program: Command): void {
  const tasks = program.command("tasks").description("synthetic tasks and benchmark data");

  tasks
    .command("list")
    .description("list synthetic tasks (with their difficulty presets) and benchmarks")
    .action(() => {
      for (const t of SYNTHETIC_TASKS) writeOut(`synthetic  ${t.padEnd(14)} presets: ${SYNTHETIC_PRESETS[t].join(", ")}\n`);
      for (const b of BENCHMARK_NAMES) writeOut(`benchmark  ${b}\n`);
    });

  tasks
    .command("sample")
    .description("print seeded examples of a synthetic task as JSONL (train split by default; --split test gives the fixed held-out list)")
    .requiredOption("--task <name>", `one of ${SYNTHETIC_TASKS.join(", ")}`)
    .option("--n <n>", `number of examples (train: at most ${MAX_TRAIN_EXAMPLES}; test: at most ${MAX_TEST_EXAMPLES})`, "5")
    .option("--seed <seed>", "stream seed of the train split (default 1; the test split takes none)")
    .option("--split <split>", "train | test", "train")
    .option("--form <form>", "add a reference trace: sequential | parallel")
    .option(
      "--preset <name>",
      `difficulty preset (countdown: ${SYNTHETIC_PRESETS.countdown.join(", ")}, default apr; logic-grid: ${SYNTHETIC_PRESETS["logic-grid"].join(", ")}, default small)`,
    )
    .option("--numbers <k>", `countdown: numbers shown (${COUNTDOWN_LIMITS.count.join("-")})`)
    .option("--max-number <k>", `countdown: numbers are drawn from 1..k (${COUNTDOWN_LIMITS.maxNumber.join("-")})`)
    .option("--min-target <k>", `countdown: smallest target (${COUNTDOWN_LIMITS.minTarget.join("-")})`)
    .option("--max-target <k>", `countdown: largest target (${COUNTDOWN_LIMITS.maxTarget.join("-")})`)
    .option("--houses <k>", `logic-grid: houses (${LOGIC_GRID_LIMITS.houses.join("-")})`)
    .option("--attributes <k>", `logic-grid: attributes (${LOGIC_GRID_LIMITS.attributes.join("-")})`)
    .action(async (o: SampleFlags) => {
      const r = sampleRequest(o);
      const forms = r.form === null ? [] : [r.form];
      let i = 0;
      for (const s of streamExamples({ task: r.task, n: r.n, seed: r.seed, split: r.split, difficulty: r.difficulty, forms })) {
        const { id, ...fields } = s.example;
        const row: Record<string, unknown> = { task: s.task, split: s.split, id, ...fields, prompt: s.prompt };
        if (r.form !== null) {
          const t = s[r.form]!;
          Object.assign(row, { form: r.form, reference: t.text, solved: t.solved });
        }
        writeOut(`${JSON.stringify(row)}\n`);
        if (++i % YIELD_EVERY === 0) await new Promise((resolve) => setImmediate(resolve));
      }
    });

  tasks
    .command("check")
    .description("load every benchmark under a data directory; print counts (fails on the first malformed line)")
    .requiredOption("--data <dir>", "data directory holding benchmarks/")
    .action((o: { data: string }) => {
      for (const b of BENCHMARK_NAMES) writeOut(`${b.padEnd(14)} ${loadBenchmark(b, o.data).size}\n`);
    });
}
