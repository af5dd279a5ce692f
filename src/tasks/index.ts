/**
 * Public surface of tasks/: answer extraction, normalisation, equivalence and grading (in-process
 * and through the worker pool), ZebraLogic grading, benchmark loaders and the synthetic tasks.
 * Other folders import tasks only through this file. Rank 2: imports util only.
 */
export { allBoxed, ALL_FALLBACKS, extractAnswer, lastBoxed, NPR_FALLBACKS, splitListAnswer, type Fallback } from "./extract.ts";
export { normalizeAnswer, type Normalized } from "./normalize.ts";
export { answersEqual, type EquivOptions } from "./equivalence.ts";
export { gradeAnswer, gradeExtracted, type GradeOptions, type GradeResult } from "./grader.ts";
export { GraderPool, type GraderPoolOptions, type GraderPoolStats } from "./grader-pool.ts";
export { extractChoice, gradeZebraChoice, gradeZebraGrid, parseZebraResponse, zebraAnswerJson, type ZebraGridGrade, type ZebraSolution } from "./zebra.ts";
export { BENCHMARK_NAMES, BenchmarkTask, loadBenchmark, loadBenchmarkFile, type BenchmarkExample, type BenchmarkName } from "./benchmarks.ts";
export { readJsonl, reward, withInstruction, type Example, type Outcome, type PromptStyle, type Task } from "./task.ts";
export { CountdownTask, solveCountdown, verifyCountdown, type CountdownExample, type CountdownOptions } from "./countdown.ts";
export { LogicGridTask, type LogicGridExample, type LogicGridOptions } from "./logic-grid.ts";
