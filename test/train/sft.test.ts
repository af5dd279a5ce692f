/**
 * Stage 2 SFT on solver traces: a base whose tokenizer lacks the NPR tags gets them, with each
 * tag's embedding row the mean of its name's sub-token rows; `parallel` and `sequential` train on
 * the same tokens (equal token counts at every step) and differ only in the layout (different
 * step-1 losses from the same weights); the final model reloads with the tags; the CLI runs it.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { NPR_TAGS, tagInitText } from "../../src/format/index.ts";
import { loadQwen3, saveQwen3 } from "../../src/model/index.ts";
import { generateExamples } from "../../src/tasks/index.ts";
import { NprTokenizer, byteTokenizerFiles } from "../../src/tokenizer/index.ts";
import { makeProgress } from "../../src/train/progress.ts";
import { parseRecipe } from "../../src/train/recipe.ts";
import { RunFolder } from "../../src/train/run-folder.ts";
import { loadSftModel, runSft, sftTokenizer } from "../../src/train/sft.ts";
import { cpu, tinyModel } from "./helpers.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/** npr's byte tokenizer without the 8 tags (a base model that never saw them). */
function tagless(): NprTokenizer {
  const { tokenizerJson, tokenizerConfig } = byteTokenizerFiles();
  const tags = new Set<string>(NPR_TAGS);
  const json = {
    ...tokenizerJson,
    added_tokens: (tokenizerJson["added_tokens"] as Array<{ content: string }>).filter((t) => !tags.has(t.content)),
  };
  const decoder = Object.fromEntries(
    Object.entries(tokenizerConfig["added_tokens_decoder"] as Record<string, { content: string }>).filter(([, t]) => !tags.has(t.content)),
  );
  return new NprTokenizer(json, { ...tokenizerConfig, added_tokens_decoder: decoder, additional_special_tokens: [] });
}

const RECIPE = parseRecipe(
  {
    name: "sft-test",
    tokenizer: "byte",
    model: { hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 8 },
    tasks: [{ name: "countdown", difficulty: { preset: "small" } }],
    sft: { lr: 0.003, steps: 3, tokens_per_micro_batch: 1000, save_every: 3, held_out: 2, eval: { problems: 0, samples: 0 } },
  },
  "sft-test",
);

const quiet = () =>
  makeProgress({ stage: "sft", totalSteps: 3, plain: true, stream: { write: () => true, isTTY: false } as unknown as NodeJS.WriteStream });

function setup(): { root: string; base: string; data: string } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "npr-sft-"));
  const base = path.join(root, "base");
  saveQwen3(tinyModel("f32", 7), base, { dtype: "f32" });
  tagless().save(base);
  const rows = generateExamples({ task: "countdown", n: 8, seed: 3, difficulty: { preset: "small" }, forms: ["parallel"] }).map((ex) =>
    JSON.stringify({ id: ex.example.id, prompt: ex.prompt, response: ex.parallel!.text }),
  );
  const data = path.join(root, "traj.jsonl");
  fs.writeFileSync(data, rows.join("\n") + "\n");
  return { root, base, data };
}

test("tags missing from the base: added, rows initialized as the mean of their names' sub-tokens", () => {
  const { base } = setup();
  const t = sftTokenizer(base);
  assert.equal(t.addedTags, true);
  assert.equal(t.base.size, 259);
  assert.equal(t.tokenizer.tagId("<guideline>"), 259);
  const before = loadQwen3(base, { backend: cpu });
  const model = loadSftModel(base, cpu, t.base, t.tokenizer, undefined);
  assert.equal(model.config.vocabSize, 320);
  const C = model.config.hiddenSize;
  const E0 = before.param("model.embed_tokens.weight").toArray();
  const E1 = model.param("model.embed_tokens.weight").toArray();
  let maxDiff = 0;
  for (const tag of NPR_TAGS) {
    const src = t.base.encode(tagInitText(tag));
    assert.ok(src.length >= 4, `${tag} spelled in bytes`);
    const id = t.tokenizer.tagId(tag);
    for (let c = 0; c < C; c++) {
      let mean = 0;
      for (const s of src) mean += E0[s * C + c]! / src.length;
      maxDiff = Math.max(maxDiff, Math.abs(E1[id * C + c]! - mean));
    }
  }
  console.log(`tag rows vs sub-token means: max |d| ${maxDiff.toExponential(2)} (f32 storage)`);
  assert.ok(maxDiff < 1e-6);
  // Old rows are kept as they were.
  assert.deepEqual(E1.subarray(0, 259 * C), E0.subarray(0, 259 * C));
});

test("parallel and sequential SFT: same tokens every step, different layouts; final model reloads with tags", () => {
  const { root, base, data } = setup();
  const run = (layout: "parallel" | "sequential") => {
    const dir = path.join(root, layout);
    const folder = RunFolder.create(dir, { stage: "sft", recipe: RECIPE, inputs: { init: base, data, layout } });
    const res = runSft({
      recipe: RECIPE,
      initDir: base,
      dataFile: data,
      layout,
      backend: cpu,
      run: folder,
      resume: false,
      progress: quiet(),
      problems: [],
    });
    const lines = folder.metrics.read();
    return { res, train: lines.filter((l) => l.kind === "train"), evals: lines.filter((l) => l.kind === "eval"), dir };
  };
  const par = run("parallel");
  const seq = run("sequential");
  assert.equal(par.res.trainExamples, 6);
  assert.equal(par.res.heldOutExamples, 2);
  assert.equal(par.res.dropped.length, 0);
  assert.deepEqual(
    par.train.map((l) => [l.step, l.tokens, (l as { loss_tokens: number }).loss_tokens]),
    seq.train.map((l) => [l.step, l.tokens, (l as { loss_tokens: number }).loss_tokens]),
  );
  assert.notEqual(par.train[0]!.loss, seq.train[0]!.loss, "same weights and tokens, different layouts: different losses");
  console.log(`step-1 loss: parallel ${par.train[0]!.loss.toFixed(6)}, sequential ${seq.train[0]!.loss.toFixed(6)}`);
  assert.equal(par.evals.length, 1);
  assert.ok(Number.isFinite(par.evals[0]!["heldout_loss"] as number));
  const final = path.join(par.dir, "final");
  assert.ok(NprTokenizer.load(final).hasTags);
  assert.equal(loadQwen3(final, { backend: cpu }).config.vocabSize, 320);
  // A resume over data that changed under the run is refused (the checkpoint's data SHA-256).
  fs.rmSync(final, { recursive: true });
  const lines = fs.readFileSync(data, "utf8").trim().split("\n");
  fs.writeFileSync(data, [lines[1], lines[0], ...lines.slice(2)].join("\n") + "\n");
  const folder = RunFolder.existing(par.dir)!;
  assert.throws(
    () =>
      runSft({
        recipe: RECIPE,
        initDir: base,
        dataFile: data,
        layout: "parallel",
        backend: cpu,
        run: folder,
        resume: true,
        progress: quiet(),
        problems: [],
      }),
    /cannot resume from .*step-3: the training examples changed since it was written/,
  );
});

test("npr train sft runs from the command line", () => {
  const { root, base, data } = setup();
  const recipe = path.join(root, "recipe.json");
  fs.writeFileSync(recipe, JSON.stringify(RECIPE));
  const out = path.join(root, "cli");
  const r = spawnSync(
    process.execPath,
    [
      path.join(ROOT, "src/cli/main.ts"),
      "train",
      "sft",
      "--recipe",
      recipe,
      "--init",
      base,
      "--data",
      data,
      "--layout",
      "parallel",
      "--out",
      out,
      "--steps",
      "2",
      "--save-every",
      "1",
    ],
    { cwd: ROOT, encoding: "utf8" },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /sft: 2 steps done/);
  assert.match(r.stderr, /6 training and 2 held-out trajectories \(0 dropped\), layout parallel/);
  const saved = JSON.parse(fs.readFileSync(path.join(out, "recipe.json"), "utf8"));
  assert.equal(saved.inputs.layout, "parallel");
  assert.equal(saved.recipe.sft.steps, 2);
  assert.deepEqual(fs.readdirSync(path.join(out, "checkpoints")).sort(), ["step-1", "step-2"]);
});
