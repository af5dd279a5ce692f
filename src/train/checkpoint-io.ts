/**
 * Training checkpoints on disk. A checkpoint folder is a Hugging Face model folder (config.json,
 * model.safetensors in f32, generation_config.json, tokenizer.json, tokenizer_config.json: it
 * opens in transformers and in `npr generate` as it is) plus what training needs to continue
 * bit for bit: optimizer.safetensors (AdamW's moments, exact), trainer_state.json (steps done,
 * data cursor, which fixes the data-order RNG) and manifest.json (size and SHA-256 of every other file).
 * Folders are written whole or not at all: everything goes into a hidden temporary sibling, every
 * file is fsynced, the manifest is written last, and one rename puts the folder in place; a
 * folder without a manifest, or whose files disagree with it, is not a checkpoint.
 * Knows files, the model's checkpoint format and AdamW's state; nothing about the training loop.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { SafetensorsFile, writeSafetensors } from "../format/index.ts";
import type { StDType, WriteEntry } from "../format/index.ts";
import { Qwen3Model, loadQwen3, qwen3ParamSpecs, saveQwen3 } from "../model/index.ts";
import type { Qwen3ModelOptions } from "../model/index.ts";
import type { AdamW, AdamWState, Backend } from "../tensor/index.ts";
import type { NprTokenizer } from "../tokenizer/index.ts";
import { CheckpointFormatError, invariant } from "../util/index.ts";
import type { DataCursor } from "./batches.ts";

export const MANIFEST = "manifest.json";
export const STATE_FILE = "trainer_state.json";
export const OPTIMIZER_FILE = "optimizer.safetensors";

/** Everything besides weights and moments that a resumed stage needs, as trainer_state.json holds it. */
export interface TrainerState {
  version: 1;
  stage: string;
  /** Optimizer steps done when the checkpoint was taken. */
  step: number;
  total_steps: number;
  /**
   * The data stream's cursor and the order it walks (a resume checks they match the data). This
   * is also the RNG state of a supervised stage: after the init, its only randomness is the data
   * order, whose generator each epoch is seeded from (seed, epoch) (batches.ts), so the cursor
   * restores it exactly with nothing else to save.
   */
  data: DataCursor & { seed: number; shuffle: boolean; size: number; sha256: string };
  /** SHA-256 of the resolved recipe the run was started with. */
  recipe_sha256: string;
}

interface Manifest {
  version: 1;
  files: Record<string, { bytes: number; sha256: string }>;
}

/** SHA-256 of a file, hex. */
export function sha256File(file: string): string {
  const h = createHash("sha256");
  const fd = fs.openSync(file, "r");
  try {
    const buf = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest("hex");
}

/**
 * Writes `text` to `file` atomically: a temporary sibling, fsync'd, then renamed over the target,
 * so a crash leaves the old file or none, never half of one.
 */
export function writeFileAtomic(file: string, text: string): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    const fd = fs.openSync(tmp, "w");
    try {
      fs.writeFileSync(fd, text);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

function fsyncPath(p: string): void {
  const fd = fs.openSync(p, "r");
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Writes the folder `target` through `fill(tmp)`: fill writes files into an empty temporary
 * sibling, then every file is fsynced and checksummed into manifest.json, the folder is fsynced
 * and renamed over `target` (an existing `target` is moved aside first and deleted after), and
 * the parent is fsynced so the rename itself survives a crash.
 */
export function writeFolderAtomically(target: string, fill: (tmp: string) => void): void {
  const parent = path.dirname(target);
  const stamp = `${process.pid}-${Date.now().toString(36)}`;
  const tmp = path.join(parent, `.${path.basename(target)}.tmp-${stamp}`);
  fs.mkdirSync(parent, { recursive: true });
  try {
    fill(tmp);
    fs.mkdirSync(tmp, { recursive: true });
    const manifest: Manifest = { version: 1, files: {} };
    for (const name of fs.readdirSync(tmp).sort()) {
      const file = path.join(tmp, name);
      invariant(fs.statSync(file).isFile(), () => `writeFolderAtomically: ${file} is not a plain file`);
      fsyncPath(file);
      manifest.files[name] = { bytes: fs.statSync(file).size, sha256: sha256File(file) };
    }
    const mfd = fs.openSync(path.join(tmp, MANIFEST), "w");
    try {
      fs.writeSync(mfd, JSON.stringify(manifest, null, 2) + "\n");
      fs.fsyncSync(mfd);
    } finally {
      fs.closeSync(mfd);
    }
    fsyncPath(tmp);
    let old: string | null = null;
    if (fs.existsSync(target)) {
      old = path.join(parent, `.${path.basename(target)}.old-${stamp}`);
      fs.renameSync(target, old);
    }
    fs.renameSync(tmp, target);
    fsyncPath(parent);
    if (old) fs.rmSync(old, { recursive: true, force: true });
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

/** Why the folder is not a complete checkpoint (missing manifest, missing or changed file), or null. */
export function verifyFolder(dir: string): string | null {
  let manifest: Manifest;
  try {
    manifest = JSON.parse(fs.readFileSync(path.join(dir, MANIFEST), "utf8")) as Manifest;
  } catch (err) {
    return `no readable ${MANIFEST} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`;
  }
  if (manifest.version !== 1 || typeof manifest.files !== "object" || manifest.files === null) return `${MANIFEST} has an unknown form`;
  for (const [name, want] of Object.entries(manifest.files)) {
    const file = path.join(dir, name);
    let size: number;
    try {
      size = fs.statSync(file).size;
    } catch {
      return `${name} is missing`;
    }
    if (size !== want.bytes) return `${name} has ${size} bytes, the manifest says ${want.bytes}`;
    if (sha256File(file) !== want.sha256) return `${name} does not match its SHA-256 in the manifest`;
  }
  return null;
}

/** A model folder (HF layout, f32 weights) plus the tokenizer: what `final/` and every checkpoint hold. */
export function writeModelFiles(dir: string, model: Qwen3Model, tokenizer: NprTokenizer): void {
  // f32 storage: exact for f32 masters and for bf16 parameters (widened exactly), so a resumed
  // run starts from the very bits the interrupted one had.
  saveQwen3(model, dir, { dtype: "f32" });
  tokenizer.save(dir);
}

const ST_OF: Record<string, StDType> = { f32: "F32", f64: "F64", bf16: "BF16" };

/** AdamW's moments as optimizer.safetensors (`m.<param>`, `v.<param>`, in the parameters' dtype). */
function writeOptimizer(file: string, model: Qwen3Model, opt: AdamW): void {
  invariant(os.endianness() === "LE", "checkpoints are written on little-endian hosts only (safetensors is little-endian)");
  const state = opt.state();
  const specs = qwen3ParamSpecs(model.config);
  invariant(specs.length === state.m.length, "optimizer state and model disagree on the parameter count");
  const entries: WriteEntry[] = [];
  specs.forEach((spec, i) => {
    const dtype = ST_OF[model.param(spec.name).dtype];
    invariant(dtype, () => `no storage dtype for ${model.param(spec.name).dtype}`);
    for (const [key, arr] of [
      ["m", state.m[i]!],
      ["v", state.v[i]!],
    ] as const) {
      const view = arr as unknown as ArrayBufferView;
      entries.push({
        name: `${key}.${spec.name}`,
        dtype,
        shape: [...spec.shape],
        data: new Uint8Array(view.buffer, view.byteOffset, view.byteLength),
      });
    }
  });
  writeSafetensors(file, entries, { optimizer: "adamw", step: String(state.step) });
}

function readOptimizer(file: string, model: Qwen3Model): AdamWState {
  const st = SafetensorsFile.open(file);
  try {
    const step = Number(st.metadata?.["step"]);
    const m: Array<Float32Array | Float64Array> = [];
    const v: Array<Float32Array | Float64Array> = [];
    for (const spec of qwen3ParamSpecs(model.config)) {
      const dtype = model.param(spec.name).dtype;
      for (const [key, out] of [
        ["m", m],
        ["v", v],
      ] as const) {
        const name = `${key}.${spec.name}`;
        const entry = st.get(name);
        if (!entry || entry.dtype !== ST_OF[dtype]) {
          throw new CheckpointFormatError(`${file}: ${name} is ${entry ? entry.dtype : "missing"}, expected ${ST_OF[dtype]}`, {
            code: "bad_optimizer_state",
            param: name,
            hint: "the optimizer state belongs to a different model or dtype; resume with the run's own recipe",
          });
        }
        const bytes = st.readBytes(name).slice(); // aligned copy
        const arr =
          dtype === "f64"
            ? new Float64Array(bytes.buffer)
            : dtype === "bf16"
              ? new Uint16Array(bytes.buffer)
              : new Float32Array(bytes.buffer);
        out.push(arr as Float32Array | Float64Array);
      }
    }
    invariant(Number.isInteger(step) && step >= 0, () => `${file}: optimizer step ${step}`);
    return { step, m, v };
  } finally {
    st.close();
  }
}

/** Writes a complete training checkpoint folder (atomically) at `target`. */
export function saveTrainingCheckpoint(
  target: string,
  parts: { model: Qwen3Model; tokenizer: NprTokenizer; opt: AdamW; state: TrainerState },
): void {
  writeFolderAtomically(target, (tmp) => {
    writeModelFiles(tmp, parts.model, parts.tokenizer);
    writeOptimizer(path.join(tmp, OPTIMIZER_FILE), parts.model, parts.opt);
    fs.writeFileSync(path.join(tmp, STATE_FILE), JSON.stringify(parts.state, null, 2) + "\n");
  });
}

export interface LoadedCheckpoint {
  model: Qwen3Model;
  optimizerState: AdamWState;
  state: TrainerState;
}

/**
 * Reads a verified checkpoint folder back: the model in `dtype` on `backend` (with the run's
 * compute options), AdamW's moments and the trainer state.
 */
export function loadTrainingCheckpoint(
  dir: string,
  backend: Backend,
  dtype: "f32" | "bf16",
  modelOpts: Qwen3ModelOptions = {},
): LoadedCheckpoint {
  const loaded = loadQwen3(dir, { backend, dtype });
  const model = modelOpts.computeDtype ? new Qwen3Model(loaded.config, loaded.params, modelOpts) : loaded;
  const optimizerState = readOptimizer(path.join(dir, OPTIMIZER_FILE), model);
  const state = JSON.parse(fs.readFileSync(path.join(dir, STATE_FILE), "utf8")) as TrainerState;
  if (state.version !== 1 || !Number.isInteger(state.step)) {
    throw new CheckpointFormatError(`${dir}/${STATE_FILE}: unknown trainer state version ${String(state.version)}`, {
      code: "bad_trainer_state",
      param: STATE_FILE,
    });
  }
  return { model, optimizerState, state };
}
