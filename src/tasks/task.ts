/**
 * The Task interface that serves both evaluation and RL reward (STYLE.md habit 14, after nanochat's
 * tasks/common.py): a task has a name, a size, examples by index, prompt rendering, and one
 * `evaluate` whose outcome is a typed value — graded (correct + reward) or malformed (no answer
 * could be read, so a trainer can drop the rollout as NPR does instead of rewarding it 0).
 * Also the prompt suffixes (NPR's pointer sentence for benchmarks, the compact
 * SYNTHETIC_NPR_INSTRUCTION for the synthetic tasks) and the JSONL reader shared by the loaders.
 * Knows nothing about models, engines or the NPR tag grammar (that is format/).
 */
import { readFileSync } from "node:fs";
import { DataFormatError } from "../util/index.ts";

export interface Example {
  id: string;
  /** The problem text as the source gives it (no instruction appended). */
  problem: string;
  /**
   * The ground truth as a string (for ZebraLogic grids, JSON of the solution grid; for the
   * synthetic tasks, one valid solution, which their verifiers never compare against).
   */
  answer: string;
}

export type Outcome =
  | { kind: "graded"; correct: boolean; reward: number; extracted: string | null; detail?: string }
  | { kind: "malformed"; why: string };

export interface Task<E extends Example = Example> {
  readonly name: string;
  readonly size: number;
  get(i: number): E;
  /** The user message for an example: the problem plus the instruction for `style`. */
  renderPrompt(example: E, style?: PromptStyle): string;
  /** Grades a response text; `malformed` when no answer can be read from it at all. */
  evaluate(example: E, text: string): Outcome;
}

/** Reward for RL: the graded reward, or the malformed outcome itself for the trainer to drop. */
export function reward<E extends Example>(task: Task<E>, example: E, text: string): number | { kind: "malformed"; why: string } {
  const o = task.evaluate(example, text);
  return o.kind === "graded" ? o.reward : o;
}

export type PromptStyle = "plain" | "cot" | "npr";

// Qwen2.5-Math's CoT instruction, which NPR's cot.txt paraphrases. The NPR parallel template is
// long and belongs to format/ (prompt templates are data); here only a pointer sentence.
const SUFFIX: Record<PromptStyle, string> = {
  plain: "",
  cot: "Please reason step by step, and put your final answer within \\boxed{}.",
  npr:
    "Answer in the parallel reasoning format: <guideline> with one or more <plan>s, one <step> per plan, " +
    "a <takeaway>, and a conclusion with the final answer in \\boxed{}.",
};

/** NPR's eval placement: `question.strip() + "\n\n" + template`. */
export function withInstruction(problem: string, style: PromptStyle = "cot"): string {
  const suffix = SUFFIX[style];
  return suffix === "" ? problem.trim() : `${problem.trim()}\n\n${suffix}`;
}

/**
 * The NPR instruction every synthetic-task prompt carries: the stand-in for NPR's template
 * (evals/prompts/npr.txt, several hundred tokens, which would fill most of a tiny model's context).
 * It names the same structure in one line; the task tokenizer holds each of its words as one token.
 */
export const SYNTHETIC_NPR_INSTRUCTION =
  "Think in parallel: <guideline> with 2-5 <plan>s, one <step> per plan, a <takeaway>, then the answer in \\boxed{}.";

/** A synthetic task's user message: the problem, then SYNTHETIC_NPR_INSTRUCTION (style "npr"). */
export function syntheticPrompt(problem: string, style: PromptStyle = "npr"): string {
  return style === "npr" ? `${problem.trim()}\n\n${SYNTHETIC_NPR_INSTRUCTION}` : withInstruction(problem, style);
}

export interface JsonlRecord {
  line: number;
  value: Record<string, unknown>;
}

/** Reads a JSONL file of objects; a bad line is a DataFormatError naming file and line. */
export function readJsonl(path: string): JsonlRecord[] {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new DataFormatError(`${path}: cannot read file (${(err as NodeJS.ErrnoException).code ?? String(err)})`, {
      code: "missing_file",
      param: path,
      hint: "pass the data directory that holds benchmarks/ (e.g. ../shared/data)",
    });
  }
  const out: JsonlRecord[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim();
    if (raw === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch (err) {
      throw malformed(path, i + 1, `invalid JSON (${(err as Error).message})`);
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) throw malformed(path, i + 1, "expected a JSON object");
    out.push({ line: i + 1, value: value as Record<string, unknown> });
  }
  return out;
}

export function malformed(path: string, line: number, reason: string): DataFormatError {
  return new DataFormatError(`${path}:${line}: ${reason}`, { code: "malformed_line", param: `${path}:${line}` });
}

/** A required non-empty string field of a record. */
export function stringField(path: string, rec: JsonlRecord, key: string): string {
  const v = rec.value[key];
  if (typeof v !== "string" || v.trim() === "") {
    throw malformed(path, rec.line, `"${key}" must be a non-empty string, got ${v === undefined ? "nothing" : JSON.stringify(v)}`);
  }
  return v;
}
