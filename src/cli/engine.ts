/**
 * `npr engine ...`: `verify` (engine equals trainer on a checkpoint: greedy parallel trajectories
 * with forced seeded structure, re-scored by one masked forward each) and `fuzz` (the scheduler
 * and pool under a scripted adversarial model). Also the shared loading of a checkpoint with its
 * tokenizer for `npr generate`. Composition root: picks backend, dtype and engine sizes.
 */
import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { Engine, engineVocab, parseForceStructure, randomStructure, rescoreTrajectory, runFuzz, verifyTolerances } from "../engine/index.ts";
import type { EngineVocab, ForcedBlock } from "../engine/index.ts";
import { loadQwen3 } from "../model/index.ts";
import type { Qwen3Model } from "../model/index.ts";
import { NprTokenizer } from "../tokenizer/index.ts";
import { CheckpointFormatError, UsageError } from "../util/errors.ts";
import { Rng } from "../util/rng.ts";
import { MAX_PLANS } from "../format/npr-tags.ts";
import { makeBackend } from "./model.ts";
import { parseComputeDtype, parseIntArg } from "./args.ts";

/** A checkpoint and its tokenizer, ready for the engine. */
export function loadForEngine(dir: string, backend: string, dtype: string): { model: Qwen3Model; tok: NprTokenizer; vocab: EngineVocab } {
  const computeDtype = parseComputeDtype(dtype);
  if (!fs.existsSync(path.join(dir, "tokenizer.json"))) {
    throw new CheckpointFormatError(`${dir}: no tokenizer.json beside the weights`, {
      code: "missing_tokenizer",
      param: dir,
      hint: "npr model init writes one (the byte tokenizer by default); or copy the base model's tokenizer files here",
    });
  }
  const tok = NprTokenizer.load(dir);
  const model = loadQwen3(dir, { backend: makeBackend(backend), dtype: computeDtype, requiresGrad: false });
  if (tok.size > model.config.vocabSize) {
    throw new CheckpointFormatError(`${dir}: the tokenizer has ${tok.size} ids, the model's vocab_size is ${model.config.vocabSize}`, {
      code: "vocab_mismatch",
      param: "vocab_size",
    });
  }
  return { model, tok, vocab: engineVocab(tok, model.config.vocabSize) };
}

export function registerEngineCommands(program: Command): void {
  const engine = program.command("engine").description("check the NPR engine: parity with the trainer, fuzzing");

  engine
    .command("verify")
    .description('greedy parallel generation re-scored by the trainer\'s masked forward; prints {"trajectories", "tokens_mismatch", "max_abs_logprob_diff"}')
    .requiredOption("--model <dir>", "checkpoint folder with tokenizer files")
    .option("--seed <n>", "seed of prompts and structures", "0")
    .option("--prompts <n>", "number of prompts (decoded together in one batch)", "4")
    .option("--force-structure <spec>", 'one structure for every prompt, e.g. "3x16,2x8" (default: seeded random, 1-3 blocks of 1-5 branches)')
    .option("--mode <mode>", "parallel or sequential", "parallel")
    .option("--backend <name>", "compute backend", "cpu")
    .option("--dtype <dtype>", "compute dtype: f32, f64 or bf16 (bf16 weights and GEMMs, f32 elsewhere)", "f32")
    .option("--block-size <n>", "KV block size", "8")
    .action((opts: { model: string; seed: string; prompts: string; forceStructure?: string; mode: string; backend: string; dtype: string; blockSize: string }) => {
      const { model, tok, vocab } = loadForEngine(opts.model, opts.backend, opts.dtype);
      const rng = new Rng(parseIntArg(opts.seed, "--seed"));
      const n = parseIntArg(opts.prompts, "--prompts", 1);
      // The trainer's layout (buildNprLayout) keeps NPR's 1-5 plan rule, so verify does too.
      const fixed = opts.forceStructure ? parseForceStructure(opts.forceStructure, "--force-structure", MAX_PLANS) : null;
      if (opts.mode !== "parallel" && opts.mode !== "sequential") throw new UsageError(`--mode must be parallel or sequential`, { code: "bad_mode", param: "--mode" });
      const mode = opts.mode;
      const prompts: number[][] = [];
      const structures: ForcedBlock[][] = [];
      for (let i = 0; i < n; i++) {
        const words = Array.from({ length: 2 + rng.int(6) }, () => String.fromCharCode(97 + rng.int(26)).repeat(1 + rng.int(4)));
        prompts.push(tok.encodeChat([{ role: "user", content: `${i}: ${words.join(" ")}?` }]));
        structures.push(fixed ?? randomStructure(rng, 16));
      }
      const e = new Engine(model, vocab, { numBlocks: 4096, blockSize: parseIntArg(opts.blockSize, "--block-size", 1), maxBatchTokens: 256 });
      const results = e.generateSync(prompts, structures.map((fs, i) => ({
        temperature: 0, mode, maxNewTokens: 100_000, minForkBudget: 0, forceStructure: fs, seed: i,
      })));
      const tol = verifyTolerances(model);
      let tokensMismatch = 0;
      let positionsMismatch = 0;
      let nearTies = 0;
      let maxDiff = 0;
      let incomplete = 0;
      for (const r of results) {
        if (r.finishReason !== "stop" || r.malformed !== null) incomplete++;
        const rep = rescoreTrajectory(model, vocab, r, mode, true, true);
        tokensMismatch += rep.tokensMismatch;
        positionsMismatch += rep.positionsMismatch;
        nearTies += rep.nearTies;
        maxDiff = Math.max(maxDiff, rep.maxAbsLogprobDiff);
      }
      e.dispose();
      process.stdout.write(JSON.stringify({
        trajectories: results.length,
        tokens_mismatch: tokensMismatch,
        max_abs_logprob_diff: maxDiff,
        positions_mismatch: positionsMismatch,
        near_ties: nearTies,
        incomplete,
        tokens: results.reduce((a, r) => a + r.ids.length, 0),
        blocks: results.reduce((a, r) => a + r.stats.blocks, 0),
        tolerances: tol,
      }) + "\n");
      if (tokensMismatch > 0 || positionsMismatch > 0 || incomplete > 0 || maxDiff > tol.logprob) process.exitCode = 1;
    });

  engine
    .command("fuzz")
    .description('drive scheduler and block pool with an adversarial scripted model; prints {"requests", "leaked_blocks", "double_frees", "invariant_violations", "finish_reasons"}')
    .option("--seed <n>", "fuzz seed", "0")
    .option("--iterations <n>", "engines to build and drain (each with several requests)", "100")
    .option("--model <dir>", "take the tokenizer from this checkpoint (default: the byte tokenizer)")
    .action(async (opts: { seed: string; iterations: string; model?: string }) => {
      const { byteTokenizer } = await import("../tokenizer/index.ts");
      const tok = opts.model ? NprTokenizer.load(opts.model) : byteTokenizer();
      const rep = runFuzz(engineVocab(tok, Math.max(tok.size, 1)), (s) => tok.encode(s), parseIntArg(opts.seed, "--seed"), parseIntArg(opts.iterations, "--iterations", 1));
      process.stdout.write(JSON.stringify(rep) + "\n");
      if (rep.leaked_blocks || rep.double_frees || rep.invariant_violations || rep.unfinished) process.exitCode = 1;
    });
}
