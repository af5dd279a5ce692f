/**
 * `npr distill`: rejection-sampled self-distillation (Stage 2's data). This file only checks the
 * flags (one-line errors naming them, all before any work), loads the model and recipe, hands the
 * sampling to train/distill.ts, prints a line per round and the summary tables, and writes
 * FILE.jsonl and FILE.stats.json atomically.
 *
 *   npr distill --model runs/zero/final --recipe tiny-cpu --tries 8 --out traj.jsonl
 */
import type { Command } from "commander";
import {
  ExampleEncoder,
  MAX_TRIES,
  distill,
  distillJsonl,
  distillProblems,
  loadRecipe,
  statsPathOf,
  writeFileAtomic,
} from "../train/index.ts";
import type { DistillStats, YieldStats } from "../train/index.ts";
import { ConfigError } from "../util/index.ts";
import { checkInputDir, checkOutputFile, parseChoice, parseIntArg } from "./args.ts";
import { loadForEngine } from "./engine.ts";
import { writeOut } from "./io.ts";

interface DistillFlags {
  model: string;
  recipe: string;
  out: string;
  tries?: string;
  problems?: string;
  seed?: string;
  backend?: string;
}

// Past these a value is a typo (the train split of one call holds at most 1e6 problems).
const MAX_PROBLEMS = 1_000_000;
const MAX_SEED = 2 ** 32 - 1;

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** The per-try and per-task tables printed after the last round. */
export function summaryTable(s: DistillStats): string {
  const rows = [`try  kept  yield   cumulative`];
  let run = 0;
  s.yield_per_try.forEach((y, k) => {
    const kept = Math.round(y * s.problems);
    run += kept;
    rows.push(
      `${String(k + 1).padStart(3)}  ${String(kept).padStart(4)}  ${pct(y).padStart(6)}  ${pct(s.cumulative_yield[k]!).padStart(6)} (${run})`,
    );
  });
  const tasks = Object.entries(s.per_task);
  const w = Math.max(4, ...tasks.map(([t]) => t.length));
  rows.push("", `${"task".padEnd(w)}  problems  kept  yield`);
  const line = (name: string, y: YieldStats) =>
    `${name.padEnd(w)}  ${String(y.problems).padStart(8)}  ${String(y.kept).padStart(4)}  ${pct(y.problems === 0 ? 0 : y.kept / y.problems).padStart(6)}`;
  for (const [t, y] of tasks) rows.push(line(t, y));
  rows.push(line("all", s));
  rows.push(
    "",
    `sampled ${s.sampled} responses, ${s.tokens} tokens in ${s.wall_s.toFixed(1)} s (${s.tokens_per_s.toFixed(0)} tok/s); ` +
      `rejected: ${s.rejected.truncated} cut by the budget, ${s.rejected.incorrect} incorrect, ${s.rejected.format} with a format penalty`,
  );
  return rows.join("\n") + "\n";
}

export function registerDistillCommand(program: Command): void {
  program
    .command("distill")
    .description("rejection sampling: keep each training problem's first correct, well-formed response (Stage 2's data)")
    .requiredOption("--model <dir>", "model folder (config, weights, tokenizer), e.g. a Stage 1 run's final/")
    .requiredOption("--recipe <name|file>", "recipe preset or .json file: its tasks and rejection section")
    .requiredOption("--out <file.jsonl>", "kept trajectories {prompt, response, task, id, try}; stats go to FILE.stats.json")
    .option("--tries <n>", `samples per problem at most (default: recipe rejection.tries; at most ${MAX_TRIES})`)
    .option("--problems <n>", "training problems to sample (default: recipe rejection.problems)")
    .option("--seed <s>", "seed of the problem stream and the samples (default: the recipe's)")
    .option("--backend <name>", "cpu or cuda (default: the recipe's)")
    .action((f: DistillFlags) => {
      // Every flag before any work.
      const tries = f.tries === undefined ? undefined : parseIntArg(f.tries, "--tries", 1, MAX_TRIES, "more tries rarely solve a problem");
      const nProblems = f.problems === undefined ? undefined : parseIntArg(f.problems, "--problems", 1, MAX_PROBLEMS);
      const seedFlag = f.seed === undefined ? undefined : parseIntArg(f.seed, "--seed", 0, MAX_SEED);
      const backendFlag = f.backend === undefined ? undefined : parseChoice(f.backend, "--backend", ["cpu", "cuda"] as const);
      checkInputDir(f.model, "--model", "model folder");
      checkOutputFile(f.out, "--out");
      const recipe = loadRecipe(f.recipe);
      const rj = recipe.rejection;
      if (!rj) {
        throw new ConfigError(`recipe ${recipe.name} has no rejection section`, {
          code: "missing_section",
          param: "rejection",
          hint: "add rejection: {max_new_tokens, problems, tries} to the recipe",
        });
      }
      if (rj.keep_per_problem !== 1) {
        throw new ConfigError(
          `recipe ${recipe.name}: rejection.keep_per_problem = ${rj.keep_per_problem}; npr distill keeps 1 per problem`,
          {
            code: "unsupported",
            param: "rejection.keep_per_problem",
            hint: "set it to 1 (NPR's max_trajectory_per_problem)",
          },
        );
      }
      const seed = seedFlag ?? recipe.seed;
      const nTries = tries ?? Math.min(rj.tries, MAX_TRIES);
      const { model, tok } = loadForEngine(f.model, backendFlag ?? recipe.backend, "f32");
      const encoder = new ExampleEncoder(tok, { mode: "sequential" });
      const problems = distillProblems(recipe, nProblems ?? rj.problems, seed);
      process.stderr.write(
        `distill: ${problems.length} training problems (${recipe.tasks.map((t) => t.name).join(", ")}), up to ${nTries} tries, ` +
          `${rj.max_new_tokens} new tokens at temperature ${rj.temperature}, top-p ${rj.top_p}, seed ${seed}\n`,
      );
      const res = distill({
        model,
        encoder,
        problems,
        tries: nTries,
        maxNewTokens: rj.max_new_tokens,
        temperature: rj.temperature,
        topP: rj.top_p,
        seed,
        onRound: (r) =>
          process.stderr.write(
            `distill: try ${r.try}/${nTries}: sampled ${r.sampled}, kept ${r.kept}, solved ${r.solved}/${r.problems} (${pct(r.problems === 0 ? 0 : r.solved / r.problems)}), ` +
              `${r.tokens} tokens at ${r.tokens_per_s.toFixed(0)} tok/s\n`,
          ),
      });
      const statsFile = statsPathOf(f.out);
      writeFileAtomic(f.out, distillJsonl(res.lines));
      writeFileAtomic(
        statsFile,
        JSON.stringify(
          {
            recipe: recipe.name,
            model: f.model,
            seed,
            max_new_tokens: rj.max_new_tokens,
            temperature: rj.temperature,
            top_p: rj.top_p,
            ...res.stats,
          },
          null,
          2,
        ) + "\n",
      );
      writeOut(summaryTable(res.stats) + `wrote ${res.lines.length} trajectories to ${f.out}, stats to ${statsFile}\n`);
    });
}
