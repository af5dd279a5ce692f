/**
 * A run folder, `runs/NAME/` or any `--out DIR`: the one place a training stage writes to.
 *
 *   DIR/recipe.json          the resolved run config (recipe after overrides, stage, inputs)
 *   DIR/metrics.jsonl        one line per step plus evaluation lines (metrics.ts)
 *   DIR/samples/step-N.jsonl generations of the evaluations at step N
 *   DIR/checkpoints/step-N/  HF model folder + optimizer, trainer state, manifest (checkpoint-io.ts)
 *   DIR/final/               the finished model (weights, config, tokenizer), checksummed
 *
 * This file decides which folder is what: starting a fresh run (refusing a folder that already
 * holds one), finding the newest valid checkpoint to resume from (a corrupt one is reported and
 * skipped), keeping the last k checkpoints, clearing temporaries a kill left behind.
 * Knows paths and JSON; the checkpoint contents are checkpoint-io.ts's, the loop is trainer.ts's.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { UsageError } from "../util/index.ts";
import { verifyFolder, writeFileAtomic } from "./checkpoint-io.ts";
import { MetricsLog } from "./metrics.ts";

const STEP_DIR = /^step-(\d+)$/;
/** Names of the temporaries an interrupted write leaves (`x.tmp-PID`, `.step-N.tmp-PID-TIME`, `.x.old-...`). */
const TEMPORARY = /\.(tmp|old)-[\w-]+$/;

export interface CheckpointRef {
  step: number;
  dir: string;
}

export class RunFolder {
  readonly dir: string;
  readonly metrics: MetricsLog;

  private constructor(dir: string) {
    this.dir = path.resolve(dir);
    this.metrics = new MetricsLog(path.join(this.dir, "metrics.jsonl"));
  }

  get recipeFile(): string {
    return path.join(this.dir, "recipe.json");
  }
  get checkpointsDir(): string {
    return path.join(this.dir, "checkpoints");
  }
  get samplesDir(): string {
    return path.join(this.dir, "samples");
  }
  get finalDir(): string {
    return path.join(this.dir, "final");
  }

  /** The run in `dir`, or null when `dir` holds no run config (absent, empty or a stranger's folder). */
  static existing(dir: string): RunFolder | null {
    const run = new RunFolder(dir);
    return fs.existsSync(run.recipeFile) ? run : null;
  }

  /**
   * Starts a run in `dir` with its resolved config. `dir` must be absent or empty: a run is
   * continued with --resume, never overwritten by accident.
   */
  static create(dir: string, config: unknown): RunFolder {
    const run = new RunFolder(dir);
    let entries: string[] = [];
    try {
      entries = fs.readdirSync(run.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    // A start killed before recipe.json was in place leaves only its temporary: not a run.
    for (const name of entries.filter((n) => TEMPORARY.test(n))) fs.rmSync(path.join(run.dir, name), { recursive: true, force: true });
    entries = entries.filter((n) => !TEMPORARY.test(n));
    if (entries.length > 0) {
      throw new UsageError(`${run.dir} is not empty${fs.existsSync(run.recipeFile) ? " (it holds a run)" : ""}`, {
        code: "run_exists",
        param: "--out",
        hint: "pass --resume to continue the run in it, or choose a new --out folder",
      });
    }
    fs.mkdirSync(run.dir, { recursive: true });
    writeFileAtomic(run.recipeFile, configText(config));
    return run;
  }

  /** The run config as saved at the start. */
  readConfig(): unknown {
    return JSON.parse(fs.readFileSync(this.recipeFile, "utf8")) as unknown;
  }

  /** SHA-256 of the saved run config (checkpoints record it; a resume with another config is refused). */
  configHash(): string {
    return createHash("sha256").update(fs.readFileSync(this.recipeFile)).digest("hex");
  }

  /** Checkpoint folders by step, newest first (validity not checked). */
  checkpoints(): CheckpointRef[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.checkpointsDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    const out: CheckpointRef[] = [];
    for (const name of names) {
      const m = STEP_DIR.exec(name);
      if (m) out.push({ step: Number(m[1]), dir: path.join(this.checkpointsDir, name) });
    }
    return out.sort((a, b) => b.step - a.step);
  }

  /** Where the checkpoint after `step` optimizer steps goes. */
  checkpointDir(step: number): string {
    return path.join(this.checkpointsDir, `step-${step}`);
  }

  /**
   * The newest checkpoint whose files match its manifest. Each newer one that does not is
   * reported through `warn` (with the reason) and moved aside as `step-N.corrupt-<time>`, so a run
   * killed while writing, or a disk that corrupted a file, falls back to the checkpoint before;
   * the bad folder is kept for inspection but no longer counts as a checkpoint (pruning, resume).
   */
  newestValidCheckpoint(warn: (message: string) => void): CheckpointRef | null {
    for (const ck of this.checkpoints()) {
      const why = verifyFolder(ck.dir);
      if (why === null) return ck;
      const aside = `${ck.dir}.corrupt-${Date.now().toString(36)}`;
      fs.renameSync(ck.dir, aside);
      warn(`checkpoint ${path.relative(this.dir, ck.dir)} is not usable (${why}); moved aside to ${path.relative(this.dir, aside)}`);
    }
    return null;
  }

  /** Deletes all but the newest `keep` checkpoints (the one just written is the newest). */
  prune(keep: number): void {
    for (const ck of this.checkpoints().slice(Math.max(1, keep))) fs.rmSync(ck.dir, { recursive: true, force: true });
  }

  /** Removes the temporary folders and files an interrupted write left in the run (hidden `.x.tmp-*`, `.x.old-*`). */
  clearTemporaries(): string[] {
    const removed: string[] = [];
    for (const dir of [this.dir, this.checkpointsDir]) {
      let names: string[] = [];
      try {
        names = fs.readdirSync(dir);
      } catch {
        continue;
      }
      for (const name of names) {
        if (TEMPORARY.test(name)) {
          fs.rmSync(path.join(dir, name), { recursive: true, force: true });
          removed.push(path.join(dir, name));
        }
      }
    }
    return removed;
  }

  /** True when the stage finished: final/ is in place and matches its manifest. */
  isComplete(): boolean {
    return fs.existsSync(this.finalDir) && verifyFolder(this.finalDir) === null;
  }

  /** Appends generations to samples/step-N.jsonl. */
  writeSamples(step: number, rows: readonly object[]): string {
    fs.mkdirSync(this.samplesDir, { recursive: true });
    const file = path.join(this.samplesDir, `step-${step}.jsonl`);
    // Rewritten whole: a resumed run that evaluates step N again replaces the interrupted file.
    fs.writeFileSync(file, rows.map((r) => JSON.stringify(r) + "\n").join(""));
    return file;
  }
}

/** The canonical text of a run config (stable key order as given, two-space indent). */
export function configText(config: unknown): string {
  return JSON.stringify(config, null, 2) + "\n";
}

/**
 * The first key path where two JSON values differ ("sft.lr", "stage"), or null when equal: how a
 * resume with a different recipe or flags is reported.
 */
export function firstDifference(a: unknown, b: unknown, at = ""): string | null {
  if (a === b) return null;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null || Array.isArray(a) !== Array.isArray(b)) {
    return at || "(root)";
  }
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  for (const k of [...keys].sort()) {
    const d = firstDifference((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], at ? `${at}.${k}` : k);
    if (d !== null) return d;
  }
  return null;
}
