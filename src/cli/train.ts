/**
 * `npr train pretrain|sft`: the training stages as commands. This file only turns flags into a
 * run config (the recipe after --steps/--save-every/--seed, the stage's inputs), opens the run
 * folder (a new one, or the existing one with --resume, which must have been started with the
 * same config), picks the backend and hands over to train/. Every flag is checked before any
 * work starts, with one-line errors naming it.
 *
 *   npr train pretrain --recipe tiny-cpu --out runs/base --steps 12 --save-every 3
 *   npr train sft --recipe tiny-cpu --init runs/base/final --data traj.jsonl --layout parallel --out runs/beta
 */
import path from "node:path";
import type { Command } from "commander";
import type { Backend } from "../tensor/index.ts";
import {
  RunFolder,
  describePresets,
  firstDifference,
  loadRecipe,
  makeProgress,
  parseRecipe,
  runPretrain,
  runSft,
  withOverrides,
} from "../train/index.ts";
import type { LayoutMode, Progress, Recipe, StageOverrides, SupervisedStage } from "../train/index.ts";
import { ConfigError, UsageError } from "../util/index.ts";
import { checkInputDir, checkInputFile, checkOutputDir, parseChoice, parseIntArg } from "./args.ts";
import { makeBackend } from "./model.ts";

/** What recipe.json holds: the resolved recipe and the stage's inputs (absolute paths). */
interface RunConfig {
  stage: SupervisedStage;
  recipe: Recipe;
  inputs: { init?: string; data?: string; layout?: LayoutMode };
}

interface CommonFlags {
  recipe?: string;
  out: string;
  steps?: string;
  saveEvery?: string;
  seed?: string;
  resume?: boolean;
  backend?: string;
  progress?: boolean;
}

// Upper bounds that no real run reaches; a value past them is a typo.
const MAX_STEPS = 10_000_000;
const MAX_SEED = 2 ** 32 - 1;

function overridesOf(f: CommonFlags): StageOverrides {
  return {
    steps: f.steps === undefined ? undefined : parseIntArg(f.steps, "--steps", 1, MAX_STEPS),
    saveEvery: f.saveEvery === undefined ? undefined : parseIntArg(f.saveEvery, "--save-every", 1, MAX_STEPS),
    seed: f.seed === undefined ? undefined : parseIntArg(f.seed, "--seed", 0, MAX_SEED),
  };
}

/** The config without what may change between a run and its resume (the backend it runs on). */
function comparable(c: RunConfig): unknown {
  const { backend: _backend, ...recipe } = c.recipe;
  return { ...c, recipe };
}

/**
 * The run folder and its config. Fresh: `--out` must be new or empty and `--recipe` is required.
 * `--resume` on a folder that holds a run: its saved config, which the flags (when given) must
 * reproduce; on a folder that holds none: a fresh start.
 */
function openRun(
  stage: SupervisedStage,
  f: CommonFlags,
  inputs: RunConfig["inputs"],
  progress: Progress,
): { run: RunFolder; config: RunConfig } {
  const o = overridesOf(f);
  const existing = f.resume ? RunFolder.existing(f.out) : null;
  if (existing) {
    const saved = existing.readConfig() as RunConfig;
    if (saved.stage !== stage) {
      throw new UsageError(`${f.out} holds a ${saved.stage} run, not ${stage}`, {
        code: "wrong_stage",
        param: "--out",
        hint: `resume it with npr train ${saved.stage}`,
      });
    }
    const savedRecipe = parseRecipe(saved.recipe, path.join(f.out, "recipe.json"));
    const asked: RunConfig = {
      stage,
      recipe: withOverrides(f.recipe ? loadRecipe(f.recipe) : savedRecipe, stage, o),
      inputs: { ...saved.inputs, ...definedOnly(inputs) },
    };
    const diff = firstDifference(comparable(saved), comparable(asked));
    if (diff !== null) {
      throw new ConfigError(`--resume: the run in ${f.out} was started with a different ${diff}`, {
        code: "resume_mismatch",
        param: diff,
        hint: "resume with the same recipe and flags (or none: --resume alone reads them from recipe.json)",
      });
    }
    progress.log(`resuming the run in ${existing.dir}`);
    return { run: existing, config: saved };
  }
  if (!f.recipe)
    throw new UsageError("--recipe is required (except with --resume on an existing run)", { code: "missing_flag", param: "--recipe" });
  if (f.resume) progress.log(`--resume: no run in ${f.out} yet; starting one`);
  const config: RunConfig = { stage, recipe: withOverrides(loadRecipe(f.recipe), stage, o), inputs: definedOnly(inputs) };
  return { run: RunFolder.create(f.out, config), config };
}

function definedOnly<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

function backendFor(config: RunConfig, flag: string | undefined): Backend {
  return makeBackend(flag === undefined ? config.recipe.backend : parseChoice(flag, "--backend", ["cpu", "cuda"] as const));
}

function addCommonOptions(cmd: Command): Command {
  return cmd
    .option("--recipe <name|file>", "recipe preset (see `npr train --help`) or a recipe .json file")
    .requiredOption("--out <dir>", "run folder: recipe.json, metrics.jsonl, samples/, checkpoints/, final/")
    .option("--steps <n>", "optimizer steps (overrides the recipe)")
    .option("--save-every <n>", "checkpoint every n steps (overrides the recipe)")
    .option("--seed <s>", "seed of init and data order (overrides the recipe)")
    .option("--resume", "continue the run in --out from its newest valid checkpoint")
    .option("--backend <name>", "cpu or cuda (default: the recipe's)")
    .option("--no-progress", "plain log lines even on a terminal");
}

/** Runs a stage body with the run opened, reporting where the results are. */
function finish(stage: string, run: RunFolder, steps: number, resumedFrom: number, lastLoss: number): void {
  const ran = steps - resumedFrom;
  process.stdout.write(
    `${stage}: ${steps} steps done${resumedFrom > 0 ? ` (${ran} in this run, resumed at ${resumedFrom})` : ""}` +
      `${Number.isFinite(lastLoss) ? `, last loss ${lastLoss.toFixed(4)}` : ""}\n` +
      `  final model: ${run.finalDir}\n  metrics:     ${run.metrics.file}\n`,
  );
}

export function registerTrainCommands(program: Command): void {
  const presets = describePresets();
  const train = program
    .command("train")
    .description("train models: pretrain (stage 0, from scratch on task traces), sft (stage 2, parallel or sequential)")
    .addHelpText(
      "after",
      `\nRecipes (presets/recipes/, or pass a .json file to --recipe):\n` +
        presets.map((p) => `  ${p.name.padEnd(12)} ${p.description}`).join("\n") +
        `\n\nEvery command takes --steps, --save-every, --seed and --resume. A run folder survives\n` +
        `kill -9: --resume continues from the newest valid checkpoint.`,
    );

  addCommonOptions(
    train.command("pretrain").description("stage 0: a base model from scratch on solver traces of the recipe's tasks"),
  ).action((f: CommonFlags) => {
    checkOutputDir(f.out, "--out");
    const progressFor = (total: number) => makeProgress({ stage: "pretrain", totalSteps: total, plain: f.progress === false });
    const early = progressFor(0);
    const { run, config } = openRun("pretrain", f, {}, early);
    if (f.resume && run.isComplete())
      return void process.stdout.write(`pretrain: the run in ${run.dir} is already complete (${run.finalDir})\n`);
    run.clearTemporaries();
    const progress = progressFor(config.recipe.pretrain!.steps);
    try {
      const res = runPretrain({ recipe: config.recipe, backend: backendFor(config, f.backend), run, resume: Boolean(f.resume), progress });
      finish("pretrain", run, res.steps, res.resumedFrom, res.lastLoss);
    } finally {
      progress.stop();
    }
  });

  addCommonOptions(
    train.command("sft").description("stage 2: fine-tune --init on trajectories, NPR's parallel layout or the sequential baseline"),
  )
    .option("--init <dir>", "model folder to start from (config, weights, tokenizer), e.g. a pretrain run's final/")
    .option("--data <file>", "trajectories: JSONL with string fields prompt and response")
    .option("--layout <mode>", "parallel (NPR layout) or sequential (causal baseline)")
    .action((f: CommonFlags & { init?: string; data?: string; layout?: string }) => {
      checkOutputDir(f.out, "--out");
      const fresh = !(f.resume && RunFolder.existing(f.out));
      const need = (v: string | undefined, flag: string) => {
        if (fresh && v === undefined) throw new UsageError(`${flag} is required`, { code: "missing_flag", param: flag });
      };
      need(f.init, "--init");
      need(f.data, "--data");
      need(f.layout, "--layout");
      const inputs: RunConfig["inputs"] = {
        init: f.init === undefined ? undefined : path.resolve(checkInputDir(f.init, "--init", "model folder")),
        data: f.data === undefined ? undefined : path.resolve(checkInputFile(f.data, "--data")),
        layout: f.layout === undefined ? undefined : parseChoice(f.layout, "--layout", ["parallel", "sequential"] as const),
      };
      const progressFor = (total: number) => makeProgress({ stage: "sft", totalSteps: total, plain: f.progress === false });
      const { run, config } = openRun("sft", f, inputs, progressFor(0));
      if (f.resume && run.isComplete())
        return void process.stdout.write(`sft: the run in ${run.dir} is already complete (${run.finalDir})\n`);
      run.clearTemporaries();
      const progress = progressFor(config.recipe.sft!.steps);
      try {
        const res = runSft({
          recipe: config.recipe,
          initDir: config.inputs.init!,
          dataFile: config.inputs.data!,
          layout: config.inputs.layout!,
          backend: backendFor(config, f.backend),
          run,
          resume: Boolean(f.resume),
          progress,
        });
        progress.log(
          `sft: ${res.trainExamples} training and ${res.heldOutExamples} held-out trajectories (${res.dropped.length} dropped), layout ${config.inputs.layout}`,
        );
        finish("sft", run, res.steps, res.resumedFrom, res.lastLoss);
      } finally {
        progress.stop();
      }
    });
}
