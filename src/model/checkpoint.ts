/**
 * Qwen3 checkpoints in the Hugging Face layout: a folder with config.json, model.safetensors (or
 * shards + model.safetensors.index.json) and generation_config.json. Loading validates every
 * tensor's presence, shape and dtype against the config and converts bf16/f16/f32 storage to the
 * compute dtype; saving writes a folder transformers opens unchanged, atomically (a crash never
 * leaves a half-written checkpoint under the final name).
 * Bytes come from format/safetensors.ts; this file only maps names to tensors, never does math.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { SafetensorsCheckpoint, writeSafetensorsCheckpoint } from "../format/index.ts";
import type { WriteEntry } from "../format/index.ts";
import { Tensor } from "../tensor/index.ts";
import type { Backend } from "../tensor/index.ts";
import { bf16BitsToF32Array, decodeToFloat, encodeFloat, toBf16Bits } from "../tensor/index.ts";
import { CheckpointFormatError, ConfigError } from "../util/index.ts";
import { parseQwen3Config, qwen3ConfigToJson } from "./config.ts";
import type { ParsedQwen3Config } from "./config.ts";
import { Qwen3Model } from "./qwen3.ts";
import { checkQwen3Tensors } from "./validate.ts";
import { LM_HEAD, paramDtype, qwen3ParamSpecs } from "./weights.ts";

export interface LoadOptions {
  /** Where the parameters live (required: there is no default backend). */
  backend: Backend;
  /**
   * Compute dtype (default f32); bf16/f16/f32 storage all load into it. "bf16" is mixed
   * precision: matrices held in bf16 (BF16 storage copied bit for bit), norms and biases in f32.
   */
  dtype?: "f32" | "f64" | "bf16";
  /** Parameters are autograd leaves (default true, for training). */
  requiresGrad?: boolean;
  /** "bf16": round activations as transformers' bf16 forward does (Qwen3ModelOptions.activations). */
  activations?: "bf16";
  /** Called with tensors the checkpoint has that Qwen3 does not use (HF ignores them too). */
  onUnexpected?: (names: string[]) => void;
}

/** Reads and validates `dir/config.json`. */
export function readQwen3Config(dir: string): ParsedQwen3Config {
  const file = path.join(dir, "config.json");
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (err) {
    throw new CheckpointFormatError(`${file}: cannot read the model config`, {
      code: "missing_file",
      param: file,
      hint: "a Hugging Face checkpoint folder holds config.json beside its *.safetensors files",
      cause: err,
    });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${file}: not valid JSON (${(err as Error).message})`, {
      code: "bad_json",
      param: file,
      cause: err,
    });
  }
  return parseQwen3Config(json, file);
}

/**
 * Loads a Qwen3 checkpoint folder into a model on `backend`. A missing, mis-shaped or non-float
 * tensor is a CheckpointFormatError naming it. A tied checkpoint that also stores lm_head.weight
 * loads with it ignored (as transformers does); an untied one without it is an error.
 */
export function loadQwen3(dir: string, opts: LoadOptions): Qwen3Model {
  const { config } = readQwen3Config(dir);
  const backend = opts.backend;
  const dtype = opts.dtype ?? "f32";
  const specs = qwen3ParamSpecs(config);
  const ck = SafetensorsCheckpoint.open(dir);
  try {
    // The same rules `npr model info` applies (validate.ts), so info passes exactly what loads.
    const report = checkQwen3Tensors(dir, config, ck);
    const params = new Map<string, Tensor>();
    for (const spec of specs) {
      const entry = ck.get(spec.name)!; // present, shaped and float-typed: checkQwen3Tensors above
      // Decoded straight into the compute dtype and written into a fresh buffer in one bulk copy
      // (Tensor.fromArray would copy element by element once more: slow for 150M-entry tables).
      const held = paramDtype(spec, dtype);
      const bytes = ck.readBytes(spec.name);
      let values: Float32Array | Float64Array | Uint16Array;
      if (held === "bf16") {
        // BF16 on disk is already the buffer's bit patterns (slice: an aligned copy).
        values = entry.dtype === "BF16" ? new Uint16Array(bytes.slice().buffer) : toBf16Bits(decodeToFloat(bytes, entry.dtype, "f32"));
      } else {
        values = decodeToFloat(bytes, entry.dtype, held);
      }
      const buf = backend.alloc(held, values.length);
      backend.write(buf, values);
      params.set(spec.name, new Tensor(backend, buf, spec.shape, { requiresGrad: opts.requiresGrad ?? true }));
    }
    // lm_head.weight in a tied checkpoint is a copy of embed_tokens that HF drops; rotary
    // inv_freq buffers appear in old exports. Neither is an error.
    const unexpected = report.unexpected.filter((n) => !(config.tieWordEmbeddings && n === LM_HEAD));
    if (unexpected.length > 0) opts.onUnexpected?.(unexpected);
    return new Qwen3Model(config, params, { activations: opts.activations });
  } finally {
    ck.close();
  }
}

export interface SaveOptions {
  /** Storage dtype of every weight (default bf16, as Qwen3 releases ship). */
  dtype?: "bf16" | "f16" | "f32";
  /** Split into shards above this many bytes (HF's default is 5 GB). */
  maxShardBytes?: number;
  /** Replace an existing non-empty folder (default false: refuse). */
  overwrite?: boolean;
}

const TORCH_DTYPE = { bf16: "bfloat16", f16: "float16", f32: "float32" } as const;
const ST_DTYPE = { bf16: "BF16", f16: "F16", f32: "F32" } as const;

/**
 * Writes `model` as a Hugging Face checkpoint folder `dir`. Everything is first written into a
 * sibling `dir.tmp-<pid>-<time>` and renamed into place at the end, so `dir` is either absent,
 * the old checkpoint, or the complete new one. An existing non-empty `dir` is replaced only with
 * `overwrite` (it is moved aside and deleted after the rename). Returns the files written.
 */
export function saveQwen3(model: Qwen3Model, dir: string, opts: SaveOptions = {}): string[] {
  const dtype = opts.dtype ?? "bf16";
  const target = path.resolve(dir);
  const existing = listIfExists(target);
  if (existing !== null && existing.length > 0 && !opts.overwrite) {
    throw new CheckpointFormatError(`${target}: folder exists and is not empty; refusing to overwrite it`, {
      code: "exists",
      param: target,
      hint: "choose a new output folder, or remove this one first",
    });
  }
  const stamp = `${process.pid}-${Date.now().toString(36)}`;
  const tmp = `${target}.tmp-${stamp}`;
  fs.mkdirSync(path.dirname(target), { recursive: true });
  fs.mkdirSync(tmp);
  try {
    // Thunks: each tensor is read back from the backend and encoded only when the writer reaches it.
    const entries: WriteEntry[] = qwen3ParamSpecs(model.config).map((spec) => ({
      name: spec.name,
      dtype: ST_DTYPE[dtype],
      shape: [...spec.shape],
      data: () => {
        const t = model.param(spec.name);
        const host = t.toArray();
        // A bf16 parameter (mixed precision) is widened exactly first; BF16 storage gets it back bit for bit.
        const floats = t.dtype === "bf16" ? bf16BitsToF32Array(host as Uint16Array) : (host as Float32Array | Float64Array);
        return encodeFloat(floats, ST_DTYPE[dtype]);
      },
    }));
    const files = writeSafetensorsCheckpoint(tmp, entries, {
      maxShardBytes: opts.maxShardBytes,
      metadata: { format: "pt" },
    });
    const config = qwen3ConfigToJson(model.config, { torchDtype: TORCH_DTYPE[dtype] });
    fs.writeFileSync(path.join(tmp, "config.json"), JSON.stringify(config, null, 2) + "\n");
    fs.writeFileSync(path.join(tmp, "generation_config.json"), JSON.stringify(generationConfig(model), null, 2) + "\n");
    let old: string | null = null;
    if (existing !== null) {
      old = `${target}.old-${stamp}`;
      fs.renameSync(target, old);
    }
    fs.renameSync(tmp, target);
    if (old) fs.rmSync(old, { recursive: true, force: true });
    return [
      ...files.map((f) => path.join(target, path.basename(f))),
      path.join(target, "config.json"),
      path.join(target, "generation_config.json"),
    ];
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

/** HF's generation_config.json as `GenerationConfig.from_model_config` writes it. */
function generationConfig(model: Qwen3Model): Record<string, unknown> {
  const c = model.config;
  const out: Record<string, unknown> = { _from_model_config: true };
  if (c.bosTokenId !== null) out["bos_token_id"] = c.bosTokenId;
  if (c.eosTokenId !== null) out["eos_token_id"] = c.eosTokenId;
  if (c.padTokenId !== null) out["pad_token_id"] = c.padTokenId;
  return out;
}

function listIfExists(dir: string): string[] | null {
  try {
    return fs.readdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
}
