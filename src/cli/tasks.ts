/**
 * `npr tasks ...`: `list` (synthetic tasks and benchmarks), `sample` (seeded examples of a synthetic
 * task as JSONL, optionally with a reference solution in sequential or NPR parallel form) and
 * `check` (load every benchmark under a data directory and report counts or the first bad line).
 * Composition only: generators and loaders live in src/tasks.
 */
import type { Command } from "commander";
import { UsageError } from "../util/errors.ts";
import { parseIntArg } from "./args.ts";
import { BENCHMARK_NAMES, CountdownTask, loadBenchmark, LogicGridTask } from "../tasks/index.ts";

const SYNTHETIC = ["countdown", "logic-grid"] as const;

export function registerTasksCommands(program: Command): void {
  const tasks = program.command("tasks").description("synthetic tasks and benchmark data");

  tasks
    .command("list")
    .description("list synthetic tasks and benchmarks")
    .action(() => {
      for (const t of SYNTHETIC) process.stdout.write(`synthetic  ${t}\n`);
      for (const b of BENCHMARK_NAMES) process.stdout.write(`benchmark  ${b}\n`);
    });

  tasks
    .command("sample")
    .description("print seeded examples of a synthetic task as JSONL")
    .requiredOption("--task <name>", `one of ${SYNTHETIC.join(", ")}`)
    .option("--n <n>", "number of examples", "5")
    .option("--seed <seed>", "generator seed", "1")
    .option("--form <form>", "add a reference solution: sequential | parallel")
    .option("--numbers <k>", "countdown: numbers shown", "4")
    .option("--max-number <k>", "countdown: largest number", "25")
    .option("--houses <k>", "logic-grid: houses (2-5)", "3")
    .option("--attributes <k>", "logic-grid: attributes (2-5)", "3")
    .action((o: { task: string; n: string; seed: string; form?: string; numbers: string; maxNumber: string; houses: string; attributes: string }) => {
      const n = parseIntArg(o.n, "--n");
      const seed = parseIntArg(o.seed, "--seed");
      if (o.form !== undefined && o.form !== "sequential" && o.form !== "parallel") {
        throw new UsageError(`--form: expected sequential or parallel, got "${o.form}"`, { code: "bad_flag", param: "--form" });
      }
      if (o.task === "countdown") {
        const t = new CountdownTask(n, seed, { count: parseIntArg(o.numbers, "--numbers", 2), maxNumber: parseIntArg(o.maxNumber, "--max-number", 2) });
        for (let i = 0; i < n; i++) {
          const ex = t.get(i);
          const row: Record<string, unknown> = { ...ex, prompt: t.renderPrompt(ex) };
          if (o.form) row.solution = o.form === "sequential" ? t.sequentialSolution(ex) : t.parallelSolution(ex, seed + i);
          process.stdout.write(`${JSON.stringify(row)}\n`);
        }
      } else if (o.task === "logic-grid") {
        const t = new LogicGridTask(n, seed, { houses: parseIntArg(o.houses, "--houses", 2), attributes: parseIntArg(o.attributes, "--attributes", 2) });
        for (let i = 0; i < n; i++) {
          const ex = t.get(i);
          const row: Record<string, unknown> = { ...ex, prompt: t.renderPrompt(ex) };
          if (o.form) row.reference = o.form === "sequential" ? t.sequentialSolution(ex, i) : t.parallelSolution(ex, i);
          process.stdout.write(`${JSON.stringify(row)}\n`);
        }
      } else {
        throw new UsageError(`--task: unknown task "${o.task}"`, { code: "bad_flag", param: "--task", hint: `one of ${SYNTHETIC.join(", ")}` });
      }
    });

  tasks
    .command("check")
    .description("load every benchmark under a data directory; print counts (fails on the first malformed line)")
    .requiredOption("--data <dir>", "data directory holding benchmarks/")
    .action((o: { data: string }) => {
      for (const b of BENCHMARK_NAMES) process.stdout.write(`${b.padEnd(14)} ${loadBenchmark(b, o.data).size}\n`);
    });
}
