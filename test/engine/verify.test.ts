/**
 * "Engine equals trainer" (src/engine/verify.ts): greedy engine trajectories re-scored by the
 * trainer's masked forward agree (tokens, positions, log-probs) on a random f64 model; tampering
 * with a log-prob, a position or a token is caught; the tolerances follow the model's GEMM dtype;
 * and `npr engine verify` in bf16 passes with the bf16 tolerances it prints.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Qwen3Model, makeQwen3Config } from "../../src/model/index.ts";
import { byteTokenizer } from "../../src/tokenizer/index.ts";
import { CpuBackend } from "../../src/tensor/backend/cpu/index.ts";
import { Engine, TIE_TOLERANCE, engineVocab, parseForceStructure, rescoreTrajectory, verifyTolerances } from "../../src/engine/index.ts";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const cpu = new CpuBackend();
const cfg = makeQwen3Config({
  vocabSize: 300,
  hiddenSize: 32,
  intermediateSize: 48,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  headDim: 8,
  ropeTheta: 10000,
});

test("verify tolerances follow the model's GEMM dtype", () => {
  assert.deepEqual(verifyTolerances(Qwen3Model.random(cfg, { seed: 1, dtype: "f32", backend: cpu })), {
    tie: TIE_TOLERANCE,
    logprob: 1e-4,
  });
  assert.deepEqual(verifyTolerances(Qwen3Model.random(cfg, { seed: 1, dtype: "f64", backend: cpu })), {
    tie: TIE_TOLERANCE,
    logprob: 1e-4,
  });
  assert.deepEqual(verifyTolerances(Qwen3Model.random(cfg, { seed: 1, dtype: "bf16", backend: cpu })), { tie: 1e-2, logprob: 1e-2 });
  assert.deepEqual(verifyTolerances(Qwen3Model.random(cfg, { seed: 1, dtype: "f32", computeDtype: "bf16", backend: cpu })), {
    tie: 1e-2,
    logprob: 1e-2,
  });
});

test("engine trajectories re-score to the trainer's numbers, and tampering is caught", () => {
  const tok = byteTokenizer();
  const model = Qwen3Model.random(cfg, { seed: 7, dtype: "f64", std: 0.3, backend: cpu });
  const vocab = engineVocab(tok, 300);
  const prompt = tok.encodeChat([{ role: "user", content: "4+4?" }]);
  const e = new Engine(model, vocab, { numBlocks: 256, blockSize: 4 });
  const [r] = e.generateSync([prompt], {
    mode: "parallel",
    temperature: 0,
    maxNewTokens: 400,
    minForkBudget: 0,
    forceStructure: parseForceStructure("3x8,2x6"),
    seed: 0,
  });
  e.dispose();
  const rep = rescoreTrajectory(model, vocab, r!, "parallel", true, true);
  console.log(
    `verify: ${rep.scored} log-probs scored, max |diff| ${rep.maxAbsLogprobDiff.toExponential(2)}, mismatches ${rep.tokensMismatch}, near ties ${rep.nearTies}`,
  );
  assert.ok(rep.scored > 30);
  assert.equal(rep.tokensMismatch, 0);
  assert.equal(rep.positionsMismatch, 0);
  assert.ok(rep.maxAbsLogprobDiff < 1e-10, `max |logprob diff| ${rep.maxAbsLogprobDiff}`);
  // A log-prob off by 0.05, a position moved by one, a sampled token swapped for another id.
  const i = r!.origins.findIndex((o, k) => o === "sampled" && r!.logprobs[k] !== null && k > 10);
  assert.ok(i > 0);
  const lp = [...r!.logprobs];
  lp[i] = lp[i]! + 0.05;
  assert.ok(rescoreTrajectory(model, vocab, { ...r!, logprobs: lp }, "parallel", true, true).maxAbsLogprobDiff >= 0.05 - 1e-12);
  const pos = [...r!.positions];
  pos[i] = pos[i]! + 1;
  assert.equal(rescoreTrajectory(model, vocab, { ...r!, positions: pos }, "parallel", true, true).positionsMismatch, 1);
  const ids = [...r!.ids];
  ids[i] = (ids[i]! + 1) % 256; // a byte token the trainer ranks lower (same layout: bytes are not tags)
  const bad = rescoreTrajectory(model, vocab, { ...r!, ids }, "parallel", true, true);
  assert.ok(bad.tokensMismatch + bad.nearTies >= 1 && bad.maxAbsLogprobDiff > 1e-3, JSON.stringify(bad));
});

test("npr engine verify --dtype bf16 passes with the bf16 tolerances", { timeout: 60_000 }, () => {
  const dir = mkdtempSync(path.join(tmpdir(), "npr-verify-"));
  const cli = (args: string[]) =>
    execFileSync(process.execPath, ["src/cli/main.ts", ...args], { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  cli(["model", "init", "--config", "tiny", "--out", path.join(dir, "m")]);
  const out = JSON.parse(cli(["engine", "verify", "--model", path.join(dir, "m"), "--prompts", "2", "--dtype", "bf16"]).trim()) as Record<
    string,
    unknown
  >;
  // The child process reads the same environment, so it takes the GEMM path this backend takes.
  const gemmPath = new CpuBackend().gemmPath;
  const diff = out["maxAbsLogprobDiff"] as number;
  console.log(`GEMM path ${gemmPath}: ${JSON.stringify(out)}`);
  assert.equal(out["tokensMismatch"], 0);
  assert.deepEqual(out["tolerances"], { tie: 1e-2, logprob: 1e-2 });
  assert.ok(diff < 1e-2, `bf16 engine and trainer agree within the bf16 tolerance (max |diff| ${diff})`);
  if (gemmPath === "openblas") {
    // OpenBLAS accumulates bf16 products in f32 in a blocking order that differs between the
    // engine's decode shapes and the trainer's one forward: a bf16-sized difference, not f32 noise.
    assert.ok(diff > 1e-5, `bf16 differs from the trainer by more than f32 noise (max |diff| ${diff})`);
  } else {
    // The TypeScript GEMM accumulates in float64 whatever the shapes, so engine and trainer round
    // the same sums to bf16 and usually agree exactly; only the upper bound is a property here.
    console.log(`# typescript GEMM (float64 accumulation): max |diff| ${diff}; the lower bound is checked on the OpenBLAS path only`);
  }
});
