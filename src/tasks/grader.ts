/**
 * The public grader: `gradeAnswer(response, answer, opts)` extracts the model's answer (extract.ts)
 * and compares it with the ground truth (equivalence.ts), with the benchmark quirks that need the
 * response as a whole: list answers boxed one by one (MathArena's HMMT parser joins them), units
 * that the benchmark names (OlympiadBench `unit`), absolute error bounds (OlympiadBench `error`).
 * It runs in-process and can take unbounded time on pathological input: callers grading untrusted
 * text at scale use GraderPool (grader-pool.ts), which adds a per-item time limit.
 */
import { allBoxed, extractAnswer, NPR_FALLBACKS, splitListAnswer, type Fallback } from "./extract.ts";
import { answersEqual } from "./equivalence.ts";
import { normalizeAnswer } from "./normalize.ts";

export interface GradeOptions {
  /** Extraction fallbacks when there is no `\boxed{}`; default NPR's (answer-is, last number). */
  fallbacks?: readonly Fallback[];
  /** Relative tolerance for decimal answers (default 1e-4). */
  relTol?: number;
  /** Absolute tolerance (OlympiadBench `error`, e.g. 0.1 for "1e-1"). */
  absTol?: number;
  /** A unit the benchmark attaches to the answer; stripped from the prediction when it trails it. */
  unit?: string | null;
}

export interface GradeResult {
  correct: boolean;
  /** The extracted answer, or null when the response has none. */
  extracted: string | null;
  /** Present (true) only when the pool's time limit cut grading short. */
  timeout?: true;
}

/** Plain-data form of GradeOptions, as it crosses a worker boundary. */
export function cleanOptions(opts: GradeOptions): GradeOptions {
  const out: GradeOptions = {};
  if (opts.fallbacks !== undefined) out.fallbacks = [...opts.fallbacks];
  if (opts.relTol !== undefined) out.relTol = opts.relTol;
  if (opts.absTol !== undefined) out.absTol = opts.absTol;
  if (opts.unit !== undefined && opts.unit !== null) out.unit = opts.unit;
  return out;
}

function stripUnit(s: string, unit: string | null | undefined): string {
  if (!unit) return s;
  const u = unit.trim();
  const t = s.trim();
  for (const form of [u, `\\text{${u}}`, `\\mathrm{${u}}`, `\\text{ ${u}}`]) {
    if (t.endsWith(form) && t.length > form.length) return t.slice(0, -form.length).trim();
  }
  return s;
}

/** Grades one response against one ground-truth answer string. */
export function gradeAnswer(response: string, answer: string, opts: GradeOptions = {}): GradeResult {
  const extracted = extractAnswer(response, opts.fallbacks ?? NPR_FALLBACKS);
  if (extracted === null) return { correct: false, extracted: null };
  const eq = { relTol: opts.relTol, absTol: opts.absTol };
  const pred = stripUnit(extracted, opts.unit);
  if (answersEqual(pred, answer, eq)) return { correct: true, extracted };
  // A list answer boxed item by item: "\boxed{2} and \boxed{3}" for "2, 3".
  const goldItems = splitListAnswer(normalizeAnswer(answer).text).length;
  if (goldItems > 1) {
    const boxes = allBoxed(response).filter((b) => b.trim() !== "");
    if (boxes.length >= goldItems) {
      const joined = boxes.slice(-goldItems).join(", ");
      if (answersEqual(joined, answer, eq)) return { correct: true, extracted: joined };
    }
  }
  return { correct: false, extracted };
}

/** Grades an already-extracted answer (no fallbacks, no box joining). */
export function gradeExtracted(extracted: string, answer: string, opts: GradeOptions = {}): boolean {
  return answersEqual(stripUnit(extracted, opts.unit), answer, { relTol: opts.relTol, absTol: opts.absTol });
}
