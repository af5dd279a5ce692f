/**
 * The acceptance test of run folders: `npr train pretrain --steps 12 --save-every 3` run
 * uninterrupted, and the same run killed with SIGKILL twice (right after its first checkpoint
 * lands, then in the middle of writing the step-9 checkpoint) and resumed with --resume each
 * time, end with identical model.safetensors and optimizer bytes, identical per-step losses, and
 * a metrics.jsonl with exactly one line per step. Spawns the real CLI on a very small recipe.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const MAIN = path.join(ROOT, "src/cli/main.ts");
const ENV = { ...process.env, NO_COLOR: "1", NPR_THREADS: "1" };

const RECIPE = {
  name: "resume-test",
  tokenizer: "byte",
  model: { hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 16 },
  tasks: [{ name: "countdown", difficulty: { preset: "small" } }],
  pretrain: {
    lr: 0.003,
    warmup_steps: 2,
    steps: 40,
    tokens_per_micro_batch: 450,
    grad_accum: 2,
    save_every: 10,
    keep_last: 2,
    eval_every: 6,
    corpus: { examples: 40, parallel_share: 0.1, held_out: 2 },
    eval: { problems: 2, max_new_tokens: 6, samples: 1 },
  },
};

function args(out: string, recipe: string, extra: string[] = []): string[] {
  return [MAIN, "train", "pretrain", "--recipe", recipe, "--out", out, "--steps", "12", "--save-every", "3", ...extra];
}

/** Runs the CLI to its end (asynchronously, so the uninterrupted run overlaps the killed one); its stderr. */
function runToEnd(argv: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, argv, { cwd: ROOT, env: ENV, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    child.on("exit", (code) =>
      code === 0 ? resolve(stderr) : reject(new Error(`npr ${argv.slice(1).join(" ")} exited ${code}:\n${stderr}`)),
    );
  });
}

/** Starts the CLI and SIGKILLs it as soon as `when()` holds (polled every 5 ms); resolves with how it ended. */
function runAndKill(argv: string[], when: () => boolean): Promise<{ signal: NodeJS.Signals | null; code: number | null }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, argv, { cwd: ROOT, env: ENV, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setInterval(() => {
      if (when()) {
        child.kill("SIGKILL");
        clearInterval(timer);
      }
    }, 5);
    child.on("exit", (code, signal) => {
      clearInterval(timer);
      if (signal !== "SIGKILL") console.log(stderr);
      resolve({ signal, code });
    });
  });
}

function trainLines(dir: string): Array<{ step: number; loss: number; kind: string }> {
  return fs
    .readFileSync(path.join(dir, "metrics.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l));
}

test("SIGKILL after the first checkpoint and mid-checkpoint, resumed twice: identical bytes to an uninterrupted run", async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "npr-resume-"));
  const recipe = path.join(root, "recipe.json");
  fs.writeFileSync(recipe, JSON.stringify(RECIPE));
  const A = path.join(root, "A");
  const B = path.join(root, "B");
  const t0 = performance.now();
  const uninterrupted = runToEnd(args(A, recipe)).then(() => performance.now() - t0);

  // Kill 1: the moment the first checkpoint folder is in place.
  const ck = path.join(B, "checkpoints");
  const k1 = await runAndKill(args(B, recipe), () => fs.existsSync(path.join(ck, "step-3")));
  assert.equal(k1.signal, "SIGKILL", "the first run must be killed, not finish");
  assert.ok(!fs.existsSync(path.join(B, "final")));
  // Kill 2: while the step-9 checkpoint is being written (its hidden temporary folder exists),
  // or, should the 5 ms poll miss that window, right after it landed.
  let midWrite = false;
  const k2 = await runAndKill(args(B, recipe, ["--resume"]), () => {
    const names = fs.existsSync(ck) ? fs.readdirSync(ck) : [];
    midWrite = names.some((n) => n.startsWith(".step-9.tmp-"));
    return midWrite || names.includes("step-9");
  });
  assert.equal(k2.signal, "SIGKILL", "the second run must be killed, not finish");
  const log = await runToEnd(args(B, recipe, ["--resume"]));
  const tA = await uninterrupted;
  assert.match(log, /resuming pretrain from .*step-(6|9)/);

  for (const f of [
    "final/model.safetensors",
    "checkpoints/step-12/model.safetensors",
    "checkpoints/step-12/optimizer.safetensors",
    "checkpoints/step-12/trainer_state.json",
  ]) {
    const a = fs.readFileSync(path.join(A, f));
    const b = fs.readFileSync(path.join(B, f));
    assert.ok(a.equals(b), `${f} differs between the uninterrupted and the killed+resumed run`);
  }
  const la = trainLines(A).filter((l) => l.kind === "train");
  const lb = trainLines(B).filter((l) => l.kind === "train");
  assert.deepEqual(
    lb.map((l) => l.step),
    Array.from({ length: 12 }, (_, i) => i + 1),
    "exactly one train line per step",
  );
  assert.deepEqual(
    lb.map((l) => l.loss),
    la.map((l) => l.loss),
    "the same loss at every step",
  );
  const evalsB = trainLines(B)
    .filter((l) => l.kind === "eval")
    .map((l) => l.step);
  assert.deepEqual(evalsB, [6, 12], "one eval line per evaluation step");
  assert.deepEqual(
    fs
      .readdirSync(path.join(B, "checkpoints"))
      .filter((n) => /^step-\d+$/.test(n))
      .sort(),
    ["step-12", "step-9"],
    "keep_last 2",
  );
  assert.ok(fs.existsSync(path.join(B, "samples", "step-12.jsonl")));
  console.log(
    `uninterrupted run ${(tA / 1000).toFixed(1)} s; killed after step-3 and ${midWrite ? "while writing" : "right after"} step-9, resumed twice; final bytes equal`,
  );

  // A finished run resumed again does nothing; a new run into the same folder is refused.
  const again = spawnSync(process.execPath, args(B, recipe, ["--resume"]), { cwd: ROOT, env: ENV, encoding: "utf8" });
  assert.equal(again.status, 0);
  assert.match(again.stdout, /already complete/);
  const clash = spawnSync(process.execPath, args(B, recipe), { cwd: ROOT, env: ENV, encoding: "utf8" });
  assert.equal(clash.status, 2);
  assert.match(clash.stderr, /UsageError: .*B is not empty \(it holds a run\)\nHINT: pass --resume/);
  // Resuming with different flags is refused, naming the key.
  const mismatch = spawnSync(process.execPath, [MAIN, "train", "pretrain", "--out", B, "--resume", "--steps", "13"], {
    cwd: ROOT,
    env: ENV,
    encoding: "utf8",
  });
  assert.equal(mismatch.status, 2);
  assert.match(mismatch.stderr, /ConfigError: --resume: the run in .* was started with a different recipe\.pretrain\.steps/);
});
