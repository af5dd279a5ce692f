/**
 * `npr engine ...`: `verify` (engine equals trainer on a checkpoint: greedy parallel trajectories
 * with forced seeded structure, re-scored by one masked forward each) and `fuzz` (the scheduler
 * and pool under a scripted adversarial model, with `--inject` as its negative control). Prompts
 * and iterations are capped (MAX_VERIFY_PROMPTS, MAX_FUZZ_ITERATIONS) and report progress. Also
 * the shared loading of a checkpoint with its tokenizer for `npr generate`.
 * Composition root: picks backend, dtype and engine sizes.
 */
import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import {
  Engine,
  FUZZ_FAULTS,
  engineVocab,
  parseForceStructure,
  randomStructure,
  rescoreTrajectory,
  runFuzz,
  verifyTolerances,
} from "../engine/index.ts";
import type { EngineVocab, ForcedBlock, GenerationResult, ParamsArg } from "../engine/index.ts";
import { loadQwen3 } from "../model/index.ts";
import type { Qwen3Model } from "../model/index.ts";
import { NprTokenizer } from "../tokenizer/index.ts";
import { CheckpointFormatError, invariant } from "../util/index.ts";
import { Rng } from "../util/index.ts";
import { MAX_PLANS } from "../format/index.ts";
import { makeBackend, readModelConfig } from "./model.ts";
import { checkInputDir, parseChoice, parseComputeDtype, parseIntArg } from "./args.ts";
import { Progress, writeOut } from "./io.ts";

/** Most prompts one `npr engine verify` decodes (in one batch; ~0.5 s each on 2 CPU cores, tiny preset). */
export const MAX_VERIFY_PROMPTS = 256;
/** Most fuzz iterations per command (~15 ms each: the cap is about 25 minutes, with progress). */
export const MAX_FUZZ_ITERATIONS = 100_000;
/** Largest KV block size `engine verify` takes (a block is a unit of sharing; past this it is a typo). */
export const MAX_BLOCK_SIZE = 256;

/** A checkpoint and its tokenizer, ready for the engine. */
export function loadForEngine(dir: string, backend: string, dtype: string): { model: Qwen3Model; tok: NprTokenizer; vocab: EngineVocab } {
  const computeDtype = parseComputeDtype(dtype);
  readModelConfig(dir, "--model"); // folder and config.json errors in the CLI's form, before loading
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

/**
 * Runs `prompts` through `e` step by step (generateSync's loop, with progress on stderr) and
 * returns the results in prompt order.
 */
function generateWithProgress(e: Engine, prompts: number[][], params: ParamsArg, label: string): GenerationResult[] {
  const ids = e.add(prompts, params);
  const progress = new Progress({ label, total: prompts.length });
  let finished = 0;
  let tokens = 0;
  while (e.scheduler.hasWork()) {
    for (const ev of e.step()) {
      if (ev.type === "finished") finished++;
      else if (ev.type === "token") tokens++;
    }
    progress.update(finished, `${tokens} tokens`);
  }
  progress.finish();
  return ids.map((id) => {
    const r = e.scheduler.result(id);
    invariant(r, () => `request ${id} ended without a result`);
    return r;
  });
}

export function registerEngineCommands(program: Command): void {
  const engine = program.command("engine").description("check the NPR engine: parity with the trainer, fuzzing");

  engine
    .command("verify")
    .description(
      'greedy parallel generation re-scored by the trainer\'s masked forward; prints {"trajectories", "tokensMismatch", "maxAbsLogprobDiff", ...}',
    )
    .requiredOption("--model <dir>", "checkpoint folder with tokenizer files")
    .option("--seed <n>", "seed of prompts and structures", "0")
    .option("--prompts <n>", `number of prompts (decoded together in one batch; 1-${MAX_VERIFY_PROMPTS})`, "4")
    .option(
      "--force-structure <spec>",
      'one structure for every prompt, e.g. "3x16,2x8" (default: seeded random, 1-3 blocks of 1-5 branches)',
    )
    .option("--mode <mode>", "parallel or sequential", "parallel")
    .option("--backend <name>", "compute backend: cpu or cuda", "cpu")
    .option("--dtype <dtype>", "compute dtype: f32, f64 or bf16 (bf16 weights and GEMMs, f32 elsewhere)", "f32")
    .option("--block-size <n>", `KV block size (1-${MAX_BLOCK_SIZE})`, "8")
    .action(
      (opts: {
        model: string;
        seed: string;
        prompts: string;
        forceStructure?: string;
        mode: string;
        backend: string;
        dtype: string;
        blockSize: string;
      }) => {
        // Flags first: a typo should not wait for the model to load.
        const seed = parseIntArg(opts.seed, "--seed");
        const n = parseIntArg(
          opts.prompts,
          "--prompts",
          1,
          MAX_VERIFY_PROMPTS,
          `at most ${MAX_VERIFY_PROMPTS} prompts per run (run several seeds for more)`,
        );
        const blockSize = parseIntArg(opts.blockSize, "--block-size", 1, MAX_BLOCK_SIZE);
        // The trainer's layout (buildNprLayout) keeps NPR's 1-5 plan rule, so verify does too.
        const fixed = opts.forceStructure ? parseForceStructure(opts.forceStructure, "--force-structure", MAX_PLANS) : null;
        const mode = parseChoice(opts.mode, "--mode", ["parallel", "sequential"] as const);
        const backend = parseChoice(opts.backend, "--backend", ["cpu", "cuda"] as const);
        const { model, tok, vocab } = loadForEngine(opts.model, backend, opts.dtype);
        const rng = new Rng(seed);
        const prompts: number[][] = [];
        const structures: ForcedBlock[][] = [];
        for (let i = 0; i < n; i++) {
          const words = Array.from({ length: 2 + rng.int(6) }, () => String.fromCharCode(97 + rng.int(26)).repeat(1 + rng.int(4)));
          prompts.push(tok.encodeChat([{ role: "user", content: `${i}: ${words.join(" ")}?` }]));
          structures.push(fixed ?? randomStructure(rng, 16));
        }
        const e = new Engine(model, vocab, { numBlocks: 4096, blockSize, maxBatchTokens: 256 });
        const results = generateWithProgress(
          e,
          prompts,
          structures.map((fs, i) => ({
            temperature: 0,
            mode,
            maxNewTokens: 100_000,
            minForkBudget: 0,
            forceStructure: fs,
            seed: i,
          })),
          "npr engine verify: generating",
        );
        const tol = verifyTolerances(model);
        let tokensMismatch = 0;
        let positionsMismatch = 0;
        let nearTies = 0;
        let maxDiff = 0;
        let incomplete = 0;
        const rescoring = new Progress({ label: "npr engine verify: re-scoring", total: results.length });
        results.forEach((r, i) => {
          if (r.finishReason !== "stop" || r.malformed !== null) incomplete++;
          const rep = rescoreTrajectory(model, vocab, r, mode, true, true);
          tokensMismatch += rep.tokensMismatch;
          positionsMismatch += rep.positionsMismatch;
          nearTies += rep.nearTies;
          maxDiff = Math.max(maxDiff, rep.maxAbsLogprobDiff);
          rescoring.update(i + 1);
        });
        rescoring.finish();
        e.dispose();
        writeOut(
          JSON.stringify({
            trajectories: results.length,
            tokensMismatch,
            maxAbsLogprobDiff: maxDiff,
            positionsMismatch,
            nearTies,
            incomplete,
            tokens: results.reduce((a, r) => a + r.ids.length, 0),
            blocks: results.reduce((a, r) => a + r.stats.blocks, 0),
            tolerances: tol,
          }) + "\n",
        );
        if (tokensMismatch > 0 || positionsMismatch > 0 || incomplete > 0 || maxDiff > tol.logprob) process.exitCode = 1;
      },
    );

  engine
    .command("fuzz")
    .description(
      'drive scheduler and block pool with an adversarial scripted model; prints {"requests", "leakedBlocks", "doubleFrees", "invariantViolations", "finishReasons", ...}',
    )
    .option("--seed <n>", "fuzz seed", "0")
    .option("--iterations <n>", `engines to build and drain, each with several requests (1-${MAX_FUZZ_ITERATIONS})`, "100")
    .option("--model <dir>", "take the tokenizer from this checkpoint (default: the byte tokenizer)")
    .option("--inject <fault>", "negative control: plant a fault the fuzzer must report: leak (a table never released) or double-free")
    .action(async (opts: { seed: string; iterations: string; model?: string; inject?: string }) => {
      const seed = parseIntArg(opts.seed, "--seed");
      const iterations = parseIntArg(
        opts.iterations,
        "--iterations",
        1,
        MAX_FUZZ_ITERATIONS,
        `at most ${MAX_FUZZ_ITERATIONS} iterations per run (about 25 minutes; run several seeds for more)`,
      );
      const inject = opts.inject === undefined ? undefined : parseChoice(opts.inject, "--inject", FUZZ_FAULTS);
      const { byteTokenizer } = await import("../tokenizer/index.ts");
      if (opts.model !== undefined) checkInputDir(opts.model, "--model", "checkpoint folder");
      const tok = opts.model ? NprTokenizer.load(opts.model) : byteTokenizer();
      const progress = new Progress({ label: "npr engine fuzz", total: iterations });
      const rep = runFuzz(engineVocab(tok, Math.max(tok.size, 1)), (s) => tok.encode(s), seed, iterations, {
        inject,
        onIteration: (done) => progress.update(done),
      });
      progress.finish();
      writeOut(JSON.stringify(rep) + "\n");
      if (rep.leakedBlocks || rep.doubleFrees || rep.invariantViolations || rep.unfinished) process.exitCode = 1;
    });
}
