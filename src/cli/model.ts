/**
 * `npr model ...`: create random Qwen3 checkpoints in the Hugging Face layout (refusing one too
 * large for this machine's memory), check and describe a checkpoint (its tensors against its
 * config, as loading does), and print logits (token ids decimal, within the model's context).
 * Backend choice and config-file resolution (a path, or the name of a preset under
 * presets/models/) happen here, in the composition root.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import {
  Qwen3Model,
  checkQwen3Tensors,
  describeQwen3Config,
  loadQwen3,
  parseQwen3Config,
  qwen3ParamCount,
  saveQwen3,
} from "../model/index.ts";
import { tidy } from "../tensor/index.ts";
import type { Backend } from "../tensor/index.ts";
import { CpuBackend } from "../tensor/backend/cpu/index.ts";
import { makeCudaBackend } from "./backend.ts";
import { checkInputDir, checkInputFile, checkOutputDir, parseChoice, parseComputeDtype, parseIntArg, readJsonFile } from "./args.ts";
import { writeOut } from "./io.ts";
import { SafetensorsCheckpoint } from "../format/index.ts";
import { ConfigError, UsageError } from "../util/index.ts";
import type { ParsedQwen3Config, Qwen3Config } from "../model/index.ts";
import { causalLayout } from "../util/index.ts";
import { NprTokenizer, byteTokenizer } from "../tokenizer/index.ts";

const PRESET_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../presets/models");

/** The names of the built-in model presets. */
export function modelPresets(): string[] {
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

/** A config file path (or a folder holding config.json), or a preset name; returns the file to read. */
export function resolveConfigFile(spec: string): string {
  if (fs.existsSync(spec)) return checkInputFile(fs.statSync(spec).isDirectory() ? path.join(spec, "config.json") : spec, "--config");
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

/**
 * "1,2,3" -> [1, 2, 3]: decimal token ids in [0, vocab), blanks around commas allowed, at most
 * `maxTokens` of them (the model's max_position_embeddings: positions past it were never trained).
 */
export function parseTokenList(text: string, vocabSize: number, maxTokens = Number.MAX_SAFE_INTEGER): number[] {
  const parts = text.split(",").map((s) => s.trim());
  if (parts.length === 0 || parts.some((p) => p === "")) {
    throw new UsageError(
      `--tokens must be a comma-separated list of token ids, got "${text.length > 40 ? text.slice(0, 37) + "..." : text}"`,
      {
        code: "bad_tokens",
        param: "--tokens",
        hint: "for example --tokens 1,2,3",
      },
    );
  }
  if (parts.length > maxTokens) {
    throw new UsageError(`--tokens: ${parts.length} ids, more than the model's context of ${maxTokens} (max_position_embeddings)`, {
      code: "too_many_tokens",
      param: "--tokens",
    });
  }
  return parts.map((p, i) => {
    // Decimal digits only: Number("0x10") is 16 and Number("1e1") is 10, neither is what was meant.
    const n = /^\d+$/.test(p) ? Number(p) : NaN;
    if (!Number.isSafeInteger(n) || n >= vocabSize) {
      throw new UsageError(`--tokens: entry ${i + 1} ("${p}") is not a token id in [0, ${vocabSize})`, {
        code: "bad_tokens",
        param: "--tokens",
        hint: "token ids are decimal integers, e.g. --tokens 1,2,3",
      });
    }
    return n;
  });
}

/**
 * A checkpoint folder's config, checked the CLI way first: the folder exists, config.json is a
 * non-empty file and valid JSON (a syntax error names file:line:column), then the Qwen3 rules.
 */
export function readModelConfig(dir: string, param: string): ParsedQwen3Config {
  checkInputDir(dir, param, "checkpoint folder");
  const file = path.join(dir, "config.json");
  const parsed = parseQwen3Config(readJsonFile(file, param), file);
  warnUnknown(parsed.unknown, file);
  return parsed;
}

/**
 * Refuses a model too large to initialize here: `Qwen3Model.random` holds each parameter as f32
 * values plus its backend buffer and the saved copy (~12 bytes per parameter at peak), which
 * must fit in this machine's memory; past that V8 aborts the process instead of throwing.
 */
export function checkInitMemory(config: Qwen3Config, totalBytes = os.totalmem()): void {
  const params = qwen3ParamCount(config);
  const need = params * 12;
  if (need > 0.8 * totalBytes) {
    throw new UsageError(
      `a model of ${params.toLocaleString("en-US")} parameters needs about ${humanBytes(need)} of memory to initialize; this machine has ${humanBytes(totalBytes)}`,
      {
        code: "too_big",
        param: "--config",
        hint: "use a smaller config (hidden_size, num_hidden_layers, vocab_size), or initialize on a larger machine",
      },
    );
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
  if (!fs.existsSync(spec))
    throw new UsageError(`--tokenizer ${spec}: no such file or folder`, { code: "missing_file", param: "--tokenizer" });
  const dir = fs.statSync(spec).isDirectory() ? spec : path.dirname(spec);
  if (spec !== dir && path.basename(spec) !== "tokenizer.json") {
    throw new UsageError(`--tokenizer must be a tokenizer.json file or its folder, got "${spec}"`, {
      code: "bad_tokenizer",
      param: "--tokenizer",
    });
  }
  checkInputFile(path.join(dir, "tokenizer.json"), "--tokenizer");
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
    .option(
      "--tokenizer <file|dir>",
      "tokenizer.json (or its folder) to write beside the weights; default: the built-in byte tokenizer with the 8 NPR tags",
    )
    .action((opts: { config: string; out: string; seed: string; dtype: string; overwrite: boolean; tokenizer?: string }) => {
      // Every flag and path is checked before anything is computed or written.
      const dtype = parseChoice(opts.dtype, "--dtype", ["bf16", "f16", "f32"] as const);
      const seed = parseIntArg(opts.seed, "--seed");
      const file = resolveConfigFile(opts.config);
      const parsed = parseQwen3Config(readJsonFile(file, "--config"), file);
      warnUnknown(parsed.unknown, file);
      checkInitMemory(parsed.config);
      // Checked before anything is written: a tokenizer whose ids the model cannot embed is useless.
      const tok = initTokenizer(opts.tokenizer);
      if (tok.size > parsed.config.vocabSize) {
        throw new ConfigError(`${file}: vocab_size ${parsed.config.vocabSize} is smaller than the tokenizer's ${tok.size} ids`, {
          code: "vocab_too_small",
          param: "vocab_size",
          hint: `use a config with vocab_size >= ${tok.size} (the byte tokenizer needs 267; 320 pads it to 64)`,
        });
      }
      // Last of the checks: it creates missing parent folders of --out.
      checkOutputDir(opts.out, "--out", { mustBeNew: !opts.overwrite, overwriteFlag: "--overwrite" });
      const m = Qwen3Model.random(parsed.config, { seed, backend: new CpuBackend() });
      const files = saveQwen3(m, opts.out, { dtype, overwrite: opts.overwrite });
      files.push(...tok.save(opts.out));
      process.stderr.write(
        `npr: wrote ${opts.out} (${qwen3ParamCount(parsed.config).toLocaleString("en-US")} parameters, ${opts.dtype}): ${files.map((f) => path.basename(f)).join(", ")}\n`,
      );
    });

  model
    .command("info")
    .description(
      "check a checkpoint's weights against its config (as loading does) and print its config, parameter count, storage dtypes and size",
    )
    .argument("<dir>", "checkpoint folder (config.json + *.safetensors)")
    .option("--json", "print one JSON object instead of a table", false)
    .action((dir: string, opts: { json: boolean }) => {
      const parsed = readModelConfig(dir, "<dir>");
      const ckpt = SafetensorsCheckpoint.open(dir);
      const dtypes: Record<string, number> = {};
      let bytes = 0;
      let stored = 0;
      try {
        // Missing, renamed, mis-shaped or non-float tensors fail here, exactly as loading would.
        const check = checkQwen3Tensors(dir, parsed.config, ckpt);
        if (check.unexpected.length > 0) {
          process.stderr.write(
            `npr: warning: ${dir}: tensors Qwen3 does not use were ignored: ${check.unexpected.slice(0, 5).join(", ")}${check.unexpected.length > 5 ? ` (+${check.unexpected.length - 5} more)` : ""}\n`,
          );
        }
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
        storedElements: stored,
        tensors: ckpt.names().length,
        dtypes,
        bytes,
      };
      if (opts.json) {
        writeOut(JSON.stringify(info) + "\n");
        return;
      }
      const rows: Array<[string, string]> = [
        ["checkpoint", info.dir],
        ["architecture", describeQwen3Config(parsed.config)],
        ["parameters", params.toLocaleString("en-US")],
        ["tensors", String(info.tensors)],
        [
          "dtypes",
          Object.entries(dtypes)
            .map(([d, n]) => `${d} x${n}`)
            .join(", "),
        ],
        ["weight bytes", `${bytes.toLocaleString("en-US")} (${humanBytes(bytes)})`],
      ];
      const w = Math.max(...rows.map(([k]) => k.length));
      for (const [k, v] of rows) writeOut(`${k.padEnd(w)}  ${v}\n`);
    });

  model
    .command("logits")
    .description('print the logits of a token sequence (causal layout) as one JSON object {"logits": [[...], ...]}')
    .requiredOption("--model <dir>", "checkpoint folder (config.json + *.safetensors; no tokenizer needed)")
    .requiredOption("--tokens <ids>", "comma-separated token ids, e.g. 1,2,3")
    .option("--backend <name>", "compute backend: cpu or cuda", "cpu")
    .option("--dtype <dtype>", "compute dtype: f32, f64 or bf16 (bf16 weights and GEMMs, f32 elsewhere)", "f32")
    .option(
      "--activations <mode>",
      "bf16: round activations where transformers' bf16 forward does (for parity with a bf16 reference; needs --dtype f32 or bf16)",
    )
    .action((opts: { model: string; tokens: string; backend: string; dtype: string; activations?: string }) => {
      const dtype = parseComputeDtype(opts.dtype);
      if (opts.activations !== undefined && opts.activations !== "bf16") {
        throw new UsageError(`--activations must be bf16, got "${opts.activations}"`, { code: "bad_activations", param: "--activations" });
      }
      if (opts.activations === "bf16" && dtype === "f64") {
        throw new UsageError(`--activations bf16 needs --dtype f32 or bf16, got --dtype f64`, {
          code: "bad_activations",
          param: "--activations",
        });
      }
      const parsed = readModelConfig(opts.model, "--model");
      const ids = parseTokenList(opts.tokens, parsed.config.vocabSize, parsed.config.maxPositionEmbeddings);
      const backend = makeBackend(opts.backend);
      const m = loadQwen3(opts.model, { backend, dtype, requiresGrad: false, activations: opts.activations as "bf16" | undefined });
      // Only the host copy leaves the scope: every activation and the logits are freed at once.
      const host = tidy(() => m.forward(Int32Array.from(ids), causalLayout(ids.length)).toArray());
      const V = parsed.config.vocabSize;
      const rows: number[][] = [];
      for (let t = 0; t < ids.length; t++) rows.push(Array.from(host.subarray(t * V, (t + 1) * V)));
      writeOut(JSON.stringify({ logits: rows }) + "\n");
    });
}
