/**
 * `npr demo`: the README's main job until the training pipeline replaces it. Creates (or reuses)
 * a tiny random Qwen3 checkpoint with the byte tokenizer under runs/demo, runs one prompt with a
 * forced NPR structure through the engine in sequential mode (one token per step) and in parallel
 * mode (the steps of a block decoded together over the shared prefix KV), shows the branch tree
 * and prints tokens/s of both and the measured speed-up for the same serialized tokens, with the
 * GEMM path that ran (the speed-up depends on it). Every run reports itself on stderr as it ends,
 * so a non-TTY log shows progress too. Flags are checked before anything is written.
 * Composition root: files, flags, terminal; the engine does the work.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Command } from "commander";
import { Engine, ModelRunner, forcedMaxPlans, parseForceStructure } from "../engine/index.ts";
import type { GenerateParams, GenerationResult } from "../engine/index.ts";
import { Qwen3Model, parseQwen3Config, qwen3ParamCount, saveQwen3 } from "../model/index.ts";
import { CpuBackend } from "../tensor/backend/cpu/index.ts";
import { byteTokenizer } from "../tokenizer/index.ts";
import { UsageError } from "../util/index.ts";
import { checkOutputDir, parseIntArg } from "./args.ts";
import { loadForEngine } from "./engine.ts";
import { streamWithTree } from "./generate.ts";
import { writeOut } from "./io.ts";
import { resolveConfigFile } from "./model.ts";

/** Most timed runs per mode (each takes seconds on 2 cores with the default structure). */
const MAX_REPEATS = 20;

/**
 * Writes the demo checkpoint (tiny preset, byte tokenizer, f32) unless a complete one is there.
 * A non-empty folder without a config.json is somebody else's: it is never replaced.
 */
function ensureCheckpoint(dir: string, fresh: boolean): void {
  checkOutputDir(dir, "--dir");
  const has = (f: string) => fs.existsSync(path.join(dir, f));
  const complete = ["config.json", "tokenizer.json", "model.safetensors"].every(has);
  if (complete && !fresh) {
    process.stderr.write(`npr demo: reusing the random checkpoint in ${dir} (--fresh rewrites it)\n`);
    return;
  }
  if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0 && !has("config.json")) {
    throw new UsageError(`--dir ${dir}: the folder holds files but no checkpoint; the demo will not replace it`, {
      code: "exists",
      param: "--dir",
      hint: "choose a new or empty folder for the demo checkpoint (the default is runs/demo)",
    });
  }
  const file = resolveConfigFile("tiny");
  const parsed = parseQwen3Config(JSON.parse(fs.readFileSync(file, "utf8")), file);
  const model = Qwen3Model.random(parsed.config, { seed: 0, backend: new CpuBackend() });
  saveQwen3(model, dir, { dtype: "f32", overwrite: true });
  byteTokenizer().save(dir);
  process.stderr.write(
    `npr demo: wrote a random ${qwen3ParamCount(parsed.config).toLocaleString("en-US")}-parameter Qwen3 (tiny preset) with the byte tokenizer to ${dir}\n`,
  );
}

interface ModeRun {
  result: GenerationResult;
  wall: number;
  steps: number;
}

/** A short, printable preview of a span's text (a random model emits arbitrary bytes). */
function preview(text: string, width = 40): string {
  const clean = text.replace(/[^\x20-\x7e]/g, "·");
  return clean.length > width ? clean.slice(0, width - 1) + "…" : clean;
}

function printTree(tok: (ids: number[]) => string, r: GenerationResult): void {
  for (const sp of r.tree) {
    const n = sp.end - sp.start;
    const label = sp.kind === "trunk" ? "trunk" : `  block ${sp.block + 1} step ${sp.branch + 1}`;
    writeOut(`  ${label.padEnd(18)} ${String(n).padStart(4)} tokens  ${preview(tok(r.ids.slice(sp.start, sp.end)))}\n`);
  }
}

export function registerDemoCommand(program: Command): void {
  program
    .command("demo")
    .description("npr generate on a tiny random model, parallel versus sequential, with the measured speed-up")
    .option("--dir <dir>", "where the demo checkpoint lives (created when missing)", "runs/demo")
    .option("--fresh", "rewrite the demo checkpoint", false)
    .option("--structure <spec>", 'forced structure: blocks of BxL (B steps of L tokens), e.g. "5x64,3x48"', "5x128,5x96")
    .option("--repeats <n>", `runs per mode (alternating; 1-${MAX_REPEATS}); the best time of each counts`, "2")
    .option("--seed <n>", "sampling seed", "0")
    .action(async (opts: { dir: string; fresh: boolean; structure: string; repeats: string; seed: string }) => {
      // Flags first: nothing is written for a command that would fail on its flags.
      const forceStructure = parseForceStructure(opts.structure, "--structure");
      const repeats = parseIntArg(opts.repeats, "--repeats", 1, MAX_REPEATS);
      const seed = parseIntArg(opts.seed, "--seed");
      ensureCheckpoint(opts.dir, opts.fresh);
      const { tok, model, vocab } = loadForEngine(opts.dir, "cpu", "f32");
      const gemm = model.backend instanceof CpuBackend ? model.backend.gemmPath : "n/a";
      process.stderr.write(
        `npr demo: CPU backend, GEMM path ${gemm}${gemm === "typescript" ? " (no OpenBLAS: install libopenblas0 for the faster path)" : ""}; ${repeats} timed run(s) per mode after a warm-up\n`,
      );
      const prompt = tok.encodeChat([{ role: "user", content: "What is 17 * 23 + 4 * 9? Work on the parts in parallel." }]);
      const params: Partial<GenerateParams> = {
        temperature: 0.7,
        topP: 0.95,
        seed,
        maxNewTokens: 100_000,
        minForkBudget: 0,
        forceStructure,
        maxPlans: forcedMaxPlans(forceStructure),
      };
      const once = async (mode: GenerateParams["mode"], live: boolean): Promise<ModeRun> => {
        const engine = new Engine(model, vocab, { numBlocks: 2048, blockSize: 16, maxBatchTokens: 512 });
        const { results, wall } = await streamWithTree(engine, [prompt], { ...params, mode }, live);
        const steps = engine.runner instanceof ModelRunner ? engine.runner.steps : 0;
        engine.dispose();
        return { result: results[0]!, wall, steps };
      };
      const live = Boolean(process.stderr.isTTY);
      const warm = await once("parallel", false); // warm-up: JIT and buffer pools, so the first timed mode is not penalised
      process.stderr.write(`npr demo: warm-up run: ${warm.result.stats.serializedTokens} tokens in ${warm.wall.toFixed(2)} s\n`);
      const best: Record<GenerateParams["mode"], ModeRun | null> = { sequential: null, parallel: null };
      for (let r = 0; r < repeats; r++) {
        const order: Array<GenerateParams["mode"]> = r % 2 === 0 ? ["sequential", "parallel"] : ["parallel", "sequential"];
        for (const mode of order) {
          if (live) process.stderr.write(`${mode} (run ${r + 1} of ${repeats}):\n`);
          const run = await once(mode, live);
          if (live) process.stderr.write(`\x1b[1A\x1b[J`);
          const s = run.result.stats;
          process.stderr.write(
            `npr demo: ${mode} run ${r + 1} of ${repeats}: ${s.serializedTokens} tokens in ${run.wall.toFixed(2)} s (${(s.serializedTokens / run.wall).toFixed(0)} tokens/s)\n`,
          );
          if (best[mode] === null || run.wall < best[mode]!.wall) best[mode] = run;
        }
      }
      const seq = best.sequential!;
      const par = best.parallel!;
      const decode = (ids: number[]) => tok.decode(ids.filter((i) => i < tok.size));
      writeOut(
        `prompt: ${prompt.length} tokens; forced structure ${opts.structure} (random weights: the text is noise, the structure is real)\n`,
      );
      writeOut(`parallel branch tree (${par.result.finishReason}${par.result.malformed ? `; ${par.result.malformed}` : ""}):\n`);
      printTree(decode, par.result);
      writeOut(`\n| mode | serialized tokens | critical path | forward steps | seconds | tokens/s |\n|---|---|---|---|---|---|\n`);
      for (const [mode, run] of [
        ["sequential", seq],
        ["parallel", par],
      ] as const) {
        const s = run.result.stats;
        writeOut(
          `| ${mode} | ${s.serializedTokens} | ${s.criticalPathTokens} | ${run.steps} | ${run.wall.toFixed(2)} | ${(s.serializedTokens / run.wall).toFixed(0)} |\n`,
        );
      }
      const speedup = par.result.stats.serializedTokens / par.wall / (seq.result.stats.serializedTokens / seq.wall);
      // The suggested command must have the budget this structure needs (generate's default 512
      // would stop a 1,236-token structure half way): the longest serialized run plus a quarter
      // for the free trunk text a different sample may add, rounded up to 64.
      const longest = Math.max(seq.result.stats.serializedTokens, par.result.stats.serializedTokens);
      const budget = Math.ceil((longest * 1.25) / 64) * 64;
      writeOut(
        `\nspeed-up: ${speedup.toFixed(2)}x tokens/s, parallel versus sequential ` +
          `(${os.cpus().length} x ${os.cpus()[0]?.model.trim() ?? "CPU"}, Node ${process.version}, GEMM path ${gemm}, best of ${repeats})\n` +
          `next: npx npr generate --model ${opts.dir} --prompt "..." --force-structure "${opts.structure}" --max-tokens ${budget} --temperature 0.7 --top-p 0.95 [--mode sequential] [--json]\n`,
      );
    });
}
