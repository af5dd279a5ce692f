/**
 * Loaders for the evaluation sets under a data directory (`<dir>/benchmarks/*.jsonl`, see
 * shared/data/PROVENANCE.md), each as a Task whose examples carry the grading options their quirks
 * need: OlympiadBench `$...$` delimiters, `unit` and `error`; AIME25's `336^\circ` (the normaliser
 * strips degrees); HMMT list answers (the grader splits lists); Minerva's `np.arcsin` (normalised);
 * ZebraLogic grids graded cell by cell. A malformed line fails with file, line number and reason.
 * Knows files and task shapes; grading itself is grader.ts / zebra.ts.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { DataFormatError, UsageError } from "../util/index.ts";
import { gradeAnswer, type GradeOptions } from "./grader.ts";
import { malformed, readJsonl, stringField, withInstruction, type Example, type Outcome, type PromptStyle, type Task } from "./task.ts";
import { gradeZebraGrid, isZebraSolution, zebraAnswerJson, type ZebraSolution } from "./zebra.ts";

export const BENCHMARK_FILES = {
  aime24: "aime24.jsonl",
  aime25: "aime25.jsonl",
  hmmt25: "hmmt25_feb.jsonl",
  amc23: "amc23.jsonl",
  math500: "math500.jsonl",
  minerva: "minerva_math.jsonl",
  olympiadbench: "olympiadbench.jsonl",
  zebralogic: "zebralogic_grid_partial216.jsonl",
} as const;

export type BenchmarkName = keyof typeof BENCHMARK_FILES;
export const BENCHMARK_NAMES = Object.keys(BENCHMARK_FILES) as BenchmarkName[];

export interface BenchmarkExample extends Example {
  benchmark: BenchmarkName;
  /** Options the grader needs for this item's quirks. */
  grade: GradeOptions;
  /** ZebraLogic: the gold grid. */
  solution?: ZebraSolution;
  /** OlympiadBench: the item expects several answers. */
  multipleAnswers?: boolean;
}

/** `<dir>/benchmarks` when it exists, else `<dir>` itself (either may be given). */
export function benchmarksDir(dataDir: string): string {
  const sub = join(dataDir, "benchmarks");
  return existsSync(sub) ? sub : dataDir;
}

export function isBenchmarkName(s: string): s is BenchmarkName {
  return Object.hasOwn(BENCHMARK_FILES, s);
}

/** Reads one benchmark file into examples, validating every line. */
export function loadBenchmarkFile(name: BenchmarkName, path: string): BenchmarkExample[] {
  const seen = new Set<string>();
  const records = readJsonl(path);
  // An empty (or blank) file is a failed download or a wrong path, never a benchmark of 0 items:
  // counting it as 0 rows would report a run over nothing as a success.
  if (records.length === 0) {
    throw new DataFormatError(`${path}: the file holds no rows`, {
      code: "empty_file",
      param: path,
      hint: "re-fetch the benchmark (shared/data/PROVENANCE.md lists the sources)",
    });
  }
  return records.map((rec) => {
    const id = stringField(path, rec, "id");
    if (seen.has(id)) throw malformed(path, rec.line, `duplicate id "${id}"`);
    seen.add(id);
    const ex: BenchmarkExample = {
      id,
      problem: stringField(path, rec, "problem"),
      answer: stringField(path, rec, "answer"),
      benchmark: name,
      grade: {},
    };
    if (name === "olympiadbench") {
      const unit = rec.value.unit;
      if (unit !== null && unit !== undefined && typeof unit !== "string")
        throw malformed(path, rec.line, `"unit" must be a string or null`);
      if (typeof unit === "string" && unit.trim() !== "") ex.grade.unit = unit;
      const error = rec.value.error;
      if (error !== null && error !== undefined) {
        const tol = Number(error);
        if (!Number.isFinite(tol) || tol < 0)
          throw malformed(path, rec.line, `"error" must be a non-negative number string, got ${JSON.stringify(error)}`);
        ex.grade.absTol = tol;
      }
      ex.multipleAnswers = rec.value.is_multiple_answer === true;
    }
    if (name === "zebralogic") {
      const sol = rec.value.solution;
      if (!isZebraSolution(sol))
        throw malformed(path, rec.line, `"solution" must be {header: string[], rows: string[][]} with rows as wide as the header`);
      ex.solution = sol;
    }
    return ex;
  });
}

/** A loaded benchmark as a Task. */
export class BenchmarkTask implements Task<BenchmarkExample> {
  readonly name: string;
  private readonly items: BenchmarkExample[];
  constructor(name: BenchmarkName, items: BenchmarkExample[]) {
    this.name = name;
    this.items = items;
  }
  get size(): number {
    return this.items.length;
  }
  get(i: number): BenchmarkExample {
    const ex = this.items[i];
    if (ex === undefined) throw new RangeError(`${this.name} has ${this.items.length} examples, asked for index ${i}`);
    return ex;
  }
  renderPrompt(ex: BenchmarkExample, style: PromptStyle = "cot"): string {
    if (ex.solution) {
      // ZeroEval's grid prompt asks for this JSON shape; we show it with placeholders.
      const shape = zebraAnswerJson({
        header: ex.solution.header,
        rows: ex.solution.rows.map((r) => r.map((c, j) => (j === 0 ? c : "___"))),
      });
      return `${ex.problem.trim()}\n\nGive the full solution as JSON of this shape: ${shape}`;
    }
    return withInstruction(ex.problem, style);
  }
  evaluate(ex: BenchmarkExample, text: string): Outcome {
    if (ex.solution) {
      const g = gradeZebraGrid(ex.solution, text);
      if (!g.parsed) return { kind: "malformed", why: "no house table (JSON) found in the response" };
      return {
        kind: "graded",
        correct: g.solved,
        reward: g.solved ? 1 : 0,
        extracted: null,
        detail: `${g.correctCells}/${g.totalCells} cells`,
      };
    }
    const r = gradeAnswer(text, ex.answer, ex.grade);
    if (r.extracted === null) return { kind: "malformed", why: "no answer found (no \\boxed{} and no fallback matched)" };
    return { kind: "graded", correct: r.correct, reward: r.correct ? 1 : 0, extracted: r.extracted };
  }
}

/** Loads one benchmark from a data directory given on the command line. */
export function loadBenchmark(name: string, dataDir: string): BenchmarkTask {
  if (!isBenchmarkName(name)) {
    throw new UsageError(`unknown benchmark "${name}"`, {
      code: "unknown_benchmark",
      param: name,
      hint: `one of: ${BENCHMARK_NAMES.join(", ")}`,
    });
  }
  return new BenchmarkTask(name, loadBenchmarkFile(name, join(benchmarksDir(dataDir), BENCHMARK_FILES[name])));
}
