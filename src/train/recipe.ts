/**
 * Recipes: one JSON file per training setup, validated with zod, that names the model size, the
 * tokenizer, the task mix, every stage's hyperparameters and budgets (steps, token budgets,
 * generation lengths). Built-in presets live in presets/recipes/ (`tiny-cpu`: the whole pipeline
 * on 2 CPU cores in minutes; `gpu-small`: tens of millions of parameters on one H100). A bad file
 * is one ConfigError naming the file, the key path and what was wrong with the value found.
 * Keys are snake_case, as HF configs and verl's names (NOTE: the paper's knobs keep the paper's
 * values as defaults, with the released code's values in the comments where they differ).
 * Knows JSON, zod and the names of the synthetic tasks; nothing about models, tensors or the loop
 * that reads the values.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { SYNTHETIC_TASKS } from "../tasks/index.ts";
import { ConfigError, UsageError } from "../util/index.ts";

const posInt = z.number().int().positive();
const count = z.number().int().nonnegative();
const unit = z.number().min(0).max(1);

/** The transformer's shape; vocab_size comes from the tokenizer (padded to a multiple of 64). */
const ModelSchema = z.strictObject({
  hidden_size: posInt,
  intermediate_size: posInt,
  num_hidden_layers: posInt,
  num_attention_heads: posInt,
  num_key_value_heads: posInt,
  head_dim: posInt,
  rope_theta: z.number().positive().default(10000),
  rms_norm_eps: z.number().positive().default(1e-6),
  tie_word_embeddings: z.boolean().default(true),
  max_position_embeddings: posInt.default(4096),
  initializer_range: z.number().positive().default(0.02),
});

/** AdamW and the learning-rate schedule (trainer.ts OptimizerHyper). NPR Stage 2: betas 0.9/0.95, wd 0.1, clip 1.0. */
const optimizerKeys = {
  lr: z.number().positive(),
  schedule: z.enum(["cosine", "constant"]).default("cosine"),
  warmup_steps: count.default(0),
  min_lr_ratio: unit.default(0),
  weight_decay: z.number().nonnegative().default(0.1),
  betas: z.tuple([unit, unit]).default([0.9, 0.95]),
  eps: z.number().positive().default(1e-8),
  grad_clip: z.number().nonnegative().default(1.0),
};

/** The supervised loop (trainer.ts): how long, how big a step, how often to save and evaluate. */
const loopKeys = {
  /** Optimizer steps of the stage (the CLI's --steps overrides it). */
  steps: posInt,
  /** Tokens of one packed micro-batch row (prompts included; no padding). */
  tokens_per_micro_batch: posInt,
  /** Micro-batches per optimizer step; the loss is one token mean over all of them. */
  grad_accum: posInt.default(1),
  /** Checkpoint every this many steps (and at the last); --save-every overrides it. */
  save_every: posInt,
  /** Checkpoints kept (older ones are deleted once a newer one is in place). */
  keep_last: posInt.default(2),
  /** Evaluate every this many steps (0: only after the last step). */
  eval_every: count.default(0),
  /** Plain-log mode: a progress line every this many steps. */
  log_every: posInt.default(1),
  /** Shuffle the examples each epoch (NPR's SFT: false, a sequential sampler). */
  shuffle: z.boolean().default(true),
};

/** Greedy evaluation through the engine (held-out problems of the recipe's tasks). */
const EvalSchema = z.strictObject({
  /** Held-out problems answered greedily at each evaluation (0: held-out loss only). */
  problems: count.default(16),
  max_new_tokens: posInt.default(256),
  /** Generations written to samples/ at each evaluation. */
  samples: count.default(4),
  /** Sampled generations per problem at temperature 1.0 (Stage 1's rollouts), besides the greedy one (0: greedy only). */
  sampled_per_problem: count.default(0),
});

const TaskSchema = z.strictObject({
  /** A synthetic task of src/tasks. */
  name: z.enum(SYNTHETIC_TASKS),
  /** Share of the corpus and of evaluation problems (normalized over the mix). */
  weight: z.number().positive().default(1),
  /** The task's difficulty: a preset ("small", "apr", ...) and knob overrides, checked by the task. */
  difficulty: z.record(z.string(), z.union([z.string(), z.number()])).default({}),
});

/** Stage 0: a base model from scratch on solver traces of the tasks. */
const PretrainSchema = z.strictObject({
  ...optimizerKeys,
  ...loopKeys,
  corpus: z.strictObject({
    /** Training traces generated from the task mix. */
    examples: posInt,
    /**
     * Share of traces in the parallel (NPR) form, as text under the causal layout: the format
     * prior an instruct model has from its instructions. At most 10% (issue 11).
     */
    parallel_share: z.number().min(0).max(0.1).default(0.05),
    /** Held-out traces (another split) for the held-out loss. */
    held_out: count.default(64),
  }),
  eval: EvalSchema.default({ problems: 16, max_new_tokens: 256, samples: 4, sampled_per_problem: 0 }),
});

/** Stage 2 SFT (and its sequential baseline): NPR lr 1e-6 cosine, 5% warm-up, 1 epoch, no shuffling. */
const SftSchema = z.strictObject({
  ...optimizerKeys,
  ...loopKeys,
  shuffle: z.boolean().default(false),
  /** Examples of the data file kept aside for the held-out loss (the last ones of the file). */
  held_out: count.default(0),
  eval: EvalSchema.default({ problems: 16, max_new_tokens: 256, samples: 4, sampled_per_problem: 0 }),
});

/** Rollout sampling shared by the RL stages and rejection sampling. */
const rolloutKeys = {
  max_new_tokens: posInt,
  temperature: z.number().positive().default(1.0),
  top_p: z.number().gt(0).max(1).default(1.0),
};

/**
 * Stage 1 (DAPO, NPR-Zero) and Stage 3 (PAPO). Read by the RL trainers (issue 12); validated here
 * so a recipe carries its whole pipeline and a typo fails before the first stage runs.
 */
const RlSchema = z.strictObject({
  ...optimizerKeys,
  ...rolloutKeys,
  steps: posInt,
  prompts_per_step: posInt,
  rollouts_per_prompt: posInt,
  /** Prompts per optimizer update within a step (NPR: 1 prompt = 16 rollouts). */
  mini_batch_prompts: posInt.default(1),
  clip_low: z.number().nonnegative().default(0.2),
  /** DAPO's clip-higher 0.28; PAPO 0.2. */
  clip_high: z.number().nonnegative().default(0.28),
  /** Overlong shaping: penalty rising to `overlong_factor` over the last `overlong_buffer` tokens (0: off). */
  overlong_buffer: count.default(0),
  overlong_factor: z.number().nonnegative().default(1.0),
  /** DAPO dynamic sampling on binary accuracy (small-scale.md: never on a shaped score). */
  filter_groups: z.boolean().default(true),
  save_every: posInt,
  eval_every: count.default(0),
  keep_last: posInt.default(2),
});

/** Stage 2's rejection sampling (NPR: up to 8 tries, keep the first correct, well-formed one). */
const RejectionSchema = z.strictObject({
  ...rolloutKeys,
  problems: posInt,
  tries: posInt.default(8),
  keep_per_problem: posInt.default(1),
});

export const RecipeSchema = z.strictObject({
  /** The preset's or file's name (recorded in the run config). */
  name: z.string().min(1),
  description: z.string().default(""),
  /** "byte": npr's byte-level tokenizer; "task": the compact task tokenizer of src/tokenizer. */
  tokenizer: z.enum(["byte", "task"]),
  model: ModelSchema,
  backend: z.enum(["cpu", "cuda"]).default("cpu"),
  /** "bf16": mixed precision (f32 masters, bf16 GEMMs), for CUDA; "f32" everywhere else. */
  dtype: z.enum(["f32", "bf16"]).default("f32"),
  /** Seed of the model init, the corpus and the data order (--seed overrides it). */
  seed: count.default(0),
  tasks: z.array(TaskSchema).min(1),
  pretrain: PretrainSchema.optional(),
  dapo: RlSchema.optional(),
  rejection: RejectionSchema.optional(),
  sft: SftSchema.optional(),
  papo: RlSchema.optional(),
  /** Final evaluation of the pipeline (the eval stage). */
  eval: z.strictObject({ problems: posInt, max_new_tokens: posInt, samples_per_problem: posInt.default(1) }).optional(),
});

export type Recipe = z.infer<typeof RecipeSchema>;
export type PretrainHyper = NonNullable<Recipe["pretrain"]>;
export type SftHyper = NonNullable<Recipe["sft"]>;
export type RecipeModel = Recipe["model"];
export type EvalHyper = PretrainHyper["eval"];
/** The supervised stages npr train runs today. */
export type SupervisedStage = "pretrain" | "sft";

const PRESET_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../presets/recipes");

/** Names of the built-in recipes (presets/recipes/*.json), sorted. */
export function recipePresets(): string[] {
  try {
    return fs
      .readdirSync(PRESET_DIR)
      .filter((f) => f.endsWith(".json"))
      .map((f) => f.slice(0, -5))
      .sort();
  } catch {
    return [];
  }
}

/** The first line of each preset's description, for `npr train --help`. */
export function describePresets(): Array<{ name: string; description: string }> {
  return recipePresets().map((name) => {
    try {
      const raw = JSON.parse(fs.readFileSync(path.join(PRESET_DIR, `${name}.json`), "utf8")) as { description?: unknown };
      return { name, description: typeof raw.description === "string" ? raw.description.split("\n")[0]! : "" };
    } catch {
      return { name, description: "(unreadable)" };
    }
  });
}

/** A recipe file path, or a preset name; returns the file. */
export function resolveRecipeFile(spec: string): string {
  if (fs.existsSync(spec) && fs.statSync(spec).isFile()) return spec;
  const preset = path.join(PRESET_DIR, `${spec}.json`);
  if (fs.existsSync(preset)) return preset;
  throw new UsageError(`no recipe file or preset named "${spec}"`, {
    code: "recipe_not_found",
    param: "--recipe",
    hint: `give a path to a recipe .json, or one of the presets: ${recipePresets().join(", ")}`,
  });
}

/** Validates a parsed recipe object; `source` names it in errors. Defaults are filled in. */
export function parseRecipe(raw: unknown, source: string): Recipe {
  const r = RecipeSchema.safeParse(raw);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const key = issue.path.length > 0 ? issue.path.map(String).join(".") : "(top level)";
  const found = valueAt(raw, issue.path);
  const shown = issue.code === "unrecognized_keys" || found === undefined ? "" : ` (got ${JSON.stringify(found)})`;
  const more = r.error.issues.length > 1 ? ` [+${r.error.issues.length - 1} more]` : "";
  throw new ConfigError(`recipe ${source}: ${key}: ${issue.message}${shown}${more}`, {
    code: "bad_recipe",
    param: key,
    hint: "see docs/training.md (Recipes) for every key; presets/recipes/*.json are complete examples",
  });
}

/** Reads and validates a recipe file (or preset name). */
export function loadRecipe(spec: string): Recipe {
  const file = resolveRecipeFile(spec);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    throw new ConfigError(`recipe ${file}: not valid JSON (${(err as Error).message})`, { code: "bad_json", param: file });
  }
  return parseRecipe(raw, file);
}

/** The command-line flags every `npr train` command takes, overriding the recipe. */
export interface StageOverrides {
  steps?: number;
  saveEvery?: number;
  seed?: number;
}

/**
 * The recipe with the stage's overrides applied. A stage the recipe does not define is a
 * ConfigError naming it.
 */
export function withOverrides(recipe: Recipe, stage: SupervisedStage, o: StageOverrides): Recipe {
  const section = recipe[stage];
  if (!section) {
    throw new ConfigError(`recipe ${recipe.name} has no "${stage}" section`, {
      code: "missing_stage",
      param: stage,
      hint: `add a "${stage}" object to the recipe (presets/recipes/tiny-cpu.json has one)`,
    });
  }
  const out: Recipe = structuredClone(recipe);
  const s = out[stage]!;
  if (o.steps !== undefined) s.steps = o.steps;
  if (o.saveEvery !== undefined) s.save_every = o.saveEvery;
  if (o.seed !== undefined) out.seed = o.seed;
  return parseRecipe(out, `${recipe.name} (after overrides)`);
}

function valueAt(raw: unknown, at: ReadonlyArray<PropertyKey>): unknown {
  let v = raw;
  for (const k of at) {
    if (typeof v !== "object" || v === null) return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}
