/**
 * Recipes: every preset validates; a bad recipe is one ConfigError naming the key path and the
 * value found (exact text); overrides from the command line land in the right stage; `npr train
 * --help` lists the presets; flag errors name the flag.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { loadRecipe, parseRecipe, recipePresets, withOverrides } from "../../src/train/recipe.ts";
import { ConfigError } from "../../src/util/errors.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

const MINIMAL = {
  name: "m",
  tokenizer: "byte",
  model: { hidden_size: 16, intermediate_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 8 },
  tasks: [{ name: "countdown" }],
  pretrain: { lr: 0.001, steps: 10, tokens_per_micro_batch: 512, save_every: 5, corpus: { examples: 10 } },
};

function messageOf(raw: unknown): string {
  try {
    parseRecipe(raw, "r.json");
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    assert.equal(e.code, "bad_recipe");
    return e.message.split("\n")[0]!;
  }
  assert.fail("expected a ConfigError");
}

test("every preset validates, and tiny-cpu and gpu-small are there", () => {
  const names = recipePresets();
  assert.ok(names.includes("tiny-cpu") && names.includes("gpu-small"), names.join(","));
  for (const n of names) {
    const r = loadRecipe(n);
    assert.equal(r.name, n);
    assert.ok(r.pretrain && r.sft, `${n} defines pretrain and sft`);
    assert.ok(r.pretrain.corpus.parallel_share <= 0.1);
  }
});

test("defaults are filled in", () => {
  const r = parseRecipe(MINIMAL, "r.json");
  assert.equal(r.backend, "cpu");
  assert.equal(r.dtype, "f32");
  assert.deepEqual(r.pretrain!.betas, [0.9, 0.95]);
  assert.equal(r.pretrain!.grad_accum, 1);
  assert.equal(r.pretrain!.corpus.parallel_share, 0.05);
  assert.equal(r.model.tie_word_embeddings, true);
  assert.equal(r.tasks[0]!.weight, 1);
});

test("errors name the key path and the value found", () => {
  const bad = (patch: (r: any) => void) => {
    const r = structuredClone(MINIMAL) as any;
    patch(r);
    return messageOf(r);
  };
  assert.equal(
    bad((r) => (r.pretrain.lr = -1)),
    "recipe r.json: pretrain.lr: Too small: expected number to be >0 (got -1)",
  );
  assert.equal(
    bad((r) => (r.pretrain.corpus.parallel_share = 0.2)),
    "recipe r.json: pretrain.corpus.parallel_share: Too big: expected number to be <=0.1 (got 0.2)",
  );
  assert.equal(
    bad((r) => (r.pretrain.corpus.extra = 1)),
    'recipe r.json: pretrain.corpus: Unrecognized key: "extra"',
  );
  assert.equal(
    bad((r) => (r.tasks[0].name = "sudoku")),
    'recipe r.json: tasks.0.name: Invalid option: expected one of "countdown"|"logic-grid" (got "sudoku")',
  );
  assert.equal(
    bad((r) => (r.model.num_hidden_layers = 1.5)),
    "recipe r.json: model.num_hidden_layers: Invalid input: expected int, received number (got 1.5)",
  );
  assert.equal(
    bad((r) => delete r.tokenizer),
    'recipe r.json: tokenizer: Invalid option: expected one of "byte"|"task"',
  );
  assert.equal(
    bad((r) => (r.pretrain.betas = [0.9])),
    "recipe r.json: pretrain.betas: Too small: expected array to have >=2 items (got [0.9])",
  );
});

test("overrides land in the stage; a missing stage is named", () => {
  const r = parseRecipe(MINIMAL, "r.json");
  const o = withOverrides(r, "pretrain", { steps: 3, saveEvery: 1, seed: 9 });
  assert.equal(o.pretrain!.steps, 3);
  assert.equal(o.pretrain!.save_every, 1);
  assert.equal(o.seed, 9);
  assert.equal(r.pretrain!.steps, 10, "the input recipe is not modified");
  assert.throws(() => withOverrides(r, "sft", {}), /recipe m has no "sft" section/);
});

test("npr train --help lists the presets; bad flags are one-line errors naming the flag", () => {
  const help = spawnSync(process.execPath, [path.join(ROOT, "src/cli/main.ts"), "train", "--help"], { cwd: ROOT, encoding: "utf8" });
  assert.equal(help.status, 0, help.stderr);
  assert.match(help.stdout, /tiny-cpu +the whole pipeline/);
  assert.match(help.stdout, /gpu-small /);
  assert.match(help.stdout, /pretrain/);
  const bad = (args: string[]) =>
    spawnSync(process.execPath, [path.join(ROOT, "src/cli/main.ts"), "train", ...args], { cwd: ROOT, encoding: "utf8" });
  const r1 = bad(["pretrain", "--recipe", "tiny-cpu", "--out", "/tmp/npr-never-created-x", "--steps", "0"]);
  assert.equal(r1.status, 2);
  assert.match(r1.stderr, /UsageError: --steps must be an integer in \[1, 10000000\], got "0"/);
  const r2 = bad(["pretrain", "--recipe", "no-such-recipe", "--out", "/tmp/npr-never-created-y"]);
  assert.equal(r2.status, 2);
  assert.match(r2.stderr, /no recipe file or preset named "no-such-recipe"\nHINT: .*tiny-cpu/);
  const r3 = bad([
    "sft",
    "--recipe",
    "tiny-cpu",
    "--out",
    "/tmp/npr-never-created-z",
    "--init",
    ROOT,
    "--data",
    path.join(ROOT, "package.json"),
  ]);
  assert.equal(r3.status, 2);
  assert.match(r3.stderr, /--layout is required/);
});
