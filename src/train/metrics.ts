/**
 * metrics.jsonl: one JSON line per optimizer step with the same keys in every stage (`kind`
 * "train": step, stage, loss, lr, grad_norm, tokens, tokens_per_s, epoch, elapsed_s), and
 * evaluation lines (`kind` "eval": step, stage and the measurements) at the steps they ran, so
 * the report and any plotting tool read every stage alike. A run killed at any moment leaves at
 * most a torn last line; `truncateAfter(step)` on resume keeps exactly the lines of steps up to
 * the checkpoint's, so the file ends with one train line per step and no duplicates.
 * Knows files and JSON; nothing about tensors or models.
 */
import * as fs from "node:fs";
import { DataFormatError } from "../util/index.ts";
import { writeFileAtomic } from "./checkpoint-io.ts";

/** The line a training step writes. */
export interface TrainLine {
  kind: "train";
  /** Optimizer steps done, counted from the start of the stage (1 for the first). */
  step: number;
  stage: string;
  /** Token-mean loss over the step's response tokens. */
  loss: number;
  lr: number;
  /** Global gradient norm before clipping. */
  grad_norm: number;
  /** Tokens the step's forward passes processed (prompts included). */
  tokens: number;
  /** Response tokens the loss was taken over. */
  loss_tokens: number;
  /** tokens / wall seconds of the step (data, forward, backward, update). */
  tokens_per_s: number;
  /** Passes over the training data so far (fractional). */
  epoch: number;
  /** Wall seconds since this process started the stage (restarts at a resume). */
  elapsed_s: number;
}

/** An evaluation's line: measurements keyed by the names users look for (heldout_loss, accuracy, ...). */
export interface EvalLine {
  kind: "eval";
  step: number;
  stage: string;
  [metric: string]: number | string;
}

export type MetricsLine = TrainLine | EvalLine;

export class MetricsLog {
  readonly file: string;

  constructor(file: string) {
    this.file = file;
  }

  /**
   * Appends one line. One write call per line; the page cache holds it the moment the call
   * returns, so SIGKILL loses nothing written (a power cut could; checkpoints fsync, this does not).
   */
  append(line: MetricsLine): void {
    fs.appendFileSync(this.file, JSON.stringify(line) + "\n");
  }

  /** Every complete line, in file order; a torn last line (a kill mid-write) is left out. */
  read(): MetricsLine[] {
    let text: string;
    try {
      text = fs.readFileSync(this.file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    const lines = text.split("\n");
    const out: MetricsLine[] = [];
    for (let i = 0; i < lines.length; i++) {
      const raw = lines[i]!;
      if (raw.trim() === "") continue;
      const last = i === lines.length - 1; // no newline after it: possibly torn
      try {
        out.push(JSON.parse(raw) as MetricsLine);
      } catch {
        if (last) break;
        throw new DataFormatError(`${this.file}:${i + 1}: not a JSON line`, {
          code: "bad_metrics",
          param: this.file,
          hint: "metrics.jsonl is written by npr train only; restore it or start the run in a new folder",
        });
      }
    }
    return out;
  }

  /**
   * Keeps the lines of steps <= `step` (train and eval alike), drops the rest and any torn line,
   * and rewrites the file atomically (temp file, fsync, rename). Returns the number of complete lines dropped.
   */
  truncateAfter(step: number): number {
    const all = this.read();
    const keep = all.filter((l) => typeof l.step === "number" && l.step <= step);
    const text = keep.map((l) => JSON.stringify(l) + "\n").join("");
    writeFileAtomic(this.file, text);
    return all.length - keep.length;
  }
}
