/**
 * `npr model ...`: create random Qwen3 checkpoints in the Hugging Face layout, describe a
 * checkpoint, and print logits. Backend choice and config-file resolution (a path, or the name of
 * a preset under presets/models/) happen here, in the composition root.
 */
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import {
  Qwen3Model,
  describeQwen3Config,
  loadQwen3,
  parseQwen3Config,
  qwen3ParamCount,
  readQwen3Config,
  saveQwen3,
} from "../model/index.ts";
import { tidy } from "../tensor/index.ts";
import type { Backend } from "../tensor/index.ts";
import { CpuBackend } from "../tensor/backend/cpu/index.ts";
import { makeCudaBackend } from "./backend.ts";
import { parseComputeDtype, parseIntArg } from "./args.ts";
import { SafetensorsCheckpoint } from "../format/safetensors.ts";
import { ConfigError, UsageError } from "../util/errors.ts";
import { causalLayout } from "../util/layout.ts";
import { NprTokenizer, byteTokenizer } from "../tokenizer/index.ts";

const PRESET_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../presets/models");

/** The names of the built-in model presets. */
export function modelPresets(): string[] {
  try {
    return fs.readdirSync(PRESET_DIR).filter((f) => f.endsWith(".json")).map((f) => f.slice(0, -5)).sort();
  } catch {
    return [];
  }
}

/** A config file path, or a preset name; returns the file to read. */
export function resolveConfigFile(spec: string): string {
  if (fs.existsSync(spec)) return fs.statSync(spec).isDirectory() ? path.join(spec, "config.json") : spec;
  const preset = path.join(PRESET_DIR, `${spec}.json`);
  if (fs.existsSync(preset)) return preset;
  throw new UsageError(`no config file or preset named "${spec}"`, {
    code: "config_not_found",
    param: "--config",
    hint: `give a path to a config.json, or one of the presets: ${modelPresets().join(", ")}`,
  });
}

/** The backend named on the command line. */
export function makeBackend(name: string): Backend {
  if (name === "cpu") return new CpuBackend();
  if (name === "cuda") return makeCudaBackend();
  throw new UsageError(`unknown backend "${name}"`, {
    code: "bad_backend",
    param: "--backend",
    hint: "available backends: cpu, cuda",
  });
}

/** "1,2,3" -> [1, 2, 3], each an integer in [0, vocab). */
export function parseTokenList(text: string, vocabSize: number): number[] {
  const parts = text.split(",").map((s) => s.trim());
  if (parts.length === 0 || parts.some((p) => p === "")) {
    throw new UsageError(`--tokens must be a comma-separated list of token ids, got "${text}"`, {
      code: "bad_tokens",
      param: "--tokens",
      hint: "for example --tokens 1,2,3",
    });
  }
  return parts.map((p, i) => {
    const n = Number(p);
    if (!Number.isInteger(n) || n < 0 || n >= vocabSize) {
      throw new UsageError(`--tokens: entry ${i + 1} ("${p}") is not a token id in [0, ${vocabSize})`, {
        code: "bad_tokens",
        param: "--tokens",
      });
    }
    return n;
  });
}

function readJsonFile(file: string): unknown {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (err) {
    throw new ConfigError(`cannot read ${file} as JSON: ${(err as Error).message}`, {
      code: "bad_json",
      param: file,
      cause: err,
    });
  }
}

function warnUnknown(unknown: readonly string[], source: string): void {
  if (unknown.length > 0) {
    process.stderr.write(`npr: warning: ${source}: keys npr does not know were ignored: ${unknown.join(", ")}\n`);
  }
}

function humanBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** The tokenizer `model init` writes: a given tokenizer.json (or folder), with the 8 tags added, or the byte tokenizer. */
function initTokenizer(spec: string | undefined): NprTokenizer {
  if (spec === undefined) return byteTokenizer();
  const dir = fs.existsSync(spec) && fs.statSync(spec).isDirectory() ? spec : path.dirname(spec);
  if (spec !== dir && path.basename(spec) !== "tokenizer.json") {
    throw new UsageError(`--tokenizer must be a tokenizer.json file or its folder, got "${spec}"`, { code: "bad_tokenizer", param: "--tokenizer" });
  }
  return NprTokenizer.load(dir).withTags();
}

export function registerModelCommands(program: Command): void {
  const model = program.command("model").description("create, inspect and run Qwen3 checkpoints (Hugging Face layout)");

  model
    .command("init")
    .description("write a randomly initialized Qwen3 checkpoint (deterministic per seed)")
    .requiredOption("--config <file|preset>", `a Qwen3 config.json, or a preset: ${modelPresets().join(", ")}`)
    .requiredOption("--out <dir>", "checkpoint folder to create")
    .option("--seed <n>", "random seed", "0")
    .option("--dtype <dtype>", "storage dtype of the weights: bf16, f16 or f32", "bf16")
    .option("--overwrite", "replace an existing checkpoint folder", false)
    .option("--tokenizer <file|dir>", "tokenizer.json (or its folder) to write beside the weights; default: the built-in byte tokenizer with the 8 NPR tags")
    .action((opts: { config: string; out: string; seed: string; dtype: string; overwrite: boolean; tokenizer?: string }) => {
      const file = resolveConfigFile(opts.config);
      const parsed = parseQwen3Config(readJsonFile(file), file);
      warnUnknown(parsed.unknown, file);
      if (!["bf16", "f16", "f32"].includes(opts.dtype)) {
        throw new UsageError(`--dtype must be bf16, f16 or f32, got "${opts.dtype}"`, { code: "bad_dtype", param: "--dtype" });
      }
      // Checked before anything is written: a tokenizer whose ids the model cannot embed is useless.
      const tok = initTokenizer(opts.tokenizer);
      if (tok.size > parsed.config.vocabSize) {
        throw new ConfigError(`${file}: vocab_size ${parsed.config.vocabSize} is smaller than the tokenizer's ${tok.size} ids`, {
          code: "vocab_too_small",
          param: "vocab_size",
          hint: `use a config with vocab_size >= ${tok.size} (the byte tokenizer needs 267; 320 pads it to 64)`,
        });
      }
      const m = Qwen3Model.random(parsed.config, { seed: parseIntArg(opts.seed, "--seed"), backend: new CpuBackend() });
      const files = saveQwen3(m, opts.out, { dtype: opts.dtype as "bf16" | "f16" | "f32", overwrite: opts.overwrite });
      files.push(...tok.save(opts.out));
      process.stderr.write(
        `npr: wrote ${opts.out} (${qwen3ParamCount(parsed.config).toLocaleString("en-US")} parameters, ${opts.dtype}): ${files.map((f) => path.basename(f)).join(", ")}\n`,
      );
    });

  model
    .command("info")
    .description("print a checkpoint's config, parameter count, storage dtypes and size")
    .argument("<dir>", "checkpoint folder (config.json + *.safetensors)")
    .option("--json", "print one JSON object instead of a table", false)
    .action((dir: string, opts: { json: boolean }) => {
      const parsed = readQwen3Config(dir);
      warnUnknown(parsed.unknown, path.join(dir, "config.json"));
      const ckpt = SafetensorsCheckpoint.open(dir);
      const dtypes: Record<string, number> = {};
      let bytes = 0;
      let stored = 0;
      try {
        for (const name of ckpt.names()) {
          const e = ckpt.get(name)!;
          dtypes[e.dtype] = (dtypes[e.dtype] ?? 0) + 1;
          bytes += e.byteLength;
          stored += e.shape.reduce((a, b) => a * b, 1);
        }
      } finally {
        ckpt.close();
      }
      const params = qwen3ParamCount(parsed.config);
      const info = {
        dir: path.resolve(dir),
        config: parsed.config,
        parameters: params,
        stored_elements: stored,
        tensors: ckpt.names().length,
        dtypes,
        bytes,
      };
      if (opts.json) {
        process.stdout.write(JSON.stringify(info) + "\n");
        return;
      }
      const rows: Array<[string, string]> = [
        ["checkpoint", info.dir],
        ["architecture", describeQwen3Config(parsed.config)],
        ["parameters", params.toLocaleString("en-US")],
        ["tensors", String(info.tensors)],
        ["dtypes", Object.entries(dtypes).map(([d, n]) => `${d} x${n}`).join(", ")],
        ["weight bytes", `${bytes.toLocaleString("en-US")} (${humanBytes(bytes)})`],
      ];
      const w = Math.max(...rows.map(([k]) => k.length));
      for (const [k, v] of rows) process.stdout.write(`${k.padEnd(w)}  ${v}\n`);
    });

  model
    .command("logits")
    .description("print the logits of a token sequence (causal layout) as one JSON object {\"logits\": [[...], ...]}")
    .requiredOption("--model <dir>", "checkpoint folder (config.json + *.safetensors; no tokenizer needed)")
    .requiredOption("--tokens <ids>", "comma-separated token ids, e.g. 1,2,3")
    .option("--backend <name>", "compute backend", "cpu")
    .option("--dtype <dtype>", "compute dtype: f32, f64 or bf16 (bf16 weights and GEMMs, f32 elsewhere)", "f32")
    .option("--activations <mode>", "bf16: round activations where transformers' bf16 forward does (for parity with a bf16 reference; needs --dtype f32 or bf16)")
    .action((opts: { model: string; tokens: string; backend: string; dtype: string; activations?: string }) => {
      const dtype = parseComputeDtype(opts.dtype);
      if (opts.activations !== undefined && opts.activations !== "bf16") {
        throw new UsageError(`--activations must be bf16, got "${opts.activations}"`, { code: "bad_activations", param: "--activations" });
      }
      const backend = makeBackend(opts.backend);
      const parsed = readQwen3Config(opts.model);
      warnUnknown(parsed.unknown, path.join(opts.model, "config.json"));
      const ids = parseTokenList(opts.tokens, parsed.config.vocabSize);
      const m = loadQwen3(opts.model, { backend, dtype, requiresGrad: false, activations: opts.activations as "bf16" | undefined });
      // Only the host copy leaves the scope: every activation and the logits are freed at once.
      const host = tidy(() => m.forward(Int32Array.from(ids), causalLayout(ids.length)).toArray());
      const V = parsed.config.vocabSize;
      const rows: number[][] = [];
      for (let t = 0; t < ids.length; t++) rows.push(Array.from(host.subarray(t * V, (t + 1) * V)));
      process.stdout.write(JSON.stringify({ logits: rows }) + "\n");
    });
}
